"""minires/_process.py: the malloc setting that the `minires` commands may make for their own
process. Without it freed memory goes back to the system (what the library always leaves in
place); with it, it stays for reuse. Each case runs in a fresh process: the setting is the
whole process's."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Ten 40 MB arrays (above glibc's largest mmap threshold, 32 MB), nine freed: the resident set
# in MB before, while held, and after.
CHILD = """
import json, sys
import numpy as np
import minires
from minires import _process
kept = _process.keep_freed_memory() if sys.argv[1] == "keep" else None

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))

before = rss_mb()
arrays = [np.ones(10 * 2**20, dtype=np.float32) for _ in range(10)]
held = rss_mb()
del arrays[1:]
print(json.dumps({"kept": kept, "before": before, "held": held, "after": rss_mb()}))
"""


def resident(mode):
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.cpu_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc/self/status")
def test_freed_memory_stays_only_where_the_command_asks():
    default = resident("default")
    assert default["held"] - default["before"] >= 380    # the ten arrays were really made
    assert default["after"] - default["before"] <= 80    # nine went back: malloc untouched
    kept = resident("keep")
    if not kept["kept"]:
        pytest.skip("no glibc mallopt here")
    assert kept["after"] - kept["before"] >= 340          # nine stayed in the heap
