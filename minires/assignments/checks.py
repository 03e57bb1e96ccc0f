"""Comparisons that tell a student what is wrong: the shape, the dtype, or the first wrong element.

Every check raises `Failure` with a message that starts with what was compared ("cols", "dx"), so
the grader can print it as it is.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor
from ..gradcheck import gradcheck

RTOL, ATOL = 1e-6, 1e-9  # loose enough for another summation order, tight enough for any bug


class Failure(Exception):
    """A wrong answer (not a crash): the message says where and by how much."""


def leaf(array):
    """A float64 leaf tensor (of a copy) that takes a gradient."""
    return Tensor(np.array(array, dtype=np.float64), requires_grad=True)


def _as_numpy(what, got, expected):
    if isinstance(got, Tensor):
        got = got.data
    if not backend.is_array(got):
        raise Failure(f"{what}: got {type(got).__name__}, expected an array of shape "
                      f"{tuple(expected.shape)}")
    return backend.to_numpy(got)


def expect_close(what, got, expected, rtol=RTOL, atol=ATOL):
    """`got` has expected's shape and dtype and matches it elementwise (atol scales with it)."""
    expected = backend.to_numpy(expected.data if isinstance(expected, Tensor) else expected)
    got = _as_numpy(what, got, expected)
    if got.shape != expected.shape:
        raise Failure(f"{what}: wrong shape: got {got.shape}, expected {expected.shape}")
    if got.dtype != expected.dtype:
        raise Failure(f"{what}: wrong dtype: got {got.dtype}, expected {expected.dtype}")
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    wrong = ~np.isclose(got, expected, rtol=rtol, atol=atol * scale)
    if wrong.any():
        index = tuple(int(i) for i in np.argwhere(wrong)[0])
        raise Failure(f"{what}: first wrong element at index {index}: got {got[index]:.8g}, "
                      f"expected {expected[index]:.8g} ({int(wrong.sum())} of {wrong.size} "
                      "elements wrong)")


def expect_gradients(names, got, expected, rtol=RTOL, atol=ATOL):
    """backward's return value: one gradient per input, in order, each close to the reference."""
    got, expected = (v if isinstance(v, tuple) else (v,) for v in (got, expected))
    if len(got) != len(names):
        raise Failure(f"backward returned {len(got)} gradient(s), expected {len(names)} "
                      f"({', '.join(names)})")
    for name, g, e in zip(names, got, expected):
        if g is None:
            raise Failure(f"d{name}: backward returned None, expected an array of shape "
                          f"{tuple(e.shape)}")
        expect_close(f"d{name}", g, e, rtol, atol)


def expect_gradcheck(fn, *inputs, seed=0):
    """The op's backward agrees with central differences (float64, random upstream gradient)."""
    report = gradcheck(fn, *inputs, seed=seed)
    if not report.ok:
        raise Failure(f"numerical gradient check (random upstream gradient) failed:\n{report}")
