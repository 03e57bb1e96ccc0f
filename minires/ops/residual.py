"""The residual add and the option-A shortcut.

residual_add(shortcut, branch) = shortcut + branch. Its backward hands the *same* upstream gradient
to both inputs: through an identity shortcut, dL/dx = dL/dy (1 + dF/dx), and the "1" is this op
passing gy unchanged. It is a named op (not `+`), so minires.inspect can find every block's join.

What runs where: everywhere, on NumPy and CuPy arrays alike (the speed layer in minires/fast
leaves it to this file).
"""
from .. import backend
from ..autograd import Function
from ._checks import require_float, require_ndim, shapes


class ResidualAdd(Function):
    """y = shortcut + branch (same shapes, no broadcasting);  dshortcut = gy, dbranch = gy"""
    name = "residual_add"

    def check(self, shortcut, branch):
        require_float(self.name, shortcut=shortcut, branch=branch)
        if shortcut.shape != branch.shape:
            raise ValueError(f"residual_add: the shortcut and the branch must have the same shape "
                             f"({shapes(shortcut=shortcut, branch=branch)}); use a projection or "
                             "pad_channels shortcut where the block changes shape")

    def forward(self, shortcut, branch):
        # BEGIN SOLUTION
        return shortcut + branch
        # END SOLUTION

    def backward(self, gy):
        # BEGIN SOLUTION
        return gy, gy
        # END SOLUTION


class PadChannels(Function):
    """Option-A shortcut: y = x[:, :, ::s, ::s] with zero channels added half before, half after.

    It has no parameters; its backward takes the gradient of the original channels and puts it back
    on the pixels that were kept (zeros on the ones the stride skipped).
    """
    name = "pad_channels"

    def __init__(self, out_channels, stride):
        self.out_channels, self.stride = out_channels, stride

    def check(self, x):
        require_float(self.name, x=x)
        require_ndim(self.name, "x", x, 4)
        if self.out_channels < x.shape[1] or self.stride < 1:
            raise ValueError(f"pad_channels: out_channels {self.out_channels} must be >= the "
                             f"{x.shape[1]} channels of x: {tuple(x.shape)}, stride >= 1")

    def forward(self, x):
        xp = backend.xp(x)
        extra = self.out_channels - x.shape[1]
        self.before, self.x_shape = extra // 2, x.shape
        s = self.stride
        kept = x[:, :, ::s, ::s]
        # zeros_like keeps x's memory layout (channels-last after a fast conv2d), as np.pad would not
        y = xp.zeros_like(kept, shape=(kept.shape[0], self.out_channels) + kept.shape[2:])
        y[:, self.before:self.before + x.shape[1]] = kept
        return y

    def backward(self, gy):
        # BEGIN SOLUTION
        s, c = self.stride, self.x_shape[1]
        gx = backend.xp(gy).zeros_like(gy, shape=self.x_shape)  # gy's memory layout
        gx[:, :, ::s, ::s] = gy[:, self.before:self.before + c]
        return gx
        # END SOLUTION


def residual_add(shortcut, branch):
    """shortcut + branch, as the named op that joins a residual block's two paths."""
    return ResidualAdd().apply(shortcut, branch)


def pad_channels(x, out_channels, stride=1):
    """The parameter-free option-A shortcut (subsample by stride, zero-pad channels)."""
    return PadChannels(out_channels, stride).apply(x)
