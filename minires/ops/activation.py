"""Elementwise nonlinearities: relu sigmoid tanh.

What runs where: everywhere, on NumPy and CuPy arrays alike (relu is a small part of a training
step, and the speed layer in minires/fast leaves it to this file).
"""
from .. import backend
from ..autograd import Function
from ._checks import require_float


class _Elementwise(Function):
    def check(self, x):
        require_float(self.name, x=x)


class ReLU(_Elementwise):
    """y = max(x, 0);  dx = gy where x > 0, else 0

    Selections, not products with the 0/1 mask: x * [x > 0] is -inf * 0 = NaN at x = -inf, where
    relu gives 0, and gy * [x > 0] is NaN where an infinite gy meets x <= 0, where PyTorch gives 0.
    (At x = NaN the mask is False: dx is 0, where PyTorch passes gy through.)"""
    name = "relu"

    def forward(self, x):
        # BEGIN SOLUTION
        self.mask = x > 0
        return backend.xp(x).maximum(x, 0)
        # END SOLUTION

    def backward(self, gy):
        # BEGIN SOLUTION
        return backend.xp(gy).where(self.mask, gy, 0)
        # END SOLUTION


class Sigmoid(_Elementwise):
    """y = 1 / (1 + e^-x), computed as (1 + tanh(x/2)) / 2 so it never overflows;  dx = gy * y(1-y)"""
    name = "sigmoid"

    def forward(self, x):
        self.y = 0.5 * (backend.xp(x).tanh(0.5 * x) + 1)
        return self.y

    def backward(self, gy):
        return gy * self.y * (1 - self.y)


class Tanh(_Elementwise):
    """y = tanh x;  dx = gy * (1 - y^2)"""
    name = "tanh"

    def forward(self, x):
        self.y = backend.xp(x).tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


def relu(x):
    return ReLU().apply(x)


def sigmoid(x):
    return Sigmoid().apply(x)


def tanh(x):
    return Tanh().apply(x)
