"""C++ kernels for fast decoding on the CPU, built on first use: matrix products with
block-quantized weights, and the one-token attention step.

Weights stay in GGUF's own 32-weight block layouts (llama.cpp's formats), so a
GGUF file's tensors are used byte for byte:

    Q8_0  34 bytes: float16 d, int8 q[32]                 w = d * q
    Q4_0  18 bytes: float16 d, 16 bytes of 4-bit q        w = d * (q - 8)
    Q4_1  20 bytes: float16 d, float16 m, 16 bytes of q   w = d * q + m

(4-bit weight j of a block sits in the low nibble of byte j, weight j + 16 in the
high nibble.) A weight matrix (N, K) is a uint8 tensor (N, K / 32 * block bytes).

Activations stay float32: each block is decoded to 32 floats in registers and
multiplied there, so ``linear`` computes ``x @ dequantize(w).T`` up to float32
rounding, never a re-quantized activation. Up to ``ROW_KERNEL_MAX`` rows of ``x`` (a
decode step, a speculative verification) go through the row kernel, which reads each
weight once per call, 8 activation rows per pass; more rows (a prompt) dequantize the
weight in slices of about 4 MB and use torch's matmul, which is compute-bound there.
Both paths multiply the same float weights (tests/ops/test_decode_cpu.py checks each
against ``dequantize``).

The kernel is compiled by ``torch.utils.cpp_extension.load_inline`` the first time it
is used (about 30 s on 2 cores) and cached in ``TORCH_EXTENSIONS_DIR``, one build per
CPU capability. A failed build raises; nothing falls back to another kernel.

Example:
    >>> blocks = quantize(w, "q4_1")                 # (N, K) float -> uint8 blocks
    >>> y = linear(x, blocks, "q4_1")                # x (M, K) -> (M, N)
"""

from __future__ import annotations

import functools
import logging
import time

import torch
from torch import Tensor

from seqlab.ops.build import build_flags

log = logging.getLogger(__name__)

BLOCK = 32                                       # weights per block in every format
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20}
FORMATS = tuple(BLOCK_BYTES)
_CODE = {"q8_0": 0, "q4_0": 1, "q4_1": 2}
ROW_KERNEL_MAX = 16                              # more rows than this: dequantize + matmul

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// F16: 16 float lanes, one zmm register with AVX-512, two ymm with AVX2, a plain array
// otherwise. (GCC's generic vectors scalarize int8 -> float conversions, hence intrinsics.)
#if defined(__AVX512F__)
struct F16 { __m512 v; };
inline F16 zero16() { return {_mm512_setzero_ps()}; }
inline F16 load16(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void store16(float* p, F16 a) { _mm512_storeu_ps(p, a.v); }
inline F16 fma16(F16 a, F16 b, F16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline F16 add16(F16 a, F16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline F16 affine16(F16 a, float d, float m) {  // a * d + m
  return {_mm512_fmadd_ps(a.v, _mm512_set1_ps(d), _mm512_set1_ps(m))};
}
inline float hsum16(F16 a) { return _mm512_reduce_add_ps(a.v); }
inline F16 int8s16(const uint8_t* p) {  // 16 signed bytes as floats
  return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)))};
}
inline void nibbles16(const uint8_t* p, F16& lo, F16& hi) {  // 16 bytes: low and high nibbles
  const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p));
  lo = {_mm512_cvtepi32_ps(_mm512_and_si512(q, _mm512_set1_epi32(15)))};
  hi = {_mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4))};
}
#elif defined(__AVX2__) && defined(__FMA__)
struct F16 { __m256 a, b; };
inline F16 zero16() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline F16 load16(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void store16(float* p, F16 x) { _mm256_storeu_ps(p, x.a); _mm256_storeu_ps(p + 8, x.b); }
inline F16 fma16(F16 x, F16 y, F16 z) {
  return {_mm256_fmadd_ps(x.a, y.a, z.a), _mm256_fmadd_ps(x.b, y.b, z.b)};
}
inline F16 add16(F16 x, F16 y) { return {_mm256_add_ps(x.a, y.a), _mm256_add_ps(x.b, y.b)}; }
inline F16 affine16(F16 x, float d, float m) {
  const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
  return {_mm256_fmadd_ps(x.a, vd, vm), _mm256_fmadd_ps(x.b, vd, vm)};
}
inline float hsum16(F16 x) {
  const __m256 s = _mm256_add_ps(x.a, x.b);
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}
inline F16 int8s16(const uint8_t* p) {
  return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p))),
          _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8))))};
}
inline void nibbles16(const uint8_t* p, F16& lo, F16& hi) {
  const __m256i q0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p));
  const __m256i q1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8)));
  const __m256i m = _mm256_set1_epi32(15);
  lo = {_mm256_cvtepi32_ps(_mm256_and_si256(q0, m)), _mm256_cvtepi32_ps(_mm256_and_si256(q1, m))};
  hi = {_mm256_cvtepi32_ps(_mm256_srli_epi32(q0, 4)), _mm256_cvtepi32_ps(_mm256_srli_epi32(q1, 4))};
}
#else
struct F16 { float v[16]; };
inline F16 zero16() { return {}; }
inline F16 load16(const float* p) { F16 r; std::memcpy(r.v, p, sizeof(r.v)); return r; }
inline void store16(float* p, F16 a) { std::memcpy(p, a.v, sizeof(a.v)); }
inline F16 fma16(F16 a, F16 b, F16 c) { for (int i = 0; i < 16; ++i) c.v[i] += a.v[i] * b.v[i]; return c; }
inline F16 add16(F16 a, F16 b) { for (int i = 0; i < 16; ++i) a.v[i] += b.v[i]; return a; }
inline F16 affine16(F16 a, float d, float m) { for (int i = 0; i < 16; ++i) a.v[i] = a.v[i] * d + m; return a; }
inline float hsum16(F16 a) { float s = 0; for (int i = 0; i < 16; ++i) s += a.v[i]; return s; }
inline F16 int8s16(const uint8_t* p) { F16 r; for (int i = 0; i < 16; ++i) r.v[i] = float(int8_t(p[i])); return r; }
inline void nibbles16(const uint8_t* p, F16& lo, F16& hi) {
  for (int i = 0; i < 16; ++i) { lo.v[i] = float(p[i] & 15); hi.v[i] = float(p[i] >> 4); }
}
#endif

enum { Q8_0 = 0, Q4_0 = 1, Q4_1 = 2 };
constexpr int QK = 32;
constexpr int64_t ROW_KERNEL_MAX = 16;

constexpr int block_bytes(int f) { return f == Q8_0 ? 34 : f == Q4_0 ? 18 : 20; }

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return c10::detail::fp16_ieee_to_fp32_value(h);
#endif
}

// One block's 32 weights as floats: w0 = weights 0..15, w1 = weights 16..31.
template <int F> inline void decode(const uint8_t* b, F16& w0, F16& w1) {
  const float d = half_at(b);
  if constexpr (F == Q8_0) {
    w0 = affine16(int8s16(b + 2), d, 0.0f);
    w1 = affine16(int8s16(b + 18), d, 0.0f);
  } else if constexpr (F == Q4_0) {
    nibbles16(b + 2, w0, w1);
    w0 = affine16(w0, d, -8.0f * d);
    w1 = affine16(w1, d, -8.0f * d);
  } else {
    const float m = half_at(b + 2);
    nibbles16(b + 4, w0, w1);
    w0 = affine16(w0, d, m);
    w1 = affine16(w1, d, m);
  }
}

// y[m, n] = sum_k x[m, k] w[n, k] for MB activation rows and R weight rows at a time.
// Two accumulators per (row, activation) keep enough independent FMA chains in flight
// when MB is small; R > 1 does the same for a single activation row.
template <int F, int MB, int R>
inline void dot_rows(const float* x, int64_t ldx, const uint8_t* w, int64_t row_bytes,
                     int64_t nb, float* y, int64_t ldy, int64_t n) {
  F16 acc0[R][MB], acc1[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) acc0[r][m] = acc1[r][m] = zero16();
  for (int64_t b = 0; b < nb; ++b) {
    F16 w0[R], w1[R];
    for (int r = 0; r < R; ++r)
      decode<F>(w + (n + r) * row_bytes + b * block_bytes(F), w0[r], w1[r]);
    for (int m = 0; m < MB; ++m) {
      const F16 x0 = load16(x + m * ldx + b * QK), x1 = load16(x + m * ldx + b * QK + 16);
      for (int r = 0; r < R; ++r) {
        acc0[r][m] = fma16(w0[r], x0, acc0[r][m]);
        acc1[r][m] = fma16(w1[r], x1, acc1[r][m]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) y[m * ldy + n + r] = hsum16(add16(acc0[r][m], acc1[r][m]));
}

template <int F, int MB>
void rows_kernel(const float* x, int64_t ldx, const uint8_t* w, int64_t row_bytes, int64_t nb,
                 float* y, int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int R = MB == 1 ? 4 : MB == 2 ? 2 : 1;
  int64_t n = n0;
  for (; n + R <= n1; n += R) dot_rows<F, MB, R>(x, ldx, w, row_bytes, nb, y, ldy, n);
  for (; n < n1; ++n) dot_rows<F, MB, 1>(x, ldx, w, row_bytes, nb, y, ldy, n);
}

template <int F>
void rows_dispatch(int mb, const float* x, int64_t ldx, const uint8_t* w, int64_t row_bytes,
                   int64_t nb, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  switch (mb) {
    case 1: return rows_kernel<F, 1>(x, ldx, w, row_bytes, nb, y, ldy, n0, n1);
    case 2: return rows_kernel<F, 2>(x, ldx, w, row_bytes, nb, y, ldy, n0, n1);
    case 3: return rows_kernel<F, 3>(x, ldx, w, row_bytes, nb, y, ldy, n0, n1);
    case 4: return rows_kernel<F, 4>(x, ldx, w, row_bytes, nb, y, ldy, n0, n1);
    case 5: return rows_kernel<F, 5>(x, ldx, w, row_bytes, nb, y, ldy, n0, n1);
    case 6: return rows_kernel<F, 6>(x, ldx, w, row_bytes, nb, y, ldy, n0, n1);
    case 7: return rows_kernel<F, 7>(x, ldx, w, row_bytes, nb, y, ldy, n0, n1);
    default: return rows_kernel<F, 8>(x, ldx, w, row_bytes, nb, y, ldy, n0, n1);
  }
}

template <int F>
void dequant_rows(const uint8_t* w, int64_t row_bytes, int64_t nb, const int64_t* rows,
                  int64_t n_rows, float* out) {
  at::parallel_for(0, n_rows, 16, [&](int64_t a, int64_t e) {
    for (int64_t i = a; i < e; ++i) {
      const uint8_t* r = w + (rows ? rows[i] : i) * row_bytes;
      float* o = out + i * nb * QK;
      for (int64_t b = 0; b < nb; ++b) {
        F16 w0, w1;
        decode<F>(r + b * block_bytes(F), w0, w1);
        store16(o + b * QK, w0);
        store16(o + b * QK + 16, w1);
      }
    }
  });
}

void check_weight(const torch::Tensor& w, int64_t fmt, int64_t K) {
  TORCH_CHECK(fmt >= 0 && fmt <= 2, "unknown block format code ", fmt);
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == torch::kUInt8 && w.is_contiguous(),
              "quantized weights must be a contiguous uint8 (N, bytes per row) tensor");
  TORCH_CHECK(K % QK == 0 && w.size(1) == K / QK * block_bytes(int(fmt)),
              "weights of ", w.size(1), " bytes per row do not hold ", K, " inputs in format ", fmt);
}

template <typename Fn> void by_format(int64_t fmt, Fn fn) {
  if (fmt == Q8_0) fn(std::integral_constant<int, Q8_0>{});
  else if (fmt == Q4_0) fn(std::integral_constant<int, Q4_0>{});
  else fn(std::integral_constant<int, Q4_1>{});
}


inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  F16 acc = zero16();
  for (; i + 16 <= n; i += 16) acc = fma16(load16(a + i), load16(b + i), acc);
  float s = hsum16(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Rotate one head in place (rotate_half layout: pairs (i, i + D/2)) at position pos.
inline void rotate(float* x, int64_t D, const float* inv_freq, int64_t pos) {
  const int64_t h = D / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float a = float(pos) * inv_freq[i], c = std::cos(a), s = std::sin(a);
    const float x1 = x[i], x2 = x[i + h];
    x[i] = x1 * c - x2 * s;
    x[i + h] = x2 * c + x1 * s;
  }
}

}  // namespace

// One new token per row: qkv (B, (H + 2 Hkv) D) holds q, k, v of that token. Each row's
// k and v (rotated k) are written at slot lengths[b] of the caches (B, Hkv, capacity, D),
// and the row's q heads attend over slots [max(0, len + 1 - window), len] (window <= 0:
// all). Returns (B, H D).
torch::Tensor attend_step(torch::Tensor qkv, torch::Tensor kc, torch::Tensor vc,
                          torch::Tensor lengths, int64_t H, int64_t Hkv, torch::Tensor inv_freq,
                          double scale, int64_t window) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == torch::kFloat && qkv.is_contiguous(),
              "attend_step: qkv must be contiguous float32 (B, (H + 2 Hkv) D)");
  TORCH_CHECK(kc.dim() == 4 && kc.is_contiguous() && vc.is_contiguous() && kc.sizes() == vc.sizes()
              && kc.scalar_type() == torch::kFloat && vc.scalar_type() == torch::kFloat,
              "attend_step: caches must be contiguous float32 (B, Hkv, capacity, D)");
  const int64_t B = qkv.size(0), D = kc.size(3), cap = kc.size(2);
  TORCH_CHECK(kc.size(0) == B && kc.size(1) == Hkv && qkv.size(1) == (H + 2 * Hkv) * D && H % Hkv == 0,
              "attend_step: shapes of qkv and caches disagree");
  auto len = lengths.to(torch::kLong).contiguous();
  const int64_t* L = len.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) TORCH_CHECK(L[b] >= 0 && L[b] < cap, "attend_step: a row's cache is full");
  const bool rope = inv_freq.numel() > 0;
  auto freq = inv_freq.to(torch::kFloat).contiguous();
  TORCH_CHECK(!rope || freq.numel() == D / 2, "attend_step: inv_freq must have D / 2 entries");
  auto y = torch::empty({B, H * D}, torch::kFloat);
  const float* src = qkv.data_ptr<float>();
  const float* fr = freq.data_ptr<float>();
  float* K = kc.data_ptr<float>();
  float* V = vc.data_ptr<float>();
  float* out = y.data_ptr<float>();
  const int64_t rep = H / Hkv, row = (H + 2 * Hkv) * D;
  const float sc = float(scale);
  at::parallel_for(0, B * Hkv, 1, [&](int64_t a, int64_t e) {
    std::vector<float> q(D), p;
    for (int64_t i = a; i < e; ++i) {
      const int64_t b = i / Hkv, g = i % Hkv, pos = L[b];
      const float* r = src + b * row;
      float* kslot = K + ((b * Hkv + g) * cap + pos) * D;
      float* vslot = V + ((b * Hkv + g) * cap + pos) * D;
      std::memcpy(kslot, r + (H + g) * D, D * sizeof(float));
      std::memcpy(vslot, r + (H + Hkv + g) * D, D * sizeof(float));
      if (rope) rotate(kslot, D, fr, pos);
      const int64_t lo = window > 0 ? std::max<int64_t>(0, pos + 1 - window) : 0, n = pos + 1 - lo;
      const float* kh = K + (b * Hkv + g) * cap * D;
      const float* vh = V + (b * Hkv + g) * cap * D;
      p.resize(n);
      for (int64_t j = 0; j < rep; ++j) {
        const int64_t h = g * rep + j;
        std::memcpy(q.data(), r + h * D, D * sizeof(float));
        if (rope) rotate(q.data(), D, fr, pos);
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < n; ++t) {
          p[t] = dot(q.data(), kh + (lo + t) * D, D) * sc;
          mx = std::max(mx, p[t]);
        }
        float z = 0.0f;
        for (int64_t t = 0; t < n; ++t) z += (p[t] = std::exp(p[t] - mx));
        float* o = out + b * H * D + h * D;
        std::fill(o, o + D, 0.0f);
        for (int64_t t = 0; t < n; ++t) {
          const float w = p[t] / z;
          const float* vt = vh + (lo + t) * D;
          for (int64_t d = 0; d < D; ++d) o[d] += w * vt[d];
        }
      }
    }
  });
  return y;
}

torch::Tensor dequantize(torch::Tensor w, int64_t fmt, int64_t K, c10::optional<torch::Tensor> rows) {
  check_weight(w, fmt, K);
  const int64_t nb = K / QK;
  const int64_t* idx = nullptr;
  int64_t n = w.size(0);
  torch::Tensor r;
  if (rows.has_value()) {
    r = rows->to(torch::kLong).contiguous();
    TORCH_CHECK(r.numel() == 0 || (r.min().item<int64_t>() >= 0 && r.max().item<int64_t>() < n),
                "row index outside [0, ", n, ")");
    idx = r.data_ptr<int64_t>();
    n = r.numel();
  }
  auto out = torch::empty({n, K}, torch::kFloat);
  by_format(fmt, [&](auto F) {
    dequant_rows<decltype(F)::value>(w.data_ptr<uint8_t>(), w.size(1), nb, idx, n, out.data_ptr<float>());
  });
  return out;
}

torch::Tensor linear(torch::Tensor x, torch::Tensor w, int64_t fmt, int64_t K) {
  check_weight(w, fmt, K);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K && x.scalar_type() == torch::kFloat,
              "linear expects float32 inputs (M, ", K, ")");
  x = x.contiguous();
  const int64_t M = x.size(0), N = w.size(0), nb = K / QK, row_bytes = w.size(1);
  if (M > ROW_KERNEL_MAX) {
    // A prompt: torch's matmul is compute-bound here; slices of about 4 MB of floats.
    const int64_t slice = std::max<int64_t>(64, (int64_t(1) << 20) / K);
    if (slice >= N) return at::mm(x, dequantize(w, fmt, K, c10::nullopt).t());
    auto y = torch::empty({M, N}, torch::kFloat);
    for (int64_t n0 = 0; n0 < N; n0 += slice) {
      const int64_t n1 = std::min(N, n0 + slice);
      auto wf = dequantize(w.narrow(0, n0, n1 - n0), fmt, K, c10::nullopt);
      y.narrow(1, n0, n1 - n0).copy_(at::mm(x, wf.t()));
    }
    return y;
  }
  auto y = torch::empty({M, N}, torch::kFloat);
  const float* xp = x.data_ptr<float>();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* yp = y.data_ptr<float>();
  by_format(fmt, [&](auto F) {
    constexpr int f = decltype(F)::value;
    at::parallel_for(0, N / 4, 8, [&](int64_t a, int64_t e) {
      const int64_t n0 = a * 4, n1 = e * 4 == N / 4 * 4 ? N : e * 4;
      for (int64_t m0 = 0; m0 < M; m0 += 8)
        rows_dispatch<f>(int(std::min<int64_t>(8, M - m0)), xp + m0 * K, K, wp, row_bytes, nb,
                         yp + m0 * N, N, n0, n1);
    });
    if (N < 4) {
      for (int64_t m0 = 0; m0 < M; m0 += 8)
        rows_dispatch<f>(int(std::min<int64_t>(8, M - m0)), xp + m0 * K, K, wp, row_bytes, nb,
                         yp + m0 * N, N, 0, N);
    }
  });
  return y;
}
"""


@functools.cache
def load():
    """Compile (or load from torch's cache) and return the extension module.

    Raises:
        RuntimeError: the compiler, ninja or the build failed; the message says why
            and that ``weights="float"`` needs no build.
    """
    from torch.utils import cpp_extension

    capability, flags = build_flags()
    name = f"seqlab_decode_cpu_{capability.lower()}"
    start = time.perf_counter()
    try:
        module = cpp_extension.load_inline(
            name=name, cpp_sources=[_SOURCE], functions=["linear", "dequantize", "attend_step"],
            extra_cflags=["-O3", "-fopenmp", *flags], extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as err:
        raise RuntimeError(
            f"could not build the C++ kernels for quantized weights: {type(err).__name__}: {err}\n"
            "They need a C++ compiler with OpenMP and ninja (pip install ninja). Load the model "
            "with weights='float' for plain float weights, which need no build.") from err
    log.info("decode_cpu: %s ready in %.1f s (%s)", name, time.perf_counter() - start,
             " ".join(flags) or "generic")
    return module


def attend_step(qkv: Tensor, k_cache: Tensor, v_cache: Tensor, lengths: Tensor, heads: int,
                kv_heads: int, inv_freq: Tensor | None, scale: float, window: int | None) -> Tensor:
    """One token of causal attention per row, writing its key and value into the caches.

    Args:
        qkv: (B, (heads + 2 kv_heads) head_dim) float32, the token's q, k, v heads side by side.
        k_cache, v_cache: (B, kv_heads, capacity, head_dim) contiguous float32; row b's new
            key (rotated) and value go to slot ``lengths[b]``, in place.
        lengths: (B,) the entries each row held before this token.
        inv_freq: (head_dim / 2,) rotary frequencies (rotate-half layout), or None.
        window: attend to the last ``window`` entries (the new one included); None: all.

    Returns:
        (B, heads head_dim) float32: ``softmax(q Kᵀ scale) V`` per head.
    """
    empty = torch.empty(0)
    return load().attend_step(qkv, k_cache, v_cache, lengths, heads, kv_heads,
                              empty if inv_freq is None else inv_freq, scale, window or 0)


def _code(fmt: str) -> int:
    if fmt not in _CODE:
        raise ValueError(f"unknown block format {fmt!r}; known formats: {', '.join(FORMATS)}")
    return _CODE[fmt]


def linear(x: Tensor, blocks: Tensor, fmt: str) -> Tensor:
    """``x @ dequantize(blocks, fmt).T`` for float32 ``x: (M, K)``; returns (M, N) float32."""
    K = x.shape[-1]
    return load().linear(x, blocks, _code(fmt), K)


def dequantize(blocks: Tensor, fmt: str, rows: Tensor | None = None) -> Tensor:
    """The float32 (N, K) matrix of ``blocks`` (only ``rows`` of it when given)."""
    K = blocks.shape[1] // BLOCK_BYTES[fmt] * BLOCK if fmt in BLOCK_BYTES else 0
    return load().dequantize(blocks, _code(fmt), K, rows)


def quantize(w: Tensor, fmt: str) -> Tensor:
    """Float weights (N, K) as ``fmt`` blocks: uint8 (N, K / 32 * block bytes).

    Scales are rounded to float16 first and the codes chosen against the rounded
    scales, so dequantizing is as close to ``w`` as the format allows: Q8_0 rounds
    ``w / d`` with ``d = max|w| / 127``; Q4_1 spans each block's [min, max] in 15 steps.

    Raises:
        ValueError: K not a multiple of 32, or a format it cannot write (Q4_0 is
            read from files only).
    """
    if w.dim() != 2 or w.shape[1] % BLOCK:
        raise ValueError(f"quantize needs a (N, K) matrix with K a multiple of {BLOCK}, "
                         f"got shape {tuple(w.shape)}")
    N, K = w.shape
    b = w.detach().float().reshape(N, K // BLOCK, BLOCK)
    if fmt == "q8_0":
        d = (b.abs().amax(-1) / 127).half()
        inv = torch.where(d.float() > 0, 1 / d.float(), torch.zeros_like(d, dtype=torch.float32))
        q = (b * inv[..., None]).round().clamp(-127, 127).to(torch.int8)
        parts = [d.view(torch.uint8).reshape(N, -1, 2), q.view(torch.uint8)]
    elif fmt == "q4_1":
        lo, hi = b.amin(-1), b.amax(-1)
        d, m = ((hi - lo) / 15).half(), lo.half()
        inv = torch.where(d.float() > 0, 1 / d.float(), torch.zeros_like(d, dtype=torch.float32))
        q = ((b - m.float()[..., None]) * inv[..., None]).round().clamp(0, 15).to(torch.uint8)
        qs = q[..., :16] | (q[..., 16:] << 4)
        parts = [d.view(torch.uint8).reshape(N, -1, 2), m.view(torch.uint8).reshape(N, -1, 2), qs]
    else:
        raise ValueError(f"quantize writes q8_0 and q4_1, not {fmt!r}")
    return torch.cat(parts, -1).reshape(N, -1).contiguous()
