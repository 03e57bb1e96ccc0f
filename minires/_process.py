"""What the `minires` commands may set for their own process at start-up; the library never does.

malloc. glibc serves large allocations (above its mmap threshold, which starts at 128 KiB and
grows up to 32 MiB) with fresh pages from the kernel, and gives them back when they are freed.
A training step allocates its activations, frees them by the end of its backward, and allocates
the same sizes again in the next step, so every step the kernel maps and zeroes new pages: a
page fault per 4 KiB at first touch. `keep_freed_memory()` raises glibc's mmap and trim
thresholds to 1 GiB, so that those blocks come from the heap and freed ones stay there for the
next step to reuse: the process keeps its peak memory between steps, as a caching allocator
does. That changes malloc for every library in the process, so only a program that owns its
process calls it (the `minires` console commands, at start-up); `import minires` and every op
leave malloc as the user left it.

Measured on 2026-12-07 (ResNet-20, batch 128, minires's SGD step, median of 3 in a fresh
process per run, three runs each, taking turns, on 2 cores at load 13-20): the CPU time of a
step (all threads, page faults included) was 0.89-0.91 s with it and 1.02-1.21 s without; wall
time at that load could not tell the two apart (`benchmarks/train_step.py --keep-freed-memory`
times it beside PyTorch).
"""
import ctypes
import sys

KEEP_BYTES = 2**30  # blocks up to 1 GiB come from the heap, and stay there when freed
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters, from glibc's <malloc.h>


def _glibc_mallopt():
    """glibc's `mallopt`, or None where the C library has none (not Linux, or musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory():
    """Raise glibc's mmap and trim thresholds for this whole process (see the module docstring).
    True if malloc took both settings; False, changing nothing, where there is no glibc."""
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)) and bool(
        mallopt(M_MMAP_THRESHOLD, KEEP_BYTES))
