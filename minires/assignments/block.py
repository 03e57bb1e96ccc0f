"""A BasicBlock's forward and backward by hand, op by op, on arrays: the chain rule made visible.

block_forward runs y = relu(F(x) + shortcut(x)), F(x) = bn2(conv2(relu(bn1(conv1(x))))), through
each op's own Function and keeps the ops: each saved what its backward needs. block_backward walks
them in reverse. Where the residual add passes dL/dy on to both paths unchanged, the gradient
arriving at x splits in two:

    dL/dx = shortcut'(x)^T g  +  (dF/dx)^T g,     g = dL/d(F(x) + shortcut(x))

and for an identity shortcut the first term is g itself: the "+1" of dL/dx = g (1 + dF/dx).
"""
import numpy as np

from minires.autograd import Tensor
from minires.ops.activation import ReLU
from minires.ops.conv import Conv2d
from minires.ops.norm import BatchNorm
from minires.ops.residual import PadChannels, ResidualAdd

MOMENTUM, EPS = 0.1, 1e-5


def _run(op, *arrays):
    """op's forward through Function.apply (which records what its backward reads) -> array."""
    return op.apply(*(Tensor(a, requires_grad=True) for a in arrays)).data


def block_forward(x, params, stride=1):
    """y = relu(F(x) + shortcut(x)) for params w1, gamma1, beta1, w2, gamma2, beta2 (training-mode
    batch norm); the shortcut is the identity, or option A (pad_channels) where the block changes
    shape. Returns (y, ops): ops["conv1"] ... ops["relu2"], each holding what its backward needs,
    and ops["shortcut"] (None for the identity)."""
    out_channels = params["w2"].shape[0]
    changes_shape = stride != 1 or x.shape[1] != out_channels
    ops = {"conv1": Conv2d(stride, 1), "bn1": BatchNorm(None, None, True, MOMENTUM, EPS),
           "relu1": ReLU(), "conv2": Conv2d(1, 1),
           "bn2": BatchNorm(None, None, True, MOMENTUM, EPS),
           "shortcut": PadChannels(out_channels, stride) if changes_shape else None,
           "add": ResidualAdd(), "relu2": ReLU()}
    h = _run(ops["conv1"], x, params["w1"])
    h = _run(ops["relu1"], _run(ops["bn1"], h, params["gamma1"], params["beta1"]))
    branch = _run(ops["bn2"], _run(ops["conv2"], h, params["w2"]), params["gamma2"],
                  params["beta2"])
    shortcut = x if ops["shortcut"] is None else _run(ops["shortcut"], x)
    return _run(ops["relu2"], _run(ops["add"], shortcut, branch)), ops


def block_backward(gy, ops):
    """Every gradient of the block, given gy = dL/dy and the ops block_forward kept.

    Returns {"dx", "dx_shortcut", "dx_branch", "dw1", "dgamma1", "dbeta1", "dw2", "dgamma2",
    "dbeta2"}, where dx = dx_shortcut + dx_branch is the split of the module docstring.
    """
    # BEGIN SOLUTION
    g = ops["relu2"].backward(gy)
    g_shortcut, g_branch = ops["add"].backward(g)
    g_branch, dgamma2, dbeta2 = ops["bn2"].backward(g_branch)
    g_branch, dw2 = ops["conv2"].backward(g_branch)
    g_branch, dgamma1, dbeta1 = ops["bn1"].backward(ops["relu1"].backward(g_branch))
    dx_branch, dw1 = ops["conv1"].backward(g_branch)
    dx_shortcut = g_shortcut if ops["shortcut"] is None else ops["shortcut"].backward(g_shortcut)
    return {"dx": dx_shortcut + dx_branch, "dx_shortcut": dx_shortcut, "dx_branch": dx_branch,
            "dw1": dw1, "dgamma1": dgamma1, "dbeta1": dbeta1, "dw2": dw2, "dgamma2": dgamma2,
            "dbeta2": dbeta2}
    # END SOLUTION


def random_params(rng, in_channels, channels):
    """float64 parameters for block_forward: He-scaled conv weights, gamma near 1, small beta."""
    def conv(cout, cin):
        return rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))
    return {"w1": conv(channels, in_channels), "gamma1": 1 + 0.1 * rng.standard_normal(channels),
            "beta1": 0.1 * rng.standard_normal(channels), "w2": conv(channels, channels),
            "gamma2": 1 + 0.1 * rng.standard_normal(channels),
            "beta2": 0.1 * rng.standard_normal(channels)}
