"""fast/memory.py: the fast ops leave glibc's malloc as it was, so memory a program frees goes back
to the system; work buffers are reused per thread."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from minires.fast import memory

pytestmark = pytest.mark.cpu_only  # the CPU speed layer: see conftest.py

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Trains one conv2d + batch_norm step with the fast ops, then makes ten 40 MB arrays (above glibc's
# largest mmap threshold, 32 MB) and frees nine; prints the resident set in MB at each point.
CHILD = """
import json
import numpy as np
import minires, minires.functional as F

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))

rng = np.random.default_rng(0)
x = minires.tensor(rng.standard_normal((16, 8, 16, 16)).astype(np.float32), requires_grad=True)
w = minires.tensor(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), requires_grad=True)
g, b = minires.tensor(np.ones(8, np.float32)), minires.tensor(np.zeros(8, np.float32))
F.batch_norm(F.conv2d(x, w, padding=1), g, b).sum().backward()
before = rss_mb()
arrays = [np.ones(10 * 2**20, dtype=np.float32) for _ in range(10)]
held = rss_mb()
del arrays[1:]
print(json.dumps({"before": before, "held": held, "after": rss_mb()}))
"""


def run_child():
    env = dict(os.environ, PYTHONPATH=REPO, MINIRES_FAST_OPS="1")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_freed_memory_goes_back_to_the_system_after_fast_ops():
    """Nine freed 40 MB arrays leave the process (360 MB): the fast ops changed nothing in
    malloc."""
    rss = run_child()
    assert rss["held"] - rss["before"] >= 380      # the ten arrays were really made
    assert rss["after"] - rss["before"] <= 80      # nine of them went back


def test_workspace_is_reused_per_thread_and_grows():
    a = memory.workspace("test-buffer", (4, 5), np.float32)
    a[...] = 1
    b = memory.workspace("test-buffer", (2, 3), np.float64)   # smaller: the same memory
    assert b.shape == (2, 3) and b.dtype == np.float64 and np.shares_memory(a, b)
    c = memory.workspace("test-buffer", (100,), np.float64)   # larger: a new buffer
    assert c.shape == (100,) and not np.shares_memory(a, c)
    other = []
    thread = threading.Thread(target=lambda: other.append(
        memory.workspace("test-buffer", (100,), np.float64)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], c)                  # each thread has its own
