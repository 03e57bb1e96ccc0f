"""Assignment 2, batchnorm: batch normalisation's forward and backward, in training and evaluation.

The inputs have a mean far from 0 and a scale far from 1, so skipping the centring or the scaling
shows. Backward is checked with a random upstream gradient: with the upstream all ones (the
gradient of sum(y)) the train-mode dx is identically zero, and a backward that drops the variance
term would pass.
"""
from typing import NamedTuple

from .checks import leaf, named_gradients
from .definitions import Assignment, Case, Part, Target


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


def _inputs(s, rng, running=False):
    """x (mean 3, std 2), gamma, beta (C,), and (with `running`) positive running statistics."""
    channels = s.x_shape[1]
    arrays = {"x": 3 + 2 * rng.standard_normal(s.x_shape),
              "gamma": 1 + rng.standard_normal(channels), "beta": rng.standard_normal(channels)}
    if running:
        arrays.update(running_mean=rng.standard_normal(channels),
                      running_var=rng.uniform(0.5, 2.0, channels))
    return arrays


def _op(impl, s, a, training):
    """A BatchNorm op of impl.norm (the student's or the reference) on a's running statistics."""
    return impl.norm.BatchNorm(a.get("running_mean"), a.get("running_var"), training,
                               s.momentum, s.eps)


def _xgb(a, wrap=lambda array: array):
    return [wrap(a[k]) for k in ("x", "gamma", "beta")]


def forward_train_cases(rng):
    def case(s):
        return Case(f"training, batch statistics, {s.label}", _inputs(s, rng),
                    lambda impl, a: {"y": _op(impl, s, a, True).apply(*_xgb(a))})
    return [case(s) for s in SETTINGS]


def forward_eval_and_running_stats_cases(rng):
    def case(s, inputs, training, what):
        def run(impl, a):
            y = _op(impl, s, a, training).apply(*_xgb(a))
            return {"y": y, "running_mean": a["running_mean"], "running_var": a["running_var"]}
        mutable = ("running_mean", "running_var") if training else ()
        return Case(f"{what}, {s.label}", inputs, run, mutable=mutable)
    cases = []
    for s in SETTINGS:
        inputs = _inputs(s, rng, running=True)
        cases += [case(s, inputs, True, "training updates the running statistics in place"),
                  case(s, inputs, False, "evaluation uses (and keeps) the running statistics")]
    return cases


def _backward_cases(rng, training):
    def case(s):
        inputs = _inputs(s, rng, running=not training)
        inputs["gy"] = rng.standard_normal(s.x_shape)

        def run(impl, a):
            op = _op(impl, s, a, training)
            op.apply(*_xgb(a, leaf))
            return named_gradients(("x", "gamma", "beta"), op.backward(a["gy"]))
        mode = "training" if training else "evaluation"
        return Case(f"{mode}, {s.label}, random upstream gradient", inputs, run)
    return [case(s) for s in SETTINGS]


def backward_train_cases(rng):
    return _backward_cases(rng, training=True)


def backward_eval_cases(rng):
    return _backward_cases(rng, training=False)


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
TODO: y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel (see the class docstring).

x: (N, C) or (N, C, H, W); gamma, beta: (C,). Returns y with x's shape and dtype.
Training: mean, var = the batch's per-channel mean and biased variance, and
self._update_running(mean, var, m) moves the running statistics (m = values per channel).
Evaluation: mean, var = self.running_mean, self.running_var. Save on self what backward needs.

Shapes: the statistics reduce over axis 0, or axes (0, 2, 3), to (C,); view (C,) vectors as
(1, C) or (1, C, 1, 1) to broadcast against x.
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

gy = dL/dy has x's shape. Returns (dx, dgamma, dbeta): x's shape, (C,), (C,).
Evaluation: mean and var are constants. Training: mean and var are functions of x, so dx has
a term through each of them besides the direct one. Derive them with the chain rule through
mean = sum(x) / m and var = sum((x - mean)^2) / m (m values per channel).

Shapes: every sum runs over every axis but the channel, giving (C,); view (C,) results as
(1, C) or (1, C, 1, 1) to combine them with (N, C[, H, W]) arrays.

Math:
    dbeta = sum(gy),   dgamma = sum(gy * xhat),   dxhat = gy * gamma
    evaluation: dx = dxhat / sqrt(running_var + eps)
    training: dx has three terms (through xhat directly, through the mean, through the
    variance); simplify them with the sums above.
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
        Part("forward_train", 2, "training forward with batch statistics (with your "
             "_update_running)", forward_train_cases, ("BatchNorm.forward",)),
        Part("forward_eval_and_running_stats", 2, "running statistics (momentum, unbiased "
             "variance) and the evaluation forward", forward_eval_and_running_stats_cases,
             ("BatchNorm.forward", "BatchNorm._update_running")),
        Part("backward_train", 4, "training backward against the reference, random upstream "
             "gradient", backward_train_cases,
             ("BatchNorm.forward", "BatchNorm.backward")),
        Part("backward_eval", 2, "evaluation backward against the reference, random "
             "upstream gradient", backward_eval_cases, ("BatchNorm.forward", "BatchNorm.backward")),
    ),
    notes="Why a random upstream gradient: in training, the gradient of sum(y) with respect to x "
          "is exactly zero (shifting x shifts the mean with it), so a check built on sum(y) "
          "passes a backward that returns zeros, or one that forgets the variance term.",
)
