"""Memory: work buffers that minires reuses, and glibc's malloc kept as the user left it.

Work buffers. A training step makes and drops the same scratch arrays every step (the im2col
columns of every chunk, the padded inputs). Made fresh each time, large ones come as new pages
that the kernel zeroes at first touch. `workspace(name, shape, dtype)` hands out a view of a
buffer that belongs to the calling thread and is kept for its next call: each pool thread
grows its own buffers to the largest size it has needed, and reuses them from then on. A
buffer's contents are valid only until the same thread asks for the same name again.

malloc. By default glibc hands large freed blocks back to the kernel. A user who would rather keep
them (every step's arrays then reuse the last step's pages, as a caching allocator does; the
price is that the process keeps its peak memory) asks for it with env MINIRES_KEEP_FREED_MEMORY=1,
or by calling `keep_freed_memory()`. It raises glibc's trim and mmap thresholds for the whole
process (every library in it allocates that way then), so minires never does it unasked.
"""
import ctypes
import os
import sys
import threading

import numpy as np

KEEP_BYTES = 2**30           # blocks up to 1 GiB come from (and go back to) the heap
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's <malloc.h>

_applied = False
_asked = False  # MINIRES_KEEP_FREED_MEMORY=1 seen and acted on
_buffers = threading.local()  # per thread: {name: flat byte buffer}


def workspace(name, shape, dtype):
    """An uninitialised array of `shape` and `dtype`, a view of this thread's buffer `name`."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffers = _buffers.__dict__
    buffer = buffers.get(name)
    if buffer is None or buffer.size < nbytes:
        buffer = buffers[name] = np.empty(nbytes, dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def glibc_mallopt():
    """glibc's `mallopt`, or None where the C library has none (not Linux, or musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory():
    """Raise glibc's trim and mmap thresholds, for the whole process; True if malloc was set.

    Only on request: call it, or set MINIRES_KEEP_FREED_MEMORY=1 (the fast ops then call it).
    """
    global _applied
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    _applied = (bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
                and bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)))
    return _applied


def keep_freed_memory_if_asked():
    """keep_freed_memory() once per process, if env MINIRES_KEEP_FREED_MEMORY=1 asks for it."""
    global _asked
    if not _asked and os.environ.get("MINIRES_KEEP_FREED_MEMORY", "").strip() == "1":
        _asked = True
        keep_freed_memory()
