"""Numerical gradient checks: central differences in float64 against the hand-written backward.

The check contracts the output with a *random* upstream gradient u and compares d<u, f(x)>/dx.
Checking the gradient of sum(f) instead proves nothing for softmax or train-mode batch norm: that
gradient is identically zero, so a backward that returns zeros would pass.

    numeric[i] = (<u, f(x + eps e_i)> - <u, f(x - eps e_i)>) / (2 eps)

An element passes when |analytic - numeric| <= atol + rtol * |numeric|; the report names the worst
element of each input with both values and their relative error.
"""
from dataclasses import dataclass, field

import numpy as np

from . import backend
from .autograd import Tensor, no_grad


@dataclass
class InputReport:
    """How one input's analytic gradient compares with the numerical one."""
    index: int
    shape: tuple
    worst_index: tuple
    analytic: float
    numeric: float
    relative_error: float
    ok: bool


@dataclass
class GradcheckReport:
    inputs: list = field(default_factory=list)

    @property
    def ok(self):
        return all(r.ok for r in self.inputs)

    @property
    def max_relative_error(self):
        return max((r.relative_error for r in self.inputs), default=0.0)

    def __bool__(self):
        return self.ok

    def __str__(self):
        lines = []
        for r in self.inputs:
            verdict = "ok" if r.ok else "MISMATCH"
            lines.append(f"input {r.index} {r.shape}: {verdict}; worst element {r.worst_index}: "
                         f"analytic {r.analytic:.10g}, numeric {r.numeric:.10g}, "
                         f"relative error {r.relative_error:.3g}")
        return "\n".join(lines)


def _contract(fn, inputs, upstream):
    with no_grad():
        out = fn(*inputs)
    return float((backend.to_numpy(out.data).astype(np.float64) * upstream).sum())


def _numeric_gradient(fn, inputs, target, upstream, eps):
    """Central differences of <upstream, fn(inputs)> for every element of inputs[target]."""
    data = target.data
    grad = np.zeros(data.shape, dtype=np.float64)
    for i in np.ndindex(*data.shape):
        original = data[i].item()
        data[i] = original + eps
        plus = _contract(fn, inputs, upstream)
        data[i] = original - eps
        minus = _contract(fn, inputs, upstream)
        data[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def _compare(index, analytic, numeric, atol, rtol):
    excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    a, n = (float(analytic[worst]), float(numeric[worst])) if excess.size else (0.0, 0.0)
    relative = abs(a - n) / max(abs(a), abs(n), 1e-300)
    return InputReport(index, tuple(analytic.shape), tuple(int(i) for i in worst), a, n,
                       relative if a != n else 0.0, bool((excess <= 0).all()))


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-7, rtol=1e-5, seed=0, raise_on_failure=False):
    """Check fn's backward for every input that requires grad; returns a GradcheckReport.

    `inputs` should be float64 Tensors (float32 differences are too coarse to be meaningful).
    `fn(*inputs)` must return a Tensor. With raise_on_failure, a mismatch raises AssertionError
    carrying the report.
    """
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad and t.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {t.dtype}; use float64 for a meaningful check")
    targets = [(i, t) for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    for _, t in targets:
        t.zero_grad()
    out = fn(*inputs)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(backend.xp(out.data).asarray(upstream, dtype=out.dtype))
    report = GradcheckReport()
    for i, t in targets:
        analytic = np.zeros(t.shape) if t.grad is None else backend.to_numpy(t.grad.data)
        numeric = _numeric_gradient(fn, inputs, t, upstream, eps)
        report.inputs.append(_compare(i, analytic.astype(np.float64), numeric, atol, rtol))
    if raise_on_failure and not report.ok:
        raise AssertionError(f"gradcheck failed:\n{report}")
    return report
