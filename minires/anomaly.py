"""Anomaly mode: stop at the first op whose forward output or backward gradient is NaN or Inf.

    with minires.detect_anomaly():
        loss = model(x) ...; loss.backward()

raises FloatingPointError naming the op, the layer it ran in, and the shapes, instead of letting
NaN spread silently to every parameter.

The mode is per thread, as PyTorch's is: it checks the ops that run in the thread that opened it,
so another thread's log(-1) neither raises here nor is stopped by it. It watches through
autograd's public observers (see minires.autograd), like minires.inspect.
"""
import contextlib
import threading

from . import autograd, backend


def _bad(array):
    xp = backend.xp(array)
    return array.dtype.kind == "f" and not bool(xp.isfinite(array).all())


def _describe(array):
    xp = backend.xp(array)
    return (f"shape {tuple(array.shape)}: {int(xp.isnan(array).sum())} NaN, "
            f"{int(xp.isinf(array).sum())} Inf")


def _check_forward(fn, output):
    if _bad(output.data):
        raise FloatingPointError(
            f"detect_anomaly: forward of {fn.name} in layer '{autograd.current_scope()}' "
            f"produced non-finite values ({_describe(output.data)})")


def _check_backward(fn, grad_inputs):
    for i, g in enumerate(grad_inputs):
        if g is not None and _bad(g):
            raise FloatingPointError(
                f"detect_anomaly: backward of {fn.name} in layer '{fn.layer()}' produced a "
                f"non-finite gradient for input {i} ({_describe(g)})")


@contextlib.contextmanager
def detect_anomaly():
    """Check every op's forward output and backward gradients for NaN/Inf while the block runs,
    in this thread."""
    thread = threading.get_ident()

    def on_forward(fn, _inputs, output):
        if threading.get_ident() == thread:
            _check_forward(fn, output)

    def on_backward(fn, _inputs, _grad_output, grad_inputs):
        if threading.get_ident() == thread:
            _check_backward(fn, grad_inputs)

    removers = [autograd.add_forward_observer(on_forward),
                autograd.add_backward_observer(on_backward)]
    try:
        yield
    finally:
        for remove in removers:
            remove()
