"""minires/fast is removable for real: it is imported at its first use, never when fast ops are
off, and its GPU module only when it is switched on and the data is on a GPU. The checks run in
fresh processes (sys.modules of this one has seen every test's imports), and hold with or
without the minires/fast folder."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEP = """
import sys
import numpy as np
import minires, minires.functional as F
from minires.models import cifar_resnet
print("after import:", " ".join(m for m in sys.modules if m.startswith("minires.fast")) or "-")
x = minires.tensor(np.ones((2, 3, 8, 8), np.float32))
F.cross_entropy(cifar_resnet(8)(x), minires.tensor(np.array([1, 2]))).backward()
print("after a step:", " ".join(sorted(m for m in sys.modules if m.startswith("minires.fast")))
      or "-")
"""


def loaded(**env):
    """{'after import': [...], 'after a step': [...]}: the minires.fast modules loaded."""
    environ = dict(os.environ, PYTHONPATH=REPO, MINIRES_DEVICE="cpu", **env)
    out = subprocess.run([sys.executable, "-c", STEP], env=environ, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found = {}
    for line in out.stdout.splitlines():
        when, _, names = line.partition(":")
        found[when] = [n for n in names.split() if n != "-"]
    return found


@pytest.mark.cpu_only
def test_fast_ops_off_never_import_minires_fast():
    found = loaded(MINIRES_FAST_OPS="0", MINIRES_GPU_FAST_OPS="1")
    assert found == {"after import": [], "after a step": []}


@pytest.mark.cpu_only
def test_import_minires_loads_no_fast_module_and_a_cpu_step_no_gpu_one():
    found = loaded(MINIRES_FAST_OPS="1", MINIRES_GPU_FAST_OPS="1")
    assert found["after import"] == []
    assert "minires.fast.gpu" not in found["after a step"]
    if os.path.isdir(os.path.join(REPO, "minires", "fast")):
        assert "minires.fast.conv" in found["after a step"]
