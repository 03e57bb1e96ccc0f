"""Weight initialisation, as torch.nn.init, drawing from NumPy's global generator.

Values are drawn on the CPU (so a seeded model is the same on every device) and written into the
parameter in place on its device.

He/Kaiming normal: w ~ N(0, gain^2 / fan), gain = sqrt(2) for ReLU. With mode="fan_out" (torchvision's
choice for convolutions) fan = out_channels * kh * kw, which keeps the *backward* signal's variance
steady; fan_in keeps the forward signal's.
"""
import math

import numpy as np

from .. import backend


def fans(shape):
    """(fan_in, fan_out) of a Linear (out, in) or Conv (out, in, kh, kw) weight shape."""
    if len(shape) < 2:
        raise ValueError(f"init: fan needs a weight of at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _write(param, values):
    param.data[...] = backend.to_device(values.astype(param.dtype), param.device)
    return param


def kaiming_normal_(param, mode="fan_in", gain=math.sqrt(2.0)):
    """w ~ N(0, (gain / sqrt(fan))^2)."""
    fan_in, fan_out = fans(param.shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out}[mode]
    return _write(param, np.random.normal(0.0, gain / math.sqrt(fan), param.shape))


def uniform_(param, low, high):
    return _write(param, np.random.uniform(low, high, param.shape))


def constant_(param, value):
    return _write(param, np.full(param.shape, value))


def torch_default_(weight, bias=None):
    """PyTorch's default for Conv and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both.

    (torch writes it as kaiming_uniform with a = sqrt(5), which works out to this bound.)
    """
    bound = 1.0 / math.sqrt(fans(weight.shape)[0])
    uniform_(weight, -bound, bound)
    if bias is not None:
        uniform_(bias, -bound, bound)
