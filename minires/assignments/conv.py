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

x: (N, C, H, W); kernel (kh, kw), stride (sy, sx) and padding (py, px) are pairs of ints;
pad_value fills the padding (max pooling pads with -inf). Returns cols: (N, C, kh, kw, OH, OW),
x's dtype, with OH = (H + 2*py - kh) // sy + 1 (OW likewise): cols[n, c, i, j, oy, ox] is the
pixel of channel c that kernel offset (i, j) covers when the window sits at output (oy, ox).

Shapes: pad x into xpad: (N, C, H + 2*py, W + 2*px). For one kernel offset (i, j), the pixels
it covers at every output position form one strided (N, C, OH, OW) slice of xpad: loop over the
kh*kw offsets only, never over images, channels or pixels.

Math: cols[n, c, i, j, oy, ox] = xpad[n, c, sy*oy + i, sx*ox + j]
"""

COL2IM_DOC = """
TODO: the adjoint of im2col: add every column entry back onto the pixel it was copied from.

cols: (N, C, kh, kw, OH, OW); x_shape = (N, C, H, W); stride (sy, sx), padding (py, px).
Returns dx: (N, C, H, W), cols' dtype: each pixel receives the SUM of every entry of cols that
im2col copied from it: several where windows overlap (stride < kernel), none where no window
reaches.

Shapes: accumulate into a zero dxpad: (N, C, H + 2*py, W + 2*px), one strided (N, C, OH, OW)
slice per kernel offset (i, j), then cut the padding off.

Math: dxpad[n, c, sy*oy + i, sx*ox + j] += cols[n, c, i, j, oy, ox] for every (i, j, oy, ox);
dx = dxpad[:, :, py:py + H, px:px + W].
"""

CONV2D_DOC = """
2-D convolution (cross-correlation, as in PyTorch), computed through im2col:

    y[n, o, oy, ox] = sum over c, i, j of w[o, c, i, j] * xpad[n, c, sy*oy + i, sx*ox + j] + b[o]

Implement forward and backward below; check() has already set self.kernel, self.stride and
self.padding as pairs of ints (self.has_bias says whether there is a b).

Shapes: with cols = im2col(x) viewed as (N, C*kh*kw, OH*OW) and w viewed as (OC, C*kh*kw), the
convolution is one matrix product per image.
"""

FORWARD_DOC = """
TODO: y = conv2d(x, w) + b (the class docstring says what that is), through im2col.

x: (N, C, H, W); w: (OC, C, kh, kw); b: (OC,) or None. Returns y: (N, OC, OH, OW), x's dtype.
Save on self what backward needs.

Shapes: cols = im2col(x): (N, C, kh, kw, OH, OW), viewed as (N, C*kh*kw, OH*OW); w viewed as
(OC, C*kh*kw); their product, image by image, is (N, OC, OH*OW); view it as (N, OC, OH, OW) and
add b viewed as (1, OC, 1, 1).

Math: y[n] = w.reshape(OC, C*kh*kw) @ cols[n] + b[:, None], for every n at once.
"""

BACKWARD_DOC = """
TODO: the gradients of the loss L with respect to x, w and b.

gy = dL/dy: (N, OC, OH, OW). Returns (dx, dw, db), of the shapes of x, w and b ((N, C, H, W),
(OC, C, kh, kw), (OC,)), or (dx, dw) when the op was made without a bias (self.has_bias is
False). Derive them from the forward, y[n] = W @ cols[n] + b.

Shapes: with cols: (N, C*kh*kw, OH*OW), gy viewed as (N, OC, OH*OW) and W: (OC, C*kh*kw): dw
is a product of gy and cols, summed over the batch: (OC, C*kh*kw), then w's shape; dcols:
(N, C*kh*kw, OH*OW) is a product of W and gy, and col2im turns it (viewed as
(N, C, kh, kw, OH, OW)) into dx; db sums gy over every axis but OC.

Math:
    dw = sum over n of gy[n] @ cols[n]^T, reshaped to w's shape (OC, C, kh, kw)
    dcols[n] = W^T @ gy[n], reshaped to (N, C, kh, kw, OH, OW);  dx = col2im(dcols)
    db = sum of gy over n, oy, ox
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
