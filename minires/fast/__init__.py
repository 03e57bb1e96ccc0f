"""The CPU speed layer: the same conv2d, batch_norm, relu and residual_add as minires.ops, laid
out to run fast.

    conv.py     conv2d through channels-last im2col and one large GEMM per product
    norm.py     batch_norm on the (rows, channels) matrix, fewer passes over memory
    elementwise.py  relu and residual_add on the flat memory of their inputs, over the pool
    gemm.py     the conv's matrix products: threaded by BLAS, or kept in the calling thread
                (one call where BLAS runs one thread, else pieces under OpenBLAS's threshold)
    threads.py  a small fork-safe thread pool for copies, elementwise work and the products
                kept in one thread; BLAS's thread count is read, never set by a library call
                (only the training commands, which own their process, set it)
    memory.py   per-thread work buffers reused across calls; op outputs lent from a cache of
                blocks that outlives a step; glibc's malloc only on request
    gpu.py      conv2d and batch_norm written for CuPy (no cols kept for backward), opt-in:
                MINIRES_GPU_FAST_OPS=1, off by default until they have run on a GPU

Nothing here is needed to learn from or to run minires: `minires.functional` uses these ops for
NumPy arrays when this folder exists and fast ops are on, and the readable references in
`minires.ops` otherwise (env MINIRES_FAST_OPS=0, or `minires.use_reference_ops()`). Each fast op
subclasses its reference op (same checks, same errors, same running statistics) and is pinned to
it by tests/test_fast_ops.py. This folder can be removed in one commit (`git rm -r minires/fast`
and its test file), and minires still runs, on the references.
"""
import numpy as np


def compute_dtype(dtype):
    """The dtype a fast op computes in: float16 in float32 (NumPy has no float16 BLAS, and its
    sums of squares overflow and lose every digit); the results go back to float16."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)
