"""ops/_memory.py: with glibc's thresholds raised, an array freed and made again reuses the same
pages (no page faults); MINIRES_KEEP_FREED_MEMORY=0 leaves malloc as it was."""
import json
import os
import subprocess
import sys

import pytest

from minires.ops import _memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Makes and frees a 64 MB array ten times after a first one, then prints the page faults of those
# ten and what keep_freed_memory() returned. Fresh pages fault at first touch: at least once per
# 2 MB (huge pages), at most once per 4 KB, so at least 32 faults per array.
CHILD = """
import json, resource
import numpy as np
from minires.ops import _memory
applied = _memory.keep_freed_memory()
np.ones(2**24, dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.ones(2**24, dtype=np.float32)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def run_child(keep):
    env = dict(os.environ, MINIRES_KEEP_FREED_MEMORY=keep, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_memory.glibc_mallopt() is None, reason="needs Linux with glibc's mallopt")
def test_freed_arrays_come_back_without_page_faults():
    kept, default = run_child("1"), run_child("0")
    assert kept["applied"] is True and default["applied"] is False
    assert default["faults"] >= 10 * 32               # every array on fresh pages
    assert kept["faults"] <= default["faults"] / 20   # the first array's pages, reused


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setattr(_memory, "_applied", False)
    monkeypatch.setenv("MINIRES_KEEP_FREED_MEMORY", "0")
    assert _memory.keep_freed_memory() is False
    assert _memory._applied is False  # a later call without the variable may still apply it
