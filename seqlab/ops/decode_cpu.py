"""C++ kernels for fast decoding on the CPU, built on first use: matrix products with
block-quantized weights, and the one-token attention step.

Weights come in GGUF's own 32-weight blocks (llama.cpp's formats):

    Q8_0  34 bytes: float16 d, int8 q[32]                 w = d * q
    Q4_0  18 bytes: float16 d, 16 bytes of 4-bit q        w = d * (q - 8)
    Q4_1  20 bytes: float16 d, float16 m, 16 bytes of q   w = d * q + m

(4-bit weight j of a block sits in the low nibble of byte j, weight j + 16 in the high
nibble.) ``pack`` moves those bytes, unchanged in number and value, into the kernels'
layout: rows in groups of 8, so that one 32-byte load holds 4 weights of each of 8 rows,
and one integer dot-product instruction (AVX-512 VNNI's vpdpbusd; AVX2's vpmaddubsw +
vpmaddwd without VNNI) times 4 activations broadcast gives 8 rows' partial sums, scaled
by the 8 rows' float16 scales loaded as one vector: no horizontal sums, no float
conversion per weight. (The C++ source's comments give the byte layout.)

Activations (``activations="int8"``, llama.cpp's scheme): each 32-block of each row of x
is rounded to int8 with one float scale, d = max|x| / 127, so ``linear`` computes
``quantize_activations(x) @ W.T`` -- for any number of rows: up to ``ROW_KERNEL_MAX``
rows (a decode step, a verification) go through the integer kernel, more rows (a prompt)
through the rounded x times the dequantized weight in torch's matmul, the same function
up to float rounding, so prompts, steps and verifications of one model agree.
``activations="float"`` keeps x as it is (dequantize + matmul at every call: exact, and
slow at one row) and serves as the reference.

The kernels are compiled by ``torch.utils.cpp_extension.load_inline`` the first time they
are used (about 30 s on 2 cores) and cached in ``TORCH_EXTENSIONS_DIR``, one build per CPU
capability (AVX512_VNNI, AVX512, AVX2, ...). A failed build raises; nothing falls back.

Example:
    >>> blocks = quantize(w, "q4_1")                   # (N, K) float -> packed uint8 blocks
    >>> y = linear(x, blocks, "q4_1", n=w.shape[0])    # x (M, K) -> (M, N)
"""

from __future__ import annotations

import functools
import logging
import time

import torch
from torch import Tensor

from seqlab.ops.build import EXP_LANES, build_flags

log = logging.getLogger(__name__)

BLOCK = 32                                       # weights per block in every format
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20}
FORMATS = tuple(BLOCK_BYTES)
_CODE = {"q8_0": 0, "q4_0": 1, "q4_1": 2}
GROUP = 8                                        # rows per group in the packed layout
ROW_KERNEL_MAX = 64                              # int8: more rows than this go to the matmul

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
#include <numeric>
#include <vector>

namespace {
""" + EXP_LANES + r"""

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
constexpr int QK = 32;                 // weights per block
constexpr int G = 8;                   // rows per group: one int32 lane each in a 256-bit vector
constexpr int64_t ROW_KERNEL_MAX = 64;

constexpr int native_bytes(int f) { return f == Q8_0 ? 34 : f == Q4_0 ? 18 : 20; }
constexpr int group_bytes(int f) { return G * native_bytes(f); }  // 272, 144, 160
constexpr int quant_offset(int f) { return f == Q4_1 ? 32 : 16; }  // after d[8] (and m[8])

inline float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return c10::detail::fp16_ieee_to_fp32_value(h);
#endif
}

void check_weight(const torch::Tensor& w, int64_t fmt, int64_t K, int64_t N) {
  TORCH_CHECK(fmt >= 0 && fmt <= 2, "unknown block format code ", fmt);
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == torch::kUInt8 && w.is_contiguous(),
              "quantized weights must be a contiguous uint8 (groups, bytes) tensor");
  TORCH_CHECK(K % QK == 0 && w.size(1) == K / QK * group_bytes(int(fmt)) && w.size(0) == (N + G - 1) / G,
              "weights of shape (", w.size(0), ", ", w.size(1), ") do not hold (", N, ", ", K,
              ") in format ", fmt);
}

template <typename Fn> void by_format(int64_t fmt, Fn fn) {
  if (fmt == Q8_0) fn(std::integral_constant<int, Q8_0>{});
  else if (fmt == Q4_0) fn(std::integral_constant<int, Q4_0>{});
  else fn(std::integral_constant<int, Q4_1>{});
}

// -- layout ---------------------------------------------------------------------------------
// Rows are stored in groups of G = 8. For group g and block b, one record of group_bytes:
//   d[8] float16 (row r's scale at 2r), for Q4_1 then m[8] float16, then the quants:
//   Q4_0/Q4_1: 4 chunks of 32 bytes; chunk c, byte 4r + j = byte 4c + j of row r's native
//              block (low nibble: weight 4c + j; high nibble: weight 16 + 4c + j);
//   Q8_0:      8 chunks of 32 bytes; chunk c, byte 4r + j = weight 4c + j of row r, plus 128.
// So one 32-byte chunk times 4 activations broadcast to every lane gives 8 rows' partial sums
// in one integer dot-product instruction, and the 8 rows' scales load as one vector: no
// horizontal sums. Rows past N (padding) are zeros.

template <int F>
void repack_group(const uint8_t* native, int64_t row_bytes, int64_t rows, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* rec = out + b * group_bytes(F);
    std::memset(rec, 0, group_bytes(F));
    if constexpr (F == Q8_0) std::memset(rec + 16, 128, 256);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* src = native + r * row_bytes + b * native_bytes(F);
      std::memcpy(rec + 2 * r, src, 2);
      if constexpr (F == Q4_1) std::memcpy(rec + 16 + 2 * r, src + 2, 2);
      const uint8_t* qs = src + (F == Q4_1 ? 4 : 2);
      uint8_t* q = rec + quant_offset(F);
      if constexpr (F == Q8_0) {
        for (int c = 0; c < 8; ++c)
          for (int j = 0; j < 4; ++j) q[32 * c + 4 * r + j] = uint8_t(int(int8_t(qs[4 * c + j])) + 128);
      } else {
        for (int c = 0; c < 4; ++c) std::memcpy(q + 32 * c + 4 * r, qs + 4 * c, 4);
      }
    }
  }
}

// Row n of the weight, dequantized into out[K].
template <int F>
void dequant_row(const uint8_t* w, int64_t gbytes_row, int64_t nb, int64_t n, float* out) {
  const int64_t g = n / G, r = n % G;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* rec = w + g * gbytes_row + b * group_bytes(F);
    const float d = half_to_float(rec + 2 * r);
    const uint8_t* q = rec + quant_offset(F);
    float* o = out + b * QK;
    if constexpr (F == Q8_0) {
      for (int c = 0; c < 8; ++c)
        for (int j = 0; j < 4; ++j) o[4 * c + j] = d * float(int(q[32 * c + 4 * r + j]) - 128);
    } else {
      const float m = F == Q4_1 ? half_to_float(rec + 16 + 2 * r) : 0.0f;
      for (int c = 0; c < 4; ++c)
        for (int j = 0; j < 4; ++j) {
          const int v = q[32 * c + 4 * r + j];
          if constexpr (F == Q4_0) {
            o[4 * c + j] = d * float((v & 15) - 8);
            o[16 + 4 * c + j] = d * float((v >> 4) - 8);
          } else {
            o[4 * c + j] = d * float(v & 15) + m;
            o[16 + 4 * c + j] = d * float(v >> 4) + m;
          }
        }
    }
  }
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
// All 8 rows of group records (one group's row of nb records) into out rows (each K floats;
// rows past `valid` go to `scratch`). Vectorized: a pair of rows per 8-lane vector.
template <int F>
void dequant_group(const uint8_t* grp, int64_t nb, float* const* rows) {
  alignas(32) uint8_t lo[32], hi[32];
  __m256i pair_idx[4];
  for (int pr = 0; pr < 4; ++pr)
    pair_idx[pr] = _mm256_setr_epi32(2 * pr, 2 * pr, 2 * pr, 2 * pr, 2 * pr + 1, 2 * pr + 1,
                                     2 * pr + 1, 2 * pr + 1);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* rec = grp + b * group_bytes(F);
    const uint8_t* q = rec + quant_offset(F);
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)rec));
    __m256 m = _mm256_setzero_ps();
    if constexpr (F == Q4_1) m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(rec + 16)));
    if constexpr (F == Q4_0) m = _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
    __m256 dp[4], mp[4];
    for (int pr = 0; pr < 4; ++pr) {
      dp[pr] = _mm256_permutevar8x32_ps(d, pair_idx[pr]);
      mp[pr] = _mm256_permutevar8x32_ps(m, pair_idx[pr]);
    }
    if constexpr (F == Q8_0) {
      const __m256i off = _mm256_set1_epi32(128);
      for (int c = 0; c < 8; ++c)
        for (int pr = 0; pr < 4; ++pr) {
          const __m256i v = _mm256_sub_epi32(
              _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(q + 32 * c + 8 * pr))), off);
          const __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), dp[pr]);
          _mm_storeu_ps(rows[2 * pr] + b * QK + 4 * c, _mm256_castps256_ps128(f));
          _mm_storeu_ps(rows[2 * pr + 1] + b * QK + 4 * c, _mm256_extractf128_ps(f, 1));
        }
    } else {
      const __m256i low = _mm256_set1_epi8(15);
      for (int c = 0; c < 4; ++c) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(q + 32 * c));
        _mm256_store_si256((__m256i*)lo, _mm256_and_si256(v, low));
        _mm256_store_si256((__m256i*)hi, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
        for (int pr = 0; pr < 4; ++pr) {
          const __m256 fl = _mm256_fmadd_ps(
              _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(lo + 8 * pr)))),
              dp[pr], mp[pr]);
          const __m256 fh = _mm256_fmadd_ps(
              _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(hi + 8 * pr)))),
              dp[pr], mp[pr]);
          _mm_storeu_ps(rows[2 * pr] + b * QK + 4 * c, _mm256_castps256_ps128(fl));
          _mm_storeu_ps(rows[2 * pr + 1] + b * QK + 4 * c, _mm256_extractf128_ps(fl, 1));
          _mm_storeu_ps(rows[2 * pr] + b * QK + 16 + 4 * c, _mm256_castps256_ps128(fh));
          _mm_storeu_ps(rows[2 * pr + 1] + b * QK + 16 + 4 * c, _mm256_extractf128_ps(fh, 1));
        }
      }
    }
  }
}
#endif

// -- int8 activations -----------------------------------------------------------------------
// Each 32-block of each row of x becomes int8 q with one float scale d = max|x| / 127
// (round to nearest even), so x ~ d q; s = d * sum(q) serves the weights' offsets.
struct QRows {
  std::vector<int8_t> q;  // (M, K)
  std::vector<float> d;   // (M, nb)
  std::vector<float> s;   // (M, nb)
};

inline void quantize_rows(const float* x, int64_t M, int64_t K, QRows& out) {
  const int64_t nb = K / QK;
  out.q.resize(M * K);
  out.d.resize(M * nb);
  out.s.resize(M * nb);
  for (int64_t i = 0; i < M * nb; ++i) {
    const float* v = x + i * QK;
    int8_t* q = out.q.data() + i * QK;
#if defined(__AVX2__)
    __m256 a[4];
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      a[k] = _mm256_loadu_ps(v + 8 * k);
      mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, a[k]));
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h), d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    __m256i qi[4];
    __m256i total = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k) {
      qi[k] = _mm256_cvtps_epi32(_mm256_mul_ps(a[k], _mm256_set1_ps(id)));
      total = _mm256_add_epi32(total, qi[k]);
    }
    // int32 -> int8 with the lanes back in order (packs interleave 128-bit halves)
    const __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]), p16b = _mm256_packs_epi32(qi[2], qi[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i*)q, p8);
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    const int sum = _mm_cvtsi128_si32(t);
#else
    float amax = 0.0f;
    for (int k = 0; k < QK; ++k) amax = std::max(amax, std::fabs(v[k]));
    const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int k = 0; k < QK; ++k) {
      const int r = int(std::nearbyint(v[k] * id));
      q[k] = int8_t(r);
      sum += r;
    }
#endif
    out.d[i] = d;
    out.s[i] = d * float(sum);
  }
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
// acc + 8 lanes of sum_j u[4i + j] * s[4i + j], u unsigned and s signed bytes.
inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

inline __m256i bcast4(const int8_t* p) {  // 4 activation bytes to every 32-bit lane
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Q8_0 chunk (w + 128) times 4 broadcast activations. VNNI multiplies the unsigned bytes
// and the offset is taken off once per block; maddubs would saturate there, so without
// VNNI the signs move onto the activations (|w| * sign(x, w)).
inline __m256i dot_q8(__m256i acc, __m256i u, __m256i x) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, x);
#else
  const __m256i w = _mm256_xor_si256(u, _mm256_set1_epi8(char(0x80)));
  return dpbusd(acc, _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
#endif
}
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
constexpr float Q8_OFFSET = 128.0f;  // sum (w + 128) x - 128 sum x
#else
constexpr float Q8_OFFSET = 0.0f;
#endif

// y[m, g*8 .. g*8+7] for MB quantized activation rows and R consecutive groups.
template <int F, int MB, int R>
inline void group_dot(const QRows& xq, int64_t m0, int64_t K, const uint8_t* w, int64_t grow,
                      int64_t nb, int64_t g, float* y, int64_t ldy, int64_t N) {
  __m256 acc[R][MB];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m] = _mm256_setzero_ps();
  const __m256i low = _mm256_set1_epi8(15);
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const uint8_t* rec = w + (g + r) * grow + b * group_bytes(F);
      const uint8_t* qs = rec + quant_offset(F);
      // A group's row of records is a few KB: ask for the records 8 blocks ahead now, or the
      // hardware prefetcher starts each group's stream cold.
      for (int line = 0; line < group_bytes(F); line += 64)
        _mm_prefetch((const char*)(rec + 8 * group_bytes(F) + line), _MM_HINT_T0);
      __m256i s0[MB], s1[MB];  // two chains per row for latency
      for (int m = 0; m < MB; ++m) s0[m] = s1[m] = _mm256_setzero_si256();
      if constexpr (F == Q8_0) {
        for (int c = 0; c < 8; c += 2) {
          const __m256i u0 = _mm256_loadu_si256((const __m256i*)(qs + 32 * c));
          const __m256i u1 = _mm256_loadu_si256((const __m256i*)(qs + 32 * c + 32));
          for (int m = 0; m < MB; ++m) {
            const int8_t* x = xq.q.data() + (m0 + m) * K + b * QK;
            s0[m] = dot_q8(s0[m], u0, bcast4(x + 4 * c));
            s1[m] = dot_q8(s1[m], u1, bcast4(x + 4 * c + 4));
          }
        }
      } else {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
        for (int c = 0; c < 4; ++c) {
          const __m256i v = _mm256_loadu_si256((const __m256i*)(qs + 32 * c));
          const __m256i lo = _mm256_and_si256(v, low);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
          for (int m = 0; m < MB; ++m) {
            const int8_t* x = xq.q.data() + (m0 + m) * K + b * QK;
            s0[m] = dpbusd(s0[m], lo, bcast4(x + 4 * c));
            s1[m] = dpbusd(s1[m], hi, bcast4(x + 16 + 4 * c));
          }
        }
#else
        // Without VNNI each dot product is maddubs (u8 x s8 -> s16 pairs) then madd to s32.
        // 4-bit weights times |x| <= 127 give pairs of at most 2 * 15 * 127 = 3810, so the
        // block's 8 products add up in int16 (<= 30480) and widen once: 16 instructions per
        // row and block instead of 24 (the row cost of a verification or a batch).
        __m256i p[MB];
        for (int m = 0; m < MB; ++m) p[m] = _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {
          const __m256i v = _mm256_loadu_si256((const __m256i*)(qs + 32 * c));
          const __m256i lo = _mm256_and_si256(v, low);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
          for (int m = 0; m < MB; ++m) {
            const int8_t* x = xq.q.data() + (m0 + m) * K + b * QK;
            p[m] = _mm256_add_epi16(p[m], _mm256_maddubs_epi16(lo, bcast4(x + 4 * c)));
            p[m] = _mm256_add_epi16(p[m], _mm256_maddubs_epi16(hi, bcast4(x + 16 + 4 * c)));
          }
        }
        for (int m = 0; m < MB; ++m) s0[m] = _mm256_madd_epi16(p[m], _mm256_set1_epi16(1));
#endif
      }
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)rec));
      const __m256 mn = F == Q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(rec + 16))) : d;
      for (int m = 0; m < MB; ++m) {
        const float dx = xq.d[(m0 + m) * (K / QK) + b], sx = xq.s[(m0 + m) * (K / QK) + b];
        const __m256 dot = _mm256_cvtepi32_ps(_mm256_add_epi32(s0[m], s1[m]));
        acc[r][m] = _mm256_fmadd_ps(dot, _mm256_mul_ps(d, _mm256_set1_ps(dx)), acc[r][m]);
        if constexpr (F == Q4_1) acc[r][m] = _mm256_fmadd_ps(mn, _mm256_set1_ps(sx), acc[r][m]);
        if constexpr (F == Q4_0) acc[r][m] = _mm256_fmadd_ps(d, _mm256_set1_ps(-8.0f * sx), acc[r][m]);
        if constexpr (F == Q8_0 && Q8_OFFSET != 0.0f)
          acc[r][m] = _mm256_fmadd_ps(d, _mm256_set1_ps(-Q8_OFFSET * sx), acc[r][m]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) {
      alignas(32) float out[G];
      _mm256_store_ps(out, acc[r][m]);
      const int64_t n0 = (g + r) * G;
      for (int l = 0; l < G && n0 + l < N; ++l) y[m * ldy + n0 + l] = out[l];
    }
}
#else
template <int F, int MB, int R>
inline void group_dot(const QRows& xq, int64_t m0, int64_t K, const uint8_t* w, int64_t grow,
                      int64_t nb, int64_t g, float* y, int64_t ldy, int64_t N) {
  std::vector<float> row(K);
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < G; ++l) {
      const int64_t n = (g + r) * G + l;
      if (n >= N) break;
      dequant_row<F>(w, grow, nb, n, row.data());
      for (int m = 0; m < MB; ++m) {
        float total = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const int8_t* x = xq.q.data() + (m0 + m) * K + b * QK;
          float part = 0.0f;
          for (int k = 0; k < QK; ++k) part += row[b * QK + k] * float(x[k]);
          total += part * xq.d[(m0 + m) * nb + b];
        }
        y[m * ldy + n] = total;
      }
    }
}
#endif

template <int F, int MB>
void groups_kernel(const QRows& xq, int64_t m0, int64_t K, const uint8_t* w, int64_t grow,
                   int64_t nb, int64_t g0, int64_t g1, float* y, int64_t ldy, int64_t N) {
  constexpr int R = MB == 1 ? 2 : 1;
  int64_t g = g0;
  for (; g + R <= g1; g += R) group_dot<F, MB, R>(xq, m0, K, w, grow, nb, g, y, ldy, N);
  for (; g < g1; ++g) group_dot<F, MB, 1>(xq, m0, K, w, grow, nb, g, y, ldy, N);
}

template <int F>
void groups_dispatch(int mb, const QRows& xq, int64_t m0, int64_t K, const uint8_t* w,
                     int64_t grow, int64_t nb, int64_t g0, int64_t g1, float* y, int64_t ldy,
                     int64_t N) {
  switch (mb) {
    case 1: return groups_kernel<F, 1>(xq, m0, K, w, grow, nb, g0, g1, y, ldy, N);
    case 2: return groups_kernel<F, 2>(xq, m0, K, w, grow, nb, g0, g1, y, ldy, N);
    case 3: return groups_kernel<F, 3>(xq, m0, K, w, grow, nb, g0, g1, y, ldy, N);
    case 4: return groups_kernel<F, 4>(xq, m0, K, w, grow, nb, g0, g1, y, ldy, N);
    case 5: return groups_kernel<F, 5>(xq, m0, K, w, grow, nb, g0, g1, y, ldy, N);
    case 6: return groups_kernel<F, 6>(xq, m0, K, w, grow, nb, g0, g1, y, ldy, N);
    case 7: return groups_kernel<F, 7>(xq, m0, K, w, grow, nb, g0, g1, y, ldy, N);
    default: return groups_kernel<F, 8>(xq, m0, K, w, grow, nb, g0, g1, y, ldy, N);
  }
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

// T new tokens per row: qkv (B T, (H + 2 Hkv) D) holds q, k, v of row b's tokens at rows
// b T .. b T + T - 1. Their keys (rotated) and values are written at slots lengths[b] ..
// lengths[b] + T - 1 of the caches (B, Hkv, capacity, D), and token i of row b attends over
// slots [max(0, p + 1 - window), p], p = lengths[b] + i (window <= 0: all): causal attention
// of a chunk after a cache. Returns (B T, H D).
torch::Tensor attend_step(torch::Tensor qkv, torch::Tensor kc, torch::Tensor vc,
                          torch::Tensor lengths, int64_t H, int64_t Hkv, torch::Tensor inv_freq,
                          double scale, int64_t window) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == torch::kFloat && qkv.is_contiguous(),
              "attend_step: qkv must be contiguous float32 (B T, (H + 2 Hkv) D)");
  TORCH_CHECK(kc.dim() == 4 && kc.is_contiguous() && vc.is_contiguous() && kc.sizes() == vc.sizes()
              && kc.scalar_type() == torch::kFloat && vc.scalar_type() == torch::kFloat,
              "attend_step: caches must be contiguous float32 (B, Hkv, capacity, D)");
  const int64_t B = kc.size(0), D = kc.size(3), cap = kc.size(2);
  TORCH_CHECK(B > 0 && qkv.size(0) % B == 0 && kc.size(1) == Hkv &&
              qkv.size(1) == (H + 2 * Hkv) * D && H % Hkv == 0,
              "attend_step: shapes of qkv and caches disagree");
  const int64_t T = qkv.size(0) / B;
  auto len = lengths.to(torch::kLong).contiguous();
  const int64_t* L = len.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(L[b] >= 0 && L[b] + T <= cap, "attend_step: a row's cache is full");
  const bool rope = inv_freq.numel() > 0;
  auto freq = inv_freq.to(torch::kFloat).contiguous();
  TORCH_CHECK(!rope || freq.numel() == D / 2, "attend_step: inv_freq must have D / 2 entries");
  auto y = torch::empty({B * T, H * D}, torch::kFloat);
  const float* src = qkv.data_ptr<float>();
  const float* fr = freq.data_ptr<float>();
  float* K = kc.data_ptr<float>();
  float* V = vc.data_ptr<float>();
  float* out = y.data_ptr<float>();
  const int64_t rep = H / Hkv, row = (H + 2 * Hkv) * D;
  const float sc = float(scale);
  at::parallel_for(0, B * Hkv, 1, [&](int64_t a, int64_t e) {
    std::vector<float> q(rep * D), p, z(rep);
    for (int64_t i = a; i < e; ++i) {
      const int64_t b = i / Hkv, g = i % Hkv;
      const float* kh0 = K + (b * Hkv + g) * cap * D;
      const float* vh0 = V + (b * Hkv + g) * cap * D;
      for (int64_t t = 0; t < T; ++t) {  // the chunk's keys and values first: causal within it
        const float* r = src + (b * T + t) * row;
        float* kslot = K + ((b * Hkv + g) * cap + L[b] + t) * D;
        std::memcpy(kslot, r + (H + g) * D, D * sizeof(float));
        std::memcpy(V + ((b * Hkv + g) * cap + L[b] + t) * D, r + (H + Hkv + g) * D, D * sizeof(float));
        if (rope) rotate(kslot, D, fr, L[b] + t);
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t pos = L[b] + t;
        const float* r = src + (b * T + t) * row;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, pos + 1 - window) : 0, n = pos + 1 - lo;
        const int64_t np = (n + 15) / 16 * 16;  // whole 16-lane chunks for exp_lanes
        const float* kh = kh0 + lo * D;
        const float* vh = vh0 + lo * D;
        // The rep query heads of this key/value head go together: each key and value row is
        // read once for all of them.
        std::memcpy(q.data(), r + g * rep * D, rep * D * sizeof(float));
        if (rope)
          for (int64_t j = 0; j < rep; ++j) rotate(q.data() + j * D, D, fr, pos);
        p.assign(rep * np, -std::numeric_limits<float>::infinity());
        for (int64_t s = 0; s < n; ++s)
          for (int64_t j = 0; j < rep; ++j) p[j * np + s] = dot(q.data() + j * D, kh + s * D, D) * sc;
        for (int64_t j = 0; j < rep; ++j) {
          float* pj = p.data() + j * np;
          const float mx = *std::max_element(pj, pj + n);
          for (int64_t s = 0; s < np; ++s) pj[s] -= mx;  // padding: -inf - mx = -inf -> 0
          for (int64_t s = 0; s < np; s += 16) exp_lanes(pj + s, pj + s);
          z[j] = std::accumulate(pj, pj + n, 0.0f);
        }
        float* o = out + (b * T + t) * H * D + g * rep * D;
        std::fill(o, o + rep * D, 0.0f);
        for (int64_t s = 0; s < n; ++s) {
          const float* vt = vh + s * D;
          for (int64_t j = 0; j < rep; ++j) {
            const float w = p[j * np + s];
            float* oj = o + j * D;
            for (int64_t d = 0; d < D; ++d) oj[d] += w * vt[d];
          }
        }
        for (int64_t j = 0; j < rep; ++j)
          for (int64_t d = 0; d < D; ++d) o[j * D + d] /= z[j];
      }
    }
  });
  return y;
}

torch::Tensor repack(torch::Tensor native, int64_t fmt, int64_t K) {
  TORCH_CHECK(fmt >= 0 && fmt <= 2, "unknown block format code ", fmt);
  TORCH_CHECK(native.dim() == 2 && native.scalar_type() == torch::kUInt8 && K % QK == 0 &&
              native.size(1) == K / QK * native_bytes(int(fmt)),
              "repack expects uint8 (N, K / 32 * block bytes) GGUF blocks");
  native = native.contiguous();
  const int64_t N = native.size(0), nb = K / QK, groups = (N + G - 1) / G;
  auto out = torch::empty({groups, nb * group_bytes(int(fmt))}, torch::kUInt8);
  const uint8_t* src = native.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t row_bytes = native.size(1), grow = out.size(1);
  by_format(fmt, [&](auto F) {
    at::parallel_for(0, groups, 16, [&](int64_t a, int64_t e) {
      for (int64_t g = a; g < e; ++g)
        repack_group<decltype(F)::value>(src + g * G * row_bytes, row_bytes,
                                         std::min<int64_t>(G, N - g * G), nb, dst + g * grow);
    });
  });
  return out;
}

// Rows [0, N) of packed groups w (N rows, K columns) into out (N, K), or the listed rows.
void dequantize_into(const torch::Tensor& w, int64_t fmt, int64_t K, int64_t N, const int64_t* idx,
                     int64_t n, float* o) {
  const int64_t nb = K / QK;
  const uint8_t* wp = w.data_ptr<uint8_t>();
  by_format(fmt, [&](auto F) {
    constexpr int f = decltype(F)::value;
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    if (!idx) {  // the whole weight: group by group, vectorized
      at::parallel_for(0, w.size(0), 4, [&](int64_t a, int64_t e) {
        std::vector<float> scratch(K);
        for (int64_t g = a; g < e; ++g) {
          float* rows[G];
          for (int r = 0; r < G; ++r) rows[r] = g * G + r < N ? o + (g * G + r) * K : scratch.data();
          dequant_group<f>(wp + g * w.size(1), nb, rows);
        }
      });
      return;
    }
#endif
    at::parallel_for(0, n, 16, [&](int64_t a, int64_t e) {
      for (int64_t i = a; i < e; ++i) dequant_row<f>(wp, w.size(1), nb, idx ? idx[i] : i, o + i * K);
    });
  });
}

torch::Tensor dequantize(torch::Tensor w, int64_t fmt, int64_t K, int64_t N,
                         c10::optional<torch::Tensor> rows) {
  check_weight(w, fmt, K, N);
  torch::Tensor r;
  const int64_t* idx = nullptr;
  int64_t n = N;
  if (rows.has_value()) {
    r = rows->to(torch::kLong).contiguous();
    TORCH_CHECK(r.numel() == 0 || (r.min().item<int64_t>() >= 0 && r.max().item<int64_t>() < N),
                "row index outside [0, ", N, ")");
    idx = r.data_ptr<int64_t>();
    n = r.numel();
  }
  auto out = torch::empty({n, K}, torch::kFloat);
  dequantize_into(w, fmt, K, N, idx, n, out.data_ptr<float>());
  return out;
}

torch::Tensor quantize_activations(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.size(1) % QK == 0,
              "quantize_activations expects float32 (M, K) with K a multiple of 32");
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), nb = K / QK;
  QRows xq;
  quantize_rows(x.data_ptr<float>(), M, K, xq);
  auto out = torch::empty({M, K}, torch::kFloat);
  float* o = out.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) o[m * K + k] = xq.d[m * nb + k / QK] * float(xq.q[m * K + k]);
  return out;
}

// x (M, K) times the (N, K) weight. int8: x's blocks rounded to int8 first (the row kernel
// for up to ROW_KERNEL_MAX rows, else the rounded x times the dequantized weight through
// torch's matmul: the same function). float: x as it is, always through the matmul.
torch::Tensor linear(torch::Tensor x, torch::Tensor w, int64_t fmt, int64_t K, int64_t N, bool int8) {
  check_weight(w, fmt, K, N);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K && x.scalar_type() == torch::kFloat,
              "linear expects float32 inputs (M, ", K, ")");
  x = x.contiguous();
  const int64_t M = x.size(0), nb = K / QK, grow = w.size(1), groups = w.size(0);
  if (int8 && M <= ROW_KERNEL_MAX) {
    QRows xq;
    quantize_rows(x.data_ptr<float>(), M, K, xq);
    auto y = torch::empty({M, N}, torch::kFloat);
    const uint8_t* wp = w.data_ptr<uint8_t>();
    float* yp = y.data_ptr<float>();
    by_format(fmt, [&](auto F) {
      at::parallel_for(0, groups, 4, [&](int64_t a, int64_t e) {
        for (int64_t m0 = 0; m0 < M; m0 += 8)
          groups_dispatch<decltype(F)::value>(int(std::min<int64_t>(8, M - m0)), xq, m0, K, wp,
                                               grow, nb, a, e, yp + m0 * N, N, N);
      });
    });
    return y;
  }
  if (int8) x = quantize_activations(x);
  // Slices of about 4 MB of float weights at a time, in one buffer per thread that stays
  // mapped (a fresh 4 MB tensor per slice cost more in page faults than the dequantizing).
  const int64_t slice = std::max<int64_t>(G * 8, ((int64_t(1) << 20) / K) / G * G);
  static thread_local std::vector<float> buffer;
  auto y = torch::empty({M, N}, torch::kFloat);
  for (int64_t n0 = 0; n0 < N; n0 += slice) {  // slice is a multiple of G: whole groups
    const int64_t n1 = std::min(N, n0 + slice);
    auto part = w.narrow(0, n0 / G, (n1 - n0 + G - 1) / G);
    buffer.resize(std::max<size_t>(buffer.size(), size_t((n1 - n0) * K)));
    dequantize_into(part, fmt, K, n1 - n0, nullptr, n1 - n0, buffer.data());
    auto wf = torch::from_blob(buffer.data(), {n1 - n0, K}, torch::kFloat);
    if (n0 == 0 && n1 == N) return at::mm(x, wf.t());
    y.narrow(1, n0, n1 - n0).copy_(at::mm(x, wf.t()));
  }
  return y;
}

// RMSNorm of each row of x (B, D): w * x / sqrt(mean(x^2) + eps).
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor w, double eps) {
  x = x.contiguous();
  const int64_t B = x.size(0), D = x.size(1);
  auto out = torch::empty_like(x);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    double ss = 0.0;
    for (int64_t i = 0; i < D; ++i) ss += double(xp[b * D + i]) * xp[b * D + i];
    const float r = 1.0f / std::sqrt(float(ss / D) + float(eps));
    for (int64_t i = 0; i < D; ++i) o[b * D + i] = wp[i] * (xp[b * D + i] * r);
  }
  return out;
}

// One decode step (T new tokens per row, x (B T, D) row-major by row then token) of a
// pre-norm block, attention then a SwiGLU MLP, every projection quantized (the Llama block
// of seqlab.models.lm.Block):
//   x += o(attend(qkv(norm1(x))));  x += down(silu(gate) * up),  gate|up = gate_up(norm2(x))
// The caches take the new keys and values at slots lengths[b].. as in attend_step. One call
// instead of some forty torch operations and eight Python module calls per layer.
torch::Tensor block_step(torch::Tensor x, torch::Tensor norm1, torch::Tensor norm2, double eps,
                         torch::Tensor qkv_w, int64_t qkv_fmt, int64_t qkv_n,
                         torch::Tensor o_w, int64_t o_fmt,
                         torch::Tensor gu_w, int64_t gu_fmt, int64_t gu_n,
                         torch::Tensor down_w, int64_t down_fmt,
                         torch::Tensor kc, torch::Tensor vc, torch::Tensor lengths, int64_t H,
                         int64_t Hkv, torch::Tensor inv_freq, double scale, int64_t window,
                         bool int8) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat, "block_step: x must be float32 (B, D)");
  const int64_t D = x.size(1);
  auto h = rms_norm(x, norm1, eps);
  auto qkv = linear(h, qkv_w, qkv_fmt, D, qkv_n, int8);
  auto y = attend_step(qkv, kc, vc, lengths, H, Hkv, inv_freq, scale, window);
  auto x1 = x + linear(y, o_w, o_fmt, y.size(1), D, int8);
  h = rms_norm(x1, norm2, eps);
  auto gu = linear(h, gu_w, gu_fmt, D, gu_n, int8);
  const int64_t B = gu.size(0), F = gu_n / 2;
  auto a = torch::empty({B, F}, torch::kFloat);
  const float* g = gu.data_ptr<float>();
  float* ap = a.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < F; ++i) {
      const float gate = g[b * gu_n + i];
      ap[b * F + i] = gate / (1.0f + std::exp(-gate)) * g[b * gu_n + F + i];
    }
  x1 += linear(a, down_w, down_fmt, F, D, int8);
  return x1;
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
            name=name, cpp_sources=[_SOURCE], functions=["linear", "dequantize", "attend_step", "quantize_activations",
                                                      "repack", "rms_norm", "block_step"],
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


def code(fmt: str) -> int:
    """The C++ kernels' number for a block format."""
    if fmt not in _CODE:
        raise ValueError(f"unknown block format {fmt!r}; known formats: {', '.join(FORMATS)}")
    return _CODE[fmt]


ACTIVATIONS = ("int8", "float")


def _int8(activations: str) -> bool:
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations={activations!r} is not known; choose one of "
                         f"{', '.join(ACTIVATIONS)}")
    return activations == "int8"


def in_features(blocks: Tensor, fmt: str) -> int:
    """K of packed ``blocks``."""
    return blocks.shape[1] // (GROUP * BLOCK_BYTES[fmt]) * BLOCK


def linear(x: Tensor, blocks: Tensor, fmt: str, n: int, activations: str = "int8") -> Tensor:
    """``x (M, K) @ Wᵀ`` for the packed (n, K) weight ``blocks``; returns (M, n) float32.

    ``activations="int8"`` (the fast path): each 32-block of each row of x rounded to int8
    with one scale first, so the result is ``quantize_activations(x) @ W.T``. ``"float"``:
    x as it is, through dequantize + matmul (exact, slow at one row).
    """
    return load().linear(x, blocks, code(fmt), in_features(blocks, fmt), n, _int8(activations))


def quantize_activations(x: Tensor) -> Tensor:
    """``x`` (M, K) float32 rounded as ``activations="int8"`` rounds it, back in float32."""
    return load().quantize_activations(x)


def dequantize(blocks: Tensor, fmt: str, n: int, rows: Tensor | None = None) -> Tensor:
    """The float32 (n, K) weight of packed ``blocks`` (only ``rows`` of it when given)."""
    return load().dequantize(blocks, code(fmt), in_features(blocks, fmt), n, rows)


def pack(native: Tensor, fmt: str) -> Tensor:
    """GGUF blocks (N, K / 32 * block bytes), as in a file, in the kernels' layout: rows in
    groups of 8, uint8 (ceil(N / 8), K / 32 * 8 * block bytes). Same bytes, moved."""
    K = native.shape[1] // BLOCK_BYTES[fmt] * BLOCK if fmt in BLOCK_BYTES else 0
    return load().repack(native, code(fmt), K)


def quantize(w: Tensor, fmt: str) -> Tensor:
    """Float weights (N, K) as packed ``fmt`` blocks (``pack(quantize_blocks(w, fmt), fmt)``)."""
    return pack(quantize_blocks(w, fmt), fmt)


def quantize_blocks(w: Tensor, fmt: str) -> Tensor:
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
