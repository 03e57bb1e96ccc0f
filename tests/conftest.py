"""Shared fixtures: every test that takes `device` runs on the CPU, and again on CuPy when a GPU
answers (ids "cpu" / "cuda"). Tests marked `gpu` are skipped without one; tests marked `torch`
compare against PyTorch and are skipped when it is not installed (see helpers.import_torch).

Run one part only with a marker, e.g. `pytest -m torch` or `pytest -m "not gpu"`.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so test modules can `import helpers`

from minires import backend  # noqa: E402

GPU = backend.gpu_available()
DEVICES = ["cpu"] + (["cuda"] if GPU else [])


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CuPy and a GPU")
    for item in items:
        if "gpu" in item.keywords and not GPU:
            item.add_marker(skip_gpu)


@pytest.fixture(params=[pytest.param(d, id=d, marks=[pytest.mark.gpu] if d == "cuda" else [])
                        for d in DEVICES])
def device(request):
    """'cpu', and 'cuda' as well when CuPy is importable and a GPU answers."""
    return request.param


@pytest.fixture
def rng():
    """A fresh seeded generator per test, so every test is reproducible on its own."""
    return np.random.default_rng(0)
