"""The allocator setting is applied where glibc is, and is harmless to call twice."""

import platform
import sys

from seqlab.bench.alloc import retain_freed_memory


def test_applies_on_linux_with_glibc_only():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is glibc
    assert retain_freed_memory() is glibc
