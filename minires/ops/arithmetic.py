"""Elementwise arithmetic with NumPy broadcasting: add sub mul div neg pow exp log.

With broadcasting, an input of shape (C, 1) may meet one of shape (N, C, H): its gradient is the
upstream gradient summed back down to (C, 1) (`sum_to`).
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor
from ._checks import require_float


def sum_to(grad, shape):
    """Sum `grad` over the axes that broadcasting expanded, so it has `shape` again."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    summed = grad.sum(axis=axes, keepdims=True)
    return summed.reshape(shape)


class _Binary(Function):
    """Two inputs that broadcast together; a clear error when they cannot."""

    def check(self, a, b):
        require_float(self.name, a=a, b=b)
        try:
            np.broadcast_shapes(a.shape, b.shape)  # shape arithmetic: NumPy's, on any device
        except ValueError:
            raise ValueError(f"{self.name}: shapes {tuple(a.shape)} and {tuple(b.shape)} "
                             "do not broadcast") from None


class Add(_Binary):
    """y = a + b;  da = gy, db = gy (summed to each shape)"""
    name = "add"

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Sub(_Binary):
    """y = a - b;  da = gy, db = -gy"""
    name = "sub"

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])


class Mul(_Binary):
    """y = a * b;  da = gy * b, db = gy * a"""
    name = "mul"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return sum_to(gy * self.b, self.a.shape), sum_to(gy * self.a, self.b.shape)


class Div(_Binary):
    """y = a / b;  da = gy / b, db = -gy * a / b^2"""
    name = "div"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = gy / self.b
        return sum_to(ga, self.a.shape), sum_to(-ga * self.a / self.b, self.b.shape)


class Neg(Function):
    """y = -x;  dx = -gy"""
    name = "neg"

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x^c for a constant c;  dx = gy * c * x^(c-1)"""
    name = "pow"

    def __init__(self, exponent):
        self.exponent = exponent

    def check(self, x):
        require_float(self.name, x=x)

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, gy):
        return gy * self.exponent * self.x ** (self.exponent - 1)


class Exp(Function):
    """y = e^x;  dx = gy * y"""
    name = "exp"

    def check(self, x):
        require_float(self.name, x=x)

    def forward(self, x):
        self.y = backend.xp(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    """y = ln x;  dx = gy / x"""
    name = "log"

    def check(self, x):
        require_float(self.name, x=x)

    def forward(self, x):
        self.x = x
        return backend.xp(x).log(x)

    def backward(self, gy):
        return gy / self.x


def _pair(a, b):
    """Tensors for a binary op; a Python scalar takes the other operand's dtype and device."""
    if not isinstance(a, Tensor) and isinstance(b, Tensor):
        return as_tensor(a, like=b), b
    a = as_tensor(a)
    return a, as_tensor(b, like=a)


def add(a, b):
    return Add().apply(*_pair(a, b))


def sub(a, b):
    return Sub().apply(*_pair(a, b))


def mul(a, b):
    return Mul().apply(*_pair(a, b))


def div(a, b):
    return Div().apply(*_pair(a, b))


def neg(x):
    return Neg().apply(x)


def pow(x, exponent):
    """x ** exponent for a constant (Python number) exponent."""
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a Python number, not a tensor")
    return Pow(exponent).apply(x)


def exp(x):
    return Exp().apply(x)


def log(x):
    return Log().apply(x)
