"""minires' own CUDA kernels (minires/fast/gpu.py's KERNELS), checked without a GPU:

- every source compiles with NVRTC, the compiler CuPy's RawKernel uses, for sm_75 (Turing), sm_80
  (Ampere) and sm_90 (Hopper), in float32 and float64. NVRTC needs no GPU and no driver: it comes
  with the `nvidia-cuda-nvrtc-cu12` wheel (the `test` extra), called through ctypes in a child
  process (a compile leaves the calling thread in the "C" locale, after which Python reads text
  files as ASCII: test_grading_gradescope failed after these tests in one process);
- every kernel runs (as its NumPy twin) in a fast-path training step and an evaluation on the
  stand-in, so each twin is exercised by the op tests that pin the ops to the references
  (tests/fast/test_fast_gpu.py: forward and gradients, float64 to 1e-12, float32 to 1e-5).
"""
import ctypes
import glob
import json
import os
import subprocess
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


def nvrtc_path():
    path = find_nvrtc()
    if path is None:
        message = "NVRTC not installed: pip install nvidia-cuda-nvrtc-cu12 (the test extra)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs the test extra: a missing compiler is a failure
        pytest.skip(message)
    return path


def compile_source(nvrtc, source, name, architecture):
    """(status, log) of compiling `source` with NVRTC (a ctypes library) for `architecture`."""
    program = ctypes.c_void_p()
    status = nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(),
                                      f"{name}.cu".encode(), 0, None, None)
    if status != 0:
        return status, f"nvrtcCreateProgram: {status}"
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


def compile_in_a_child(jobs):
    """[(status, log)] for each (source, name, architecture), compiled in one child process."""
    child = ("import ctypes, json, sys, importlib.util\n"
             "spec = importlib.util.spec_from_file_location('kernels_test', sys.argv[1])\n"
             "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
             "nvrtc = ctypes.CDLL(sys.argv[2])\n"
             "print(json.dumps([module.compile_source(nvrtc, *job)\n"
             "                  for job in json.load(sys.stdin)]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    result = subprocess.run([sys.executable, "-c", child, __file__, nvrtc_path()],
                            input=json.dumps(jobs), capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(r) for r in json.loads(result.stdout.strip().splitlines()[-1])]


BROKEN = 'typedef float T;\nextern "C" __global__ void broken(T* y) { y[0] = undefined_name; }'
JOBS = [(name, dtype, architecture) for name in sorted(gpu.KERNELS)
        for dtype in ("float32", "float64") for architecture in ARCHITECTURES]


@pytest.fixture(scope="module")
def compiled():
    """{(kernel, dtype, architecture) or 'broken': (status, log)}: every compile, one child."""
    jobs = [(gpu.KERNELS[name].source_for(np.dtype(dtype)), name, architecture)
            for name, dtype, architecture in JOBS] + [(BROKEN, "broken", "sm_80")]
    results = compile_in_a_child(jobs)
    return dict(zip(JOBS + ["broken"], results))


@pytest.mark.slow  # 54 compiles, about 10 s of CPU
@pytest.mark.parametrize("name, dtype, architecture", JOBS)
def test_every_kernel_compiles_with_nvrtc(compiled, name, dtype, architecture):
    status, log = compiled[(name, dtype, architecture)]
    assert status == 0, log
    assert "warning" not in log.lower(), log


@pytest.mark.slow
def test_a_broken_source_fails_to_compile(compiled):
    """The check can fail: a kernel with an undefined name is refused, with NVRTC's message."""
    status, log = compiled["broken"]
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


@pytest.mark.cuda
@pytest.mark.skipif(not cupy_standin.is_registered(), reason="counts the stand-in's ledger")
def test_a_minires_kernel_runs_its_twin_as_one_launch():
    """(From tests/test_cuda_ledger.py, which runs without minires/fast.)"""
    cp = cupy_standin.cupy
    x = cp.asarray(np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32))
    gamma, beta = cp.ones(3, dtype=np.float32), cp.zeros(3, dtype=np.float32)
    xt, gt, bt = (minires.Tensor(v, requires_grad=True) for v in (x, gamma, beta))
    with cupy_standin.counting() as forward:
        y = gpu.batch_norm(xt, gt, bt, training=True)
    with cupy_standin.counting() as backward:
        y.backward(cp.ones(y.shape, dtype=np.float32))
    assert forward.calls["bn_partial_sums"] == 1 and forward.calls["bn_apply"] == 1
    assert forward.launches == 3 and forward.syncs == 0, forward
    assert backward.launches <= 5 and backward.syncs == 0, backward  # 3 kernels (+ engine's ones)
