"""The conv's matrix products, each kept in the thread that calls it.

fast/conv.py spreads the chunks of a batch over minires' pool (fast/threads.py), and each pool
thread multiplies its own chunk. Two threads that each call a product which BLAS threads itself
would put four threads on two cores, and OpenBLAS's threads wait for work by spinning, taking
the cores that the other thread needs. So a product here never wakes a BLAS thread:

    matmul(a, b, out)         out = a @ b        a (R, K), b (K, N)
    matmul_tn(a, b, columns)  a^T @ b            a (R, M), b (R, N) -> (M, N)

Pieces. OpenBLAS (what NumPy's wheels ship) splits a product over its threads when
M*N*K >= 2 * 65536 * 4 (R is cut, the other two sizes are the product's). A stack of pieces
under that line, `np.matmul` over a 3-D view of the rows, is one NumPy call that loops in C
over the pieces, each of which BLAS multiplies in the calling thread. BLAS packs the right-hand
matrix again for every piece, so a piece of few rows runs slower per core than one call; with
fewer than MIN_PIECE_ROWS rows a piece is little more than a row-by-row product, so such wide
products (128 channels and up, none in the CIFAR nets) are one call, which BLAS may thread.
Other BLAS libraries compute the same products, to rounding.
"""
import numpy as np

SINGLE_THREAD_MNK = 2 * 65536 * 4 - 1  # the largest M*N*K that OpenBLAS multiplies in one thread
MIN_PIECE_ROWS = 8  # fewer rows per piece: one call instead


def rows_per_piece(m, n):
    """Rows per piece of a product whose other two sizes are m and n; 0: one call (see above)."""
    rows = SINGLE_THREAD_MNK // (m * n)
    return rows if rows >= MIN_PIECE_ROWS else 0


def matmul(a, b, out):
    """out (R, N) = a (R, K) @ b (K, N), in this thread; out must be C-contiguous (its pieces are
    views of it)."""
    if not out.flags.c_contiguous:
        raise ValueError(f"fast.gemm.matmul: out {out.shape} must be C-contiguous")
    rows, k = a.shape
    per = rows_per_piece(k, b.shape[1])
    whole = rows - rows % per if per else 0
    if whole:
        np.matmul(a[:whole].reshape(-1, per, k), b, out=out[:whole].reshape(-1, per, out.shape[1]))
    if whole < rows:
        np.matmul(a[whole:], b, out=out[whole:])
    return out


def matmul_tn(a, b, columns=None):
    """a (R, M)^T @ b (R, N), in this thread, as the sum over pieces of rows.

    Each piece gives an (M, N) block of partial sums. With wide b, pieces under the line would
    have so few rows that those blocks outweigh the rows they come from, so b's columns go
    `columns` at a time (a divisor of N: one kernel offset's channels in the conv), which lets
    each piece take more rows."""
    rows, m = a.shape
    n = b.shape[1]
    columns = columns or n
    per = rows_per_piece(m, columns)
    if not per:
        return a.T @ b
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
