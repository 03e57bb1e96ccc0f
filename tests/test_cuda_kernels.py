"""minires' own CUDA kernels (minires/fast/gpu.py's KERNELS), checked without a GPU:

- every source compiles with NVRTC, the compiler CuPy's RawKernel uses, for sm_75 (Turing), sm_80
  (Ampere) and sm_90 (Hopper), in float32 and float64. NVRTC needs no GPU and no driver: it comes
  with the `nvidia-cuda-nvrtc-cu12` wheel (the `test` extra), called here through ctypes;
- every kernel runs (as its NumPy twin) in a fast-path training step and an evaluation on the
  stand-in, so each twin is exercised by the op tests that pin the ops to the references
  (tests/test_fast_gpu.py: forward and gradients, float64 to 1e-12, float32 to 1e-5).
"""
import ctypes
import glob
import os
import sys

import numpy as np
import pytest

import minires
from minires import models
from minires import functional as F
from minires.fast import gpu

import cupy_standin

ARCHITECTURES = ("sm_75", "sm_80", "sm_90")


def find_nvrtc():
    """libnvrtc from the nvidia-cuda-nvrtc-cu12 wheel (or $MINIRES_NVRTC), or None."""
    if os.environ.get("MINIRES_NVRTC"):
        return os.environ["MINIRES_NVRTC"]
    for entry in sys.path:
        found = sorted(glob.glob(os.path.join(entry, "nvidia", "cuda_nvrtc", "lib",
                                              "libnvrtc.so.*")))
        if found:
            return found[0]
    return None


@pytest.fixture(scope="module")
def nvrtc():
    path = find_nvrtc()
    if path is None:
        message = "NVRTC not installed: pip install nvidia-cuda-nvrtc-cu12 (the test extra)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs the test extra: a missing compiler is a failure
        pytest.skip(message)
    return ctypes.CDLL(path)


def compile_source(nvrtc, source, name, architecture):
    """(status, log) of compiling `source` with NVRTC for `architecture`."""
    program = ctypes.c_void_p()
    status = nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(),
                                      f"{name}.cu".encode(), 0, None, None)
    assert status == 0, f"nvrtcCreateProgram: {status}"
    options = [f"--gpu-architecture={architecture}".encode(), b"--std=c++14"]
    try:
        status = nvrtc.nvrtcCompileProgram(program, len(options),
                                           (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        return status, log.value.decode(errors="replace")
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


@pytest.mark.slow  # 54 compiles, about 10 s of CPU
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(gpu.KERNELS))
def test_every_kernel_compiles_with_nvrtc(nvrtc, name, dtype, architecture):
    kernel = gpu.KERNELS[name]
    status, log = compile_source(nvrtc, kernel.source_for(np.dtype(dtype)), name, architecture)
    assert status == 0, log
    assert "warning" not in log.lower(), log


def test_a_broken_source_fails_to_compile(nvrtc):
    """The check can fail: a kernel with a type error is refused, with NVRTC's message."""
    source = 'extern "C" __global__ void broken(T* y) { y[0] = undefined_name; }'
    status, log = compile_source(nvrtc, "typedef float T;\n" + source, "broken", "sm_80")
    assert status != 0 and "undefined_name" in log


@pytest.mark.cuda
@pytest.mark.skipif(not cupy_standin.is_registered(), reason="a real GPU answers")
def test_every_kernel_runs_in_a_fast_step_and_an_evaluation(monkeypatch):
    monkeypatch.setenv(gpu.ENV_SWITCH, "1")
    minires.manual_seed(0)
    model = models.cifar_resnet(8).to("cuda").train()
    x = minires.tensor(np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32),
                       device="cuda")
    y = minires.tensor(np.array([1, 2, 3, 4]), device="cuda")
    with cupy_standin.counting() as book:
        F.cross_entropy(model(x), y).backward()
        model.eval()(x)
    assert set(gpu.KERNELS) <= set(book.calls), set(gpu.KERNELS) - set(book.calls)
