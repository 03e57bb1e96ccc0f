"""Batch norm as minires trains with it: the reference's math on a (rows, channels) matrix.

`ops/norm.py` holds the readable reference (students write it; the tests check it against PyTorch
and numerical gradients). This op computes the same function with fewer passes over memory:

    rows      x (N, C, H, W) is read as the (N*H*W, C) matrix of its channels-last transpose: a
              free view when x is channels-last (as conv2d's output is; see fast/conv.py),
              else one copy. x (N, C) is used as it is. The output keeps the layout.
    sums      per-channel sums add whole rows at a time; the sum of squares and
              sum(gy * (x - mean)) are one einsum pass each.
    forward   two passes, so a large mean (1e4 in float32) costs no digits of the variance:
              a = x2 - sum(x2)/M;  d = sum(a)/M;  mean = sum(x2)/M + d;  var = sum(a^2)/M - d^2;
              y = (a - d) * (gamma / std) + beta   (in place, a in y's memory)
    backward  with k = gamma / std and the two sums of the reference,
              dx = k * (gy - sum(gy)/M - xhat * sum(gy * xhat)/M),
              sum(gy * xhat) summed over x - mean (never as sum(gy * x) - mean * sum(gy), which
              cancels: a constant channel then got dgamma 1265 instead of 0)
              as a few in-place steps; xhat is never stored (it is (x - mean) / std, and x is
              held by the graph anyway), so the op keeps only per-channel vectors.
    blocks    the backward goes through each thread's rows BLOCK_BYTES at a time, every step on
              one block before the next block: the block stays in the cache, so gy and x are read
              from memory once for the sums and once for dx (ResNet-20 step, batch 128: the
              backward 9-13% faster with 1 MB blocks, 5% with 512 KB; blocking the forward too
              gained nothing with 1 MB blocks and lost with 256 KB ones).

This is a NumPy (CPU) path: `minires.functional` sends other arrays (CuPy) to the reference.
float16 is computed in float32 (`compute_dtype`).
"""
import math

import numpy as np

from . import compute_dtype, memory
from .threads import num_threads, run_chunks, split
from ..ops.norm import BatchNorm, _array

BLOCK_BYTES = 2**20  # rows per block in the backward (see "blocks" above)
WIDE_ROW_BYTES = 2048  # the widest row WideRows makes


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


class WideRows:
    """(M, C) rows seen r at a time, as (M/r, r*C): the same memory. r = gcd(M, R), where R is
    the largest power of two that keeps a wide row within WIDE_ROW_BYTES.

    With C = 16 a per-channel vector broadcast over (M, C) makes NumPy loop 16 values at a time,
    M times; over (M/r, r*C) against the vector tiled r times, it loops r*C at a time (2-4x
    faster). Per-channel sums fold the r copies back: `fold`. Not wider than 2 KB: with rows of
    4 KB, every row of y meets the tiled vector at the same address modulo 4 KB, where an x86
    load that seems to hit an earlier store waits for it ("4K aliasing"). `y *= v` on 2M float32
    values then took 10 ms instead of 1.2 ms.
    """

    def __init__(self, m, c, itemsize):
        widest = max(1, WIDE_ROW_BYTES // (c * itemsize))
        self.r, self.c = math.gcd(m, 1 << (widest.bit_length() - 1)), c
        self.shape = (m // self.r, self.r * c)

    def view(self, rows):
        return rows.reshape(self.shape)

    def tile(self, v):
        """A per-channel vector (C,) repeated to (r*C,)."""
        return np.tile(v, self.r)

    def fold(self, sums):
        """Sums over wide rows (r*C,) -> per-channel sums (C,)."""
        return sums.reshape(self.r, self.c).sum(axis=0)

    def parts(self):
        """Row slices for the pool: one per thread (a single one for small inputs)."""
        rows = self.shape[0]
        return split(rows, num_threads() if rows * self.shape[1] >= 2**16 else 1)

    def blocks(self, part, itemsize):
        """The rows of one part as slices of about BLOCK_BYTES each."""
        step = max(1, BLOCK_BYTES // (self.shape[1] * itemsize))
        return [slice(start, min(start + step, part.stop))
                for start in range(part.start, part.stop, step)]


def column_sums(a):
    """Sums over the rows of a (M, K), per column (NumPy adds whole rows: a vectorised pass)."""
    return a.sum(axis=0)


def column_dots(a, b):
    """sum over the rows of a * b, per column: one pass, no temporary."""
    return np.einsum("mk,mk->k", a, b)


def block_shape(blocks, wide):
    """The shape of the largest (the first) of a thread's blocks of wide rows."""
    return blocks[0].stop - blocks[0].start, wide.shape[1]


class FastBatchNorm(BatchNorm):
    """batch_norm as minires runs it: the reference's checks, running statistics and math."""

    def forward(self, x, gamma, beta):
        memory.keep_freed_memory_if_asked()
        self.out_dtype, work = x.dtype, compute_dtype(x.dtype)
        x, gamma, beta = (a.astype(work, copy=False) for a in (x, gamma, beta))
        self.x_shape, self.gamma = x.shape, gamma
        x2 = as_rows(x)                                               # (M, C)
        m = x2.shape[0]
        wide = WideRows(*x2.shape, x2.itemsize)
        xw, parts = wide.view(x2), wide.parts()                      # (M/r, r*C)
        yw = memory.lend(wide.shape, work)
        if self.training:
            rough_mean = wide.fold(sum(run_chunks(lambda s: column_sums(xw[s]), parts))) / m
            rough_w = wide.tile(rough_mean)

            def center(s):  # y = x - rough mean; the sums of y and of its squares
                np.subtract(xw[s], rough_w, out=yw[s])
                return column_sums(yw[s]), column_dots(yw[s], yw[s])
            sums = run_chunks(center, parts)
            shift = wide.fold(sum(d for d, _ in sums)) / m           # mean - rough mean
            var = wide.fold(sum(q for _, q in sums)) / m - shift * shift  # biased, as the reference
            mean = rough_mean + shift
            self._update_running(mean, var, m)
        else:
            mean, var = (self.running_mean.astype(work, copy=False),
                         self.running_var.astype(work, copy=False))
            shift, mean_w = np.zeros_like(mean), wide.tile(mean)
            run_chunks(lambda s: np.subtract(xw[s], mean_w, out=yw[s]), parts)
        self.mean, self.inv_std, self.x2 = mean, 1 / np.sqrt(var + self.eps), x2
        scale = gamma * self.inv_std
        scale_w, offset_w = wide.tile(scale), wide.tile(beta - scale * shift)

        def affine(s):  # y = (x - mean) * gamma / std + beta, in place
            yw[s] *= scale_w
            yw[s] += offset_w
        run_chunks(affine, parts)
        return like_input(yw.reshape(x2.shape), x.shape).astype(self.out_dtype, copy=False)

    def backward(self, gy):
        gy = gy.astype(compute_dtype(gy.dtype), copy=False)
        g2 = as_rows(gy)                                              # (M, C)
        m = g2.shape[0]
        wide = WideRows(*g2.shape, g2.itemsize)
        gw, xw = wide.view(g2), wide.view(self.x2)
        parts = [wide.blocks(part, gy.itemsize) for part in wide.parts()]  # per thread, blocks
        mean_w = wide.tile(self.mean)

        def sums(blocks):  # sum(gy) and sum(gy * (x - mean)), the latter on a centred block
            centred = memory.workspace("centred", block_shape(blocks, wide), gy.dtype)
            sum_g = sum_gxc = 0
            for s in blocks:
                xc = np.subtract(xw[s], mean_w, out=centred[:s.stop - s.start])
                sum_g, sum_gxc = sum_g + column_sums(gw[s]), sum_gxc + column_dots(gw[s], xc)
            return sum_g, sum_gxc
        partial_sums = run_chunks(sums, parts)
        sum_g = wide.fold(sum(a for a, _ in partial_sums))
        ggamma = self.inv_std * wide.fold(sum(b for _, b in partial_sums))  # sum(gy * xhat)
        gbeta = sum_g
        if not self.needs_input_grad[0]:
            return None, *self._as_output_dtype(ggamma, gbeta)
        k = self.gamma * self.inv_std                                 # (C,)
        gxw = memory.lend(wide.shape, gy.dtype)
        k_w = wide.tile(k)
        if self.training:  # k * (gy - sum(gy)/m - xhat * sum(gy*xhat)/m)
            slope_w = wide.tile(-k * self.inv_std * ggamma / m)      # -k/std * ggamma/m
            offset_w = wide.tile(k * sum_g / m)

            def grad(blocks):
                scaled_gy = memory.workspace("scaled_gy", block_shape(blocks, wide),
                                             gy.dtype)                # one block's gy * k
                for s in blocks:
                    np.subtract(xw[s], mean_w, out=gxw[s])            # x - mean
                    gxw[s] *= slope_w                                 # -k * xhat * ggamma/m
                    gxw[s] += np.multiply(gw[s], k_w, out=scaled_gy[:s.stop - s.start])
                    gxw[s] -= offset_w
        else:
            def grad(blocks):
                for s in blocks:
                    np.multiply(gw[s], k_w, out=gxw[s])
        run_chunks(grad, parts)
        gx = like_input(gxw.reshape(g2.shape), self.x_shape)
        return self._as_output_dtype(gx, ggamma, gbeta)

    def _as_output_dtype(self, *grads):
        """The gradients in the inputs' dtype (float16 inputs were computed in float32)."""
        return tuple(g.astype(self.out_dtype, copy=False) for g in grads)


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """Batch norm of x (N, C) or (N, C, H, W): the same function as the readable
    `minires.ops.norm.batch_norm`, with fewer passes over memory (see the module docstring)."""
    return FastBatchNorm(_array(running_mean), _array(running_var), training, momentum,
                         eps).apply(x, gamma, beta)
