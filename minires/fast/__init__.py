"""The CPU speed layer: the same conv2d and batch_norm as minires.ops, laid out to run fast.

    conv.py     conv2d through channels-last im2col and one large GEMM per product, the batch
                in chunks over a thread pool
    gemm.py     the conv's matrix products, each kept in the thread that calls it
    norm.py     batch_norm on the (rows, channels) matrix, fewer passes over memory
    threads.py  a small fork-safe thread pool; BLAS's thread count is read, never set by a
                library call (only the training commands, which own their process, set it)
    memory.py   per-thread work buffers reused across calls (op outputs are ordinary arrays)
    gpu.py      conv2d and batch_norm written for CuPy (no cols kept for backward), opt-in:
                MINIRES_GPU_FAST_OPS=1, off by default until they have run on a GPU

Nothing here is needed to learn from or to run minires: `minires.functional` imports these
modules at their first use, for NumPy arrays, when this folder exists and fast ops are on, and
runs the readable references in `minires.ops` otherwise (env MINIRES_FAST_OPS=0, or
`minires.use_reference_ops()`). Each fast op subclasses its reference op (same checks, same
errors, same running statistics) and is pinned to it by tests/fast/. Deleting this folder and
tests/fast/ leaves minires running, on the references, and its test suite green. What each
piece earns is measured by benchmarks/fast_pieces.py.
"""
import numpy as np


def compute_dtype(dtype):
    """The dtype a fast op computes in: float16 in float32 (NumPy has no float16 BLAS, and its
    sums of squares overflow and lose every digit); the results go back to float16."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)
