"""Matrix products for the conv's chunks: threaded by BLAS, or kept in the calling thread.

Two sets of the same two products, chosen per conv by fast/conv.py's `each_chunk`:

    threaded        plain NumPy: BLAS spreads each product over its own threads (used by the
                    calling thread, one chunk at a time)
    in_this_thread  each product computed in the thread that calls it (used by the pool's threads,
                    each on a chunk of its own): one call where BLAS runs one thread, else a stack
                    of pieces small enough that BLAS keeps each in the calling thread

    matmul(a, b, out)         out = a @ b        a (R, K), b (K, N)
    matmul_tn(a, b, columns)  a^T @ b            a (R, M), b (R, N) -> (M, N)

Why pieces. OpenBLAS (what NumPy's wheels ship) splits a product over its threads when
M*N*K >= 2 * 65536 * 4 (measured here: (227, 144) @ (144, 16) runs on one core, (228, ...) on
two), and after a split product its helper threads spin for a while on the cores, slowing what
runs next (fast/threads.py). A stack of pieces under that line, `np.matmul` over a 3-D view, is one
NumPy call that loops in C over the pieces and never wakes a BLAS thread, so two pool threads can
each multiply at once with no thread count changed anywhere. The price: BLAS packs the right-hand
matrix again for every piece, so pieces with few rows run slower per core than one call: about
20% with 16 channels ((R, 144) @ (144, 16): pieces of 227 rows), more with 64 channels
((R, 576) @ (576, 64): pieces of 14 rows). Measured on 2 cores with the ops' outputs lent
(fast/memory.py), the spin costs more than that: with every CIFAR conv in pieces a ResNet-56 step
took 2.37-2.42 s against 2.60-2.96 s with only the 16-channel convs in pieces (3 runs each,
alternating; ResNet-20: 0.81-0.87 s against 0.90-0.92 s). Wider convs (128 channels and up, in
the ImageNet ResNets) would get pieces of 3 rows or fewer, little more than a row-by-row
product, so `fits_in_pieces` asks for MIN_PIECE_ROWS and those stay threaded.
Other BLAS libraries compute the same products (to rounding); only the speed may differ.
"""
import types

import numpy as np

from .threads import blas_runs_one_thread

SINGLE_THREAD_MNK = 2 * 65536 * 4 - 1  # the largest M*N*K that OpenBLAS multiplies in one thread
MIN_PIECE_ROWS = 8  # fewer rows per piece: little more than a row-by-row product


def rows_per_piece(m, n):
    """Rows per piece of a product whose other two sizes are m and n."""
    return max(1, SINGLE_THREAD_MNK // (m * n))


def fits_in_pieces(*sizes):
    """Whether products with these (other two sizes) pairs run well as pieces in one thread."""
    return all(rows_per_piece(m, n) >= MIN_PIECE_ROWS for m, n in sizes)


def _matmul_threaded(a, b, out):
    return np.matmul(a, b, out=out)


def _matmul_tn_threaded(a, b, columns=None):
    return a.T @ b


def _matmul_in_this_thread(a, b, out):
    """out (R, N) = a (R, K) @ b (K, N), in this thread; out must be C-contiguous (its pieces are
    views of it)."""
    if not out.flags.c_contiguous:
        raise ValueError(f"fast.gemm.matmul: out {out.shape} must be C-contiguous")
    if blas_runs_one_thread():
        return np.matmul(a, b, out=out)
    rows, k = a.shape
    per = rows_per_piece(k, b.shape[1])
    whole = rows - rows % per
    if whole:
        np.matmul(a[:whole].reshape(-1, per, k), b, out=out[:whole].reshape(-1, per, out.shape[1]))
    if whole < rows:
        np.matmul(a[whole:], b, out=out[whole:])
    return out


def _matmul_tn_in_this_thread(a, b, columns=None):
    """a (R, M)^T @ b (R, N), in this thread, as the sum over pieces of rows.

    Each piece gives an (M, N) block of partial sums. With wide b, pieces under the line would
    have so few rows that those blocks outweigh the rows they come from, so b's columns go
    `columns` at a time (a divisor of N: one kernel offset's channels in the conv), which lets
    each piece take more rows."""
    if blas_runs_one_thread():
        return a.T @ b
    rows, m = a.shape
    n = b.shape[1]
    columns = columns or n
    per = rows_per_piece(m, columns)
    whole = rows - rows % per
    total = np.zeros((m, n), dtype=np.result_type(a, b))
    for start, stop, pieces in ((0, whole, whole // per), (whole, rows, 1)):
        if stop > start:
            total += _sum_of_piece_products(a[start:stop], b[start:stop], pieces, columns)
    return total


def _sum_of_piece_products(a, b, pieces, columns):
    """sum over `pieces` equal row pieces p of a_p^T @ b_p, b's columns `columns` at a time."""
    (rows, m), n = a.shape, b.shape[1]
    per = rows // pieces
    a_pieces = a.reshape(pieces, 1, per, m).swapaxes(2, 3)                       # (P, 1, M, per)
    b_pieces = b.reshape(pieces, per, n // columns, columns).swapaxes(1, 2)      # (P, G, per, cols)
    partial = np.matmul(a_pieces, b_pieces).sum(axis=0)                        # (G, M, cols)
    return partial.swapaxes(0, 1).reshape(m, n)


threaded = types.SimpleNamespace(matmul=_matmul_threaded, matmul_tn=_matmul_tn_threaded)
in_this_thread = types.SimpleNamespace(matmul=_matmul_in_this_thread,
                                       matmul_tn=_matmul_tn_in_this_thread)
