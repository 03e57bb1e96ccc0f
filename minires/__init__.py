"""minires: a small deep-learning framework for teaching residual networks.

Every forward and backward pass a ResNet needs is written by hand in `minires.ops`; the same code
runs on NumPy (CPU) and CuPy (GPU) arrays.
"""
from . import backend, functional
from .autograd import Function, Tensor, no_grad, tensor
from .backend import gpu_available
from .gradcheck import gradcheck
from .anomaly import detect_anomaly

__version__ = "0.1.0"


def manual_seed(seed):
    """Seed NumPy's (and CuPy's) global random generator, for reproducible runs."""
    backend.seed(seed)


__all__ = ["Tensor", "Function", "tensor", "no_grad", "functional", "gradcheck", "backend",
           "gpu_available", "manual_seed", "detect_anomaly"]
