"""fast/elementwise.py: relu and residual_add over the pool's threads, against the readable
references (ops/activation.py, ops/residual.py) bit for bit, forward and backward, in every
memory layout they take or fall back from; a float64 gradcheck and PyTorch on the fast path;
the layout they hand on; which implementation minires.functional picks.

The error messages on bad input are tested through minires.functional (tests/test_op_errors.py),
which, as the first test here shows, runs these ops. CPU-only by nature (CuPy arrays go to the
references): every tensor here is made on "cpu".
"""
import numpy as np
import pytest

import minires
import minires.functional as F
from minires.fast import elementwise as fast
from minires.fast import memory
from minires.gradcheck import gradcheck
from minires.ops import activation as reference_activation
from minires.ops import residual as reference_residual
from helpers import import_torch, make, skip_without_torch, spaced

pytestmark = pytest.mark.cpu_only  # the CPU speed layer: see conftest.py


@pytest.fixture
def small_pieces(monkeypatch):
    """The fast paths on small inputs too, each cut into many pieces over the pool."""
    monkeypatch.setattr(fast, "MIN_SIZE", 0)
    monkeypatch.setattr(fast, "PIECE_BYTES", 64)


def nchw(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def channels_last(rng, shape, dtype):
    """An (N, C, H, W) view of (N, H, W, C) memory, as the fast conv and batch norm return."""
    n, c, h, w = shape
    return rng.standard_normal((n, h, w, c)).astype(dtype).transpose(0, 3, 1, 2)


def with_gaps(rng, shape, dtype):
    """Every other column of a wider array: not one gap-free run (the reference runs)."""
    n, c, h, w = shape
    return rng.standard_normal((n, c, h, 2 * w)).astype(dtype)[..., ::2]


LAYOUTS = {"nchw": nchw, "channels-last": channels_last, "with-gaps": with_gaps}
DTYPES = [np.float16, np.float32, np.float64]
SHAPE = (3, 5, 4, 6)


def relu_and_grad(relu, x, gy):
    xt = make(x, "cpu", requires_grad=True)
    y = relu(xt)
    y.backward(make(gy, "cpu"))
    return y.data, xt.grad.numpy()


def add_and_grads(add, a, b, gy):
    at, bt = make(a, "cpu", requires_grad=True), make(b, "cpu", requires_grad=True)
    y = add(at, bt)
    y.backward(make(gy, "cpu"))
    return y.data, at.grad.numpy(), bt.grad.numpy()


def assert_identical(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_functional_runs_the_fast_ops_on_numpy_and_the_references_when_asked():
    x = make(np.ones((2, 3)), "cpu", requires_grad=True)
    assert type(F.relu(x).creator) is fast.FastReLU
    assert type(F.residual_add(x, x).creator) is fast.FastResidualAdd
    minires.use_reference_ops()
    try:
        assert type(F.relu(x).creator) is reference_activation.ReLU
        assert type(F.residual_add(x, x).creator) is reference_residual.ResidualAdd
    finally:
        minires.use_fast_ops()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_relu_is_the_reference_bit_for_bit(small_pieces, layout, dtype):
    rng = np.random.default_rng(0)
    x, gy = LAYOUTS[layout](rng, SHAPE, dtype), nchw(rng, SHAPE, dtype)
    x[0, 0, 0, :3] = [0.0, -np.inf, np.nan]                   # the reference's edge values
    for got, want in zip(relu_and_grad(fast.relu, x, gy),
                         relu_and_grad(reference_activation.relu, x, gy)):
        assert_identical(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout_a, layout_b", [("nchw", "nchw"),
                                                ("channels-last", "channels-last"),
                                                ("nchw", "channels-last"),     # differ: reference
                                                ("with-gaps", "nchw")])
def test_residual_add_is_the_reference_bit_for_bit(small_pieces, layout_a, layout_b, dtype):
    rng = np.random.default_rng(1)
    a, b = LAYOUTS[layout_a](rng, SHAPE, dtype), LAYOUTS[layout_b](rng, SHAPE, dtype)
    gy = nchw(rng, SHAPE, dtype)
    for got, want in zip(add_and_grads(fast.residual_add, a, b, gy),
                         add_and_grads(reference_residual.residual_add, a, b, gy)):
        assert_identical(got, want)


def test_two_dimensional_inputs(small_pieces):
    rng = np.random.default_rng(2)
    x, gy = nchw(rng, (7, 9), np.float32), nchw(rng, (7, 9), np.float32)
    for got, want in zip(relu_and_grad(fast.relu, x, gy),
                         relu_and_grad(reference_activation.relu, x, gy)):
        assert_identical(got, want)


def test_channels_last_in_channels_last_out_and_lent(no_stray_frees):
    """At the default sizes: the results keep the input's layout, so the next conv reads them with
    no copy, and they are lent from minires' cache (fast/memory.py)."""
    rng = np.random.default_rng(3)
    shape = (4, 16, 32, 32)                                   # above MIN_SIZE: the fast path
    assert np.prod(shape) >= fast.MIN_SIZE
    x = make(channels_last(rng, shape, np.float32), "cpu")
    lent_before = memory.cache_stats()["lent_bytes"]
    y = F.relu(x)
    s = F.residual_add(y, x)
    for out in (y, s):
        assert out.data.strides == x.data.strides
        assert out.data.transpose(0, 2, 3, 1).flags.c_contiguous
    assert memory.cache_stats()["lent_bytes"] - lent_before >= 2 * x.data.nbytes
    np.testing.assert_array_equal(s.data, np.maximum(x.data, 0) + x.data)


@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_gradcheck_float64(small_pieces, layout):
    rng = np.random.default_rng(4)
    x = make(spaced(rng, SHAPE).transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)
             if layout == "channels-last" else spaced(rng, SHAPE), "cpu", requires_grad=True)
    b = make(rng.standard_normal(SHAPE), "cpu", requires_grad=True)
    assert gradcheck(fast.relu, x).ok
    assert gradcheck(lambda s, t: fast.residual_add(fast.relu(s), t), x, b).ok


@skip_without_torch
def test_against_pytorch(small_pieces):
    torch = import_torch()
    rng = np.random.default_rng(5)
    a, b, gy = (channels_last(rng, SHAPE, np.float64) for _ in range(3))
    am, bm = make(a, "cpu", requires_grad=True), make(b, "cpu", requires_grad=True)
    ym = fast.residual_add(fast.relu(am), bm)
    ym.backward(make(gy, "cpu"))
    at, bt = (torch.tensor(v, requires_grad=True) for v in (a, b))
    yt = torch.add(torch.relu(at), bt)
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(ym.data, yt.detach().numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(am.grad.numpy(), at.grad.numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(bm.grad.numpy(), bt.grad.numpy(), rtol=0, atol=1e-15)


def test_memory_axes_tells_gap_free_layouts():
    rng = np.random.default_rng(6)
    assert fast.memory_axes(nchw(rng, SHAPE, np.float32)) == [0, 1, 2, 3]
    assert fast.memory_axes(channels_last(rng, SHAPE, np.float32)) == [0, 2, 3, 1]
    assert fast.memory_axes(with_gaps(rng, SHAPE, np.float32)) is None
