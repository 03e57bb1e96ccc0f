"""A small fork-safe thread pool for the fast ops' chunks, and BLAS's thread count, read.

The pool. NumPy does one thing at a time in one thread, but releases the GIL inside copies,
ufunc loops and matrix products. `run_chunks(fn, chunks)` hands the chunks to the calling thread
and MINIRES_NUM_THREADS - 1 helper threads (default: the cores the process may use), each taking
the next chunk when it is done with one, so the chunks run on all cores at once. The caller works
too and never waits for a helper to wake up: on a busy machine a helper that starts late finds
nothing left, and the call costs what one thread would.

BLAS. A library call never changes BLAS's thread count: that setting belongs to the whole
process, and limiting it would slow every other thread of the user's program. minires reads what
the process asked for (`blas_runs_one_thread`): then each product is one BLAS call, else it is
cut into pieces that BLAS keeps in the calling thread (fast/gemm.py). Only the training
commands, which own their process, set BLAS to one thread (`one_blas_thread_for_this_process`,
measured in benchmarks/fast_pieces.py).

Fork. A child made by `os.fork` (multiprocessing, a grader) inherits the pool's bookkeeping but
none of its threads; `os.register_at_fork` forgets the pool in the child, whose first fast op
starts a pool of its own instead of waiting forever on threads that do not exist.
"""
import contextlib
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


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def _blas_thread_setting(environ):
    """The thread count the environment gives OpenBLAS (NumPy's wheels), in OpenBLAS's order:
    the first of BLAS_THREAD_VARIABLES that is set; None when none is."""
    for name in BLAS_THREAD_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


BLAS_ONE_THREAD = _blas_thread_setting(os.environ) == "1"  # read at the first fast op


def blas_runs_one_thread():
    """True when BLAS runs one thread: the environment said so at the first fast op (e.g.
    OPENBLAS_NUM_THREADS=1), or a training command set it (one_blas_thread_for_this_process).

    A limit set at run time by other code is not seen: then only the speed suffers (products
    in pieces where one call would do). The two ways agree to rounding, not bit for bit."""
    return BLAS_ONE_THREAD


@contextlib.contextmanager
def one_blas_thread_for_this_process():
    """BLAS on one thread for the whole process while the block runs (yields True), and the pool's
    threads each multiplying chunks of their own (see blas_runs_one_thread).

    Only for programs that own their process: the training commands (`minires train`,
    `minires degradation`) run in it; a library call never does, since the setting is the
    process's. It yields False, and changes nothing, where the user has set BLAS's threads
    (OPENBLAS_NUM_THREADS and the like) or threadpoolctl, which does the setting, is missing.
    """
    global BLAS_ONE_THREAD
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is None or _blas_thread_setting(os.environ) is not None:
        yield False
        return
    before = BLAS_ONE_THREAD
    with threadpool_limits(limits=1, user_api="blas"):
        BLAS_ONE_THREAD = True
        try:
            yield True
        finally:
            BLAS_ONE_THREAD = before


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
