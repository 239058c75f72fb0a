"""Fused CPU selective scan (Mamba-1), C++ with OpenMP, built on first use.

The same map as :func:`seqlab.mixers.mamba.selective_scan`, the pure-PyTorch
reference it is tested against (tests/ops/test_selective_scan_cpu.py):
    h_t = exp(dt_t A) ⊙ h_{t-1} + dt_t x_t B_tᵀ;    y_t = h_t C_t
Each OpenMP task owns one sequence and a group of channel blocks (16 float32 or 8
float64 channels each, one cache line) and walks time in order, tile by tile, with the
blocks' (d_state, lanes) states in a per-thread buffer that stays in L1. So the parallel
face reads dt, x, B, C once and writes only y and the final state, never per-token
states: it is bound by the projections around it, not by memory. The backward pass
walks time in reverse, segment by segment, recomputing each segment's states from a
state the forward pass kept every ``checkpoint`` tokens: O(B·E·N·L / checkpoint) saved
memory instead of O(B·E·N·L).

The kernel is compiled by ``torch.utils.cpp_extension.load_inline`` the first time it
is used (about 20 s on 2 cores) and cached in ``TORCH_EXTENSIONS_DIR``
(default ~/.cache/torch_extensions), one build per CPU capability (AVX512, AVX2, ...).
A failed build raises; nothing falls back to another kernel.

Example:
    >>> y, h = selective_scan_cpu(dt, A, B, C, x, torch.zeros(2, 8, 4))
"""

from __future__ import annotations

import functools
import logging
import time

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seqlab.ops.build import EXP_LANES, build_flags

log = logging.getLogger(__name__)

# Tokens between saved states. The backward pass keeps two (checkpoint, d_state, 16)
# buffers per thread; 64 keeps them in L2 and the saved states at 1/64 of the
# per-token states.
CHECKPOINT = 64

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

namespace {

// One block is one 64-byte cache line of channels: 16 float or 8 double lanes, so every
// per-token load of dt, x, dy and store of y, dx, ddt touches whole lines.
template <typename T> constexpr int lanes() { return 64 / int(sizeof(T)); }

""" + EXP_LANES + r"""
// float64 is for tests and references: libm's exp, one lane at a time.
inline void exp_lanes(const double* in, double* out) {
  for (int j = 0; j < lanes<double>(); ++j) out[j] = std::exp(in[j]);
}

// Row of w <= W channels into W lanes, the rest zero. Zero dt, x and dy make the
// padded lanes inert: their state stays 0 and adds nothing to any sum.
template <typename T>
inline void load_row(T* dst, const T* src, int w) {
  constexpr int W = lanes<T>();
  if (w == W) {
    std::memcpy(dst, src, sizeof(T) * W);
  } else {
    for (int j = 0; j < W; ++j) dst[j] = j < w ? src[j] : T(0);
  }
}

template <typename T>
inline void store_row(T* dst, const T* src, int w) {
  constexpr int W = lanes<T>();
  if (w == W) {
    std::memcpy(dst, src, sizeof(T) * W);
  } else {
    for (int j = 0; j < w; ++j) dst[j] = src[j];
  }
}

// A (E, N) state-major block [n][lane] <-> rows of an (E, N) tensor.
template <typename T>
inline void load_state(T* dst, const T* src, int64_t N, int w) {
  constexpr int W = lanes<T>();
  for (int64_t n = 0; n < N; ++n)
    for (int j = 0; j < W; ++j) dst[n * W + j] = j < w ? src[j * N + n] : T(0);
}

template <typename T>
inline void store_state(T* dst, const T* src, int64_t N, int w) {
  constexpr int W = lanes<T>();
  for (int64_t n = 0; n < N; ++n)
    for (int j = 0; j < w; ++j) dst[j * N + n] = src[n * W + j];
}

struct Dims {
  int64_t batch, L, E, N, K, nseg;
  int64_t blocks;   // ceil(E / W) blocks of channels
  int64_t groups;   // of blocks per sequence; a task is one group of one sequence
  int64_t per;      // blocks per group
};

// Tasks walk time in tiles and, within a tile, over the blocks of their group, so that
// each tile of dt, x, y is read as whole row segments (streamed from memory) rather than
// one cache line per row. There are enough groups that every thread gets a task, and
// batch * groups is a multiple of the thread count where possible, so none idles.
template <typename T>
void set_groups(Dims& d, int threads) {
  constexpr int W = lanes<T>();
  d.blocks = (d.E + W - 1) / W;
  const int64_t g = threads / std::gcd<int64_t>(d.batch, threads);
  d.per = (d.blocks + std::max<int64_t>(1, std::min(d.blocks, g)) - 1) /
          std::max<int64_t>(1, std::min(d.blocks, g));
  d.groups = std::max<int64_t>(1, (d.blocks + d.per - 1) / d.per);   // none left empty
}

// Tokens [t0, t1) of one block of channels of one sequence. h: the block's state [N][W],
// carried from token t0 - 1 to t1 - 1; Ab: A of the block [N][W]. Pointers are at the
// sequence's start and the block's first channel. If ckpt, the state before token s*K
// goes to ckpt + s*E*N.
template <typename T>
void forward_steps(const Dims& d, int w, int64_t t0, int64_t t1, const T* dt, const T* x,
                   const T* Bm, const T* Cm, const T* Ab, T* h, T* y, T* ckpt) {
  constexpr int W = lanes<T>();
  const int64_t E = d.E, N = d.N;
  alignas(64) T dv[W], u[W], acc[W], arg[W], a[W], xv[W];
  for (int64_t t = t0; t < t1; ++t) {
    if (ckpt != nullptr && t % d.K == 0) store_state(ckpt + (t / d.K) * E * N, h, N, w);
    load_row(dv, dt + t * E, w);
    load_row(xv, x + t * E, w);
#pragma omp simd
    for (int j = 0; j < W; ++j) { u[j] = dv[j] * xv[j]; acc[j] = 0; }
    const T* bt = Bm + t * N;
    const T* ct = Cm + t * N;
    for (int64_t n = 0; n < N; ++n) {
      T* hn = h + n * W;
      const T* An = Ab + n * W;
#pragma omp simd
      for (int j = 0; j < W; ++j) arg[j] = dv[j] * An[j];
      exp_lanes(arg, a);
      const T bn = bt[n], cn = ct[n];
#pragma omp simd
      for (int j = 0; j < W; ++j) {
        const T hv = a[j] * hn[j] + u[j] * bn;
        hn[j] = hv;
        acc[j] += hv * cn;
      }
    }
    store_row(y + t * E, acc, w);
  }
}

// Reverse-time pass over segment s (tokens [s K, s K + K)) of one block of one sequence.
// lam: dL/dh after the segment [N][W] on entry, dL/dh before it on exit. gA: [N][W],
// accumulated. gB, gC: (L, N) rows of this thread's partial sums. scratch: 2 K N W + N W.
template <typename T>
void backward_segment(const Dims& d, int w, int64_t s, const T* dt, const T* x, const T* Bm,
                      const T* Cm, const T* Ab, const T* ckpt, const T* gy, T* lam, T* gA,
                      T* gB, T* gC, T* gdt, T* gx, T* scratch) {
  constexpr int W = lanes<T>();
  const int64_t E = d.E, N = d.N, K = d.K, NW = N * W;
  T* hs = scratch;              // [K][N][W] states of the segment
  T* as = hs + K * NW;          // [K][N][W] decays of the segment
  T* hstart = as + K * NW;      // [N][W] the state before the segment
  alignas(64) T dv[W], xv[W], u[W], gv[W], r[W], gd[W], arg[W];
  {
    const int64_t t0 = s * K, t1 = std::min(d.L, t0 + K);
    load_state(hstart, ckpt + s * E * N, N, w);
    // Recompute the segment's states and decays from its saved start.
    const T* prev = hstart;
    for (int64_t t = t0; t < t1; ++t) {
      T* hc = hs + (t - t0) * NW;
      T* ac = as + (t - t0) * NW;
      load_row(dv, dt + t * E, w);
      load_row(xv, x + t * E, w);
#pragma omp simd
      for (int j = 0; j < W; ++j) u[j] = dv[j] * xv[j];
      const T* bt = Bm + t * N;
      for (int64_t n = 0; n < N; ++n) {
#pragma omp simd
        for (int j = 0; j < W; ++j) arg[j] = dv[j] * Ab[n * W + j];
        exp_lanes(arg, ac + n * W);
        const T bn = bt[n];
#pragma omp simd
        for (int j = 0; j < W; ++j) hc[n * W + j] = ac[n * W + j] * prev[n * W + j] + u[j] * bn;
      }
      prev = hc;
    }
    // lam_t = dy_t C_t + a_{t+1} lam_{t+1}; lam holds a_{t+1} lam_{t+1} between tokens.
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const T* hc = hs + (t - t0) * NW;
      const T* hp = t > t0 ? hc - NW : hstart;
      const T* ac = as + (t - t0) * NW;
      load_row(dv, dt + t * E, w);
      load_row(xv, x + t * E, w);
      load_row(gv, gy + t * E, w);
#pragma omp simd
      for (int j = 0; j < W; ++j) { u[j] = dv[j] * xv[j]; r[j] = 0; gd[j] = 0; }
      const T* bt = Bm + t * N;
      const T* ct = Cm + t * N;
      T* gBt = gB + t * N;
      T* gCt = gC + t * N;
      for (int64_t n = 0; n < N; ++n) {
        const T bn = bt[n], cn = ct[n];
        T* ln = lam + n * W;
        T* gAn = gA + n * W;
        const T* An = Ab + n * W;
        const T* hcn = hc + n * W;
        const T* hpn = hp + n * W;
        const T* acn = ac + n * W;
        T sb = 0, sc = 0;
#pragma omp simd reduction(+ : sb, sc)
        for (int j = 0; j < W; ++j) {
          const T l = ln[j] + gv[j] * cn;          // dL/dh_t
          sc += gv[j] * hcn[j];                    // dL/dC_t = sum_e dy_t h_t
          sb += u[j] * l;                          // dL/dB_t = sum_e dt x lam_t
          r[j] += l * bn;                          // dL/du_t summed against B_t
          const T g = l * acn[j] * hpn[j];         // dL/d(dt_t A)
          gd[j] += g * An[j];
          gAn[j] += g * dv[j];
          ln[j] = l * acn[j];                      // what reaches h_{t-1}
        }
        gBt[n] += sb;
        gCt[n] += sc;
      }
#pragma omp simd
      for (int j = 0; j < W; ++j) { gd[j] += r[j] * xv[j]; r[j] *= dv[j]; }
      store_row(gdt + t * E, gd, w);
      store_row(gx + t * E, r, w);
    }
  }
}

void check_inputs(const torch::Tensor& dt, const torch::Tensor& A, const torch::Tensor& Bm,
                  const torch::Tensor& Cm, const torch::Tensor& x, const torch::Tensor& h0) {
  for (const auto* t : {&dt, &A, &Bm, &Cm, &x, &h0}) {
    TORCH_CHECK(t->device().is_cpu(), "selective_scan_cpu: tensors must be on the CPU");
    TORCH_CHECK(t->is_contiguous(), "selective_scan_cpu: tensors must be contiguous");
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "selective_scan_cpu: mixed dtypes");
  }
  TORCH_CHECK(x.dim() == 3 && A.dim() == 2, "x must be (batch, L, E) and A (E, N)");
  const auto batch = x.size(0), L = x.size(1), E = x.size(2), N = A.size(1);
  TORCH_CHECK(dt.sizes() == x.sizes(), "dt and x must be (batch, L, E)");
  TORCH_CHECK(A.size(0) == E, "A must be (E, N)");
  TORCH_CHECK(Bm.dim() == 3 && Bm.size(0) == batch && Bm.size(1) == L && Bm.size(2) == N,
              "B must be (batch, L, N)");
  TORCH_CHECK(Cm.sizes() == Bm.sizes(), "C must be (batch, L, N)");
  TORCH_CHECK(h0.dim() == 3 && h0.size(0) == batch && h0.size(1) == E && h0.size(2) == N,
              "h0 must be (batch, E, N)");
}

Dims dims_of(const torch::Tensor& x, const torch::Tensor& A, int64_t K) {
  TORCH_CHECK(K >= 1, "checkpoint must be >= 1");
  Dims d;
  d.batch = x.size(0), d.L = x.size(1), d.E = x.size(2), d.N = A.size(1), d.K = K;
  d.nseg = (d.L + K - 1) / K;
  d.blocks = d.groups = d.per = 0;
  return d;
}

template <typename T>
void forward_all(Dims d, const T* dt, const T* A, const T* Bm, const T* Cm, const T* x,
                 const T* h0, T* y, T* hT, T* ckpt) {
  constexpr int W = lanes<T>();
  const int threads = at::get_num_threads();
  set_groups<T>(d, threads);
  const int64_t NW = d.N * W, items = d.batch * d.groups, tile = d.K;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> buf(2 * d.per * NW);
    T* hb = buf.data();           // [per][N][W] the group's states
    T* Ab = hb + d.per * NW;      // [per][N][W] its A
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / d.groups, blk0 = (item % d.groups) * d.per;
      const int64_t nblk = std::min(d.blocks, blk0 + d.per) - blk0;
      const int64_t seq = b * d.L * d.E, st = b * d.E * d.N, bn = b * d.L * d.N;
      for (int64_t i = 0; i < nblk; ++i) {
        const int64_t e0 = (blk0 + i) * W;
        const int w = int(std::min<int64_t>(W, d.E - e0));
        load_state(Ab + i * NW, A + e0 * d.N, d.N, w);
        load_state(hb + i * NW, h0 + st + e0 * d.N, d.N, w);
      }
      for (int64_t t0 = 0; t0 < d.L; t0 += tile) {
        const int64_t t1 = std::min(d.L, t0 + tile);
        for (int64_t i = 0; i < nblk; ++i) {
          const int64_t e0 = (blk0 + i) * W;
          const int w = int(std::min<int64_t>(W, d.E - e0));
          forward_steps<T>(d, w, t0, t1, dt + seq + e0, x + seq + e0, Bm + bn, Cm + bn,
                           Ab + i * NW, hb + i * NW, y + seq + e0,
                           ckpt ? ckpt + b * d.nseg * d.E * d.N + e0 * d.N : nullptr);
        }
      }
      for (int64_t i = 0; i < nblk; ++i) {
        const int64_t e0 = (blk0 + i) * W;
        store_state(hT + st + e0 * d.N, hb + i * NW, d.N, int(std::min<int64_t>(W, d.E - e0)));
      }
    }
  }
}

template <typename T>
void backward_all(Dims d, int threads, const T* dt, const T* A, const T* Bm, const T* Cm,
                  const T* x, const T* ckpt, const T* gy, const T* gh, T* gdt, T* gA, T* gB,
                  T* gC, T* gx, T* gh0) {
  constexpr int W = lanes<T>();
  set_groups<T>(d, threads);
  const int64_t NW = d.N * W, items = d.batch * d.groups;
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    std::vector<T> buf(3 * d.per * NW + 2 * d.K * NW + NW);
    T* Ab = buf.data();           // [per][N][W] A of the group
    T* lam = Ab + d.per * NW;     // [per][N][W] dL/dh at the current segment's end
    T* gAb = lam + d.per * NW;    // [per][N][W] dL/dA of this sequence
    T* scratch = gAb + d.per * NW;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / d.groups, blk0 = (item % d.groups) * d.per;
      const int64_t nblk = std::min(d.blocks, blk0 + d.per) - blk0;
      const int64_t seq = b * d.L * d.E, st = b * d.E * d.N, bn = b * d.L * d.N;
      const int64_t part = (int64_t(tid) * d.batch + b) * d.L * d.N;
      for (int64_t i = 0; i < nblk; ++i) {
        const int64_t e0 = (blk0 + i) * W;
        const int w = int(std::min<int64_t>(W, d.E - e0));
        load_state(Ab + i * NW, A + e0 * d.N, d.N, w);
        load_state(lam + i * NW, gh + st + e0 * d.N, d.N, w);
        std::fill(gAb + i * NW, gAb + (i + 1) * NW, T(0));
      }
      for (int64_t s = d.nseg - 1; s >= 0; --s) {
        for (int64_t i = 0; i < nblk; ++i) {
          const int64_t e0 = (blk0 + i) * W;
          const int w = int(std::min<int64_t>(W, d.E - e0));
          backward_segment<T>(d, w, s, dt + seq + e0, x + seq + e0, Bm + bn, Cm + bn,
                              Ab + i * NW, ckpt + b * d.nseg * d.E * d.N + e0 * d.N,
                              gy + seq + e0, lam + i * NW, gAb + i * NW, gB + part, gC + part,
                              gdt + seq + e0, gx + seq + e0, scratch);
        }
      }
      for (int64_t i = 0; i < nblk; ++i) {
        const int64_t e0 = (blk0 + i) * W;
        const int w = int(std::min<int64_t>(W, d.E - e0));
        store_state(gh0 + st + e0 * d.N, lam + i * NW, d.N, w);
        store_state(gA + st + e0 * d.N, gAb + i * NW, d.N, w);
      }
    }
  }
}

}  // namespace

// Returns y (batch, L, E), the final state (batch, E, N) and, if save, the states before
// every K-th token (batch, ceil(L / K), E, N) for the backward pass.
std::vector<torch::Tensor> scan_forward(torch::Tensor dt, torch::Tensor A, torch::Tensor Bm,
                                        torch::Tensor Cm, torch::Tensor x, torch::Tensor h0,
                                        int64_t K, bool save) {
  check_inputs(dt, A, Bm, Cm, x, h0);
  const Dims d = dims_of(x, A, K);
  auto y = torch::empty_like(x);
  auto hT = torch::empty_like(h0);
  auto ckpt = save ? torch::empty({d.batch, d.nseg, d.E, d.N}, x.options()) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "selective_scan_cpu_forward", [&] {
    forward_all<scalar_t>(d, dt.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                          Bm.data_ptr<scalar_t>(), Cm.data_ptr<scalar_t>(),
                          x.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                          y.data_ptr<scalar_t>(), hT.data_ptr<scalar_t>(),
                          save ? ckpt.data_ptr<scalar_t>() : nullptr);
  });
  return {y, hT, ckpt};
}

// Gradients (dt, A, B, C, x, h0) from dL/dy (batch, L, E) and dL/dh_final (batch, E, N).
std::vector<torch::Tensor> scan_backward(torch::Tensor dt, torch::Tensor A, torch::Tensor Bm,
                                         torch::Tensor Cm, torch::Tensor x, torch::Tensor ckpt,
                                         torch::Tensor gy, torch::Tensor gh, int64_t K) {
  check_inputs(dt, A, Bm, Cm, x, gh);
  TORCH_CHECK(gy.sizes() == x.sizes() && gy.is_contiguous() && gy.scalar_type() == x.scalar_type(),
              "dL/dy must match y");
  const Dims d = dims_of(x, A, K);
  TORCH_CHECK(ckpt.dim() == 4 && ckpt.size(1) == d.nseg && ckpt.is_contiguous(),
              "saved states do not match the checkpoint interval");
  const int threads = at::get_num_threads();
  auto gdt = torch::empty_like(dt), gx = torch::empty_like(x), gh0 = torch::empty_like(gh);
  // dL/dB and dL/dC sum over channels, which threads share: one partial sum per thread.
  auto gB = torch::zeros({threads, d.batch, d.L, d.N}, x.options());
  auto gC = torch::zeros({threads, d.batch, d.L, d.N}, x.options());
  auto gA = torch::empty({d.batch, d.E, d.N}, x.options());   // one partial per sequence
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "selective_scan_cpu_backward", [&] {
    backward_all<scalar_t>(d, threads, dt.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                           Bm.data_ptr<scalar_t>(), Cm.data_ptr<scalar_t>(),
                           x.data_ptr<scalar_t>(), ckpt.data_ptr<scalar_t>(),
                           gy.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(),
                           gdt.data_ptr<scalar_t>(), gA.data_ptr<scalar_t>(),
                           gB.data_ptr<scalar_t>(), gC.data_ptr<scalar_t>(),
                           gx.data_ptr<scalar_t>(), gh0.data_ptr<scalar_t>());
  });
  return {gdt, gA.sum(0), gB.sum(0), gC.sum(0), gx, gh0};
}
"""

@functools.cache
def load():
    """Compile (or load from torch's cache) and return the extension module.

    The build targets the CPU capability that torch reports (AVX512, AVX2, or none)
    and is named after it, so a cache directory shared between machines never hands
    one CPU a build for another.

    Raises:
        RuntimeError: the compiler, ninja or the build failed; the message says why
            and that ``MambaConfig.scan = "torch"`` needs no build.
    """
    from torch.utils import cpp_extension

    capability, flags = build_flags()
    name = f"seqlab_selective_scan_cpu_{capability.lower()}"
    start = time.perf_counter()
    try:
        module = cpp_extension.load_inline(
            name=name, cpp_sources=[_SOURCE], functions=["scan_forward", "scan_backward"],
            extra_cflags=["-O3", "-fopenmp", "-ffp-contract=fast", *flags],
            extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as err:
        raise RuntimeError(
            f"could not build the C++ selective scan (MambaConfig.scan = 'cpp'): "
            f"{type(err).__name__}: {err}\nIt needs a C++ compiler with OpenMP and ninja "
            f"(pip install ninja). Use scan = 'torch' for the pure-PyTorch scan, which needs "
            f"no build.") from err
    log.info("selective_scan_cpu: %s ready in %.1f s (%s)", name, time.perf_counter() - start,
             " ".join(flags) or "generic")
    return module


class _SelectiveScanCpu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dt, A, Bm, Cm, x, h0, checkpoint):
        ext = load()
        save = any(ctx.needs_input_grad)
        y, h, ckpt = ext.scan_forward(dt, A, Bm, Cm, x, h0, checkpoint, save)
        if save:
            ctx.checkpoint = checkpoint
            ctx.save_for_backward(dt, A, Bm, Cm, x, ckpt)
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh):
        dt, A, Bm, Cm, x, ckpt = ctx.saved_tensors
        gy = torch.zeros_like(x) if gy is None else gy.contiguous()
        gh = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]) if gh is None else gh.contiguous()
        g_dt, g_A, g_B, g_C, g_x, g_h0 = load().scan_backward(
            dt, A, Bm, Cm, x, ckpt, gy, gh, ctx.checkpoint)
        return g_dt, g_A, g_B, g_C, g_x, g_h0, None


def selective_scan_cpu(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor, h0: Tensor,
                       checkpoint: int = CHECKPOINT) -> tuple[Tensor, Tensor]:
    """The Mamba-1 scan without the D skip, as :func:`seqlab.mixers.mamba.selective_scan`.

    Args:
        dt: (batch, L, E) positive step sizes.
        A: (E, N) negative continuous-time decay rates.
        B, C: (batch, L, N) input and output projections of the state.
        x: (batch, L, E) inputs.
        h0: (batch, E, N) the state before the first token.
        checkpoint: tokens between the states saved for the backward pass; changes
            speed and memory only.

    Returns:
        ``y``: (batch, L, E) in x's dtype with y_t = C_t · h_t, and the final state
        (batch, E, N) in h0's dtype, where h_t = exp(dt_t A) ⊙ h_{t-1} + dt_t x_t B_tᵀ.
        float64 inputs run in float64; float32, bfloat16 and float16 in float32.

    Raises:
        ValueError: a tensor is not on the CPU (use ``scan = "torch"`` there).
        RuntimeError: the kernel could not be built (see :func:`load`).

    Example:
        >>> y, h = selective_scan_cpu(dt, A, B, C, x, torch.zeros(2, 8, 4))
    """
    tensors = (dt, A, B, C, x, h0)
    devices = sorted({str(t.device) for t in tensors if t.device.type != "cpu"})
    if devices:
        raise ValueError(
            f"the C++ selective scan (MambaConfig.scan = 'cpp') runs on the CPU only, but got "
            f"tensors on {', '.join(devices)}; use scan = 'torch' there")
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    y, h = _SelectiveScanCpu.apply(*(t.to(compute).contiguous() for t in tensors), checkpoint)
    return y.to(x.dtype), h.to(h0.dtype)
