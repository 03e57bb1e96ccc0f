"""A small fork-safe thread pool for the fast ops' chunks.

The pool. NumPy does one thing at a time in one thread, but releases the GIL inside copies,
ufunc loops and matrix products. `run_chunks(fn, chunks)` hands the chunks to the calling thread
and MINIRES_NUM_THREADS - 1 helper threads (default: the cores the process may use), each taking
the next chunk when it is done with one, so the chunks run on all cores at once. The caller works
too and never waits for a helper to wake up: on a busy machine a helper that starts late finds
nothing left, and the call costs what one thread would.

BLAS. minires never changes BLAS's thread count: that setting belongs to the whole process. So
that a pool thread's product never wakes BLAS's own threads, fast/gemm.py cuts each product into
pieces that OpenBLAS keeps in the calling thread.

Fork. A child made by `os.fork` (multiprocessing, a grader) inherits the pool's bookkeeping but
none of its threads; `os.register_at_fork` forgets the pool in the child, whose first fast op
starts a pool of its own instead of waiting forever on threads that do not exist.
"""
import contextvars
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor


def _usable_cores():
    """The cores this process may run on (taskset, a container's cpuset), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


CORES = _usable_cores()  # asked once: each call reads the system's CPU list

_lock = threading.Lock()
_pool, _pool_size = None, 0


def _forget_pool_in_child():
    """After fork, in the child: the parent's helper threads are not there; start afresh."""
    global _lock, _pool, _pool_size
    _lock, _pool, _pool_size = threading.Lock(), None, 0


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def num_threads():
    """Threads that work on chunks: env MINIRES_NUM_THREADS, else the cores this process may use."""
    try:
        return max(1, int(os.environ.get("MINIRES_NUM_THREADS", "") or CORES))
    except ValueError:
        return CORES


def _pool_of(size):
    """The shared pool of helpers, remade when MINIRES_NUM_THREADS asks for another size."""
    global _pool, _pool_size
    with _lock:
        if _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(size, thread_name_prefix="minires"), size
        return _pool


def run_chunks(fn, chunks):
    """[fn(chunk) for chunk in chunks], the calls spread over the calling thread and the pool's
    helpers (see the module docstring). Helpers run in a copy of the caller's context, so NumPy's
    floating-point error settings (np.errstate, np.seterr: context variables) apply to every
    chunk as to the caller's own."""
    size = min(num_threads(), len(chunks))
    if size <= 1:
        return [fn(chunk) for chunk in chunks]
    results, next_index = [None] * len(chunks), itertools.count()  # shared: next() is atomic
    errors, finished, all_done = [], itertools.count(1), threading.Event()

    def work():
        for i in next_index:  # the next chunk that no thread has taken
            if i >= len(chunks):
                return
            try:
                results[i] = fn(chunks[i])
            except BaseException as error:  # re-raised in the caller
                errors.append(error)
            if next(finished) == len(chunks):
                all_done.set()
    pool = _pool_of(size - 1)
    for _ in range(size - 1):  # in a copy of the caller's context: its np.errstate holds there
        pool.submit(contextvars.copy_context().run, work)
    work()
    all_done.wait()
    if errors:
        raise errors[0]
    return results


def split(n, parts):
    """About equal slices of range(n): `parts` of them, or n when n is smaller."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
