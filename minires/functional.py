"""The public op namespace, as torch.nn.functional: every op minires can differentiate.

Each name here is a thin function over a `Function` in `minires.ops`, where its forward and its
hand-written backward sit next to each other.

Which code runs. `conv2d`, `batch_norm`, `relu` and `residual_add` have a readable reference in
`minires.ops` (what students read and write) and a fast CPU version in `minires.fast` (same
function, same errors, pinned equal by tests/test_fast_ops.py and test_fast_elementwise.py).
The choice is made here, per call, in plain sight: NumPy arrays go to the fast CPU op when the
`minires/fast` folder exists and fast ops are on; CuPy arrays go to the GPU versions of conv2d
and batch_norm in `minires.fast.gpu` only when env MINIRES_GPU_FAST_OPS=1 as well (off by
default: they have not run on a GPU yet); everything else goes to the reference.
Fast ops are on unless env MINIRES_FAST_OPS=0; `use_reference_ops()` and `use_fast_ops()` switch
them for the process.
"""
import os

import numpy as np

from . import backend
from .autograd import Tensor
from .ops import activation as _reference_activation
from .ops import conv as _reference_conv
from .ops import norm as _reference_norm
from .ops import residual as _reference_residual
from .ops.activation import sigmoid, tanh
from .ops.arithmetic import add, div, exp, log, mul, neg, pow, sub
from .ops.conv import avg_pool2d, col2im, global_avg_pool2d, im2col, max_pool2d
from .ops.linalg import linear, matmul
from .ops.loss import cross_entropy, log_softmax
from .ops.reduction import max, mean, sum
from .ops.residual import pad_channels
from .ops.shape import concat, flatten, getitem, pad, reshape, to, transpose

try:  # the speed layer is optional: a student build of the package leaves the folder out
    from .fast import conv as _fast_conv
    from .fast import elementwise as _fast_elementwise
    from .fast import gpu as _fast_gpu
    from .fast import norm as _fast_norm
except ModuleNotFoundError as missing:
    if missing.name != f"{__package__}.fast":
        raise  # a module that minires.fast itself imports is missing: say so
    _fast_conv = _fast_elementwise = _fast_gpu = _fast_norm = None

_fast_on = os.environ.get("MINIRES_FAST_OPS", "1").strip() != "0"


def use_reference_ops():
    """Run the readable references of minires.ops everywhere, from now on (for this process)."""
    global _fast_on
    _fast_on = False


def use_fast_ops():
    """Back to the fast CPU ops of minires.fast for NumPy arrays (where that folder exists)."""
    global _fast_on
    _fast_on = _fast_conv is not None


def fast_ops_enabled():
    """Whether NumPy arrays go to minires.fast now."""
    return _fast_on and _fast_conv is not None


def _implementation(x, reference, fast_cpu, fast_gpu=None):
    """The module whose op runs on x: `fast_cpu` for NumPy data, `fast_gpu` (minires.fast.gpu,
    where it has the op) for CuPy data when MINIRES_GPU_FAST_OPS=1, `reference` otherwise (and
    whenever fast ops are off)."""
    data = x.data if isinstance(x, Tensor) else x  # (a NumPy array's .data is a memoryview)
    if not fast_ops_enabled():
        return reference
    if type(data) is np.ndarray:
        return fast_cpu
    if fast_gpu is not None and backend.is_cupy_array(data) and fast_gpu.enabled():
        return fast_gpu
    return reference


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with w (OC, C, kh, kw), bias b (OC,).

    Reference: minires.ops.conv.conv2d. Fast: minires.fast.conv (NumPy), minires.fast.gpu (CuPy).
    """
    module = _implementation(x, _reference_conv, _fast_conv, _fast_gpu)
    return module.conv2d(x, w, b, stride, padding)


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """Batch norm of x (N, C) or (N, C, H, W) with per-channel gamma, beta (C,).

    Reference: minires.ops.norm.batch_norm. Fast: minires.fast.norm (NumPy), minires.fast.gpu (CuPy).
    """
    module = _implementation(x, _reference_norm, _fast_norm, _fast_gpu)
    return module.batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps)



def relu(x):
    """max(x, 0) elementwise.

    Reference: minires.ops.activation.relu. Fast: minires.fast.elementwise (NumPy).
    """
    return _implementation(x, _reference_activation, _fast_elementwise).relu(x)


def residual_add(shortcut, branch):
    """shortcut + branch, where a residual block joins its two paths (the "+1" of the gradient).

    Reference: minires.ops.residual.residual_add. Fast: minires.fast.elementwise (NumPy).
    """
    return _implementation(shortcut, _reference_residual, _fast_elementwise).residual_add(
        shortcut, branch)


__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log",
    "relu", "sigmoid", "tanh",
    "sum", "mean", "max",
    "reshape", "transpose", "getitem", "pad", "concat", "flatten", "to",
    "matmul", "linear",
    "conv2d", "im2col", "col2im", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
    "batch_norm", "log_softmax", "cross_entropy",
    "residual_add", "pad_channels",
]  # ops only; the switches use_reference_ops/use_fast_ops are minires.use_reference_ops etc.
