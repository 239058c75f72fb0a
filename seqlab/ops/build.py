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
    """``(capability, extra compiler flags)`` for this CPU, e.g. ``("AVX2", ["-mavx2", ...])``."""
    capability = torch.backends.cpu.get_cpu_capability() if platform.machine() in (
        "x86_64", "AMD64") else "DEFAULT"
    return capability, list(_CAPABILITY_FLAGS.get(capability, []))
