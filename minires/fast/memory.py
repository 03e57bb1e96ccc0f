"""Memory: work buffers and op outputs that minires reuses, and glibc's malloc as the user left it.

Why. A page that the process touches for the first time costs a trip into the kernel, which
maps and zeroes it (measured on the 2-core machine minires is developed on: filling a fresh 200
MB array ran at 0.36-6 GB/s, a reused one at 15-27 GB/s). glibc hands large freed blocks back to the kernel, so a training step whose arrays are
all freed by the end of its backward gets fresh pages again in the next forward: a ResNet-20
step at batch 128 took 6,000 to 35,000 such faults, 70-250 ms of CPU time.

Work buffers. A training step makes and drops the same scratch arrays every step (the im2col
columns of every chunk, the padded inputs). Made fresh each time, large ones come as new pages
that the kernel zeroes at first touch. `workspace(name, shape, dtype)` hands out a view of a
buffer that belongs to the calling thread and is kept for its next call: each pool thread
grows its own buffers to the largest size it has needed, and reuses them from then on. A
buffer's contents are valid only until the same thread asks for the same name again.

Lent outputs. The arrays a fast op returns (a conv's y, batch norm's y, their input gradients)
live on after the op: the graph keeps them until the backward. `lend(shape, dtype)` gives such
an array out of minires' own cache of blocks. The array, and every view of it, keeps its block
out; when the last of them is gone, the block goes back to the cache, and the next `lend` of the
same size takes it, with its pages already mapped. A training step asks for the same sizes every
step, so from the second step on its outputs cost no page faults (a ResNet-20 step at batch
128: 6,000-35,000 faults before, about 1,000 after, and 10-15% faster). The price: between
steps the process keeps those blocks (433 MB for that step, whose outputs peak at 380 MB at
once). The cache keeps at most 1.5 times as many idle bytes as were ever lent at once,
the oldest idle blocks going first (`cache_stats()`), and `empty_cache()` hands every idle
block back to the system.

malloc. By default glibc hands large freed blocks back to the kernel. A user who would rather keep
them (every step's arrays then reuse the last step's pages, as a caching allocator does; the
price is that the process keeps its peak memory) asks for it with env MINIRES_KEEP_FREED_MEMORY=1,
or by calling `keep_freed_memory()`. It raises glibc's trim and mmap thresholds for the whole
process (every library in it allocates that way then), so minires never does it unasked.
"""
import collections
import ctypes
import mmap
import os
import sys
import threading

import numpy as np

KEEP_BYTES = 2**30           # blocks up to 1 GiB come from (and go back to) the heap
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's <malloc.h>

_applied = False
_asked = False  # MINIRES_KEEP_FREED_MEMORY=1 seen and acted on
_buffers = threading.local()  # per thread: {name: flat byte buffer}


def nbytes_of(shape, dtype):
    """The bytes an array of `shape` and `dtype` (a np.dtype) takes."""
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def workspace(name, shape, dtype):
    """An uninitialised array of `shape` and `dtype`, a view of this thread's buffer `name`."""
    dtype = np.dtype(dtype)
    nbytes = nbytes_of(shape, dtype)
    buffers = _buffers.__dict__
    buffer = buffers.get(name)
    if buffer is None or buffer.size < nbytes:
        buffer = buffers[name] = np.empty(nbytes, dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


PAGE = 4096  # blocks come in whole pages, so sizes that differ by a few bytes share them
IDLE_CAP = 1.5  # idle bytes kept: at most this many times the most ever lent at once


class _Loan:
    """A block of the cache while it is lent out. NumPy makes the lent array, and every view of
    it, refer to this object (through `__array_interface__`), so it lives as long as the last of
    them, and then gives the block back."""

    def __init__(self, block, shape, dtype):
        self.block = block  # the cache's uint8 array, at least as large as the lent array
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                    "data": (block.ctypes.data, False)}

    def __del__(self):
        _cache.give_back(self.block)


def _mapped_block(size):
    """`size` bytes of new pages from the kernel (an anonymous mmap), as a uint8 array. The mapping
    lives exactly as long as the array, so a block the cache lets go of is back with the system at
    once. From malloc, many were not: glibc serves blocks under its mmap threshold (which grows to
    32 MiB) from a heap it shrinks only at its top (after a ResNet-56 step, empty_cache() let go
    of 256 MiB of blocks and the process shrank by 139 MiB; with mapped blocks, by 258 MiB)."""
    return np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8)


class _Cache:
    """Idle blocks, oldest given back first, and the bytes lent out now and at most."""

    def __init__(self):
        # re-entrant: the garbage collector may free a lent array (and so call give_back) in
        # the middle of any allocation, also one made while this thread holds the lock
        self.lock = threading.RLock()
        self.idle = collections.OrderedDict()         # id(block) -> block, oldest first
        self.idle_of_size = collections.defaultdict(list)  # size -> ids of its idle blocks
        self.idle_bytes = self.lent_bytes = self.peak_lent_bytes = self.made_bytes = 0

    def take(self, size):
        """The idle block of `size` bytes given back last, else a new one."""
        with self.lock:
            ids = self.idle_of_size.get(size)
            block = self.idle.pop(ids.pop()) if ids else None
            if block is not None:
                self.idle_bytes -= size
            else:
                self.made_bytes += size
            self.lent_bytes += size
            self.peak_lent_bytes = max(self.peak_lent_bytes, self.lent_bytes)
        return _mapped_block(size) if block is None else block

    def give_back(self, block):
        """`block` is idle again. The oldest idle blocks go back to the system while more than
        IDLE_CAP times the most ever lent at once is idle. Oldest: blocks of sizes no longer
        asked for (another batch size, another model) go first, not the ones the next step will
        take. More than once: a step gives blocks back and takes them in another order than the
        last, and with a cap of once a ResNet-20 step at batch 128 (outputs peaking at 354 MiB)
        made 43 MiB of blocks anew every step; with 1.25 or more, none, also after switching to
        batch 64 and back."""
        with self.lock:
            self.lent_bytes -= block.size
            self.idle[id(block)] = block
            self.idle_of_size[block.size].append(id(block))
            self.idle_bytes += block.size
            while self.idle_bytes > IDLE_CAP * self.peak_lent_bytes:
                key, oldest = self.idle.popitem(last=False)
                self.idle_of_size[oldest.size].remove(key)
                self.idle_bytes -= oldest.size

    def clear(self):
        with self.lock:
            self.idle.clear()
            self.idle_of_size.clear()
            self.idle_bytes = 0


_cache = _Cache()


def lend(shape, dtype):
    """An uninitialised array of `shape` and `dtype` from minires' cache of blocks (see "Lent
    outputs" above): like np.empty, but its memory goes back to the cache, not to the system,
    when the array and its views are gone."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:  # raw bytes are not Python objects: NumPy would read garbage pointers
        raise TypeError(f"minires.fast.memory.lend: dtype {dtype} holds Python objects; "
                        f"only plain numbers can be lent (shape {tuple(shape)})")
    shape = tuple(int(n) for n in shape)
    size = max(PAGE, -(-nbytes_of(shape, dtype) // PAGE) * PAGE)  # whole pages
    return np.asarray(_Loan(_cache.take(size), shape, dtype))


def cache_stats():
    """The cache of lent blocks now: bytes idle in it, lent out, lent out at most at once, and
    made new since the process started (a step that reuses its blocks adds nothing there)."""
    with _cache.lock:
        return {"idle_bytes": _cache.idle_bytes, "lent_bytes": _cache.lent_bytes,
                "peak_lent_bytes": _cache.peak_lent_bytes, "made_bytes": _cache.made_bytes}


def empty_cache():
    """Hand every idle block back to the system (the blocks lent out now go back to the cache
    as usual when their arrays are gone)."""
    _cache.clear()


def _new_cache_lock_in_child():
    """After fork, in the child: a lock that another thread of the parent held stays held."""
    _cache.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_cache_lock_in_child)


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
