"""Shared fixtures: every test that takes `device` runs on the CPU and again on the cuda device
(ids "cpu" / "cuda"). The cuda device is CuPy on a real GPU when one answers, and otherwise the
CPU stand-in for CuPy (cupy_standin.py), so the GPU code paths run on every CI run.

Markers: `cpu_only` marks a test that is CPU-only by nature (the CPU speed layer, fork, malloc,
processes that run on the CPU): it runs with the default device pinned to "cpu", so that it means
the same under MINIRES_DEVICE=cuda. `cuda` is set on every cuda variant (`pytest -m cuda` runs just those); `gpu` marks the
tests that need a real GPU (timing, memory, custom kernels) and skips them without one; `torch`
compares against PyTorch and is skipped when it is not installed (see helpers.import_torch).

Run one part only with a marker, e.g. `pytest -m torch` or `pytest -m "not gpu"`.
"""
import gc
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so test modules can `import helpers`

from minires import backend  # noqa: E402

import cupy_standin  # noqa: E402

REAL_GPU = backend.gpu_available()
if not REAL_GPU:
    cupy_standin.register()


def pytest_report_header(config):
    return ("cuda device: " + ("CuPy on a real GPU" if REAL_GPU else
                               "the CPU stand-in for CuPy (tests/cupy_standin.py)"))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CuPy and a real GPU")
    for item in items:
        if "gpu" in item.keywords and not REAL_GPU:
            item.add_marker(skip_gpu)


@pytest.fixture(params=[pytest.param(d, id=d, marks=[pytest.mark.cuda] if d == "cuda" else [])
                        for d in backend.DEVICES])
def device(request):
    """'cpu', then 'cuda' (a real GPU, or the CuPy stand-in without one)."""
    return request.param


@pytest.fixture(autouse=True)
def _pin_cpu_only_tests_to_the_cpu(request, monkeypatch):
    """Tests marked `cpu_only` (and the processes they start) run with MINIRES_DEVICE=cpu."""
    if request.node.get_closest_marker("cpu_only"):
        monkeypatch.setenv("MINIRES_DEVICE", "cpu")


@pytest.fixture
def without_cuda():
    """No cuda device at all during the test (as on a machine without CuPy)."""
    previous = backend.register_cuda_module(None, None)
    try:
        yield
    finally:
        backend.register_cuda_module(*previous)


@pytest.fixture
def rng():
    """A fresh seeded generator per test, so every test is reproducible on its own."""
    return np.random.default_rng(0)


@pytest.fixture
def no_stray_frees():
    """The garbage collector off for the test, after collecting what earlier tests left in
    reference cycles: a test that checks what is freed without the collector (a recorder holds
    no cycle) sees only what the test itself does."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
