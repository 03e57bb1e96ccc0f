"""Batch norm as minires trains with it: the reference's math on a (rows, channels) matrix.

`ops/norm.py` holds the readable reference (students write it; the tests check it against PyTorch
and numerical gradients). This op computes the same function with fewer passes over memory:

    rows      x (N, C, H, W) is read as the (M, C) matrix of its channels-last transpose,
              M = N*H*W: a free view when x is channels-last (as conv2d's output is; see
              fast/conv.py), else one copy. x (N, C) is used as it is. The output keeps the layout.
    sums      per-channel sums add whole rows at a time; the sum of squares and
              sum(gy * (x - mean)) are one einsum pass each.
    forward   two passes, so a large mean (1e4 in float32) costs no digits of the variance:
              a = x2 - sum(x2)/M;  d = sum(a)/M;  mean = sum(x2)/M + d;  var = sum(a^2)/M - d^2;
              y = (a - d) * (gamma / std) + beta   (in place, a in y's memory)
    backward  with k = gamma / std and the two sums of the reference,
              dx = k * (gy - sum(gy)/M - xhat * sum(gy * xhat)/M),
              sum(gy * xhat) summed over x - mean (never as sum(gy * x) - mean * sum(gy), which
              cancels: a constant channel then got a dgamma far from 0)
              as a few in-place steps; xhat is never stored (it is (x - mean) / std, and x is
              held by the graph anyway), so the op keeps only per-channel vectors.
    threads   the rows are cut into one part per thread of minires' pool (fast/threads.py).
    blocks    the backward goes through each part BLOCK_BYTES of rows at a time, every step on
              one block before the next block: the block stays in the core's cache, so gy and x
              are read from memory once for the sums and once for dx.

This is a NumPy (CPU) path: `minires.functional` sends other arrays (CuPy) to the reference.
float16 is computed in float32 (`compute_dtype`).
"""
import numpy as np

from . import compute_dtype, memory
from .threads import num_threads, run_chunks, split
from ..ops.norm import BatchNorm, _array

BLOCK_BYTES = 2**20  # the rows of one block in the backward (see "blocks" above)
MIN_THREADED_VALUES = 2**16  # fewer values than this run in the calling thread alone


def as_rows(x):
    """x (N, C) or (N, C, H, W) -> the (M, C) matrix of its values per channel (M = N*H*W)."""
    if x.ndim == 2:
        return x
    return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])  # a view for channels-last memory


def like_input(rows, x_shape):
    """(M, C) rows back to x's shape: an (N, C, H, W) view of channels-last memory."""
    if len(x_shape) == 2:
        return rows
    n, c, h, w = x_shape
    return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def parts(rows):
    """Row slices of an (M, C) matrix for the pool: one per thread (one for small inputs)."""
    m, c = rows.shape
    return split(m, num_threads() if m * c >= MIN_THREADED_VALUES else 1)


def blocks(part, row_bytes):
    """The rows of one part as consecutive slices of about BLOCK_BYTES each; the last one holds
    what is left, down to a single row."""
    step = max(1, BLOCK_BYTES // row_bytes)
    return [slice(start, min(start + step, part.stop))
            for start in range(part.start, part.stop, step)]


def column_sums(a):
    """Sums over the rows of a (M, K), per column (NumPy adds whole rows: a vectorised pass)."""
    return a.sum(axis=0)


def column_dots(a, b):
    """sum over the rows of a * b, per column: one pass, no temporary."""
    return np.einsum("mk,mk->k", a, b)


def block_buffer(name, part_blocks, width, dtype):
    """This thread's work buffer `name`, as large as the largest (the first) of its blocks."""
    return memory.workspace(name, (part_blocks[0].stop - part_blocks[0].start, width), dtype)


class FastBatchNorm(BatchNorm):
    """batch_norm as minires runs it: the reference's checks, running statistics and math."""

    def forward(self, x, gamma, beta):
        self.out_dtype, work = x.dtype, compute_dtype(x.dtype)
        x, gamma, beta = (a.astype(work, copy=False) for a in (x, gamma, beta))
        self.x_shape, self.gamma = x.shape, gamma
        x2 = as_rows(x)                                               # (M, C)
        m = x2.shape[0]
        y2, chunks = np.empty(x2.shape, work), parts(x2)
        if self.training:
            rough_mean = sum(run_chunks(lambda s: column_sums(x2[s]), chunks)) / m

            def center(s):  # y = x - rough mean; the sums of y and of its squares
                np.subtract(x2[s], rough_mean, out=y2[s])
                return column_sums(y2[s]), column_dots(y2[s], y2[s])
            sums = run_chunks(center, chunks)
            shift = sum(d for d, _ in sums) / m                       # mean - rough mean
            var = sum(q for _, q in sums) / m - shift * shift         # biased, as the reference
            mean = rough_mean + shift
            self._update_running(mean, var, m)
        else:
            # copies: a train-mode forward before this backward updates the buffers in place
            mean, var = self.running_mean.astype(work), self.running_var.astype(work)
            shift = np.zeros_like(mean)
            run_chunks(lambda s: np.subtract(x2[s], mean, out=y2[s]), chunks)
        self.mean, self.inv_std, self.x2 = mean, 1 / np.sqrt(var + self.eps), x2
        scale = gamma * self.inv_std
        offset = beta - scale * shift

        def affine(s):  # y = (x - mean) * gamma / std + beta, in place
            y2[s] *= scale
            y2[s] += offset
        run_chunks(affine, chunks)
        return like_input(y2, x.shape).astype(self.out_dtype, copy=False)

    def backward(self, gy):
        gy = gy.astype(compute_dtype(gy.dtype), copy=False)
        g2, x2, mean = as_rows(gy), self.x2, self.mean                # (M, C)
        m, c = g2.shape
        per_thread = [blocks(part, c * gy.itemsize) for part in parts(g2)]

        def sums(part_blocks):  # sum(gy) and sum(gy * (x - mean)), the latter on a centred block
            centred = block_buffer("centred", part_blocks, c, gy.dtype)
            sum_g = sum_gxc = 0
            for s in part_blocks:
                xc = np.subtract(x2[s], mean, out=centred[:s.stop - s.start])
                sum_g, sum_gxc = sum_g + column_sums(g2[s]), sum_gxc + column_dots(g2[s], xc)
            return sum_g, sum_gxc
        partial_sums = run_chunks(sums, per_thread)
        sum_g = sum(a for a, _ in partial_sums)
        ggamma = self.inv_std * sum(b for _, b in partial_sums)       # sum(gy * xhat)
        gbeta = sum_g
        if not self.needs_input_grad[0]:
            return None, *self._as_output_dtype(ggamma, gbeta)
        k = self.gamma * self.inv_std                                 # (C,)
        gx2 = np.empty(g2.shape, gy.dtype)
        if self.training:  # k * (gy - sum(gy)/m - xhat * sum(gy*xhat)/m)
            slope = -k * self.inv_std * ggamma / m                    # -k/std * ggamma/m
            offset = k * sum_g / m

            def grad(part_blocks):
                scaled_gy = block_buffer("scaled_gy", part_blocks, c, gy.dtype)  # gy * k
                for s in part_blocks:
                    np.subtract(x2[s], mean, out=gx2[s])              # x - mean
                    gx2[s] *= slope                                   # -k * xhat * ggamma/m
                    gx2[s] += np.multiply(g2[s], k, out=scaled_gy[:s.stop - s.start])
                    gx2[s] -= offset
        else:
            def grad(part_blocks):
                for s in part_blocks:
                    np.multiply(g2[s], k, out=gx2[s])
        run_chunks(grad, per_thread)
        return self._as_output_dtype(like_input(gx2, self.x_shape), ggamma, gbeta)

    def _as_output_dtype(self, *grads):
        """The gradients in the inputs' dtype (float16 inputs were computed in float32)."""
        return tuple(g.astype(self.out_dtype, copy=False) for g in grads)


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """Batch norm of x (N, C) or (N, C, H, W): the same function as the readable
    `minires.ops.norm.batch_norm`, with fewer passes over memory (see the module docstring)."""
    return FastBatchNorm(_array(running_mean), _array(running_var), training, momentum,
                         eps).apply(x, gamma, beta)
