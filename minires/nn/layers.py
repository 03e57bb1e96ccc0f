"""Layers: thin Modules over minires.functional, with torch's names, arguments and defaults."""
import numpy as np

from .. import backend
from .. import functional as F
from ..ops._checks import pair
from . import init
from .module import Module
from .parameter import Parameter


def _zeros(shape, dtype=np.float32):
    return backend.module_for(backend.default_device()).zeros(shape, dtype=dtype)


class Conv2d(Module):
    """y = conv2d(x, weight, bias); weight (out, in, kh, kw), torch's default init."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        kh, kw = pair(kernel_size, "Conv2d", "kernel_size")
        if min(in_channels, out_channels, kh, kw) < 1:
            raise ValueError(f"Conv2d: in_channels {in_channels}, out_channels {out_channels} and "
                             f"kernel_size {(kh, kw)} must all be at least 1")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.weight = Parameter(_zeros((out_channels, in_channels, kh, kw)))
        self.bias = Parameter(_zeros((out_channels,))) if bias else None
        init.torch_default_(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class BatchNorm2d(Module):
    """Batch norm per channel; running statistics as buffers (torch's names, momentum and eps)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(_zeros((num_features,)) + 1)
        self.bias = Parameter(_zeros((num_features,)))
        self.register_buffer("running_mean", _zeros((num_features,)))
        self.register_buffer("running_var", _zeros((num_features,)) + 1)
        self.register_buffer("num_batches_tracked", _zeros((), dtype=np.int64))

    def forward(self, x):
        if self.training:
            self._buffers["num_batches_tracked"] = self.num_batches_tracked + 1
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            self.training, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


BatchNorm1d = BatchNorm2d  # the same op handles (N, C) inputs


class Linear(Module):
    """y = x W^T + b; W (out, in), torch's default init."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_zeros((out_features, in_features)))
        self.bias = Parameter(_zeros((out_features,))) if bias else None
        init.torch_default_(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Identity(Module):
    def forward(self, x):
        return x


class Flatten(Module):
    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Only output_size=1 (global average pooling), which is what ResNets use: (N,C,H,W)->(N,C,1,1)."""

    def __init__(self, output_size=1):
        super().__init__()
        if output_size not in (1, (1, 1)):
            raise ValueError(f"AdaptiveAvgPool2d: only output_size=1 is supported, got {output_size}")
        self.output_size = output_size

    def forward(self, x):
        return F.global_avg_pool2d(x, keepdims=True)


class PadChannels(Module):
    """The option-A shortcut as a module: subsample by stride, zero-pad the channels."""

    def __init__(self, out_channels, stride):
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x):
        return F.pad_channels(x, self.out_channels, self.stride)

    def extra_repr(self):
        return f"out_channels={self.out_channels}, stride={self.stride}"


class Sequential(Module):
    """Runs its children in order; indexable and iterable like a list."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        setattr(self, str(len(self)), module)
        return self
