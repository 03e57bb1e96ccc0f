"""Forward and backward of every op that PyTorch also has, against torch on the CPU, with the same
inputs and the same random upstream gradient: to 1e-10 in float64 and 1e-5 (relative) in float32.
minires runs on the `device` fixture's device; the comparison goes through .numpy().

torch is a test-only oracle: these tests are skipped cleanly when it is not installed.
"""
import numpy as np
import pytest

import minires.functional as F
from minires.ops import conv as reference_conv
from minires.ops import norm as reference_norm
from helpers import assert_close, away_from_zero, import_torch, make, normal, positive

torch = import_torch()
TF = torch.nn.functional

pytestmark = pytest.mark.torch

DTYPES = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]
# rtol, and atol as a fraction of the largest expected magnitude (see helpers.assert_close)
TOLERANCE = {np.float64: (1e-10, 1e-10), np.float32: (1e-5, 1e-6)}


def small_integers(*shape):
    """Values in {0, 1, 2}: full of ties, which minires.max shares equally, as torch.amax does."""
    return lambda rng: rng.integers(0, 3, shape).astype(np.float64)


def assert_matches_torch(minires_fn, torch_fn, arrays, device, dtype, rng):
    """Run both, compare outputs, back-propagate the same random gradient, compare input grads."""
    rtol, atol = TOLERANCE[dtype]
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    ours = [make(a, device, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, expected = minires_fn(*ours), torch_fn(*theirs)
    assert y.dtype == dtype and y.device == device
    assert_close(y.data, expected.detach().numpy(), rtol, atol, "forward")
    upstream = np.asarray(rng.standard_normal(tuple(expected.shape)), dtype=dtype)
    y.backward(make(upstream, device))
    expected.backward(torch.from_numpy(upstream))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.grad is not None, f"input {i} got no gradient"
        assert a.grad.dtype == dtype, f"input {i}: gradient is {a.grad.dtype}"
        assert_close(a.grad.data, b.grad.numpy(), rtol, atol, f"gradient of input {i}")
    return ours, theirs


def np_index(*parts):
    """The same index for NumPy/CuPy (arrays stay NumPy) and for torch (arrays become tensors)."""
    return parts, tuple(torch.from_numpy(p) if isinstance(p, np.ndarray) else p for p in parts)


ROWS, ROWS_T = np_index(np.array([0, 2, 0, 0]))
PAIRS, PAIRS_T = np_index(np.array([1, 1, 2]), slice(None), np.array([0, 0, 3]))
MASK = np.array([[True, False, True, False], [False, False, True, True], [True, True, True, False]])

# (id, minires function, torch function, makers of the inputs)
CASES = [
    ("add", F.add, torch.add, [normal(3, 1), normal(2, 1, 4)]),
    ("sub", F.sub, torch.sub, [normal(2, 3, 4), normal(4)]),
    ("mul", F.mul, torch.mul, [normal(2, 1, 4), normal(3, 1)]),
    ("div", F.div, torch.div, [normal(2, 3, 4), away_from_zero(3, 1)]),
    ("neg", F.neg, torch.neg, [normal(3, 4)]),
    ("pow-2", lambda x: F.pow(x, 2), lambda x: x ** 2, [normal(3, 4)]),
    ("pow-3", lambda x: F.pow(x, 3), lambda x: x ** 3, [normal(3, 4)]),
    ("pow-minus-1", lambda x: F.pow(x, -1), lambda x: x ** -1, [positive(3, 4)]),
    ("pow-2.5", lambda x: F.pow(x, 2.5), lambda x: x ** 2.5, [positive(3, 4)]),
    ("exp", F.exp, torch.exp, [normal(3, 4)]),
    ("log", F.log, torch.log, [positive(3, 4)]),
    ("relu", F.relu, torch.relu, [normal(4, 5)]),
    ("sigmoid", F.sigmoid, torch.sigmoid, [normal(4, 5)]),
    ("tanh", F.tanh, torch.tanh, [normal(4, 5)]),
    ("sum-all", F.sum, torch.sum, [normal(2, 3, 4)]),
    ("sum-axes02-keepdims", lambda x: F.sum(x, axis=(0, 2), keepdims=True),
     lambda x: torch.sum(x, dim=(0, 2), keepdim=True), [normal(2, 3, 4)]),
    ("mean-all", F.mean, torch.mean, [normal(2, 3, 4)]),
    ("mean-axis1", lambda x: F.mean(x, axis=1), lambda x: torch.mean(x, dim=1), [normal(2, 3, 4)]),
    ("max-all-ties", F.max, torch.amax, [small_integers(3, 4)]),
    ("max-axis1-ties", lambda x: F.max(x, axis=1), lambda x: torch.amax(x, dim=1),
     [small_integers(2, 5, 3)]),
    ("max-axes02-keepdims", lambda x: F.max(x, axis=(0, 2), keepdims=True),
     lambda x: torch.amax(x, dim=(0, 2), keepdim=True), [normal(2, 3, 4)]),
    ("reshape", lambda x: F.reshape(x, (4, -1)), lambda x: x.reshape(4, -1), [normal(2, 3, 4)]),
    ("transpose-reverse", F.transpose, lambda x: x.permute(2, 1, 0), [normal(2, 3, 4)]),
    ("transpose-120", lambda x: F.transpose(x, (1, 2, 0)), lambda x: x.permute(1, 2, 0),
     [normal(2, 3, 4)]),
    ("getitem-slices", lambda x: x[1:, ::2], lambda x: x[1:, ::2], [normal(3, 5)]),
    ("getitem-repeated-rows", lambda x: x[ROWS], lambda x: x[ROWS_T], [normal(3, 4)]),
    ("getitem-repeated-pairs", lambda x: x[PAIRS], lambda x: x[PAIRS_T], [normal(3, 2, 4)]),
    ("getitem-mask", lambda x: x[MASK], lambda x: x[torch.from_numpy(MASK)], [normal(3, 4)]),
    ("pad", lambda x: F.pad(x, ((0, 0), (0, 0), (1, 2), (3, 0))),
     lambda x: TF.pad(x, (3, 0, 1, 2)), [normal(2, 2, 3, 3)]),  # torch: last axis first
    ("pad-value", lambda x: F.pad(x, ((1, 0), (0, 2)), value=0.5),
     lambda x: TF.pad(x, (0, 2, 1, 0), value=0.5), [normal(3, 4)]),
    ("concat", lambda a, b, c: F.concat([a, b, c], axis=1), lambda a, b, c: torch.cat([a, b, c], 1),
     [normal(2, 1, 3), normal(2, 2, 3), normal(2, 3, 3)]),
    ("flatten", F.flatten, lambda x: torch.flatten(x, 1), [normal(2, 3, 2, 2)]),
    ("matmul", F.matmul, torch.matmul, [normal(3, 4), normal(4, 5)]),
    ("matmul-batch-broadcast", F.matmul, torch.matmul, [normal(2, 1, 3, 4), normal(5, 4, 2)]),
    ("matmul-batch-times-matrix", F.matmul, torch.matmul, [normal(2, 3, 4), normal(4, 5)]),
    ("linear", F.linear, TF.linear, [normal(5, 4), normal(3, 4), normal(3)]),
    ("linear-no-bias", F.linear, TF.linear, [normal(5, 4), normal(3, 4)]),
    ("conv2d-3x3-pad1", lambda x, w, b: F.conv2d(x, w, b, padding=1),
     lambda x, w, b: TF.conv2d(x, w, b, padding=1),
     [normal(2, 3, 8, 8), normal(4, 3, 3, 3), normal(4)]),
    ("conv2d-3x3-stride2-pad1", lambda x, w: F.conv2d(x, w, stride=2, padding=1),
     lambda x, w: TF.conv2d(x, w, stride=2, padding=1), [normal(2, 3, 8, 8), normal(4, 3, 3, 3)]),
    ("conv2d-3x2-stride21-pad10", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0)),
     lambda x, w, b: TF.conv2d(x, w, b, stride=(2, 1), padding=(1, 0)),
     [normal(2, 3, 7, 6), normal(4, 3, 3, 2), normal(4)]),
    ("conv2d-1x1-stride2", lambda x, w: F.conv2d(x, w, stride=2),
     lambda x, w: TF.conv2d(x, w, stride=2), [normal(2, 4, 8, 8), normal(6, 4, 1, 1)]),
    ("conv2d-reference-3x3-stride2-pad1",
     lambda x, w, b: reference_conv.conv2d(x, w, b, stride=2, padding=1),
     lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1),
     [normal(2, 3, 8, 8), normal(4, 3, 3, 3), normal(4)]),
    ("max_pool2d-2", lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2),
     [normal(2, 3, 6, 6)]),
    ("max_pool2d-3-stride2-pad1", lambda x: F.max_pool2d(x, 3, 2, 1),
     lambda x: TF.max_pool2d(x, 3, 2, 1), [normal(2, 3, 7, 7)]),
    ("max_pool2d-2x3-stride12", lambda x: F.max_pool2d(x, (2, 3), (1, 2)),
     lambda x: TF.max_pool2d(x, (2, 3), (1, 2)), [normal(2, 3, 5, 7)]),
    ("avg_pool2d-2", lambda x: F.avg_pool2d(x, 2), lambda x: TF.avg_pool2d(x, 2),
     [normal(2, 3, 6, 6)]),
    ("avg_pool2d-3-stride2-pad1", lambda x: F.avg_pool2d(x, 3, 2, 1),
     lambda x: TF.avg_pool2d(x, 3, 2, 1, count_include_pad=True), [normal(2, 3, 7, 7)]),
    ("avg_pool2d-3x2-stride21", lambda x: F.avg_pool2d(x, (3, 2), (2, 1), (1, 1)),
     lambda x: TF.avg_pool2d(x, (3, 2), (2, 1), (1, 1)), [normal(2, 3, 7, 6)]),
    ("global_avg_pool2d", F.global_avg_pool2d,
     lambda x: TF.adaptive_avg_pool2d(x, 1).flatten(1), [normal(2, 3, 4, 5)]),
    ("global_avg_pool2d-keepdims", lambda x: F.global_avg_pool2d(x, keepdims=True),
     lambda x: TF.adaptive_avg_pool2d(x, 1), [normal(2, 3, 4, 5)]),
    ("log_softmax", F.log_softmax, lambda x: TF.log_softmax(x, dim=1), [normal(4, 6)]),
    ("log_softmax-axis-last-3d", lambda x: F.log_softmax(x, axis=-1),
     lambda x: TF.log_softmax(x, dim=-1), [normal(2, 3, 5)]),
    ("residual_add", F.residual_add, torch.add, [normal(2, 3, 4, 4), normal(2, 3, 4, 4)]),
    ("pad_channels-stride2", lambda x: F.pad_channels(x, 8, stride=2),
     lambda x: TF.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2)), [normal(2, 4, 5, 5)]),
    ("pad_channels-stride1-odd", lambda x: F.pad_channels(x, 5),
     lambda x: TF.pad(x, (0, 0, 0, 0, 1, 2)), [normal(2, 2, 3, 3)]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id, ours, theirs, makers", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(device, rng, dtype, case_id, ours, theirs, makers):
    assert_matches_torch(ours, theirs, [m(rng) for m in makers], device, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_matches_torch(device, rng, dtype):
    labels = np.array([0, 5, 2, 2, 1])
    assert_matches_torch(lambda x: F.cross_entropy(x, make(labels, device)),
            lambda x: TF.cross_entropy(x, torch.from_numpy(labels)),
            [rng.standard_normal((5, 6)) * 3], device, dtype, rng)


BATCH_NORMS = [pytest.param(F.batch_norm, id="fast"),
               pytest.param(reference_norm.batch_norm, id="reference")]


@pytest.mark.parametrize("batch_norm", BATCH_NORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(6, 3), (4, 3, 3, 2)], ids=["2d", "4d"])
def test_batch_norm_train_matches_torch(device, rng, batch_norm, dtype, x_shape):
    """Output, grads of x/gamma/beta, and the running statistics (torch: unbiased running var)."""
    rtol, atol = TOLERANCE[dtype]
    channels = x_shape[1]
    start_mean, start_var = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    # copies: minires.tensor wraps a NumPy array without copying, and batch_norm updates in place
    ours_mean = make(start_mean.copy(), device, dtype=dtype)
    ours_var = make(start_var.copy(), device, dtype=dtype)
    torch_mean = torch.tensor(start_mean.astype(dtype))
    torch_var = torch.tensor(start_var.astype(dtype))
    assert_matches_torch(lambda x, g, b: batch_norm(x, g, b, ours_mean, ours_var, True, momentum=0.2),
            lambda x, g, b: TF.batch_norm(x, torch_mean, torch_var, g, b, True, momentum=0.2),
            [rng.standard_normal(x_shape) * 2 + 1, rng.uniform(0.5, 2, channels),
             rng.standard_normal(channels)], device, dtype, rng)
    assert not np.allclose(torch_mean.numpy(), start_mean)  # the statistics did move
    assert_close(ours_mean.data, torch_mean.numpy(), rtol, atol, "running_mean")
    assert_close(ours_var.data, torch_var.numpy(), rtol, atol, "running_var")


@pytest.mark.parametrize("batch_norm", BATCH_NORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(6, 3), (4, 3, 3, 2)], ids=["2d", "4d"])
def test_batch_norm_eval_matches_torch(device, rng, batch_norm, dtype, x_shape):
    channels = x_shape[1]
    mean, var = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    ours_mean = make(mean.copy(), device, dtype=dtype)
    ours_var = make(var.copy(), device, dtype=dtype)
    torch_mean, torch_var = torch.tensor(mean.astype(dtype)), torch.tensor(var.astype(dtype))
    assert_matches_torch(lambda x, g, b: batch_norm(x, g, b, ours_mean, ours_var, training=False),
            lambda x, g, b: TF.batch_norm(x, torch_mean, torch_var, g, b, training=False),
            [rng.standard_normal(x_shape), rng.uniform(0.5, 2, channels),
             rng.standard_normal(channels)], device, dtype, rng)
    np.testing.assert_array_equal(ours_mean.numpy(), mean.astype(dtype))  # eval leaves them alone
    np.testing.assert_array_equal(ours_var.numpy(), var.astype(dtype))


@pytest.mark.parametrize("size", [pytest.param(7, id="reference"),
                                  pytest.param(1 << 17, id="fast-path-size")])
def test_relu_of_infinities_and_nan_matches_torch(device, size):
    """relu(-inf) = 0 (not -inf * 0 = NaN), relu(inf) = inf, relu(NaN) = NaN, as in torch; the
    gradient is the upstream one where x > 0 and 0 elsewhere, also for an infinite upstream
    gradient, as in torch, except at x = NaN, where torch passes the upstream gradient and minires
    gives 0. At 2**17 values NumPy inputs take minires.fast."""
    edge = np.array([-np.inf, -1.0, -0.0, 0.0, 2.0, np.inf, np.nan], np.float32)
    values = np.resize(edge, size).reshape(1, 1, 1, size)
    x, theirs = make(values, device, requires_grad=True), torch.tensor(values, requires_grad=True)
    y, expected = F.relu(x), torch.relu(theirs)
    np.testing.assert_array_equal(y.numpy(), expected.detach().numpy())  # NaN where torch has NaN
    upstream = np.resize(np.array([np.inf, 1.0, -np.inf], np.float32), size).reshape(values.shape)
    y.backward(make(upstream, device))                  # infinite gy at x <= 0: 0, not inf * 0
    expected.backward(torch.tensor(upstream))
    is_nan = np.isnan(values)
    np.testing.assert_array_equal(x.grad.numpy()[~is_nan], theirs.grad.numpy()[~is_nan])
    assert (x.grad.numpy()[is_nan] == 0).all()


@pytest.mark.parametrize("ours, theirs", [
    pytest.param(lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), id="max_pool2d"),
    pytest.param(lambda x: F.max(x, axis=(2, 3)), lambda x: torch.amax(x, dim=(2, 3)), id="max"),
])
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_an_infinite_gradient_through_a_max_is_torchs(device, ours, theirs):
    """max_pool2d routes gy to each window's argmax and 0 elsewhere, as torch does (not
    mask * gy, which is inf * 0 = NaN at the window's other inputs). torch.amax shares gy among
    ties as mask * gy / count, so NaN there is torch's too; minires.max computes it the same way."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    x, x_torch = make(values, device, requires_grad=True), torch.tensor(values, requires_grad=True)
    y, y_torch = ours(x), theirs(x_torch)
    upstream = np.full(tuple(y_torch.shape), np.inf, np.float32)
    upstream.flat[::2] = -np.inf
    y.backward(make(upstream, device))
    y_torch.backward(torch.tensor(upstream))
    np.testing.assert_array_equal(x.grad.numpy(), x_torch.grad.numpy())
