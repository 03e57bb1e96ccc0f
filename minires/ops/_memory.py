"""Freed memory stays in the process: glibc's malloc, set for a training loop.

A training step allocates and frees the same arrays every step: activations, gradients, the
convolution's workspaces (hundreds of MB for a ResNet-20 at batch 128). By default glibc's malloc
hands large blocks back to the kernel when they are freed (blocks above M_MMAP_THRESHOLD are
unmapped, and the heap is trimmed above M_TRIM_THRESHOLD), so the next step's arrays arrive as
fresh pages that the kernel zeroes at first touch. Measured on a ResNet-20 step at batch 128
(2-core CPU, float32): about 40,000 page faults and 200 ms of kernel time per step, a quarter of
the step. With both thresholds raised to KEEP_BYTES, freed blocks stay in the process and the next
step reuses them: no page faults after the first step. The price is the one every caching
allocator pays (CuPy's and PyTorch's on the GPU): between steps the process keeps the memory it
used, instead of returning it to the system.

`keep_freed_memory()` applies it once, on Linux with glibc, when the first fast op runs on NumPy
arrays (ops/conv_fast.py, ops/norm_fast.py); env MINIRES_KEEP_FREED_MEMORY=0 leaves malloc as it
is. The setting is the process's: every library in it (PyTorch too) allocates the same way.
"""
import ctypes
import os
import sys

KEEP_BYTES = 2**30           # blocks up to 1 GiB come from (and go back to) the heap
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's <malloc.h>

_applied = False


def glibc_mallopt():
    """glibc's `mallopt`, or None where the C library has none (not Linux, or musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory():
    """Raise glibc's trim and mmap thresholds (once per process); True if malloc was set."""
    global _applied
    if _applied or os.environ.get("MINIRES_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    _applied = True
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES))
