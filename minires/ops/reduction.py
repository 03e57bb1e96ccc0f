"""Reductions: sum mean max, over all elements or the given axes."""
import math

from .. import backend
from ..autograd import Function
from ._checks import require_float


def _normalize_axes(op, axis, ndim, shape):
    """A sorted tuple of non-negative axes; a clear error for an axis the array does not have."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for shape {tuple(shape)}")
    return tuple(sorted(a % ndim for a in axes))


def _expand(gy, shape, axes):
    """Broadcast a reduced gradient back to the input shape (re-inserting the reduced axes)."""
    xp = backend.xp(gy)
    return xp.broadcast_to(xp.expand_dims(gy, axes) if gy.ndim < len(shape) else gy, shape)


class _Reduce(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def check(self, x):
        require_float(self.name, x=x)
        self.axes = _normalize_axes(self.name, self.axis, x.ndim, x.shape)


class Sum(_Reduce):
    """y = sum over axes;  dx = gy broadcast back"""
    name = "sum"

    def forward(self, x):
        self.shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        return _expand(gy, self.shape, self.axes).copy()


class Mean(_Reduce):
    """y = mean over axes;  dx = gy / n broadcast back (n = number of elements averaged)"""
    name = "mean"

    def forward(self, x):
        self.shape = x.shape
        self.count = math.prod(x.shape[a] for a in self.axes)
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        return _expand(gy / self.count, self.shape, self.axes).copy()


class Max(_Reduce):
    """y = max over axes;  dx = gy where x equals the max, shared equally among ties (as torch.amax)"""
    name = "max"

    def forward(self, x):
        y = x.max(axis=self.axes, keepdims=True)
        self.mask = x == y
        return y if self.keepdims else y.squeeze(self.axes)

    def backward(self, gy):
        ties = self.mask.sum(axis=self.axes, keepdims=True, dtype=gy.dtype)  # not int: keeps float32
        gy = gy.reshape(ties.shape) if gy.ndim < self.mask.ndim else gy
        return self.mask * (gy / ties)


def sum(x, axis=None, keepdims=False):
    return Sum(axis, keepdims).apply(x)


def mean(x, axis=None, keepdims=False):
    return Mean(axis, keepdims).apply(x)


def max(x, axis=None, keepdims=False):
    return Max(axis, keepdims).apply(x)
