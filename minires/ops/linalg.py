"""Matrix products: matmul (with batch broadcasting) and linear (y = x W^T + b, torch's layout)."""
import numpy as np

from ..autograd import Function
from ._checks import require_float, require_ndim, shapes
from .arithmetic import sum_to


class MatMul(Function):
    """y = a @ b;  da = gy @ b^T, db = a^T @ gy (batch axes summed back where they broadcast)"""
    name = "matmul"

    def check(self, a, b):
        require_float(self.name, a=a, b=b)
        require_ndim(self.name, "a", a, range(2, 8), b=b)
        require_ndim(self.name, "b", b, range(2, 8), a=a)
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: a has {a.shape[-1]} columns but b has {b.shape[-2]} rows "
                             f"({shapes(a=a, b=b)})")
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch axes {tuple(a.shape[:-2])} and {tuple(b.shape[:-2])} "
                             f"do not broadcast ({shapes(a=a, b=b)})") from None

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        ga = sum_to(gy @ self.b.swapaxes(-1, -2), self.a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(self.a.swapaxes(-1, -2) @ gy, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Linear(Function):
    """y = x W^T + b, x (N, in), W (out, in), b (out,);  dx = gy W, dW = gy^T x, db = sum_n gy"""
    name = "linear"

    def check(self, x, w, b=None):
        require_float(self.name, x=x, w=w, b=b)
        require_ndim(self.name, "x", x, 2, w=w)
        require_ndim(self.name, "w", w, 2, x=x)
        if x.shape[1] != w.shape[1]:
            raise ValueError(f"linear: x has {x.shape[1]} features, w expects {w.shape[1]} "
                             f"({shapes(x=x, w=w)})")
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"linear: b must have shape ({w.shape[0]},) ({shapes(w=w, b=b)})")

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        y = x @ w.T
        return y if b is None else y + b

    def backward(self, gy):
        gx = gy @ self.w if self.needs_input_grad[0] else None
        gw = gy.T @ self.x
        return (gx, gw) if len(self.needs_input_grad) == 2 else (gx, gw, gy.sum(axis=0))


def matmul(a, b):
    return MatMul().apply(a, b)


def linear(x, w, b=None):
    """Fully connected layer in torch's layout: w is (out_features, in_features)."""
    return Linear().apply(x, w) if b is None else Linear().apply(x, w, b)
