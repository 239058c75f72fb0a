"""Compiler flags for the C++ kernels in seqlab.ops, one set per CPU capability.

The kernels are built on the machine that runs them, for the capability torch
reports (AVX512, AVX2, or none), and each build is named after it, so a cache
directory shared between machines never hands one CPU a build for another.
"""

from __future__ import annotations

import platform

import torch

_CAPABILITY_FLAGS = {
    "AVX512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
}


def build_flags() -> tuple[str, list[str]]:
    """``(capability, extra compiler flags)`` for this CPU, e.g. ``("AVX2", ["-mavx2", ...])``.

    An AVX-512 CPU with VNNI (integer dot products) reports ``AVX512_VNNI``.
    """
    capability = torch.backends.cpu.get_cpu_capability() if platform.machine() in (
        "x86_64", "AMD64") else "DEFAULT"
    flags = list(_CAPABILITY_FLAGS.get(capability, []))
    if capability == "AVX512" and "avx512_vnni" in _cpu_flags():
        capability, flags = "AVX512_VNNI", flags + ["-mavx512vnni"]
    return capability, flags


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# C++ shared by the kernels' sources: 16-lane float vectors and a vectorized exp.
EXP_LANES = r"""
typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

// exp over 16 float lanes (Cephes expf: x = n ln2 + r, degree-6 polynomial in r,
// times 2^n built in the exponent bits; about 1 ulp). GCC's vector extensions lower
// it to AVX-512, AVX2 or SSE, whatever the build targets. Below -87.34 (where expf
// leaves the normal range) it returns 0, above 88.37 inf, and NaN stays NaN.
inline void exp_lanes(const float* in, float* out) {
  vf16 x0, x;
  std::memcpy(&x0, in, sizeof(x0));
  const vf16 zero = {};
  const vi16 low = x0 < -87.33654475f, high = x0 > 88.3762626647949f, nan = x0 != x0;
  x = low ? zero - 87.33654475f : x0;
  x = high ? zero + 88.3762626647949f : x;
  x = nan ? zero : x;
  const float magic = 12582912.0f;                      // 1.5 * 2^23: adding it rounds
  const vf16 t = x * 1.44269504088896341f + magic;      // n + magic
  const vf16 fn = t - magic;
  const vi16 n = (vi16)t - (vi16)(zero + magic);
  const vf16 r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
  vf16 p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  vf16 y = (p * r * r + r + 1.0f) * (vf16)((n + 127) << 23);
  y = low ? zero : y;
  y = high ? zero + std::numeric_limits<float>::infinity() : y;
  y = nan ? x0 : y;
  std::memcpy(out, &y, sizeof(y));
}

"""
