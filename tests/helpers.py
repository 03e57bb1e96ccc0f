"""Helpers for the test suite (imported as `helpers`; conftest.py puts this folder on sys.path)."""
import importlib.util

import numpy as np
import pytest

import minires
from minires import backend

import cupy_standin

GPU = backend.gpu_available() and not cupy_standin.is_registered()  # a real GPU, not the stand-in

requires_gpu = pytest.mark.skipif(not GPU, reason="needs CuPy and a real GPU")
skip_without_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                        reason="needs PyTorch (the test-only oracle)")


def make(array, device, requires_grad=False, dtype=None):
    """A minires tensor of `array` on `device` (NumPy arrays keep their dtype unless `dtype`)."""
    return minires.tensor(np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype),
                          requires_grad=requires_grad, device=device)


def import_torch():
    """torch, or skip the calling test (or module) cleanly when it is not installed."""
    return pytest.importorskip("torch")


def spaced(rng, shape, spacing=0.1, dtype=np.float64):
    """Distinct values at least `spacing` apart, in random order, centred on 0 and away from it:
    max, relu and max-pool have kinks at ties and at 0, where finite differences mean nothing."""
    n = int(np.prod(shape))
    values = (np.arange(n) - (n - 1) / 2) * spacing + spacing / 4  # no value at (or near) 0
    return rng.permutation(values).reshape(shape).astype(dtype)


def assert_close(actual, expected, rtol, atol=0.0, what=""):
    """np.testing.assert_allclose on NumPy copies, with atol scaled by the size of `expected`."""
    actual, expected = backend.to_numpy(actual), backend.to_numpy(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


# input makers for the op tables: each takes a NumPy Generator and returns a float64 array
def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape):
    """Values in [0.5, 2): for log, sqrt-like ops and batch norm's gamma."""
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape):
    """|values| in [0.5, 1.5): for division and kinks at zero."""
    return lambda rng: rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
