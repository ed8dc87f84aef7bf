"""The process's memory allocator, tuned for normsearch's own processes (the ``normsearch`` command and the
worker processes it spawns; a Python program that imports normsearch keeps its allocator as it is).

glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB at start) with fresh pages from the
kernel and gives them back on ``free``, and returns freed memory at the top of its heap to the kernel
beyond the trim threshold. A CPU forward+backward allocates and frees several activation-sized tensors per
layer, so each one pays a page fault per 4 KiB page, again on every step. With the mmap threshold at glibc's
largest (32 MiB) and the trim threshold at 1 GiB, freed tensors are reused from the heap instead, as
PyTorch's performance guide obtains by swapping in jemalloc or TCMalloc. Measured on (32, 64, 32, 32)
forward+backward, one thread, in ``benchmarks/allocator.py``. The cost: up to 1 GiB of freed memory stays
with the process for reuse. Larger tensors are still mapped and unmapped each time.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameters (malloc.h)."""
MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks up to this size come from the heap (glibc's maximum, its DEFAULT_MMAP_THRESHOLD_MAX on 64 bits)."""
TRIM_THRESHOLD = 1024 * 1024 * 1024
"""Freed memory at the top of the heap goes back to the kernel only beyond this."""


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) for this process;
    True if set, False where the C library has no ``mallopt`` or refuses them (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = ["keep_freed_memory"]
