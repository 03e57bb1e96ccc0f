"""conv2d and batch_norm for CuPy arrays: few kernel launches, nothing big kept for the backward.

`ops/conv.py` and `ops/norm.py` hold the readable references (students write them; assignments
are cut from them). This module computes the same functions, with the same checks and error
messages (the classes below inherit them), written against the array module `backend.xp(x)`
only, so the tests run it on NumPy and the GPU runs it on CuPy unchanged.

Layout. Everything stays NCHW and C-contiguous, CuPy's own layout: CuPy's elementwise ops return
C-ordered arrays whatever their inputs' strides (cupy/cupy#7342), so a channels-last layout (the
CPU fast path's) would cost a transposing copy at every op that follows a ReLU.

    conv forward    cols = ONE copy of a sliding-window view of the padded x  (N, C*kh*kw, OH*OW)
                    y    = W2 @ cols, one batched GEMM       (OC, K) @ (N, K, P) -> (N, OC, P)
    conv backward   cols are never kept: the reference keeps kh*kw copies of every input.
                    stride 1: dx is a convolution of gy padded by k-1-p with the flipped kernel,
                    and the same cols of gy give dW (no cols of x at all):
                        gcols = window copy of gy              (N, OC*kh*kw, H*W)
                        dx    = Wflip @ gcols                  (C, OC*kh*kw) @ ... -> (N, C, H*W)
                        dW    = flip(sum_n x3 @ gcols^T)       (N, C, H*W) @ (N, H*W, OC*kh*kw)
                    other strides, or no dx wanted: the cols of x are copied again,
                        dW = sum_n gy3 @ cols^T,  dx = col2im(W2^T @ gy3)
    batch norm      per-channel sums as row sums of (N, C, H*W) then a sum over N: N*C
                    independent rows (the reference's mean over axes (0, 2, 3) has only C outputs,
                    a few thread blocks on a GPU). Two passes (mean, then the squares of x - mean)
                    as the reference, so large offsets and constant channels come out as well.
                    Saved: x (the graph holds it anyway), mean, 1/std; never x-hat.

Saved arrays are dropped by the autograd engine right after each backward (Function._release).

Off by default: nothing here has run on a GPU yet. Env MINIRES_GPU_FAST_OPS=1 turns it on
(`enabled()`); `minires.functional` picks it for CuPy arrays when it is on.
"""
import os

from .. import backend
from ..ops.conv import Conv2d
from ..ops.norm import BatchNorm, _array, _per_channel

ENV_SWITCH = "MINIRES_GPU_FAST_OPS"


def enabled():
    """True when env MINIRES_GPU_FAST_OPS is 1/true/yes/on (default off: never run on a GPU)."""
    return os.environ.get(ENV_SWITCH, "0").strip().lower() in ("1", "true", "yes", "on")


# --- sliding windows ---------------------------------------------------------------------------

def pad_hw(x, padding):
    """x (N, C, H, W) with zero rows/columns around each image: a memset and one copy."""
    py, px = padding
    if not (py or px):
        return x
    n, c, h, w = x.shape
    xpad = backend.xp(x).zeros((n, c, h + 2 * py, w + 2 * px), dtype=x.dtype)
    xpad[:, :, py:py + h, px:px + w] = x
    return xpad


def window_cols(x, kernel, stride, padding):
    """x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW), C-contiguous, with ONE copy:

        cols[n, (c, i, j), (oy, ox)] = xpad[n, c, sy*oy + i, sx*ox + j]

    (the reference `im2col`, flattened). The windows are a strided view of the padded input.
    """
    xp = backend.xp(x)
    (kh, kw), (sy, sx) = kernel, stride
    xpad = pad_hw(x, padding)
    n, c, hp, wp = xpad.shape
    oh, ow = (hp - kh) // sy + 1, (wp - kw) // sx + 1
    sn, sc, sh, sw = xpad.strides
    windows = xp.lib.stride_tricks.as_strided(
        xpad, (n, c, kh, kw, oh, ow), (sn, sc, sh, sw, sy * sh, sx * sw))
    return xp.ascontiguousarray(windows).reshape(n, c * kh * kw, oh * ow)


def col2im_add(gcols, x_shape, kernel, stride, padding):
    """The adjoint of `window_cols`: (N, C*kh*kw, OH*OW) -> (N, C, H, W), overlaps added.

    One strided add per kernel offset (kh*kw of them), never per pixel.
    """
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    n, c, h, w = x_shape
    xp = backend.xp(gcols)
    gcols = gcols.reshape(n, c, kh, kw, -1)
    oh = (h + 2 * py - kh) // sy + 1
    ow = gcols.shape[-1] // oh
    gpad = xp.zeros((n, c, h + 2 * py, w + 2 * px), dtype=gcols.dtype)
    for i in range(kh):
        for j in range(kw):
            gpad[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx] += gcols[:, :, i, j].reshape(n, c, oh, ow)
    return gpad[:, :, py:py + h, px:px + w]


def as_batched_rows(a):
    """(N, C, H, W) -> (N, C, H*W); a view of C-contiguous input, else one copy."""
    n, c = a.shape[:2]
    return backend.xp(a).ascontiguousarray(a).reshape(n, c, -1)


# --- conv2d ------------------------------------------------------------------------------------

class GpuConv2d(Conv2d):
    """conv2d with one window copy and one batched GEMM per product; cols rebuilt, never saved."""

    def forward(self, x, w, b=None):
        self.x, self.w = x, w  # x: the graph holds it anyway
        n, out_channels = x.shape[0], w.shape[0]
        cols = window_cols(x, self.kernel, self.stride, self.padding)  # (N, K, P)
        y = w.reshape(out_channels, -1) @ cols                         # (N, OC, P)
        (kh, kw), (sy, sx), (py, px) = self.kernel, self.stride, self.padding
        oh = (x.shape[2] + 2 * py - kh) // sy + 1
        y = y.reshape(n, out_channels, oh, -1)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, gy):
        (kh, kw), (py, px) = self.kernel, self.padding
        wants_gx = self.needs_input_grad[0]
        if wants_gx and self.stride == (1, 1) and py <= kh - 1 and px <= kw - 1:
            gx, gw = self._through_gy_cols(gy)
        else:
            gx, gw = self._through_x_cols(gy, wants_gx)
        gw = gw if self.needs_input_grad[1] else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, channel_sums(gy)

    def _through_gy_cols(self, gy):
        """Stride 1: dx = Wflip @ cols(gy padded by k-1-p), dW[o,c,i,j] = G[c, o, kh-1-i, kw-1-j]
        with G = sum_n x3 @ gcols^T (the input pixel meets, through offset (i, j), the output
        gradient that gcols holds at offset (kh-1-i, kw-1-j))."""
        x, w = self.x, self.w
        (kh, kw), (py, px) = self.kernel, self.padding
        n, c, h, width = x.shape
        out_channels = w.shape[0]
        gcols = window_cols(gy, self.kernel, (1, 1), (kh - 1 - py, kw - 1 - px))  # (N, OC*k*k, HW)
        w_flip = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, -1)         # (C, OC*k*k)
        gx = (w_flip @ gcols).reshape(n, c, h, width)
        g = (as_batched_rows(x) @ gcols.transpose(0, 2, 1)).sum(axis=0)           # (C, OC*k*k)
        gw = g.reshape(c, out_channels, kh, kw)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        return gx, backend.xp(gw).ascontiguousarray(gw)

    def _through_x_cols(self, gy, wants_gx):
        """Any stride: cols of x copied again; dW = sum_n gy3 @ cols^T, dx = col2im(W2^T @ gy3)."""
        x, w = self.x, self.w
        n, out_channels = gy.shape[:2]
        gy3 = as_batched_rows(gy)                                                 # (N, OC, P)
        cols = window_cols(x, self.kernel, self.stride, self.padding)            # (N, K, P)
        gw = (gy3 @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
        del cols
        if not wants_gx:
            return None, gw
        gcols = w.reshape(out_channels, -1).T @ gy3                               # (N, K, P)
        return col2im_add(gcols, x.shape, self.kernel, self.stride, self.padding), gw


# --- batch norm --------------------------------------------------------------------------------

def channel_sums(a):
    """Per-channel sums of a (N, C) or (N, C, H, W): rows of (N, C, H*W) summed, then over N."""
    if a.ndim == 2:
        return a.sum(axis=0)
    return as_batched_rows(a).sum(axis=2).sum(axis=0)


class GpuBatchNorm(BatchNorm):
    """batch_norm on per-channel row sums, saving x, mean and 1/std instead of x-hat:

    forward   xc = x - mean;  var = sum(xc^2) / m;  y = xc * (gamma/std) + beta   (in place)
    backward  xc = x - mean again;  dgamma = sum(gy * xc) / std;  dbeta = sum(gy);
              dx = k * (gy - dbeta/m) - xc * (k * dgamma / (std m)),  k = gamma / std
    """

    def forward(self, x, gamma, beta):
        m = x.size // x.shape[1]
        if self.training:
            mean = channel_sums(x) / m
            xc = x - _per_channel(mean, x)
            var = channel_sums(xc * xc) / m
            self._update_running(mean, var, m)
        else:
            mean, var = (self.running_mean.astype(x.dtype, copy=False),
                         self.running_var.astype(x.dtype, copy=False))
            xc = x - _per_channel(mean, x)
        self.inv_std = 1 / backend.xp(x).sqrt(var + self.eps)
        self.x, self.mean, self.gamma = x, mean, gamma
        xc *= _per_channel(gamma * self.inv_std, x)
        xc += _per_channel(beta, x)
        return xc

    def backward(self, gy):
        m = gy.size // gy.shape[1]
        xc = self.x - _per_channel(self.mean, gy)
        gbeta = channel_sums(gy)
        ggamma = channel_sums(gy * xc) * self.inv_std
        if not self.needs_input_grad[0]:
            return None, ggamma, gbeta
        k = self.gamma * self.inv_std
        gx = gy * _per_channel(k, gy)
        if self.training:
            gx -= _per_channel(k * gbeta / m, gy)
            xc *= _per_channel(k * self.inv_std * ggamma / m, gy)
            gx -= xc
        return gx, ggamma, gbeta


# --- the functional forms (minires.functional's signatures) -------------------------------------

def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with w (OC, C, kh, kw), bias b (OC,):
    the same function as `minires.ops.conv.conv2d`, in a few GPU kernels."""
    if b is None:
        return GpuConv2d(stride, padding, has_bias=False).apply(x, w)
    return GpuConv2d(stride, padding, has_bias=True).apply(x, w, b)


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """Batch norm of x (N, C) or (N, C, H, W): the same function as `minires.ops.norm.batch_norm`,
    on per-channel row sums, keeping no x-hat for the backward."""
    return GpuBatchNorm(_array(running_mean), _array(running_var), training, momentum,
                        eps).apply(x, gamma, beta)


__all__ = ["enabled", "conv2d", "batch_norm", "GpuConv2d", "GpuBatchNorm"]
