"""The one place that knows NumPy from CuPy.

Every other module asks this one for the array module of an array (``xp``), moves arrays between
devices, and reads the default device. Only this file imports cupy, and only if it is installed and a
GPU answers; without it, minires is a pure-NumPy library.

Devices are named ``"cpu"`` (NumPy) and ``"cuda"`` (CuPy). The default device comes from the
environment variable ``MINIRES_DEVICE`` (``cpu`` when unset).
"""
import os

import numpy as np

try:  # CuPy is optional: the `gpu` extra.
    import cupy as _cupy
    import cupyx as _cupyx
except Exception:  # ImportError, or a CUDA library that fails to load
    _cupy = None
    _cupyx = None

DEVICES = ("cpu", "cuda")


def gpu_available():
    """True when CuPy is importable and at least one CUDA device answers."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def check_device(device):
    """Return a valid device name, or raise a ValueError that says what is possible."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: use 'cpu' (NumPy) or 'cuda' (CuPy)")
    if device == "cuda" and not gpu_available():
        raise RuntimeError("device 'cuda' needs CuPy and a GPU: pip install 'minires[gpu]'")
    return device


def default_device():
    """The device new tensors go to: env MINIRES_DEVICE, else 'cpu'."""
    return check_device(os.environ.get("MINIRES_DEVICE", "cpu").strip().lower() or "cpu")


def is_cupy_array(array):
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def is_array(array):
    """True for a NumPy or CuPy ndarray."""
    return isinstance(array, np.ndarray) or is_cupy_array(array)


def device_of(array):
    """'cuda' for a CuPy array, 'cpu' for anything else."""
    return "cuda" if is_cupy_array(array) else "cpu"


def xp(array):
    """The array module (numpy or cupy) that owns `array`."""
    return _cupy if is_cupy_array(array) else np


def module_for(device):
    """The array module for a device name."""
    return _cupy if check_device(device) == "cuda" else np


def to_device(array, device):
    """Move (or keep) an array on `device`; returns the same object when nothing moves."""
    check_device(device)
    if device == "cuda":
        return _cupy.asarray(array)
    if is_cupy_array(array):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def to_numpy(array):
    """A NumPy array from either device."""
    return to_device(array, "cpu")


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (np.add.at / cupyx.scatter_add)."""
    if is_cupy_array(target):
        _cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


def seed(value):
    """Seed NumPy's global generator and, when present, CuPy's."""
    np.random.seed(value)
    if gpu_available():
        _cupy.random.seed(value)


def synchronize(array=None):
    """Wait for queued GPU work (for timing); a no-op on the CPU."""
    if _cupy is not None and (array is None or is_cupy_array(array)) and gpu_available():
        _cupy.cuda.Stream.null.synchronize()


def cupy_module():
    """CuPy itself, for the optional fused GPU kernels; None when it is not installed."""
    return _cupy
