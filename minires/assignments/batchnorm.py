"""Assignment 2, batchnorm: batch normalisation's forward and backward, in training and evaluation.

The inputs have a mean far from 0 and a scale far from 1, so skipping the centring or the scaling
shows. Backward is checked with a random upstream gradient: with the upstream all ones (the
gradient of sum(y)) the train-mode dx is identically zero, and a backward that drops the variance
term would pass.
"""
from typing import NamedTuple

from ..autograd import Tensor
from ..ops import norm as reference
from .checks import expect_close, expect_gradcheck, expect_gradients, leaf
from .registry import Assignment, Part, Target


class Setting(NamedTuple):
    label: str
    x_shape: tuple
    momentum: float = 0.1
    eps: float = 1e-5


SETTINGS = (
    Setting("(N, C) input", (8, 3)),
    Setting("(N, C, H, W) input", (4, 3, 3, 2)),
    Setting("(N, C, H, W) input, eps=0.5 and momentum=0.3", (3, 2, 2, 3), 0.3, 0.5),
)


def _inputs(s, rng):
    """x (mean 3, std 2), gamma, beta (C,), and positive running statistics, all float64."""
    channels = s.x_shape[1]
    x = 3 + 2 * rng.standard_normal(s.x_shape)
    gamma, beta = 1 + rng.standard_normal(channels), rng.standard_normal(channels)
    running = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    return x, gamma, beta, running


def _copies(running):
    """Fresh copies of the running statistics, or (None, None) for an op that keeps none."""
    return (None, None) if running is None else (running[0].copy(), running[1].copy())


def _op(module, s, buffers, training):
    """A BatchNorm op of `module` (the student's or the reference) on the given buffers."""
    return module.BatchNorm(*buffers, training, s.momentum, s.eps)


def check_forward_train(student, rng):
    for s in SETTINGS:
        yield f"training, batch statistics, {s.label}"
        x, gamma, beta, _ = _inputs(s, rng)
        inputs = [Tensor(a) for a in (x, gamma, beta)]
        expected = _op(reference, s, _copies(None), True).apply(*inputs)
        expect_close("y", _op(student.norm, s, _copies(None), True).apply(*inputs), expected)


def check_forward_eval_and_running_stats(student, rng):
    for s in SETTINGS:
        x, gamma, beta, running = _inputs(s, rng)
        for training, what in ((True, "training updates the running statistics in place"),
                               (False, "evaluation uses (and keeps) the running statistics")):
            yield f"{what}, {s.label}"
            inputs = [Tensor(a) for a in (x, gamma, beta)]
            theirs, mine = _copies(running), _copies(running)
            expected = _op(reference, s, theirs, training).apply(*inputs)
            expect_close("y", _op(student.norm, s, mine, training).apply(*inputs), expected)
            expect_close("running_mean", mine[0], theirs[0])
            expect_close("running_var", mine[1], theirs[1])


def _check_backward(student, rng, training):
    for s in SETTINGS:
        yield f"{'training' if training else 'evaluation'}, {s.label}, random upstream gradient"
        x, gamma, beta, running = _inputs(s, rng)
        running = None if training else running
        gy = rng.standard_normal(s.x_shape)
        expected_op = _op(reference, s, _copies(running), training)
        expected_op.apply(leaf(x), leaf(gamma), leaf(beta))
        expected = expected_op.backward(gy.copy())
        op = _op(student.norm, s, _copies(running), training)
        op.apply(leaf(x), leaf(gamma), leaf(beta))
        expect_gradients(("x", "gamma", "beta"), op.backward(gy.copy()), expected)
        expect_gradcheck(lambda *t: _op(student.norm, s, _copies(running), training).apply(*t),
                         leaf(x), leaf(gamma), leaf(beta), seed=int(rng.integers(2**31)))


def check_backward_train(student, rng):
    yield from _check_backward(student, rng, training=True)


def check_backward_eval(student, rng):
    yield from _check_backward(student, rng, training=False)


BATCHNORM_DOC = """
Batch normalisation per channel, over (N, C) or (N, C, H, W) inputs (PyTorch's semantics).

Training: mean and var are the batch's, per channel, over every axis but the channel (biased
variance, divided by m = the number of values per channel); the running statistics move
toward them. Evaluation: running_mean and running_var stand in for the batch statistics and
are not changed.

    xhat = (x - mean) / sqrt(var + eps),   y = gamma * xhat + beta

check() has validated the shapes; self.running_mean and self.running_var are (C,) arrays
or None; self.training, self.momentum and self.eps are set.
"""

FORWARD_DOC = """
TODO: y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel.

x: (N, C) or (N, C, H, W); gamma, beta: (C,). Returns y with x's shape.
Training: mean, var = the batch's per-channel mean and biased variance (over axis 0, or axes
(0, 2, 3)), then call self._update_running(mean, var, m) with m = values per channel.
Evaluation: mean, var = self.running_mean, self.running_var.
Reshape (C,) vectors to (1, C) or (1, C, 1, 1) to broadcast. Save what backward needs
on self.
"""

UPDATE_RUNNING_DOC = """
TODO: move the running statistics toward the batch's, in place (the module's buffers
are these very arrays), skipping any that is None:

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

mean, var: (C,) batch statistics (biased var); m = count, the values per channel.
The running variance uses the unbiased estimate, as PyTorch does.
"""

BACKWARD_DOC = """
TODO: the gradients of the loss L with respect to x, gamma and beta.

gy = dL/dy has x's shape.

Sums run over every axis but the channel (m values per channel):
    dbeta = sum(gy): (C,),   dgamma = sum(gy * xhat): (C,),   dxhat = gy * gamma
Evaluation: mean and var are constants, so dx = dxhat / sqrt(running_var + eps).
Training: mean and var depend on x, so dx has three terms: the one through xhat
directly, one through the mean and one through the variance. Derive them (chain rule
through mean = sum(x)/m and var = sum((x - mean)^2)/m) and simplify with the sums above.
Return (dx, dgamma, dbeta).
"""

ASSIGNMENT = Assignment(
    number=2,
    name="batchnorm",
    summary="batch normalisation forward and backward, in training and evaluation",
    files=("norm.py",),
    targets=(
        Target("norm.py", "BatchNorm", BATCHNORM_DOC),
        Target("norm.py", "BatchNorm.forward", FORWARD_DOC),
        Target("norm.py", "BatchNorm._update_running", UPDATE_RUNNING_DOC),
        Target("norm.py", "BatchNorm.backward", BACKWARD_DOC),
    ),
    parts=(
        Part("forward_train", 2, "training forward with batch statistics (reference "
             "_update_running)", check_forward_train, ("BatchNorm.forward",)),
        Part("forward_eval_and_running_stats", 2, "running statistics (momentum, unbiased "
             "variance) and the evaluation forward", check_forward_eval_and_running_stats,
             ("BatchNorm.forward", "BatchNorm._update_running")),
        Part("backward_train", 4, "training backward against the reference and numerical "
             "gradients, random upstream gradient", check_backward_train,
             ("BatchNorm.forward", "BatchNorm.backward")),
        Part("backward_eval", 2, "evaluation backward against the reference and numerical "
             "gradients", check_backward_eval, ("BatchNorm.forward", "BatchNorm.backward")),
    ),
    notes="Why a random upstream gradient: in training, the gradient of sum(y) with respect to x "
          "is exactly zero (shifting x shifts the mean with it), so a check built on sum(y) "
          "passes a backward that returns zeros, or one that forgets the variance term.",
)
