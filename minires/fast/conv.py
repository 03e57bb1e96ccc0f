"""The convolution minires trains with: channels-last im2col and one BLAS GEMM per product.

`ops/conv.py` holds the readable reference (NCHW im2col, one GEMM per image) that students write,
that the tests check against naive loops, and that this file is tested against. This op computes
the same function, with the same checks and error messages, but lays the arrays out so that every
product is one large matrix product with no transposing copy:

    channels-last memory   x (N, C, H, W) is *read* as its (N, H, W, C) transpose, and y comes
                           back as an (N, OC, OH, OW) view of an (N, OH, OW, OC) buffer (PyTorch's
                           `channels_last`). Shapes, values and indexing are NCHW as everywhere in
                           minires; only `y.strides` tells. Elementwise ops and batch norm keep the
                           layout, so the next conv reads its input with no copy.
    cols (rows, K)         one row per output pixel: its kh x kw x C window, K = kh*kw*C; built by
                           ONE strided copy from a sliding-window view of the padded input.
    forward                y2 = cols @ W2^T         (rows, K) @ (K, OC)        -> (rows, OC)
    backward, stride 1     dx is itself a convolution: of gy, padded by k-1-p, with the kernel
                           flipped and its channel axes swapped, and the same cols of gy give dW:
                           dx2 = gcols @ Wflip      (rows, kh*kw*OC) @ (kh*kw*OC, C)
                           G   = x2^T @ gcols       (C, rows) @ (rows, kh*kw*OC), dW = G flipped
                           (one im2col per backward, of gy; x2 is x as (rows, C), a free view)
    backward, stride > 1   dW2 = gy2^T @ cols       (OC, rows) @ (rows, K)     -> (OC, K)
                           and col2im of gy2 @ W2 one kernel offset at a time:
                           dxpad[:, i::sy, j::sx] += gy2 @ W[:, :, i, j]   (rows, OC) @ (OC, C)

W2 is w as (OC, kh, kw, C) flattened to (OC, K); gy2 is gy as (rows, OC), a free view when gy is
channels-last. The transposes `gy2^T`, `W2^T` are BLAS flags, not copies.

Chunks. The batch goes through a few images at a time (about WORKSPACE_BYTES of cols each), and
the chunks go to the threads of minires' pool (fast/threads.py): each thread copies a chunk's
cols into a work buffer it keeps from call to call (fast/memory.py) and multiplies them at once,
while they are still in its cache, with products that stay in that thread (fast/gemm.py). The
whole (N*OH*OW, K) matrix never exists.

cols is not kept for the backward: keeping kh*kw times every layer's input would multiply the
memory a step needs (PyTorch also keeps only x). At stride 1 the backward needs no cols of x at
all (gcols above); at other strides, and where x needs no gradient (the first layer), it copies
them again from x.

This is a NumPy (CPU) path: `minires.functional` sends other arrays (CuPy) to the reference.
float16 is computed in float32 (`minires.fast.compute_dtype`) and returned as float16.
"""
import numpy as np

from . import compute_dtype, gemm, memory
from .threads import run_chunks, split
from ..ops.conv import Conv2d

WORKSPACE_BYTES = 2 * 2**20  # the cols of one chunk of images, about (see "Chunks")


def channels_last(x):
    """x (N, C, H, W) as its (N, H, W, C) transpose: a view, no copy."""
    return x.transpose(0, 2, 3, 1)


def as_nchw(y_nhwc):
    """An (N, H, W, C) array as the (N, C, H, W) view minires passes on."""
    return y_nhwc.transpose(0, 3, 1, 2)


def pad_channels_last(x_nhwc, padding):
    """x (N, H, W, C) with zero rows and columns around each image: (N, H+2py, W+2px, C), in this
    thread's work buffer "xpad" (valid until its next call).

    Only the border is zeroed (np.zeros would write the whole array, and then the copy again).
    """
    py, px = padding
    if not (py or px):
        return x_nhwc
    n, h, w, c = x_nhwc.shape
    xpad = memory.workspace("xpad", (n, h + 2 * py, w + 2 * px, c), x_nhwc.dtype)
    xpad[:, :py], xpad[:, py + h:] = 0, 0                    # top and bottom rows
    xpad[:, py:py + h, :px], xpad[:, py:py + h, px + w:] = 0, 0  # left and right columns
    xpad[:, py:py + h, px:px + w] = x_nhwc
    return xpad


def windows(xpad, kernel, stride):
    """Every kh x kw window of xpad (N, Hp, Wp, C): a read-only (N, OH, OW, kh, kw, C) view,

        windows[n, oy, ox, i, j, c] = xpad[n, sy*oy + i, sx*ox + j, c]

    (as_strided: the view that sliding_window_view makes, at a quarter of its per-call cost)."""
    (kh, kw), (sy, sx) = kernel, stride
    n, hp, wp, c = xpad.shape
    oh, ow = (hp - kh) // sy + 1, (wp - kw) // sx + 1
    sn, sh, sw, sc = xpad.strides
    return np.lib.stride_tricks.as_strided(
        xpad, (n, oh, ow, kh, kw, c), (sn, sy * sh, sx * sw, sh, sw, sc), writeable=False)


def im2col_channels_last(x_nhwc, kernel, stride, padding, cols):
    """cols (N, OH, OW, kh, kw, C) <- the windows of x (N, H, W, C) padded: the reference
    `im2col` with the axes in channels-last order, in one strided copy."""
    np.copyto(cols, windows(pad_channels_last(x_nhwc, padding), kernel, stride))
    return cols


def batch_chunks(n, bytes_per_image):
    """Equal slices of the batch axis, each with at most about WORKSPACE_BYTES of cols (at least
    one image)."""
    per = max(1, WORKSPACE_BYTES // max(1, bytes_per_image))
    return split(n, -(-n // per))


def each_chunk(n, bytes_per_image, make_cols, multiply):
    """[multiply(part, make_cols(part)) for each chunk `part` of the batch], the chunks spread
    over the pool's threads (see "Chunks" above)."""
    return run_chunks(lambda part: multiply(part, make_cols(part)),
                      batch_chunks(n, bytes_per_image))


def chunk_cols(x_nhwc, kernel, stride, padding, out_size):
    """`make_cols` for each_chunk: the cols of x's images `part`, in the calling thread's work
    buffer "cols" (m, OH, OW, kh, kw, C)."""
    def make_cols(part):
        shape = (part.stop - part.start, *out_size, *kernel, x_nhwc.shape[-1])
        cols = memory.workspace("cols", shape, x_nhwc.dtype)
        return im2col_channels_last(x_nhwc[part], kernel, stride, padding, cols)
    return make_cols


class FastConv2d(Conv2d):
    """conv2d as minires runs it: the reference Conv2d's checks and math, channels-last GEMMs."""

    def forward(self, x, w, b=None):
        self.out_dtype, work = x.dtype, compute_dtype(x.dtype)
        x, w = x.astype(work, copy=False), w.astype(work, copy=False)
        b = None if b is None else b.astype(work, copy=False)
        self.x, self.w = x, w
        (kh, kw), (sy, sx), (py, px) = self.kernel, self.stride, self.padding
        n, c, h, width = x.shape
        oh, ow = (h + 2 * py - kh) // sy + 1, (width + 2 * px - kw) // sx + 1
        xt = channels_last(x)                                      # (N, H, W, C) view
        w2t = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1).T    # (K, OC), K = kh*kw*C
        y2 = np.empty((n, oh * ow, w.shape[0]), x.dtype)        # (N, OH*OW, OC)
        make_cols = chunk_cols(xt, self.kernel, self.stride, self.padding, (oh, ow))

        def multiply(part, cols):
            rows = cols.reshape(-1, w2t.shape[0])                  # (m*OH*OW, K)
            gemm.matmul(rows, w2t, out=y2[part].reshape(rows.shape[0], -1))
        each_chunk(n, oh * ow * w2t.shape[0] * x.itemsize, make_cols, multiply)
        if b is not None:
            y2 += b
        y = as_nchw(y2.reshape(n, oh, ow, -1))                     # (N, OC, OH, OW) view
        return y.astype(self.out_dtype, copy=False)

    def backward(self, gy):
        gy = gy.astype(compute_dtype(gy.dtype), copy=False)
        (kh, kw), (py, px) = self.kernel, self.padding
        # dx as a convolution of gy needs stride 1 and padding <= kernel - 1 (as in every ResNet)
        if (self.needs_input_grad[0] and self.stride == (1, 1)
                and py <= kh - 1 and px <= kw - 1):
            gx, gw = self._backward_through_gy_cols(self.x, self.w, gy)
        else:
            gx, gw = self._backward_through_x_cols(self.x, self.w, gy)
        grads = (gx, gw if self.needs_input_grad[1] else None)
        if self.has_bias:
            grads += (gy.sum(axis=(0, 2, 3)),)
        return tuple(None if g is None else g.astype(self.out_dtype, copy=False) for g in grads)

    def _backward_through_gy_cols(self, x, w, gy):
        """Stride 1: one im2col, of gy padded by k-1-p, gives both gradients.

            dx2 = gcols @ Wflip                      (rows, kh*kw*OC) @ (kh*kw*OC, C)
            G   = x2^T @ gcols                       (C, rows) @ (rows, kh*kw*OC)
            dW[o, c, i, j] = G[c, kh-1-i, kw-1-j, o]

        The second line: the input pixel at row r meets, through kernel offset (i, j), the output
        gradient that gcols holds at (r, kh-1-i, kw-1-j) (substitute the output pixel
        y = r_y - i + p into the padding k-1-p). x2 is x as (rows, C), a free view of
        channels-last x, so no cols of x are made at all.
        """
        (kh, kw), (py, px) = self.kernel, self.padding
        n, c, h, width = x.shape
        out_channels = gy.shape[1]
        x2 = channels_last(x).reshape(n, h * width, c)   # a view when x is channels-last
        gyt = channels_last(gy)
        w_flip = w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(-1, c)  # (kh*kw*OC, C)
        gx = np.empty((n, h * width, c), gy.dtype)                        # (N, H*W, C)
        make_gcols = chunk_cols(gyt, self.kernel, (1, 1), (kh - 1 - py, kw - 1 - px), (h, width))

        def multiply(part, gcols):
            gcols = gcols.reshape(-1, w_flip.shape[0])                       # (rows, kh*kw*OC)
            gemm.matmul(gcols, w_flip, out=gx[part].reshape(-1, c))
            return gemm.matmul_tn(x2[part].reshape(-1, c), gcols, out_channels)  # (C, kh*kw*OC)
        g = sum(each_chunk(n, h * width * w_flip.shape[0] * x.itemsize, make_gcols, multiply))
        gw = g.reshape(c, kh, kw, out_channels)[:, ::-1, ::-1].transpose(3, 0, 1, 2)
        return as_nchw(gx.reshape(n, h, width, c)), np.ascontiguousarray(gw)

    def _backward_through_x_cols(self, x, w, gy):
        """Any stride: dW2 = gy2^T @ cols (cols copied again from x) and, if x needs a gradient,
        dx by col2im, one kernel offset at a time."""
        (kh, kw), (sy, sx), (py, px) = self.kernel, self.stride, self.padding
        n, c, h, width = x.shape
        out_channels, oh, ow = gy.shape[1:]
        k = kh * kw * c
        xt = channels_last(x)
        gy2 = channels_last(gy).reshape(n, oh * ow, out_channels)  # a view for channels-last gy
        want_gx = self.needs_input_grad[0]
        if want_gx:
            w_offsets = np.ascontiguousarray(w.transpose(2, 3, 0, 1))            # (kh, kw, OC, C)
            gx = np.zeros((n, h + 2 * py, width + 2 * px, c), gy.dtype)     # (N, Hp, Wp, C)
        make_cols = chunk_cols(xt, self.kernel, self.stride, self.padding, (oh, ow))

        def multiply(part, cols):  # this chunk's share of dW2 and its images of dx
            g = gy2[part].reshape(-1, out_channels)                              # (rows, OC)
            if want_gx:
                target = gx[part]                                                # (m, Hp, Wp, C)
                shifted = memory.workspace("shifted", (g.shape[0], c), gy.dtype)
                for i in range(kh):
                    for j in range(kw):
                        gemm.matmul(g, w_offsets[i, j], out=shifted)
                        target[:, i:i + sy * oh:sy, j:j + sx * ow:sx] += shifted.reshape(
                            target.shape[0], oh, ow, c)
            return gemm.matmul_tn(g, cols.reshape(g.shape[0], k), c)            # (OC, K)
        gw2 = sum(each_chunk(n, oh * ow * k * x.itemsize, make_cols, multiply))
        gw = np.ascontiguousarray(gw2.reshape(out_channels, kh, kw, c).transpose(0, 3, 1, 2))
        if not want_gx:
            return None, gw
        return as_nchw(gx[:, py:py + h, px:px + width]), gw                     # (N, C, H, W) view


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with w (OC, C, kh, kw), bias b (OC,).

    The same function as `minires.ops.conv.conv2d` (the readable reference), computed with
    channels-last GEMMs; y is an (N, OC, OH, OW) view of channels-last memory.
    """
    if b is None:
        return FastConv2d(stride, padding, has_bias=False).apply(x, w)
    return FastConv2d(stride, padding, has_bias=True).apply(x, w, b)
