"""Every op in minires.functional against central differences, in float64, with a random upstream
gradient (minires.gradcheck). The cases are the ones that can fail: stride 2, padding, overlapping
pool windows (kernel 3, stride 2), broadcasting, non-square kernels and strides, repeated fancy
indices. Inputs of max, relu and max-pool are spaced apart so no finite difference crosses a kink.

conv2d and batch_norm are checked in both implementations: the fast ones in minires.functional and
the readable references (ops/conv.py, ops/norm.py). Also here: gradcheck catching a wrong backward
(including one a sum-based check would pass), col2im as the adjoint of im2col, and naive loop-based
conv2d / pooling beside the im2col ones.
"""
import zlib

import numpy as np
import pytest

import minires
import minires.functional as F
from minires import backend
from minires.autograd import Function
from minires.ops import conv as reference_conv
from minires.ops import norm as reference_norm
from helpers import away_from_zero, make, normal, positive, spaced


def distinct(*shape):
    return lambda rng: spaced(rng, shape)


def beside(x, *constants):
    """Constant float64 arrays (running statistics) on the device of tensor x."""
    return [backend.to_device(np.asarray(c, dtype=np.float64), x.device) for c in constants]


# (id, function of the tensors, makers of the float64 inputs that take gradients)
CASES = [
    # arithmetic, with broadcasting in both directions
    ("add", F.add, [normal(2, 3), normal(2, 3)]),
    ("add-broadcast-3x1-2x1x4", F.add, [normal(3, 1), normal(2, 1, 4)]),
    ("add-broadcast-trailing", F.add, [normal(2, 3, 4), normal(4)]),
    ("sub-broadcast", F.sub, [normal(2, 1, 4), normal(3, 1)]),
    ("mul-broadcast", F.mul, [normal(3, 1), normal(2, 1, 4)]),
    ("mul-scalar-shape", F.mul, [normal(2, 3), normal(1)]),
    ("div", F.div, [normal(2, 3), away_from_zero(2, 3)]),
    ("div-broadcast", F.div, [normal(2, 1, 4), away_from_zero(3, 1)]),
    ("neg", F.neg, [normal(2, 3)]),
    ("pow-2", lambda x: F.pow(x, 2), [normal(2, 3)]),
    ("pow-3", lambda x: F.pow(x, 3), [normal(2, 3)]),
    ("pow-minus-1", lambda x: F.pow(x, -1), [positive(2, 3)]),
    ("pow-0.5", lambda x: F.pow(x, 0.5), [positive(2, 3)]),
    ("exp", F.exp, [normal(2, 3)]),
    ("log", F.log, [positive(2, 3)]),
    # activations
    ("relu", F.relu, [distinct(3, 4)]),
    ("sigmoid", F.sigmoid, [normal(3, 4)]),
    ("tanh", F.tanh, [normal(3, 4)]),
    # reductions
    ("sum-all", F.sum, [normal(2, 3, 4)]),
    ("sum-axis1", lambda x: F.sum(x, axis=1), [normal(2, 3, 4)]),
    ("sum-axes02-keepdims", lambda x: F.sum(x, axis=(0, 2), keepdims=True), [normal(2, 3, 4)]),
    ("sum-axis-neg", lambda x: F.sum(x, axis=-1), [normal(2, 3, 4)]),
    ("mean-all", F.mean, [normal(2, 3, 4)]),
    ("mean-axis1", lambda x: F.mean(x, axis=1), [normal(2, 3, 4)]),
    ("mean-axes02-keepdims", lambda x: F.mean(x, axis=(0, 2), keepdims=True), [normal(2, 3, 4)]),
    ("max-all", F.max, [distinct(2, 3, 4)]),
    ("max-axis1", lambda x: F.max(x, axis=1), [distinct(2, 3, 4)]),
    ("max-axes02-keepdims", lambda x: F.max(x, axis=(0, 2), keepdims=True), [distinct(2, 3, 4)]),
    # shape
    ("reshape", lambda x: F.reshape(x, (4, -1)), [normal(2, 3, 4)]),
    ("transpose-reverse", F.transpose, [normal(2, 3, 4)]),
    ("transpose-120", lambda x: F.transpose(x, (1, 2, 0)), [normal(2, 3, 4)]),
    ("getitem-slices", lambda x: F.getitem(x, (slice(1, None), slice(None, None, 2))),
     [normal(3, 5)]),
    ("getitem-int", lambda x: F.getitem(x, 1), [normal(3, 5)]),
    ("getitem-ellipsis-newaxis", lambda x: F.getitem(x, (Ellipsis, None, 2)), [normal(2, 3, 4)]),
    ("getitem-repeated-rows", lambda x: F.getitem(x, np.array([0, 2, 0, 0])), [normal(3, 4)]),
    ("getitem-repeated-columns", lambda x: F.getitem(x, (slice(None), [1, 1, 3])), [normal(3, 4)]),
    ("getitem-repeated-pairs", lambda x: F.getitem(x, (np.array([1, 1, 2]), np.array([0, 0, 3]))),
     [normal(3, 4)]),
    ("getitem-mask", lambda x: F.getitem(x, np.array([[True, False, True, False]] * 3)),
     [normal(3, 4)]),
    ("pad-2d", lambda x: F.pad(x, ((1, 2), (0, 1))), [normal(2, 3)]),
    ("pad-4d-value", lambda x: F.pad(x, ((0, 0), (0, 0), (1, 0), (2, 1)), value=0.5),
     [normal(2, 2, 3, 3)]),
    ("concat-axis0", lambda a, b: F.concat([a, b], axis=0), [normal(2, 3), normal(1, 3)]),
    ("concat-axis1-three", lambda a, b, c: F.concat([a, b, c], axis=1),
     [normal(2, 1, 3), normal(2, 2, 3), normal(2, 3, 3)]),
    ("concat-axis-neg", lambda a, b: F.concat([a, b], axis=-1), [normal(2, 3), normal(2, 2)]),
    ("flatten", F.flatten, [normal(2, 3, 2, 2)]),
    ("flatten-start0", lambda x: F.flatten(x, 0), [normal(2, 3, 2)]),
    ("flatten-start2", lambda x: F.flatten(x, 2), [normal(2, 3, 2, 2)]),
    # linear algebra
    ("matmul", F.matmul, [normal(3, 4), normal(4, 2)]),
    ("matmul-batch", F.matmul, [normal(2, 3, 4), normal(2, 4, 2)]),
    ("matmul-batch-broadcast", F.matmul, [normal(2, 1, 3, 4), normal(3, 4, 2)]),
    ("matmul-matrix-times-batch", F.matmul, [normal(3, 4), normal(2, 4, 2)]),
    ("matmul-batch-times-matrix", F.matmul, [normal(2, 3, 4), normal(4, 2)]),
    ("linear", F.linear, [normal(3, 4), normal(2, 4), normal(2)]),
    ("linear-no-bias", F.linear, [normal(3, 4), normal(2, 4)]),
    # convolution and pooling
    ("conv2d-3x3-pad1-bias", lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1),
     [normal(2, 2, 5, 5), normal(3, 2, 3, 3), normal(3)]),
    ("conv2d-3x3-stride2-pad1", lambda x, w: F.conv2d(x, w, stride=2, padding=1),
     [normal(2, 2, 5, 5), normal(3, 2, 3, 3)]),
    ("conv2d-3x2-stride21-pad10", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0)),
     [normal(1, 2, 5, 4), normal(2, 2, 3, 2), normal(2)]),
    ("conv2d-1x1-stride2", lambda x, w: F.conv2d(x, w, stride=2),
     [normal(2, 3, 4, 4), normal(2, 3, 1, 1)]),
    # the readable reference that F.conv2d and F.batch_norm are tested against (ops/conv.py, norm.py)
    ("conv2d-reference-3x3-stride2-pad1-bias",
     lambda x, w, b: reference_conv.conv2d(x, w, b, stride=2, padding=1),
     [normal(2, 2, 5, 5), normal(3, 2, 3, 3), normal(3)]),
    ("conv2d-reference-3x2-stride21-pad10",
     lambda x, w: reference_conv.conv2d(x, w, stride=(2, 1), padding=(1, 0)),
     [normal(1, 2, 5, 4), normal(2, 2, 3, 2)]),
    ("max_pool2d-2-stride2", lambda x: F.max_pool2d(x, 2), [distinct(2, 2, 4, 4)]),
    ("max_pool2d-3-stride2-overlap", lambda x: F.max_pool2d(x, 3, stride=2),
     [distinct(1, 2, 7, 7)]),
    ("max_pool2d-3-stride2-pad1", lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
     [distinct(1, 2, 5, 5)]),
    ("max_pool2d-2x3-stride12", lambda x: F.max_pool2d(x, (2, 3), stride=(1, 2)),
     [distinct(1, 2, 4, 5)]),
    ("avg_pool2d-2", lambda x: F.avg_pool2d(x, 2), [normal(2, 2, 4, 4)]),
    ("avg_pool2d-3-stride2-pad1", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1),
     [normal(1, 2, 5, 5)]),
    ("avg_pool2d-3x2-stride21", lambda x: F.avg_pool2d(x, (3, 2), stride=(2, 1)),
     [normal(1, 2, 5, 4)]),
    ("global_avg_pool2d", F.global_avg_pool2d, [normal(2, 3, 3, 2)]),
    ("global_avg_pool2d-keepdims", lambda x: F.global_avg_pool2d(x, keepdims=True),
     [normal(2, 3, 3, 2)]),
    # normalisation (train mode: the sum of the output's gradient is zero, so u must be random)
    ("batch_norm-train-2d", lambda x, g, b: F.batch_norm(x, g, b, training=True),
     [normal(4, 3), positive(3), normal(3)]),
    ("batch_norm-train-4d", lambda x, g, b: F.batch_norm(x, g, b, training=True),
     [normal(3, 2, 3, 2), positive(2), normal(2)]),
    ("batch_norm-eval-2d", lambda x, g, b: F.batch_norm(
        x, g, b, *beside(x, [0.1, -0.2, 0.3], [0.5, 1.5, 2.0]), training=False),
     [normal(4, 3), positive(3), normal(3)]),
    ("batch_norm-eval-4d", lambda x, g, b: F.batch_norm(
        x, g, b, *beside(x, [0.1, -0.2], [0.5, 1.5]), training=False),
     [normal(3, 2, 3, 2), positive(2), normal(2)]),
    ("batch_norm-reference-train-4d",
     lambda x, g, b: reference_norm.batch_norm(x, g, b, training=True),
     [normal(3, 2, 3, 2), positive(2), normal(2)]),
    ("batch_norm-reference-eval-2d", lambda x, g, b: reference_norm.batch_norm(
        x, g, b, *beside(x, [0.1, -0.2, 0.3], [0.5, 1.5, 2.0]), training=False),
     [normal(4, 3), positive(3), normal(3)]),
    # losses
    ("log_softmax", F.log_softmax, [normal(3, 5)]),
    ("log_softmax-axis-last-3d", lambda x: F.log_softmax(x, axis=-1), [normal(2, 3, 4)]),
    ("cross_entropy", lambda x: F.cross_entropy(x, np.array([0, 4, 2, 4])), [normal(4, 5)]),
    # residual
    ("residual_add", F.residual_add, [normal(2, 3, 2, 2), normal(2, 3, 2, 2)]),
    ("pad_channels-stride2", lambda x: F.pad_channels(x, 4, stride=2), [normal(2, 2, 5, 5)]),
    ("pad_channels-stride1-odd", lambda x: F.pad_channels(x, 5), [normal(1, 2, 3, 3)]),
]

# functional names checked elsewhere: to in test_autograd, im2col/col2im below (not ops)
CHECKED_ELSEWHERE = {"to", "im2col", "col2im"}


def test_every_functional_op_has_a_gradcheck_case():
    covered = {case_id.split("-")[0] for case_id, _, _ in CASES}
    missing = set(F.__all__) - covered - CHECKED_ELSEWHERE
    assert not missing, f"ops without a gradcheck case: {sorted(missing)}"


@pytest.mark.parametrize("case_id, fn, makers", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(device, case_id, fn, makers):
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    inputs = [make(m(rng), device, requires_grad=True) for m in makers]
    assert all(t.dtype == np.float64 for t in inputs)
    report = minires.gradcheck(fn, *inputs)
    assert len(report.inputs) == len(inputs)
    assert report.ok, f"{case_id}:\n{report}"


# --- gradcheck catches what it should -------------------------------------------------------------

class ZeroGradSoftmax(Function):
    """A softmax whose backward returns zeros. The gradient of sum(softmax) is identically zero,
    so a check built on sum() passes it; a random upstream gradient does not."""
    name = "zero_grad_softmax"

    def forward(self, x):
        xp = backend.xp(x)
        e = xp.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def backward(self, gy):
        return gy * 0


class WrongAtOneElement(Function):
    """y = x^2 with a backward that is right everywhere except at x[1, 2]."""
    name = "wrong_at_one_element"

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        gx = 2 * self.x * gy
        gx[1, 2] *= 1.5
        return gx


def test_gradcheck_catches_a_zero_backward(device, rng):
    x = make(rng.standard_normal((3, 4)), device, requires_grad=True)
    report = minires.gradcheck(lambda t: ZeroGradSoftmax().apply(t), x)
    assert not report.ok and not report.inputs[0].ok
    assert report.inputs[0].analytic == 0.0 and report.inputs[0].numeric != 0.0
    assert report.max_relative_error == pytest.approx(1.0)
    assert "MISMATCH" in str(report)
    # ...which a check of sum(f) would have passed: that is why the upstream gradient is random
    assert minires.gradcheck(lambda t: ZeroGradSoftmax().apply(t).sum(), x).ok


def test_gradcheck_names_the_worst_element(device, rng):
    x = make(rng.uniform(0.5, 1.5, (3, 4)), device, requires_grad=True)
    report = minires.gradcheck(lambda t: WrongAtOneElement().apply(t), x)
    worst = report.inputs[0]
    assert not report.ok
    assert worst.worst_index == (1, 2)
    assert worst.analytic == pytest.approx(1.5 * worst.numeric, rel=1e-6)
    assert worst.relative_error == pytest.approx(1 / 3, rel=1e-4)
    assert "(1, 2)" in str(report)
    with pytest.raises(AssertionError, match="gradcheck failed"):
        minires.gradcheck(lambda t: WrongAtOneElement().apply(t), x, raise_on_failure=True)


def test_gradcheck_report_of_a_correct_op(device, rng):
    x = make(rng.standard_normal((2, 3)), device, requires_grad=True)
    w = make(rng.standard_normal((2, 3)), device)  # no grad: not checked
    report = minires.gradcheck(lambda a, b: F.tanh(a) * b, x, w)
    assert report.ok and bool(report)
    assert [r.index for r in report.inputs] == [0]
    assert report.max_relative_error < 1e-6
    assert "ok" in str(report) and "MISMATCH" not in str(report)


def test_gradcheck_rejects_float32(device):
    x = make(np.ones((2, 2), dtype=np.float32), device, requires_grad=True)
    with pytest.raises(TypeError, match="float32.*float64"):
        minires.gradcheck(F.tanh, x)


# --- im2col / col2im ------------------------------------------------------------------------------

WINDOWS = [  # (x shape, kernel, stride, padding): overlapping, padded, non-square, stride 2
    ((2, 3, 5, 5), (3, 3), (1, 1), (1, 1)),
    ((2, 2, 7, 7), (3, 3), (2, 2), (0, 0)),
    ((1, 2, 6, 5), (3, 2), (2, 1), (1, 0)),
    ((1, 1, 4, 4), (2, 2), (2, 2), (0, 0)),
]


@pytest.mark.parametrize("x_shape, kernel, stride, padding", WINDOWS)
def test_col2im_is_the_adjoint_of_im2col(device, rng, x_shape, kernel, stride, padding):
    xp = backend.module_for(device)
    x = xp.asarray(rng.standard_normal(x_shape))
    cols = F.im2col(x, kernel, stride, padding)
    c = xp.asarray(rng.standard_normal(cols.shape))
    back = F.col2im(c, x_shape, stride, padding)
    assert back.shape == x_shape
    lhs, rhs = float((cols * c).sum()), float((x * back).sum())  # <im2col(x), c> == <x, col2im(c)>
    assert lhs == pytest.approx(rhs, rel=1e-12)


def _col2im_with_assignment(cols, x_shape, stride, padding):
    """col2im written with `=` instead of `+=`: the classic bug, kept to show what catches it."""
    n, c, kh, kw, oh, ow = cols.shape
    (sy, sx), (py, px) = stride, padding
    out = np.zeros((n, c, x_shape[2] + 2 * py, x_shape[3] + 2 * px))
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx] = cols[:, :, i, j]
    return out[:, :, py:py + x_shape[2], px:px + x_shape[3]]


def test_adjoint_test_catches_col2im_with_assignment(rng):
    def gap(x_shape, kernel, stride, padding):
        x = rng.standard_normal(x_shape)
        cols = F.im2col(x, kernel, stride, padding)
        c = rng.standard_normal(cols.shape)
        back = _col2im_with_assignment(c, x_shape, stride, padding)
        return abs((cols * c).sum() - (x * back).sum())
    assert gap((1, 1, 4, 4), (2, 2), (2, 2), (0, 0)) < 1e-12   # non-overlapping: the bug hides
    assert gap((1, 1, 5, 5), (3, 3), (2, 2), (0, 0)) > 1e-3    # overlapping windows expose it


# --- naive references beside the fast ops ---------------------------------------------------------

def naive_conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0)):
    """The definition, one output element at a time:
    y[n, o, oy, ox] = b[o] + sum_{c,i,j} w[o, c, i, j] * xpad[n, c, oy*sy + i, ox*sx + j]"""
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    (sy, sx), (py, px) = stride, padding
    xpad = np.zeros((n, c, h + 2 * py, wd + 2 * px))
    xpad[:, :, py:py + h, px:px + wd] = x
    oh, ow = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
    y = np.zeros((n, oc, oh, ow))
    for i in range(n):
        for o in range(oc):
            for oy in range(oh):
                for ox in range(ow):
                    window = xpad[i, :, oy * sy:oy * sy + kh, ox * sx:ox * sx + kw]
                    y[i, o, oy, ox] = (window * w[o]).sum() + (0.0 if b is None else b[o])
    return y


def naive_pool2d(x, kernel, stride, padding, reduce, pad_value):
    """Each output is `reduce` over one window of the padded input."""
    n, c, h, w = x.shape
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    xpad = np.full((n, c, h + 2 * py, w + 2 * px), pad_value)
    xpad[:, :, py:py + h, px:px + w] = x
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    y = np.zeros((n, c, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            window = xpad[:, :, oy * sy:oy * sy + kh, ox * sx:ox * sx + kw]
            y[:, :, oy, ox] = reduce(window, axis=(2, 3))
    return y


CONV_SETTINGS = [  # (x shape, w shape, stride, padding, bias)
    ((2, 3, 6, 6), (4, 3, 3, 3), (1, 1), (1, 1), True),
    ((2, 3, 7, 7), (4, 3, 3, 3), (2, 2), (1, 1), False),
    ((1, 2, 7, 6), (3, 2, 3, 2), (2, 1), (1, 0), True),
    ((2, 4, 6, 6), (2, 4, 1, 1), (2, 2), (0, 0), False),
    ((1, 1, 5, 5), (1, 1, 5, 5), (1, 1), (0, 0), True),
]


@pytest.mark.parametrize("conv2d", [F.conv2d, reference_conv.conv2d], ids=["fast", "reference"])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, bias", CONV_SETTINGS)
def test_conv2d_matches_the_naive_loops(device, rng, conv2d, x_shape, w_shape, stride, padding,
                                        bias):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    expected = naive_conv2d(x, w, b, stride, padding)
    args = [make(x, device), make(w, device)] + ([make(b, device)] if bias else [])
    y = conv2d(*args, stride=stride, padding=padding)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding", [
    ((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 3), (2, 2), (0, 0)),
    ((2, 3), (1, 2), (1, 1)),
])
def test_pools_match_the_naive_loops(device, rng, kernel, stride, padding):
    x = rng.standard_normal((2, 3, 7, 6))
    y_max = F.max_pool2d(make(x, device), kernel, stride, padding)
    y_avg = F.avg_pool2d(make(x, device), kernel, stride, padding)
    expected_max = naive_pool2d(x, kernel, stride, padding, np.max, -np.inf)
    expected_avg = naive_pool2d(x, kernel, stride, padding, np.mean, 0.0)  # zeros count
    np.testing.assert_array_equal(y_max.numpy(), expected_max)
    np.testing.assert_allclose(y_avg.numpy(), expected_avg, rtol=1e-12, atol=1e-15)
