"""The full Jacobian of a small function, by one backward pass per output element.

For a residual block y = x + F(x), J = I + dF/dx: the tutorial prints it and its singular values,
which sit near 1 when F is small, instead of near 0 as a plain block's dF/dx alone can.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor


def jacobian(fn, x):
    """J[i, j] = d fn(x).ravel()[i] / d x.ravel()[j], as a NumPy array (outputs x inputs).

    `x` is a Tensor, or an array that goes to the default device as in `minires.tensor` (keeping
    its dtype); `fn` maps a Tensor to a Tensor. Meant for small inputs: it runs one backward per
    output element.
    """
    if not isinstance(x, Tensor):
        x = Tensor(backend.to_device(x if backend.is_array(x) else np.asarray(x),
                                     backend.default_device()))
    x = Tensor(x.data, requires_grad=True)
    y = fn(x)
    xp = backend.xp(y.data)
    rows = []
    for i in range(y.size):
        upstream = xp.zeros(y.size, dtype=y.dtype)
        upstream[i] = 1
        x.zero_grad()
        y.backward(upstream.reshape(y.shape), retain_graph=True)
        rows.append(backend.to_numpy(x.grad.data).ravel())
    return np.stack(rows)
