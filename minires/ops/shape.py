"""Ops that move elements without arithmetic: reshape transpose getitem pad concat flatten, and
the move between devices. Each backward puts the gradient back where the element came from.

Reshape, transpose, getitem (with slices), identity and a move to the device x is on return views
of x where NumPy can: `may_return_view` tells autograd, which then gives the output x's count of
in-place changes (autograd.py, "In-place changes")."""
import itertools
import math

import numpy as np

from .. import backend
from ..autograd import Function, Tensor


class Reshape(Function):
    """y = x viewed with a new shape;  dx = gy reshaped back"""
    name = "reshape"
    may_return_view = True

    def __init__(self, shape):
        self.shape = tuple(shape) if not isinstance(shape, int) else (shape,)

    def check(self, x):
        known, free = math.prod(n for n in self.shape if n != -1), self.shape.count(-1)
        fits = (free == 0 and known == x.size) or (free == 1 and known and x.size % known == 0)
        if not fits:
            raise ValueError(f"reshape: cannot reshape x: {tuple(x.shape)} ({x.size} elements) "
                             f"to {self.shape}")

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.in_shape)


class Transpose(Function):
    """y = x with axes permuted;  dx = gy with the inverse permutation"""
    name = "transpose"
    may_return_view = True

    def __init__(self, axes=None):
        self.axes = None if axes is None else tuple(axes)

    def check(self, x):
        if self.axes is not None and sorted(a % x.ndim for a in self.axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {self.axes} are not a permutation of the "
                             f"{x.ndim} axes of x: {tuple(x.shape)}")

    def forward(self, x):
        self.perm = tuple(range(x.ndim))[::-1] if self.axes is None else tuple(
            a % x.ndim for a in self.axes)
        return x.transpose(self.perm)

    def backward(self, gy):
        inverse = [0] * len(self.perm)
        for i, a in enumerate(self.perm):
            inverse[a] = i
        return gy.transpose(inverse)


class GetItem(Function):
    """y = x[index];  dx = zeros with gy added at index (repeated indices accumulate)"""
    name = "getitem"
    may_return_view = True

    def __init__(self, index):
        self.index = index.data if isinstance(index, Tensor) else index

    def check(self, x):
        """Index x's shape on the host: CuPy wraps out-of-range index arrays around silently."""
        parts = self.index if isinstance(self.index, tuple) else (self.index,)
        host_index = tuple(backend.to_numpy(p) if backend.is_array(p) else p for p in parts)
        try:
            np.broadcast_to(np.empty((), dtype=bool), x.shape)[host_index]
        except IndexError as error:
            raise IndexError(f"getitem: {error} (x: {tuple(x.shape)})") from None

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        gx = backend.xp(gy).zeros(self.x_shape, dtype=self.x_dtype)
        backend.scatter_add(gx, self.index, gy)
        return gx


class Pad(Function):
    """y = x with zeros (or `value`) around it, widths per axis as in numpy.pad;  dx = gy's interior"""
    name = "pad"

    def __init__(self, pad_width, value=0.0):
        self.pad_width, self.value = pad_width, value

    def check(self, x):
        try:
            widths = tuple((int(a), int(b)) for a, b in self.pad_width)
        except (TypeError, ValueError):
            raise TypeError(f"pad: pad_width must be one (before, after) pair per axis, "
                            f"got {self.pad_width!r} for x: {tuple(x.shape)}") from None
        if len(widths) != x.ndim or any(a < 0 or b < 0 for a, b in widths):
            raise ValueError(f"pad: pad_width {widths} needs {x.ndim} non-negative pairs "
                             f"for x: {tuple(x.shape)}")
        self.widths = widths

    def forward(self, x):
        return backend.xp(x).pad(x, self.widths, constant_values=self.value)

    def backward(self, gy):
        return gy[tuple(slice(a, n - b) for (a, b), n in zip(self.widths, gy.shape))]


class Concat(Function):
    """y = inputs joined along `axis`;  each dx = its slice of gy"""
    name = "concat"

    def __init__(self, axis=0):
        self.axis = axis

    def check(self, *xs):
        if not xs:
            raise ValueError("concat: needs at least one tensor")
        first = xs[0]
        if not -first.ndim <= self.axis < first.ndim:
            raise ValueError(f"concat: axis {self.axis} is out of range for input 0: "
                             f"{tuple(first.shape)}")
        for i, x in enumerate(xs):
            same = x.ndim == first.ndim and all(
                a == b for k, (a, b) in enumerate(zip(x.shape, first.shape))
                if k != self.axis % first.ndim)
            if not same:
                raise ValueError(f"concat: input {i} has shape {tuple(x.shape)}, which does not "
                                 f"match {tuple(first.shape)} outside axis {self.axis}")

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return backend.xp(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, gy):
        cuts = list(itertools.accumulate(self.sizes[:-1]))
        return tuple(backend.xp(gy).split(gy, cuts, axis=self.axis))


class Identity(Function):
    """y = x;  dx = gy. A graph node that changes nothing, where a hook needs its own tensor."""
    name = "identity"
    may_return_view = True

    def forward(self, x):
        return x

    def backward(self, gy):
        return gy


class ToDevice(Function):
    """y = x copied to another device;  dx = gy copied back"""
    name = "to"
    may_return_view = True

    def __init__(self, device):
        self.device = backend.check_device(device)

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy):
        return backend.to_device(gy, self.source)


def reshape(x, shape):
    return Reshape(shape).apply(x)


def transpose(x, axes=None):
    return Transpose(axes).apply(x)


def getitem(x, index):
    return GetItem(index).apply(x)


def pad(x, pad_width, value=0.0):
    """Constant padding; pad_width is one (before, after) pair per axis, as in numpy.pad."""
    return Pad(pad_width, value).apply(x)


def concat(tensors, axis=0):
    return Concat(axis).apply(*tensors)


def flatten(x, start_dim=1):
    """Merge axes start_dim.. into one: (N, C, H, W) -> (N, C*H*W) by default, as nn.Flatten."""
    shape = x.shape
    if not -len(shape) <= start_dim < max(1, len(shape)):
        raise ValueError(f"flatten: start_dim {start_dim} is out of range for x: {tuple(shape)}")
    start_dim %= max(1, len(shape))
    return Reshape(tuple(shape[:start_dim]) + (-1,)).apply(x)


def identity(x):
    return Identity().apply(x)


def to(x, device):
    """x on `device`, differentiably (the gradient goes back to x's device): Tensor.to.
    (backend.to_device moves a bare array, outside any graph.)"""
    return ToDevice(device).apply(x)
