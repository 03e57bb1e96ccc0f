"""Assignment 1, conv: im2col, col2im, and the convolution's forward and backward through them.

The window geometries are the cases that catch the usual mistakes: overlapping windows (kernel 3,
stride 1 and stride 2; a col2im that writes `=` instead of `+=` passes only the 2x2 stride-2 case),
padding, a stride that leaves rows over, and a non-square kernel with unequal strides.
"""
from typing import NamedTuple

from ..autograd import Tensor
from ..ops import conv as reference
from .checks import expect_close, expect_gradcheck, expect_gradients, leaf
from .registry import Assignment, Part, Target


class Geometry(NamedTuple):
    label: str
    x_shape: tuple  # (N, C, H, W)
    kernel: tuple   # (kh, kw)
    stride: tuple
    padding: tuple

    def cols_shape(self):
        n, c, h, w = self.x_shape
        oh, ow = (reference.output_size(size, k, s, p) for size, k, s, p in
                  zip((h, w), self.kernel, self.stride, self.padding))
        return (n, c, *self.kernel, oh, ow)


GEOMETRIES = (
    Geometry("2x2 kernel, stride 2, no padding", (2, 3, 4, 4), (2, 2), (2, 2), (0, 0)),
    Geometry("3x3 kernel, stride 1, padding 1 (overlapping windows)",
             (2, 2, 5, 5), (3, 3), (1, 1), (1, 1)),
    Geometry("3x3 kernel, stride 2, padding 1 (overlapping windows, a row left over)",
             (2, 2, 7, 6), (3, 3), (2, 2), (1, 1)),
    Geometry("2x3 kernel (non-square), stride (2, 1), padding (1, 0)",
             (1, 3, 6, 5), (2, 3), (2, 1), (1, 0)),
)
OUT_CHANNELS = 4


def check_im2col(student, rng):
    for g in GEOMETRIES:
        yield g.label
        x = rng.standard_normal(g.x_shape)
        expected = reference.im2col(x, g.kernel, g.stride, g.padding)
        expect_close("cols", student.conv.im2col(x, g.kernel, g.stride, g.padding), expected)
    g = GEOMETRIES[1]
    yield "3x3 kernel, padding 1 with pad_value=-inf (as max pooling pads)"
    x = rng.standard_normal(g.x_shape)
    settings = dict(kernel=g.kernel, stride=g.stride, padding=g.padding, pad_value=-float("inf"))
    expected = reference.im2col(x, **settings)
    expect_close("cols", student.conv.im2col(x, **settings), expected)


def check_col2im(student, rng):
    for g in GEOMETRIES:
        yield g.label
        cols = rng.standard_normal(g.cols_shape())
        expected = reference.col2im(cols, g.x_shape, g.stride, g.padding)
        expect_close("x", student.conv.col2im(cols, g.x_shape, g.stride, g.padding), expected)


def _conv_inputs(g, rng, bias):
    """x, w and (with bias) b for geometry g, as float64 arrays."""
    x = rng.standard_normal(g.x_shape)
    w = rng.standard_normal((OUT_CHANNELS, g.x_shape[1], *g.kernel))
    return (x, w, rng.standard_normal(OUT_CHANNELS)) if bias else (x, w)


def _label(g, bias):
    return f"{g.label}, {'with' if bias else 'no'} bias"


def check_conv2d_forward(student, rng):
    for i, g in enumerate(GEOMETRIES):
        bias = i > 0
        yield _label(g, bias)
        inputs = [Tensor(a) for a in _conv_inputs(g, rng, bias)]
        expected = reference.Conv2d(g.stride, g.padding, has_bias=bias).apply(*inputs)
        expect_close("y", student.conv.Conv2d(g.stride, g.padding, has_bias=bias).apply(*inputs), expected)


def check_conv2d_backward(student, rng):
    for i, g in enumerate(GEOMETRIES):
        bias = i > 0
        yield _label(g, bias)
        arrays = _conv_inputs(g, rng, bias)
        expected_op = reference.Conv2d(g.stride, g.padding, has_bias=bias)
        gy = rng.standard_normal(expected_op.apply(*map(leaf, arrays)).shape)
        expected = expected_op.backward(gy.copy())
        op = student.conv.Conv2d(g.stride, g.padding, has_bias=bias)
        op.apply(*map(leaf, arrays))
        expect_gradients(("x", "w", "b")[:len(arrays)], op.backward(gy.copy()), expected)
        expect_gradcheck(lambda *t: student.conv.Conv2d(g.stride, g.padding, has_bias=bias).apply(*t),
                         *map(leaf, arrays), seed=int(rng.integers(2**31)))


IM2COL_DOC = """
TODO: copy every kh x kw window of the padded input into its own column.

x: (N, C, H, W); kernel (kh, kw), stride (sy, sx) and padding (py, px) are pairs of ints.
Returns cols: (N, C, kh, kw, OH, OW), where OH = (H + 2*py - kh) // sy + 1 (OW likewise) and

    cols[n, c, i, j, oy, ox] = xpad[n, c, sy*oy + i, sx*ox + j]

with xpad = x padded by py rows and px columns of pad_value on each side (max pooling pads
with -inf). Hint: loop over the kh*kw kernel offsets (i, j) only; each one is a strided slice
of xpad.
"""

COL2IM_DOC = """
TODO: the adjoint of im2col: add every column entry back onto the pixel it was copied from.

cols: (N, C, kh, kw, OH, OW); x_shape = (N, C, H, W); stride (sy, sx), padding (py, px).
Returns dx: (N, C, H, W), where dxpad[n, c, sy*oy + i, sx*ox + j] receives the SUM of
cols[n, c, i, j, oy, ox] over every (i, j, oy, ox) that points at that pixel, and dx is dxpad
with the padding cut off. Where windows overlap (stride < kernel) a pixel receives several
entries.
"""

CONV2D_DOC = """
2-D convolution (cross-correlation, as in PyTorch) as one matrix product per image:

    cols = im2col(x)                      (N, C*kh*kw, OH*OW)
    y[n] = W.reshape(OC, C*kh*kw) @ cols[n] + b     -> (N, OC, OH, OW)

Implement forward and backward below; check() has already set self.kernel, self.stride and
self.padding as pairs of ints.
"""

FORWARD_DOC = """
TODO: y = conv2d(x, w) + b, through im2col.

x: (N, C, H, W); w: (OC, C, kh, kw); b: (OC,) or None.
Returns y: (N, OC, OH, OW) with
    y[n, o, oy, ox] = sum_{c, i, j} w[o, c, i, j] * xpad[n, c, sy*oy + i, sx*ox + j] + b[o].
Save on self what backward needs (the columns, the shapes, w).
"""

BACKWARD_DOC = """
TODO: the gradients of the loss L with respect to x, w and b.

gy = dL/dy: (N, OC, OH, OW).
With cols = im2col(x) reshaped to (N, C*kh*kw, OH*OW) and gy reshaped to (N, OC, OH*OW):
    dw = sum over n of gy[n] @ cols[n]^T, reshaped to w's shape (OC, C, kh, kw)
    dcols = W^T @ gy[n] for every n, reshaped to (N, C, kh, kw, OH, OW);  dx = col2im(dcols)
    db = sum of gy over n, oy, ox: (OC,)
Return (dx, dw, db), or (dx, dw) when the op was made without a bias
(then self.has_bias is False).
"""

ASSIGNMENT = Assignment(
    number=1,
    name="conv",
    summary="im2col/col2im and the convolution's forward and backward",
    files=("conv.py",),
    targets=(
        Target("conv.py", "im2col", IM2COL_DOC),
        Target("conv.py", "col2im", COL2IM_DOC),
        Target("conv.py", "Conv2d", CONV2D_DOC),
        Target("conv.py", "Conv2d.forward", FORWARD_DOC),
        Target("conv.py", "Conv2d.backward", BACKWARD_DOC),
    ),
    parts=(
        Part("im2col", 2, "im2col against the reference, on every window geometry",
             check_im2col, ("im2col",)),
        Part("col2im", 2, "col2im against the reference; overlapping windows must add up",
             check_col2im, ("col2im",)),
        Part("conv2d_forward", 2, "Conv2d.forward against the reference (your forward with the "
             "reference im2col)", check_conv2d_forward, ("Conv2d.forward",)),
        Part("conv2d_backward", 4, "Conv2d.backward against the reference and numerical gradients "
             "(reference im2col/col2im)", check_conv2d_backward,
             ("Conv2d.forward", "Conv2d.backward")),
    ),
    notes="The max and average pooling ops in `conv.py` call your `im2col` and `col2im` too: "
          "once those pass, pooling works.",
)
