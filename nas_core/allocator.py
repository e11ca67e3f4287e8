"""Keep the memory a CPU step frees for the next step, instead of handing it back to the system.

A search step on CPU allocates and frees several GB of activations per pass. glibc's malloc serves
tensors above its mmap threshold (128 KiB, raised as chunks are freed) from fresh mappings and
returns the heap's free top to the system past its trim threshold; every later pass then takes a
page fault per 4 KiB it touches again, zero-filled by the kernel. At the paper's search config
that was about 400,000 faults and 5 s of system time in a 21 s second-order step
(docs/performance.md). Raising both thresholds keeps the memory in the process: the peak is the
same, but the resident size no longer falls between passes.

The ``nas`` program calls :func:`reuse_freed_memory` when it starts; a program embedding the
engine may call it too. glibc's own variables ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` win: where either is set, malloc is left as the user set it (so
``MALLOC_TRIM_THRESHOLD_=131072`` restores glibc's default behaviour). Other C libraries are left
alone. The setting changes no result, only where memory comes from.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

#: mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit (half its heap size): tensors up to this
#: size come from the heap, where freed chunks are reused; larger ones still get mappings of their own
MMAP_THRESHOLD = 32 << 20
#: mallopt(3): -1 turns the trimming of the heap's free top off
TRIM_THRESHOLD = -1
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def on_glibc() -> bool:
    """Whether this process runs on Linux with glibc, whose malloc this module sets."""
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def reuse_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (see the module's docstring). Returns
    whether it did: False off Linux's glibc, where the user set malloc's thresholds, or where
    glibc refused a value."""
    if not on_glibc() or any(name in os.environ for name in USER_VARIABLES):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the trim threshold first: setting either fixes both (glibc stops adjusting them itself)
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
