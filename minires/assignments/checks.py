"""Comparisons that tell a student what is wrong: the shape, the dtype, or the first wrong element.

These run in the grader's own process, on arrays the student's sandboxed process wrote to disk
(never on objects it made). Every check raises `Failure` with a message that starts with what was
compared ("cols", "dx"), so the grader can print it as it is.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor

RTOL, ATOL = 1e-6, 1e-9  # loose enough for another summation order, tight enough for any bug


class Failure(Exception):
    """A wrong answer (not a crash): the message says where and by how much."""


def leaf(array):
    """A float64 leaf tensor that takes a gradient, on the array itself (no copy), so that an op
    that writes into its input is seen by the grader's check that inputs stay unchanged."""
    return Tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def as_array(what, value):
    """An op's result as a NumPy array, or a Failure naming what came instead."""
    if isinstance(value, Tensor):
        value = value.data
    if not backend.is_array(value):
        raise Failure(f"{what}: got {type(value).__name__}, expected an array")
    value = backend.to_numpy(value)
    if value.dtype.kind not in "biuf":
        raise Failure(f"{what}: got an array of dtype {value.dtype}, expected numbers")
    return value


def named_gradients(names, grads):
    """backward's return value as {"dx": ..., "dw": ...}: one gradient per input, in order. A None
    is left out, and the grader reports it as missing."""
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) != len(names):
        raise Failure(f"backward returned {len(grads)} gradient(s), expected {len(names)} "
                      f"({', '.join(names)})")
    return {f"d{name}": g for name, g in zip(names, grads) if g is not None}


def expect_close(what, got, expected, rtol=RTOL, atol=ATOL):
    """`got` has expected's shape and dtype and matches it elementwise (atol scales with it)."""
    expected = as_array(what, expected)
    got = as_array(what, got)
    if got.shape != expected.shape:
        raise Failure(f"{what}: wrong shape: got {got.shape}, expected {expected.shape}")
    if got.dtype != expected.dtype:
        raise Failure(f"{what}: wrong dtype: got {got.dtype}, expected {expected.dtype}")
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    wrong = ~np.isclose(got, expected, rtol=rtol, atol=atol * scale, equal_nan=True)
    if wrong.any():
        index = tuple(int(i) for i in np.argwhere(wrong)[0])
        raise Failure(f"{what}: first wrong element at index {index}: got {got[index]:.8g}, "
                      f"expected {expected[index]:.8g} ({int(wrong.sum())} of {wrong.size} "
                      "elements wrong)")


def expect_unchanged(name, after, before):
    """An input the op must only read is bit-identical after the call."""
    if after is not None and after.shape == before.shape and \
            np.array_equal(after, before, equal_nan=True):
        return
    where = ""
    if after is not None and after.shape == before.shape:
        index = tuple(int(i) for i in np.argwhere(~np.isclose(after, before, rtol=0, atol=0,
                                                              equal_nan=True))[0])
        where = f" (first changed element at index {index})"
    raise Failure(f"{name}: your code changed this input in place{where}; an op must leave its "
                  "inputs as they were (write the result into a new array instead)")


def compare_case(case, got, expected):
    """The child's arrays for one case against the reference's: inputs first (an op that wrote
    into its input is the usual cause of a wrong output after it), then every output."""
    for name, before in case.inputs.items():
        if name not in case.mutable:
            expect_unchanged(name, got.get(f"input:{name}"), before)
    if case.check is not None:
        return case.check(got, expected)
    for name, value in expected.items():
        if f"output:{name}" not in got:
            raise Failure(f"{name}: your code returned no array for it (None?), expected one of "
                          f"shape {tuple(as_array(name, value).shape)}")
        expect_close(name, got[f"output:{name}"], value, **case.tolerance)
