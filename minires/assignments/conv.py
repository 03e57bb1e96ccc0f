"""Assignment 1, conv: im2col, col2im, and the convolution's forward and backward through them.

The window geometries are the cases that catch the usual mistakes: overlapping windows (kernel 3,
stride 1 and stride 2; a col2im that writes `=` instead of `+=` passes only the 2x2 stride-2 case),
padding, a stride that leaves rows over, and a non-square kernel with unequal strides.
"""
from typing import NamedTuple

from ..ops import conv as reference
from .checks import leaf, named_gradients
from .definitions import Assignment, Case, Part, Target


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


def _im2col_case(label, x, g, **settings):
    return Case(label, {"x": x}, lambda impl, a: {
        "cols": impl.conv.im2col(a["x"], g.kernel, g.stride, g.padding, **settings)})


def im2col_cases(rng):
    cases = [_im2col_case(g.label, rng.standard_normal(g.x_shape), g) for g in GEOMETRIES]
    g = GEOMETRIES[1]
    return cases + [_im2col_case("3x3 kernel, padding 1 with pad_value=-inf (as max pooling pads)",
                                 rng.standard_normal(g.x_shape), g, pad_value=-float("inf"))]


def col2im_cases(rng):
    def case(g):
        return Case(g.label, {"cols": rng.standard_normal(g.cols_shape())}, lambda impl, a: {
            "x": impl.conv.col2im(a["cols"], g.x_shape, g.stride, g.padding)})
    return [case(g) for g in GEOMETRIES]


def _conv_inputs(g, rng, bias):
    """x, w and (with bias) b for geometry g, as float64 arrays."""
    arrays = {"x": rng.standard_normal(g.x_shape),
              "w": rng.standard_normal((OUT_CHANNELS, g.x_shape[1], *g.kernel))}
    if bias:
        arrays["b"] = rng.standard_normal(OUT_CHANNELS)
    return arrays


def _label(g, bias):
    return f"{g.label}, {'with' if bias else 'no'} bias"


def conv2d_forward_cases(rng):
    def case(g, bias):
        return Case(_label(g, bias), _conv_inputs(g, rng, bias), lambda impl, a: {
            "y": impl.conv.Conv2d(g.stride, g.padding, has_bias=bias).apply(*a.values())})
    return [case(g, i > 0) for i, g in enumerate(GEOMETRIES)]


def conv2d_backward_cases(rng):
    def case(g, bias):
        inputs = _conv_inputs(g, rng, bias)
        n, _, h, w = g.x_shape
        oh, ow = (reference.output_size(*a) for a in zip((h, w), g.kernel, g.stride, g.padding))
        inputs["gy"] = rng.standard_normal((n, OUT_CHANNELS, oh, ow))

        def run(impl, a):
            op = impl.conv.Conv2d(g.stride, g.padding, has_bias="b" in a)
            op.apply(*(leaf(a[k]) for k in ("x", "w", "b") if k in a))
            return named_gradients(("x", "w", "b")[:len(a) - 1], op.backward(a["gy"]))
        return Case(f"{_label(g, bias)}, random upstream gradient", inputs, run)
    return [case(g, i > 0) for i, g in enumerate(GEOMETRIES)]


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
             im2col_cases, ("im2col",)),
        Part("col2im", 2, "col2im against the reference; overlapping windows must add up",
             col2im_cases, ("col2im",)),
        Part("conv2d_forward", 2, "Conv2d.forward against the reference (your forward on your "
             "own im2col)", conv2d_forward_cases, ("Conv2d.forward",)),
        Part("conv2d_backward", 4, "Conv2d.backward against the reference, random upstream "
             "gradient (on your own im2col and col2im; written by hand, not through forward or "
             "autograd)", conv2d_backward_cases,
             ("Conv2d.forward", "Conv2d.backward")),
    ),
    notes="The max and average pooling ops in `conv.py` call your `im2col` and `col2im` too: "
          "once those pass, pooling works.",
)
