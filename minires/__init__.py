"""minires: a small deep-learning framework for teaching residual networks.

Every forward and backward pass a ResNet needs is written by hand in `minires.ops`; the same code
runs on NumPy (CPU) and CuPy (GPU) arrays. `minires.fast` holds faster CPU versions of conv2d,
batch_norm, relu and residual_add, chosen in `minires.functional`; `use_reference_ops()` runs the
readable ones instead.

`import minires` needs only NumPy and loads the engine and the ops; `minires.nn`, `models`,
`optim`, `inspect` and the rest load when they are imported.
"""
import os as _os
import sys as _sys

if _sys.argv[:1] == ["-m"] and _sys.path[:1] in ([""], [_os.getcwd()]):
    del _sys.path[0]  # `python -m minires` in a student's hand-in: import nothing from that folder

from . import backend, functional  # noqa: E402
from .autograd import Function, Tensor, no_grad, tensor  # noqa: E402
from .backend import gpu_available  # noqa: E402
from .anomaly import detect_anomaly  # noqa: E402
from .functional import use_fast_ops, use_reference_ops  # noqa: E402
# eager: the submodule of the same name must not shadow it
from .gradcheck import gradcheck  # noqa: E402

__version__ = "0.1.0"


def manual_seed(seed):
    """Seed NumPy's (and CuPy's) global random generator, for reproducible runs."""
    backend.seed(seed)


__all__ = ["Tensor", "Function", "tensor", "no_grad", "functional", "gradcheck", "backend",
           "gpu_available", "manual_seed", "detect_anomaly", "use_reference_ops", "use_fast_ops"]
