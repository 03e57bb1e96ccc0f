"""The public op namespace, as torch.nn.functional: every op minires can differentiate.

Each name here is a thin function over a `Function` in `minires.ops`, where its forward and its
hand-written backward sit next to each other.
"""
from .ops.activation import relu, sigmoid, tanh
from .ops.arithmetic import add, div, exp, log, mul, neg, pow, sub
from .ops.conv import avg_pool2d, col2im, global_avg_pool2d, im2col, max_pool2d
from .ops.conv_fast import conv2d  # the reference (readable) one is minires.ops.conv.conv2d
from .ops.linalg import linear, matmul
from .ops.loss import cross_entropy, log_softmax
from .ops.norm_fast import batch_norm  # the reference (readable) one: minires.ops.norm
from .ops.reduction import max, mean, sum
from .ops.residual import pad_channels, residual_add
from .ops.shape import concat, flatten, getitem, pad, reshape, to_device, transpose

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log",
    "relu", "sigmoid", "tanh",
    "sum", "mean", "max",
    "reshape", "transpose", "getitem", "pad", "concat", "flatten", "to_device",
    "matmul", "linear",
    "conv2d", "im2col", "col2im", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
    "batch_norm", "log_softmax", "cross_entropy",
    "residual_add", "pad_channels",
]
