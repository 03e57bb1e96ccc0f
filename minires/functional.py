"""The public op namespace, as torch.nn.functional: every op minires can differentiate.

Each name here is a thin function over a `Function` in `minires.ops`, where its forward and its
hand-written backward sit next to each other.

Which code runs. `conv2d` and `batch_norm` have a readable reference in `minires.ops` (what
students read and write) and a fast version in `minires.fast` (same function, same errors, pinned
equal by tests/fast/test_fast_ops.py). The choice is made here, per call, in plain sight: NumPy
arrays go to the fast CPU op when the `minires/fast` folder exists and fast ops are on; CuPy
arrays go to the GPU versions in `minires.fast.gpu` only when env MINIRES_GPU_FAST_OPS=1 as well
(off by default: they have not run on a GPU yet); everything else goes to the reference.
Fast ops are on unless env MINIRES_FAST_OPS=0; `use_reference_ops()` and `use_fast_ops()` switch
them for the process. `minires.fast` is imported here at its first use, never with fast ops off,
and `minires.fast.gpu` only when it is picked for a CuPy array.
"""
import importlib
import os
import sys

import numpy as np

from . import backend
from .autograd import Tensor, use_operators
from .ops import conv as _reference_conv
from .ops import norm as _reference_norm
from .ops.activation import relu, sigmoid, tanh
from .ops.arithmetic import add, div, exp, log, mul, neg, pow, sub
from .ops.conv import avg_pool2d, col2im, global_avg_pool2d, im2col, max_pool2d
from .ops.linalg import linear, matmul
from .ops.loss import cross_entropy, log_softmax
from .ops.reduction import max, mean, sum
from .ops.residual import pad_channels, residual_add
from .ops.shape import concat, flatten, getitem, pad, reshape, to, transpose

_fast_on = os.environ.get("MINIRES_FAST_OPS", "1").strip() != "0"
_fast_modules = {}  # "conv" -> minires.fast.conv once imported; None where minires/fast is absent


def _fast_module(name):
    """minires.fast.<name>, imported at the first call that asks for it; None without the folder
    (a student build leaves it out)."""
    if name not in _fast_modules:
        try:
            _fast_modules[name] = importlib.import_module(f"{__package__}.fast.{name}")
        except ModuleNotFoundError as missing:
            if missing.name != f"{__package__}.fast":
                raise  # a module that minires.fast itself imports is missing: say so
            _fast_modules[name] = None
    return _fast_modules[name]


def _gpu_fast_requested():
    """Env MINIRES_GPU_FAST_OPS is 1/true/yes/on (off by default: see the module docstring)."""
    return os.environ.get("MINIRES_GPU_FAST_OPS", "0").strip().lower() in ("1", "true", "yes", "on")


def use_reference_ops():
    """Run the readable references of minires.ops everywhere, from now on (for this process)."""
    global _fast_on
    _fast_on = False


def use_fast_ops():
    """Back to the fast CPU ops of minires.fast for NumPy arrays (where that folder exists)."""
    global _fast_on
    _fast_on = True


def fast_ops_enabled():
    """Whether NumPy arrays go to minires.fast now (importing it, if on and not yet imported)."""
    return _fast_on and _fast_module("conv") is not None


def _implementation(x, reference, fast_name, gpu=False):
    """The module whose op runs on x: minires.fast.<fast_name> for NumPy data; minires.fast.gpu
    for CuPy data where `gpu` (the op has a GPU version) and MINIRES_GPU_FAST_OPS=1; `reference`
    otherwise, whenever fast ops are off, and where minires/fast is absent. Each fast module is
    imported here, the first time it is picked."""
    if not _fast_on:
        return reference
    data = x.data if isinstance(x, Tensor) else x  # (a NumPy array's .data is a memoryview)
    if type(data) is np.ndarray:
        return _fast_module(fast_name) or reference
    if gpu and backend.is_cupy_array(data) and _gpu_fast_requested():
        return _fast_module("gpu") or reference
    return reference


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with w (OC, C, kh, kw), bias b (OC,).

    Reference: minires.ops.conv.conv2d. Fast: minires.fast.conv (NumPy), minires.fast.gpu (CuPy).
    """
    module = _implementation(x, _reference_conv, "conv", gpu=True)
    return module.conv2d(x, w, b, stride, padding)


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """Batch norm of x (N, C) or (N, C, H, W) with per-channel gamma, beta (C,).

    Reference: minires.ops.norm.batch_norm. Fast: minires.fast.norm (NumPy), minires.fast.gpu (CuPy).
    """
    module = _implementation(x, _reference_norm, "norm", gpu=True)
    return module.batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps)


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

use_operators(sys.modules[__name__])  # Tensor's operators (a + b, a[i], ...) call these ops
