"""Convolution and pooling through im2col/col2im.

im2col copies every kh x kw window of the (padded) input into columns, so a convolution becomes one
matrix product per image:

    x (N, C, H, W)  --im2col-->  cols (N, C*kh*kw, OH*OW)
    y = W (OC, C*kh*kw) @ cols   ->  (N, OC, OH*OW)  ->  (N, OC, OH, OW)

This layout puts the output straight into NCHW order and lets all three products of the backward
(dW, dcols, the forward) run on strided views with no transposing copy. col2im is the adjoint of
im2col: it adds every column back onto the pixel it came from. Windows overlap when
stride < kernel, so col2im must *add* (`+=`); writing `=` instead drops gradient and still passes a
2x2 stride-2 test, which is why the tests use overlapping windows.

What runs where. This file is the readable reference, and it is what runs on the GPU (CuPy),
with fast ops switched off (MINIRES_FAST_OPS=0 or `minires.use_reference_ops()`), and where the
`minires/fast` folder is absent. For NumPy arrays `minires.functional.conv2d` runs
`minires.fast.conv.FastConv2d` instead: a subclass of `Conv2d` below (same checks and errors)
that computes the same function on channels-last GEMMs. tests/fast/test_fast_ops.py pins the two
equal (forward and every gradient, to 1e-12 in float64); the pools here always run from this file.
"""
from .. import backend
from ..autograd import Function
from ._checks import pair, require_float, require_ndim, shapes


def output_size(size, kernel, stride, padding):
    """Number of window positions along one axis: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x, kernel, stride, padding, pad_value=0.0):
    """(N, C, H, W) -> (N, C, kh, kw, OH, OW): cols[n, c, i, j, oy, ox] = xpad[n, c, sy*oy+i, sx*ox+j].

    The loop runs over the kh*kw kernel offsets only; each step copies one strided slice of the
    whole batch.
    """
    # BEGIN SOLUTION
    xp = backend.xp(x)
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = output_size(h, kh, sy, py), output_size(w, kw, sx, px)
    if py or px:
        x = xp.pad(x, ((0, 0), (0, 0), (py, py), (px, px)), constant_values=pad_value)
    cols = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx]
    return cols
    # END SOLUTION


def col2im(cols, x_shape, stride, padding):
    """(N, C, kh, kw, OH, OW) -> (N, C, H, W): the adjoint of im2col; overlapping windows add up."""
    # BEGIN SOLUTION
    xp = backend.xp(cols)
    n, c, kh, kw, oh, ow = cols.shape
    (sy, sx), (py, px) = stride, padding
    h, w = x_shape[2], x_shape[3]
    out = xp.zeros((n, c, h + 2 * py, w + 2 * px), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx] += cols[:, :, i, j]
    return out[:, :, py:py + h, px:px + w]
    # END SOLUTION


def _window_settings(op, x, kernel, stride, padding):
    """Validate a sliding-window op's settings against x; returns (kernel, stride, padding) pairs."""
    kernel, stride, padding = (pair(kernel, op, "kernel_size"), pair(stride, op, "stride"),
                               pair(padding, op, "padding"))
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: kernel {kernel} and stride {stride} must be >= 1, padding "
                         f"{padding} >= 0")
    h, w = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if kernel[0] > h or kernel[1] > w:
        raise ValueError(f"{op}: a {kernel[0]}x{kernel[1]} kernel does not fit in x: "
                         f"{tuple(x.shape)} with padding {padding}")
    return kernel, stride, padding


class Conv2d(Function):
    """y[n,o] = sum_c W[o,c] * x[n,c] + b[o] (cross-correlation), through im2col and one GEMM.

    dW = sum_n gy[n] @ cols[n]^T,  dcols = W^T @ gy,  dx = col2im(dcols),  db = sum gy over (n, y, x)
    """
    name = "conv2d"

    def __init__(self, stride=1, padding=0, has_bias=False):
        self.stride_arg, self.padding_arg, self.has_bias = stride, padding, has_bias

    def check(self, x, w, b=None):
        require_float(self.name, x=x, w=w, b=b)
        require_ndim(self.name, "x", x, 4, w=w)
        require_ndim(self.name, "w", w, 4, x=x)
        if x.shape[1] != w.shape[1]:
            raise ValueError(f"conv2d: x has {x.shape[1]} channels, w expects {w.shape[1]} "
                             f"({shapes(x=x, w=w)})")
        for what, size in (("batch (N)", x.shape[0]), ("input channels (C)", x.shape[1]),
                           ("output channels (OC)", w.shape[0])):
            if size == 0:
                raise ValueError(f"conv2d: the {what} is empty ({shapes(x=x, w=w)})")
        if self.has_bias != (b is not None):
            raise ValueError(f"conv2d: made with has_bias={self.has_bias} but given "
                             f"{'a bias' if b is not None else 'none'}")
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"conv2d: b must have shape ({w.shape[0]},) ({shapes(w=w, b=b)})")
        self.kernel, self.stride, self.padding = _window_settings(
            self.name, x, w.shape[2:], self.stride_arg, self.padding_arg)

    def forward(self, x, w, b=None):
        # BEGIN SOLUTION
        n, out_channels = x.shape[0], w.shape[0]
        cols = im2col(x, self.kernel, self.stride, self.padding)  # (N, C, kh, kw, OH, OW)
        oh, ow = cols.shape[4:]
        self.cols = cols.reshape(n, -1, oh * ow)                  # (N, C*kh*kw, OH*OW)
        self.x_shape, self.w = x.shape, w
        y = w.reshape(out_channels, -1) @ self.cols               # (N, OC, OH*OW)
        y = y.reshape(n, out_channels, oh, ow)
        return y if b is None else y + b.reshape(1, -1, 1, 1)
        # END SOLUTION

    def backward(self, gy):
        # BEGIN SOLUTION
        n, out_channels, oh, ow = gy.shape
        gy = gy.reshape(n, out_channels, oh * ow)                 # (N, OC, OH*OW)
        w2 = self.w.reshape(out_channels, -1)                     # (OC, C*kh*kw)
        gw = (gy @ self.cols.transpose(0, 2, 1)).sum(axis=0).reshape(self.w.shape)
        gx = None
        if self.needs_input_grad[0]:
            gcols = (w2.T @ gy).reshape(n, self.x_shape[1], *self.kernel, oh, ow)
            gx = col2im(gcols, self.x_shape, self.stride, self.padding)
        if not self.has_bias:
            return gx, gw
        return gx, gw, gy.sum(axis=(0, 2))
        # END SOLUTION


class _Pool(Function):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_arg = kernel_size
        self.stride_arg = kernel_size if stride is None else stride
        self.padding_arg = padding

    def check(self, x):
        require_float(self.name, x=x)
        require_ndim(self.name, "x", x, 4)
        self.kernel, self.stride, self.padding = _window_settings(
            self.name, x, self.kernel_arg, self.stride_arg, self.padding_arg)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"{self.name}: padding {self.padding} must be at most half the "
                             f"kernel {self.kernel}")


class MaxPool2d(_Pool):
    """y = max over each window (padding counts as -inf);  dx = gy routed to each window's argmax"""
    name = "max_pool2d"

    def forward(self, x):
        cols = im2col(x, self.kernel, self.stride, self.padding, pad_value=-float("inf"))
        n, c, kh, kw, oh, ow = cols.shape
        cols = cols.reshape(n, c, kh * kw, oh, ow)
        self.argmax = cols.argmax(axis=2)                         # (N, C, OH, OW)
        self.x_shape = x.shape
        return backend.xp(x).take_along_axis(cols, self.argmax[:, :, None], axis=2)[:, :, 0]

    def backward(self, gy):
        xp = backend.xp(gy)
        kh, kw = self.kernel
        offsets = xp.arange(kh * kw).reshape(1, 1, -1, 1, 1)
        at_argmax = offsets == self.argmax[:, :, None]                  # (N, C, kh*kw, OH, OW)
        gcols = xp.where(at_argmax, gy[:, :, None], 0)  # not mask * gy: inf * 0 is NaN
        gcols = gcols.reshape(gy.shape[0], gy.shape[1], kh, kw, *gy.shape[2:])
        return col2im(gcols, self.x_shape, self.stride, self.padding)


class AvgPool2d(_Pool):
    """y = mean over each window, padding counted as zeros (torch's count_include_pad=True);
    dx = col2im(gy / (kh*kw)) spread over each window"""
    name = "avg_pool2d"

    def forward(self, x):
        cols = im2col(x, self.kernel, self.stride, self.padding)
        self.x_shape = x.shape
        return cols.mean(axis=(2, 3))

    def backward(self, gy):
        kh, kw = self.kernel
        n, c, oh, ow = gy.shape
        share = (gy / (kh * kw))[:, :, None, None]
        gcols = backend.xp(gy).broadcast_to(share, (n, c, kh, kw, oh, ow))
        return col2im(gcols, self.x_shape, self.stride, self.padding)


class GlobalAvgPool2d(Function):
    """y[n, c] = mean over H, W of x[n, c];  dx = gy / (H*W) at every pixel"""
    name = "global_avg_pool2d"

    def __init__(self, keepdims=False):
        self.keepdims = keepdims

    def check(self, x):
        require_float(self.name, x=x)
        require_ndim(self.name, "x", x, 4)

    def forward(self, x):
        self.x = x  # for its shape and memory layout (no copy: the graph holds x anyway)
        return x.mean(axis=(2, 3), keepdims=self.keepdims)

    def backward(self, gy):
        n, c, h, w = self.x.shape
        gx = backend.xp(gy).empty_like(self.x, dtype=gy.dtype)  # x's layout: channels-last
        gx[...] = (gy / (h * w)).reshape(n, c, 1, 1)             # after a fast conv2d
        return gx


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with w (OC, C, kh, kw), bias b (OC,)."""
    if b is None:
        return Conv2d(stride, padding, has_bias=False).apply(x, w)
    return Conv2d(stride, padding, has_bias=True).apply(x, w, b)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2d(kernel_size, stride, padding).apply(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2d(kernel_size, stride, padding).apply(x)


def global_avg_pool2d(x, keepdims=False):
    """(N, C, H, W) -> (N, C), or (N, C, 1, 1) with keepdims (as AdaptiveAvgPool2d(1))."""
    return GlobalAvgPool2d(keepdims).apply(x)
