"""The one place that knows NumPy from CuPy.

Every other module asks this one for the array module of an array (``xp``), moves arrays between
devices, and reads the default device. Only this file imports cupy, and only if it is installed and a
GPU answers; without it, minires is a pure-NumPy library.

Devices are named ``"cpu"`` (NumPy) and ``"cuda"`` (CuPy). The default device comes from the
environment variable ``MINIRES_DEVICE`` (``cpu`` when unset).

The test suite registers a CPU stand-in for CuPy as the cuda device when no GPU answers
(`register_cuda_module`, tests/cupy_standin.py), so every line here that handles CuPy arrays runs
on every CI run.
"""
import os
import re

import numpy as np

INSTALL_CUPY = ("pip install cupy-cuda12x (CUDA 12.x driver) or cupy-cuda13x (CUDA 13.x driver), "
                "the one matching the 'CUDA Version' that nvidia-smi prints; add the [ctk] extra "
                "(e.g. cupy-cuda13x[ctk]) when the machine has no CUDA toolkit")

try:  # CuPy is optional: see INSTALL_CUPY
    import cupy as _cupy
    import cupyx as _cupyx
    _cupy_import_error = None
except Exception as error:  # ImportError, or a CUDA library that fails to load
    _cupy = _cupyx = None
    _cupy_import_error = error

DEVICES = ("cpu", "cuda")


def _out_of_memory_errors(cupy):
    """The exception CuPy raises when device memory runs out (a tuple, for `except`)."""
    return (cupy.cuda.memory.OutOfMemoryError,) if cupy is not None else ()


OUT_OF_MEMORY = _out_of_memory_errors(_cupy)  # GPU memory errors, told apart from NumPy's


def register_cuda_module(cupy_like, cupyx_like):
    """Use `cupy_like` (and `cupyx_like` for scatter_add) as the cuda device's array module.

    For tests: tests/cupy_standin.py registers a CPU stand-in for CuPy this way when no GPU answers,
    so the cuda code paths run everywhere. `register_cuda_module(None, None)` turns cuda off.
    The module must offer what minires calls on CuPy: an `ndarray` type, NumPy's functions,
    `asarray`, `asnumpy`, `random.seed`, `cuda.runtime.getDeviceCount`,
    `cuda.Stream.null.synchronize` and `cuda.memory.OutOfMemoryError`. Returns the previous pair.
    """
    global _cupy, _cupyx, OUT_OF_MEMORY
    previous = (_cupy, _cupyx)
    _cupy, _cupyx, OUT_OF_MEMORY = cupy_like, cupyx_like, _out_of_memory_errors(cupy_like)
    return previous


def gpu_available():
    """True when CuPy (or the module registered for cuda) loads and a CUDA device answers."""
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
        raise RuntimeError(f"device 'cuda' needs CuPy and a GPU: {_why_no_gpu()}")
    return device


def _why_no_gpu():
    """What to do about a missing cuda device, in one sentence."""
    if _cupy is None and isinstance(_cupy_import_error, (ModuleNotFoundError, type(None))):
        return f"CuPy is not installed; {INSTALL_CUPY}"
    if _cupy is None:
        return (f"CuPy is installed but failed to load ({_cupy_import_error}); check that the "
                f"cupy-cudaXXx package matches the driver: {INSTALL_CUPY}")
    try:
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        return f"CuPy is installed but no CUDA device answers ({error})"
    return f"CuPy is installed but sees {count} CUDA devices"


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
    """Move (or keep) an array on `device`; returns the same object when nothing moves.

    An integer host array moved to cuda leaves its (min, max) behind (`host_range`): label range
    checks then need no device-to-host read, which would block the host on the GPU every step."""
    check_device(device)
    if device == "cuda":
        moved = _cupy.asarray(array)
        if isinstance(array, np.ndarray) and array.dtype.kind in "iu" and array.size:
            _remember_range(moved, array)
        return moved
    if is_cupy_array(array):
        return _cupy.asnumpy(array)
    return np.asarray(array)


_HOST_RANGES = {}  # id(device array) -> (the array, min, max), the latest few integer arrays moved
_HOST_RANGES_KEPT = 8


def _remember_range(moved, host):
    _HOST_RANGES[id(moved)] = (moved, int(host.min()), int(host.max()))
    while len(_HOST_RANGES) > _HOST_RANGES_KEPT:
        del _HOST_RANGES[next(iter(_HOST_RANGES))]


def host_range(array):
    """(min, max) of an integer array, read on the host: a NumPy array's own, or the values a
    device array had when `to_device` moved it from the host (for one of the latest few moved);
    None when the host never saw it (a device array computed on the device)."""
    if isinstance(array, np.ndarray):
        return (int(array.min()), int(array.max())) if array.size else None
    known = _HOST_RANGES.get(id(array))
    return known[1:] if known is not None and known[0] is array else None


def to_numpy(array):
    """A NumPy array from either device."""
    return to_device(array, "cpu")


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (np.add.at / cupyx.scatter_add)."""
    if is_cupy_array(target):
        _cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


class OpOutOfMemoryError(MemoryError):
    """Memory ran out inside an op; the message names the op, its layer, its shapes and the
    bytes it asked for (autograd raises it in place of NumPy's or CuPy's MemoryError)."""


class DeviceOutOfMemoryError(OpOutOfMemoryError):
    """GPU memory ran out inside an op (CuPy's OutOfMemoryError)."""


def _bytes_asked(error):
    """The bytes that the failed allocation asked for, where `error` says: NumPy's MemoryError
    carries the array's shape and dtype, CuPy's message says "allocating N bytes"."""
    shape, dtype = getattr(error, "shape", None), getattr(error, "dtype", None)
    if shape is not None and dtype is not None:
        return int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    wanted = re.search(r"allocating ([\d,]+) bytes", str(error))
    return int(wanted.group(1).replace(",", "")) if wanted else None


def out_of_memory_error(error, op, phase, layer, arrays):
    """The error to raise instead of the MemoryError `error` (NumPy's, or CuPy's OutOfMemoryError),
    met in `phase` ('forward' or 'backward') of `op`: which op, in which layer, on which shapes
    ({name: array}), asked for how many bytes."""
    on_gpu = isinstance(error, OUT_OF_MEMORY)
    size = _bytes_asked(error)
    where = f" in layer '{layer}'" if layer else ""
    amount = f"{size:,} bytes ({size / 2**20:.1f} MiB)" if size is not None else "memory"
    shapes = ", ".join(f"{name} {tuple(a.shape)} {a.dtype}" for name, a in arrays.items())
    kind, library = ("GPU memory", "CuPy") if on_gpu else ("memory", "NumPy")
    return (DeviceOutOfMemoryError if on_gpu else OpOutOfMemoryError)(
        f"{op} {phase}{where}: out of {kind} allocating {amount}, on {shapes}. Use a smaller "
        f"batch, free arrays you keep (and graphs kept with retain_graph=True), or a larger "
        f"{'GPU' if on_gpu else 'machine'}. {library} said: {error}")


def may_share_memory(a, b):
    """Whether arrays a and b may overlap in memory (a view and its base do): their address
    ranges meet. False for arrays on different devices."""
    if device_of(a) != device_of(b):
        return False
    return bool(xp(a).may_share_memory(a, b))


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
    """CuPy itself (or the module registered for cuda), for GPU-only tools such as its memory
    pool; None when there is none."""
    return _cupy


# --- minires' own CUDA kernels ------------------------------------------------------------------

CUDA_TYPES = {"float32": "float", "float64": "double"}


class DeviceKernel:
    """A CUDA kernel of minires: C++ source with one `extern "C" __global__` function `name`,
    written for an element type `T`, and a NumPy twin that computes the same outputs.

    On CuPy it is compiled by `cupy.RawKernel` (NVRTC) once per dtype and launched on
    (grid, block); the arguments are CuPy arrays and NumPy scalars of the kernel's C types. On a
    module that offers `launch_twin` (the tests' CuPy stand-in) the twin runs instead, on the
    NumPy arrays behind the device arrays. Every source is compiled in CI with NVRTC for sm_75,
    sm_80 and sm_90 (tests/fast/test_cuda_kernels.py), so no kernel reaches a GPU uncompiled.
    """

    def __init__(self, name, source, twin):
        self.name, self.source, self.twin = name, source, twin
        self._compiled = {}  # dtype name -> cupy.RawKernel

    def source_for(self, dtype):
        """The full source for element type `dtype` (float32 or float64)."""
        if str(dtype) not in CUDA_TYPES:
            raise TypeError(f"{self.name}: minires' CUDA kernels take float32 or float64 arrays, "
                            f"got {dtype}")
        return f"typedef {CUDA_TYPES[str(dtype)]} T;\n{self.source}"

    def __call__(self, dtype, grid, block, args):
        """Launch on (grid, block); NumPy arrays (the CPU tests of the GPU ops) run the twin."""
        if not any(is_cupy_array(a) for a in args):
            self.twin(*args)
            return
        source = self.source_for(dtype)  # a dtype it lacks: refused on GPU and stand-in alike
        launch_twin = getattr(_cupy, "launch_twin", None)
        if launch_twin is not None:
            launch_twin(self.name, self.twin, args)
            return
        kernel = self._compiled.get(str(dtype))
        if kernel is None:  # compiled at the first launch for each dtype (NVRTC, then cached)
            kernel = self._compiled[str(dtype)] = _cupy.RawKernel(source, self.name)
        kernel(grid, block, args)
