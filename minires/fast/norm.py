"""Batch norm as minires trains with it: the reference's math on a (rows, channels) matrix.

`ops/norm.py` holds the readable reference (students write it; the tests check it against PyTorch
and numerical gradients). This op computes the same function with fewer passes over memory:

    rows      x (N, C, H, W) is read as the (N*H*W, C) matrix of its channels-last transpose: a
              free view when x is channels-last (as conv2d's output is; see ops/conv_fast.py),
              else one copy. x (N, C) is used as it is. The output keeps the layout.
    sums      per-channel sums are BLAS matrix-vector products, ones (M,) @ x2 (M, C); the
              sum of squares and sum(gy * x) are one einsum pass each.
    forward   xc = x2 - mean;  var = sum(xc^2) / M;  y = xc * (gamma / std) + beta   (in place)
    backward  with k = gamma / std and the two sums of the reference,
              dx = k * (gy - sum(gy)/M - xhat * sum(gy * xhat)/M)
              as a few in-place steps; xhat is never stored (it is (x - mean) / std, and x is
              held by the graph anyway), so the op keeps only per-channel vectors.
    blocks    the backward goes through each thread's rows BLOCK_BYTES at a time, every step on
              one block before the next block: the block stays in the cache, so gy and x are read
              from memory once for the sums and once for dx (ResNet-20 step, batch 128: the
              backward 9-13% faster with 1 MB blocks, 5% with 512 KB; blocking the forward too
              gained nothing with 1 MB blocks and lost with 256 KB ones).

This is a NumPy (CPU) path. On a CuPy array the op runs the reference's forward and backward.
"""
import math

import numpy as np

from .. import backend
from . import memory
from .threads import num_threads, run_chunks, split
from ..ops.norm import BatchNorm, _array

BLOCK_BYTES = 2**20  # rows per block in the backward (see "blocks" above)


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
    """(M, C) rows seen r at a time, as (M/r, r*C): the same memory, r = gcd(M, 64).

    With C = 16 a per-channel vector broadcast over (M, C) makes NumPy loop 16 values at a time,
    M times; over (M/r, r*C) against the vector tiled r times, it loops r*C at a time (2-4x
    faster). Per-channel sums fold the r copies back: `fold`.
    """

    def __init__(self, m, c):
        self.r, self.c = math.gcd(m, 64), c
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
    """Sums over the rows of a (M, K): one BLAS matrix-vector product, ones (M,) @ a."""
    return np.ones(a.shape[0], dtype=a.dtype) @ a


def column_dots(a, b):
    """sum over the rows of a * b, per column: one pass, no temporary."""
    return np.einsum("mk,mk->k", a, b)


class FastBatchNorm(BatchNorm):
    """batch_norm as minires runs it: the reference's checks, running statistics and math."""

    def forward(self, x, gamma, beta):
        if backend.is_cupy_array(x):
            return super().forward(x, gamma, beta)
        memory.keep_freed_memory_if_asked()
        self.x_shape, self.gamma = x.shape, gamma
        x2 = as_rows(x)                                               # (M, C)
        m = x2.shape[0]
        wide = WideRows(*x2.shape)
        xw, parts = wide.view(x2), wide.parts()                      # (M/r, r*C)
        yw = np.empty(wide.shape, dtype=x.dtype)
        if self.training:
            mean = wide.fold(sum(run_chunks(lambda s: column_sums(xw[s]), parts))) / m
            mean_w = wide.tile(mean)

            def center(s):  # y = x - mean, and the sum of its squares
                np.subtract(xw[s], mean_w, out=yw[s])
                return column_dots(yw[s], yw[s])
            var = wide.fold(sum(run_chunks(center, parts))) / m      # biased, as the reference
            self._update_running(mean, var, m)
        else:
            mean, var = (self.running_mean.astype(x.dtype, copy=False),
                         self.running_var.astype(x.dtype, copy=False))
            mean_w = wide.tile(mean)
            run_chunks(lambda s: np.subtract(xw[s], mean_w, out=yw[s]), parts)
        self.mean, self.inv_std, self.x2 = mean, 1 / np.sqrt(var + self.eps), x2
        scale_w, beta_w = wide.tile(gamma * self.inv_std), wide.tile(beta)

        def affine(s):  # y = xhat * gamma + beta, in place
            yw[s] *= scale_w
            yw[s] += beta_w
        run_chunks(affine, parts)
        return like_input(yw.reshape(x2.shape), x.shape)

    def backward(self, gy):
        if backend.is_cupy_array(gy):
            return super().backward(gy)
        g2 = as_rows(gy)                                              # (M, C)
        m = g2.shape[0]
        wide = WideRows(*g2.shape)
        gw, xw = wide.view(g2), wide.view(self.x2)
        parts = [wide.blocks(part, gy.itemsize) for part in wide.parts()]  # per thread, blocks

        def sums(blocks):  # sum(gy) and sum(gy * x)
            return (sum(column_sums(gw[s]) for s in blocks),
                    sum(column_dots(gw[s], xw[s]) for s in blocks))
        partial_sums = run_chunks(sums, parts)
        sum_g = wide.fold(sum(a for a, _ in partial_sums))
        sum_gx = wide.fold(sum(b for _, b in partial_sums))
        ggamma = self.inv_std * (sum_gx - self.mean * sum_g)          # sum(gy * xhat)
        gbeta = sum_g
        if not self.needs_input_grad[0]:
            return None, ggamma, gbeta
        k = self.gamma * self.inv_std                                 # (C,)
        gxw = np.empty(wide.shape, dtype=gy.dtype)
        k_w = wide.tile(k)
        if self.training:  # k * (gy - sum(gy)/m - xhat * sum(gy*xhat)/m)
            mean_w = wide.tile(self.mean)
            slope_w = wide.tile(-k * self.inv_std * ggamma / m)      # -k/std * ggamma/m
            offset_w = wide.tile(k * sum_g / m)

            def grad(blocks):
                scaled_gy = np.empty_like(gxw[blocks[0]])             # one block's gy * k
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
        return like_input(gxw.reshape(g2.shape), self.x_shape), ggamma, gbeta


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """Batch norm of x (N, C) or (N, C, H, W): the same function as the readable
    `minires.ops.norm.batch_norm`, with fewer passes over memory (see the module docstring)."""
    return FastBatchNorm(_array(running_mean), _array(running_var), training, momentum,
                         eps).apply(x, gamma, beta)
