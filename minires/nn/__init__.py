"""Modules, layers, blocks and initialisation, with torch.nn's names."""
from . import init
from .blocks import BasicBlock, Bottleneck, PlainBlock, PreActBlock, make_shortcut
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Flatten,
                     Identity, Linear, MaxPool2d, PadChannels, ReLU, Sequential)
from .module import Module
from .parameter import Parameter

__all__ = ["Module", "Parameter", "init", "Conv2d", "BatchNorm2d", "BatchNorm1d", "Linear", "ReLU",
           "Sequential", "Identity", "Flatten", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "PadChannels", "BasicBlock", "PlainBlock", "Bottleneck", "PreActBlock", "make_shortcut"]
