"""Every CPU core for the big ops: a small thread pool, with BLAS held to one thread inside it.

NumPy does one thing at a time in one thread, except BLAS (the matrix products), which starts
threads of its own. The fast convolution and batch norm (ops/conv_fast.py, ops/norm_fast.py) cut
the batch into chunks that the calling thread and a pool of helper threads take in turn: NumPy
releases the GIL inside copies, ufunc loops and BLAS calls, so the chunks run on all cores at once
(measured: ResNet-20, batch 128, 2 cores: 1.6x the steps per second of one thread). While they
work, BLAS is held at one thread per call (through `threadpoolctl`), else each thread would start
BLAS threads of its own and the two kinds would fight over the cores.

MINIRES_NUM_THREADS threads work on the chunks (default: the number of cores): the caller and
that many minus one helpers; 1 runs every chunk in the calling thread, in order.
"""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

CORES = os.cpu_count() or 1  # asked once: each call reads the system's CPU list (6 us here)

_lock = threading.Lock()
_pool, _pool_size = None, 0
_blas = None  # a ThreadpoolController, made on first use (it scans the loaded libraries)


def num_threads():
    """Threads in the pool: env MINIRES_NUM_THREADS, else the number of cores."""
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


def _blas_controller():
    global _blas
    with _lock:
        if _blas is None:
            _blas = ThreadpoolController()
        return _blas


def run_chunks(fn, chunks):
    """[fn(chunk) for chunk in chunks], the calls spread over the calling thread and the pool's
    helpers (BLAS at one thread). Each thread takes the next chunk when it is done with one. The
    caller works too: when it only waited, waking at each finished chunk, it took a core from the
    workers (ResNet-20 step, 2 cores: 10% faster at batch 32, 15% at batch 128 with the caller
    working)."""
    size = min(num_threads(), len(chunks))
    if size <= 1:
        return [fn(chunk) for chunk in chunks]
    results, next_index = [None] * len(chunks), itertools.count()  # shared: next() is atomic

    def work():
        for i in next_index:  # the next chunk that no thread has taken
            if i >= len(chunks):
                return
            results[i] = fn(chunks[i])
    with _blas_controller().limit(limits=1, user_api="blas"):
        pool = _pool_of(size - 1)
        helpers = [pool.submit(work) for _ in range(size - 1)]
        try:
            work()
        finally:
            for helper in helpers:
                helper.result()
    return results


def split(n, parts):
    """About equal slices of range(n): `parts` of them, or n when n is smaller."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
