"""Residual and plain blocks, with the shortcut options of He et al. (2015) and the
pre-activation block of He et al. (2016).

Every residual block joins its two paths with `functional.residual_add(shortcut, branch)`, the
named op whose backward is the "+1". The shortcut path is always the child called `downsample`
(torchvision's name, kept so ImageNet weights load by key): Identity, PadChannels (option A) or a
1x1 projection conv + BN (options B and C).

Shortcut options, where the block changes shape (stride 2 or more channels):
    A: subsample and zero-pad channels, no parameters;
    B: a 1x1 projection there, identity elsewhere;
    C: a 1x1 projection in every block.
"""
from .. import functional as F
from .layers import BatchNorm2d, Conv2d, Identity, PadChannels, ReLU, Sequential
from .module import Module

SHORTCUT_OPTIONS = ("A", "B", "C")


def conv3x3(in_channels, out_channels, stride=1, bias=False):
    return Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def norm_layer(channels, batch_norm=True):
    """BatchNorm2d, or Identity for the no-BN experiments."""
    return BatchNorm2d(channels) if batch_norm else Identity()


def make_shortcut(option, in_channels, out_channels, stride, batch_norm=True):
    """The shortcut path of a block for option 'A', 'B' or 'C'."""
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut option must be one of {SHORTCUT_OPTIONS}, got {option!r}")
    changes_shape = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and changes_shape):
        return Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batch_norm),
                          norm_layer(out_channels, batch_norm))
    if changes_shape:
        return PadChannels(out_channels, stride)
    return Identity()


class BasicBlock(Module):
    """Two 3x3 convs. y = relu(F(x) + shortcut(x)),  F = bn2(conv2(relu(bn1(conv1(x)))))."""
    expansion = 1
    residual = True

    def __init__(self, in_channels, channels, stride=1, shortcut="B", batch_norm=True):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv3x3(in_channels, channels, stride, bias=not batch_norm)
        self.bn1 = norm_layer(channels, batch_norm)
        self.conv2 = conv3x3(channels, out_channels, bias=not batch_norm)
        self.bn2 = norm_layer(out_channels, batch_norm)
        self.relu = ReLU()
        if self.residual:
            self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride, batch_norm)

    def branch(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    def forward(self, x):
        out = self.branch(x)
        if self.residual:
            out = F.residual_add(self.downsample(x), out)
        return self.relu(out)


class PlainBlock(BasicBlock):
    """The same two convs with no shortcut: y = relu(F(x)). The plain-net baseline of the paper."""
    residual = False


class Bottleneck(BasicBlock):
    """1x1 reduce, 3x3, 1x1 expand (x4); stride on the 3x3 as torchvision (ResNet v1.5)."""
    expansion = 4

    def __init__(self, in_channels, channels, stride=1, shortcut="B", batch_norm=True):
        Module.__init__(self)
        out_channels = channels * self.expansion
        bias = not batch_norm
        self.conv1 = Conv2d(in_channels, channels, 1, bias=bias)
        self.bn1 = norm_layer(channels, batch_norm)
        self.conv2 = conv3x3(channels, channels, stride, bias=bias)
        self.bn2 = norm_layer(channels, batch_norm)
        self.conv3 = Conv2d(channels, out_channels, 1, bias=bias)
        self.bn3 = norm_layer(out_channels, batch_norm)
        self.relu = ReLU()
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride, batch_norm)

    def branch(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class PreActBlock(Module):
    """Pre-activation block (He et al. 2016): y = x + F(x), F = conv2(relu(bn2(conv1(relu(bn1(x)))))).

    No ReLU after the add, so the shortcut carries x and its gradient untouched from block to
    block. A projection shortcut takes the pre-activated input relu(bn1(x)), as in the paper's code;
    identity and option-A shortcuts take x itself, keeping the identity path clean.
    """
    expansion = 1
    residual = True

    def __init__(self, in_channels, channels, stride=1, shortcut="B", batch_norm=True):
        super().__init__()
        self.bn1 = norm_layer(in_channels, batch_norm)
        self.conv1 = conv3x3(in_channels, channels, stride, bias=not batch_norm)
        self.bn2 = norm_layer(channels, batch_norm)
        self.conv2 = conv3x3(channels, channels, bias=not batch_norm)
        self.relu = ReLU()
        self.downsample = make_shortcut(shortcut, in_channels, channels, stride, batch_norm)
        self.projects = isinstance(self.downsample, Sequential)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return F.residual_add(self.downsample(pre if self.projects else x), out)
