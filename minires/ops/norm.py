"""Batch normalisation over (N, C) or (N, C, H, W), with torch's running-statistics semantics.

Training: each channel is normalised with its batch mean and (biased) variance,
    xhat = (x - mean) / sqrt(var + eps),  y = gamma * xhat + beta,
and the running statistics move toward the batch's, with the *unbiased* variance:
    running = (1 - momentum) * running + momentum * batch.
Evaluation: the running statistics stand in for the batch's, so y is an affine map of x.

What runs where. This file is the readable reference, and it is what runs on the GPU (CuPy),
with fast ops switched off (MINIRES_FAST_OPS=0 or `minires.use_reference_ops()`), and where the
`minires/fast` folder is absent. For NumPy arrays `minires.functional.batch_norm` runs
`minires.fast.norm.FastBatchNorm` instead: a subclass of `BatchNorm` below (same checks, errors
and running statistics) with fewer passes over memory. tests/fast/test_fast_ops.py pins the two
equal (output, gradients and running statistics, to 1e-11 in float64).
"""
from .. import backend
from ..autograd import Function, Tensor
from ._checks import require_float, require_ndim, shapes


def _channel_axes(x):
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _per_channel(v, x):
    """Reshape a (C,) vector to broadcast against x: (1, C) or (1, C, 1, 1)."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


class BatchNorm(Function):
    """Closed-form backward (m = values per channel, dxhat = gy * gamma):

    train:  dx = (1/m) / sqrt(var+eps) * (m*dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
    eval:   dx = dxhat / sqrt(running_var + eps)
    dgamma = sum(gy * xhat),  dbeta = sum(gy)   (sums over every axis but the channel)
    """
    name = "batch_norm"
    differentiable_inputs = (0, 1, 2)

    def __init__(self, running_mean, running_var, training, momentum, eps):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def check(self, x, gamma, beta):
        require_float(self.name, x=x, gamma=gamma, beta=beta)
        require_ndim(self.name, "x", x, (2, 4), gamma=gamma)
        channels = x.shape[1]
        for name, v in (("gamma", gamma), ("beta", beta), ("running_mean", self.running_mean),
                        ("running_var", self.running_var)):
            if v is not None and tuple(v.shape) != (channels,):
                raise ValueError(f"batch_norm: x has {channels} channels but {name} has shape "
                                 f"{tuple(v.shape)} ({shapes(x=x, **{name: v})})")
            if v is not None and backend.device_of(v) != backend.device_of(x):
                raise ValueError(f"batch_norm: x is on {backend.device_of(x)} but {name} is on "
                                 f"{backend.device_of(v)}")
        if x.shape[0] == 0:
            raise ValueError(f"batch_norm: the batch is empty (x: {tuple(x.shape)})")
        if not self.training and (self.running_mean is None or self.running_var is None):
            raise ValueError("batch_norm: evaluation mode needs running_mean and running_var")
        if self.training and x.size // channels < 2:
            raise ValueError(f"batch_norm: training needs more than one value per channel "
                             f"(x: {tuple(x.shape)})")

    def forward(self, x, gamma, beta):
        # BEGIN SOLUTION
        axes = _channel_axes(x)
        if self.training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            self._update_running(mean, var, x.size // x.shape[1])
        else:
            # in x's dtype: float64 buffers must not turn a float32 forward into float64
            mean, var = (self.running_mean.astype(x.dtype, copy=False),
                         self.running_var.astype(x.dtype, copy=False))
        self.inv_std = 1 / backend.xp(x).sqrt(var + self.eps)
        self.xhat = (x - _per_channel(mean, x)) * _per_channel(self.inv_std, x)
        self.gamma, self.axes = gamma, axes
        return _per_channel(gamma, x) * self.xhat + _per_channel(beta, x)
        # END SOLUTION

    def _update_running(self, mean, var, count):
        """In place, so the module's buffers see it; variance unbiased by count / (count - 1)."""
        # BEGIN SOLUTION
        m = self.momentum
        if self.running_mean is not None:
            self.running_mean *= 1 - m
            self.running_mean += m * mean
        if self.running_var is not None:
            self.running_var *= 1 - m
            self.running_var += m * var * (count / (count - 1))
        # END SOLUTION

    def backward(self, gy):
        # BEGIN SOLUTION
        xhat, axes = self.xhat, self.axes
        ggamma = (gy * xhat).sum(axis=axes)
        gbeta = gy.sum(axis=axes)
        gx = None
        if self.needs_input_grad[0]:
            inv_std = _per_channel(self.inv_std, gy)
            dxhat = gy * _per_channel(self.gamma, gy)
            if self.training:
                m = gy.size // gy.shape[1]
                gx = inv_std / m * (m * dxhat - _per_channel(gbeta * self.gamma, gy)
                                    - xhat * _per_channel(ggamma * self.gamma, gy))
            else:
                gx = dxhat * inv_std
        return gx, ggamma, gbeta
        # END SOLUTION


def _array(v):
    return v.data if isinstance(v, Tensor) else v


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """Batch norm of x (N, C) or (N, C, H, W) with per-channel gamma, beta (C,).

    running_mean/running_var (C,) are updated in place while training (they may be None then) and
    used instead of the batch statistics in evaluation.
    """
    return BatchNorm(_array(running_mean), _array(running_var), training, momentum, eps).apply(
        x, gamma, beta)
