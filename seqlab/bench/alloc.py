"""Keep freed memory in the process heap (glibc), so CPU training steps stop page-faulting.

PyTorch's CPU tensors come from glibc ``malloc``. Blocks above the mmap
threshold (or at the top of the heap above the trim threshold) go back to
the kernel when freed, and the next training step faults the same pages in
again, zero-filled: on the MQAR probe cell (batch 256 x 256 tokens, width 64,
16 MiB activations, 128 MiB logits) that was ~20% of a CPU step. Raising the
thresholds keeps the process at its peak footprint instead, which is what a
training process reaches anyway.

This is a process-wide setting, so only entry points (the ``seqlab bench``
command, benchmark scripts) call it, and they say so in their output.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def retain_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds high; True when applied (Linux with glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    ok &= mallopt(_M_TOP_PAD, 256 << 20)
    ok &= mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    return bool(ok)
