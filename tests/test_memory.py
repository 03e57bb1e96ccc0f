"""fast/memory.py: the fast ops leave glibc's malloc as it was, so memory a program frees goes back
to the system; MINIRES_KEEP_FREED_MEMORY=1 asks for the other behaviour; work buffers are reused
per thread; op outputs are lent from minires' own cache of blocks and come back to it."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from minires.fast import memory

pytestmark = [pytest.mark.cpu_only,                  # the CPU speed layer: see conftest.py
              pytest.mark.usefixtures("no_stray_frees")]  # tests here read the cache's books

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def run_child(env_value):
    env = dict(os.environ, PYTHONPATH=REPO, MINIRES_FAST_OPS="1")
    env.pop("MINIRES_KEEP_FREED_MEMORY", None)
    if env_value is not None:
        env["MINIRES_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_freed_memory_goes_back_to_the_system_after_fast_ops():
    """Nine freed 40 MB arrays leave the process (360 MB); with the opt-in they stay."""
    default = run_child(None)
    assert default["held"] - default["before"] >= 380      # the ten arrays were really made
    assert default["after"] - default["before"] <= 80      # nine of them went back
    if memory.glibc_mallopt() is not None:                 # glibc: the opt-in keeps them
        kept = run_child("1")
        assert kept["after"] - kept["before"] >= 340


# One ResNet-20 training step at batch 32 (its outputs are lent), then empty_cache(): prints the
# idle bytes and the resident set before and after, in MB.
EMPTY_CACHE_CHILD = """
import json
import numpy as np
import minires, minires.functional as F
from minires.fast import memory
from minires.models import cifar_resnet

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))

rng = np.random.default_rng(0)
x = minires.tensor(rng.standard_normal((32, 3, 32, 32)).astype(np.float32))
y = minires.tensor(rng.integers(0, 10, 32))
F.cross_entropy(cifar_resnet(20)(x), y).backward()
idle_mb = memory.cache_stats()["idle_bytes"] / 2**20
before = rss_mb()
memory.empty_cache()
print(json.dumps({"idle": idle_mb, "before": before, "after": rss_mb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_empty_cache_gives_the_blocks_back_to_the_system():
    """The idle blocks a training step leaves leave the process with empty_cache(), all of them
    (from malloc's heap, about half did)."""
    env = dict(os.environ, PYTHONPATH=REPO, MINIRES_FAST_OPS="1")
    env.pop("MINIRES_KEEP_FREED_MEMORY", None)
    out = subprocess.run([sys.executable, "-c", EMPTY_CACHE_CHILD], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    assert rss["idle"] >= 40                                  # the step's blocks, kept idle
    assert rss["before"] - rss["after"] >= 0.9 * rss["idle"]  # and now given back


def test_malloc_is_untouched_unless_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_asked", False)
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1))
    monkeypatch.delenv("MINIRES_KEEP_FREED_MEMORY", raising=False)
    memory.keep_freed_memory_if_asked()
    monkeypatch.setenv("MINIRES_KEEP_FREED_MEMORY", "0")
    memory.keep_freed_memory_if_asked()
    assert calls == []
    monkeypatch.setenv("MINIRES_KEEP_FREED_MEMORY", "1")
    memory.keep_freed_memory_if_asked()
    memory.keep_freed_memory_if_asked()
    assert calls == [1]                                    # once per process


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


# --- lent outputs: minires' own cache of blocks -------------------------------------------------

def address(array):
    return array.__array_interface__["data"][0]


def test_a_lent_block_comes_back_when_the_array_and_its_views_are_gone():
    a = memory.lend((1000, 7), np.float32)                   # an odd size: its own size class
    where = address(a)
    view = a.T[2:]
    del a
    held = memory.lend((1000, 7), np.float32)                 # the view still holds the block
    assert address(held) != where
    del view
    reused = memory.lend((1000, 7), np.float32)               # now it is idle: taken again
    assert address(reused) == where
    assert reused.shape == (1000, 7) and reused.dtype == np.float32 and reused.flags.writeable
    del held, reused


def test_lent_arrays_are_independent_while_lent():
    a, b = memory.lend((64, 64), np.float64), memory.lend((64, 64), np.float64)
    a[...], b[...] = 1.0, 2.0
    assert not np.shares_memory(a, b) and a.sum() == 64 * 64 and b.sum() == 2 * 64 * 64


def test_the_cache_keeps_at_most_idle_cap_times_the_peak_and_empty_cache_frees_it():
    memory.empty_cache()
    before = memory.cache_stats()
    arrays = [memory.lend((3, 1 << 16), np.float32) for _ in range(5)]  # 768 KiB each
    lent = memory.cache_stats()
    assert lent["lent_bytes"] - before["lent_bytes"] == 5 * 3 * (1 << 18)
    del arrays
    stats = memory.cache_stats()
    assert stats["lent_bytes"] == before["lent_bytes"]
    assert 0 < stats["idle_bytes"] <= memory.IDLE_CAP * stats["peak_lent_bytes"]
    memory.empty_cache()
    assert memory.cache_stats()["idle_bytes"] == 0


def test_lending_from_many_threads_keeps_the_books_straight():
    before = memory.cache_stats()["lent_bytes"]

    def churn(seed):
        rng = np.random.default_rng(seed)
        for _ in range(300):
            a = memory.lend((int(rng.integers(1, 50)), 1024), np.float32)
            a[...] = seed                                      # nobody else writes here
            assert (a == seed).all()
    threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert memory.cache_stats()["lent_bytes"] == before


def test_a_training_step_reuses_its_blocks():
    """From the third step on, a conv + batch norm + relu + residual step makes no new blocks."""
    import minires
    import minires.functional as F
    rng = np.random.default_rng(0)
    x = minires.tensor(rng.standard_normal((8, 8, 16, 16)).astype(np.float32))
    w = minires.tensor(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), requires_grad=True)
    g, b = minires.tensor(np.ones(8, np.float32)), minires.tensor(np.zeros(8, np.float32))

    def step():
        h = F.relu(F.batch_norm(F.conv2d(x, w, padding=1), g, b))
        F.residual_add(x, F.conv2d(h, w, padding=1)).sum().backward()
    step(), step()
    made = memory.cache_stats()["made_bytes"]
    step()
    assert memory.cache_stats()["made_bytes"] == made
    assert memory.cache_stats()["made_bytes"] > 0              # the step did lend its outputs


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_lends_while_the_parent_is_lending(tmp_path):
    """The cache's lock is new in the child, even if another thread held it at the fork."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            memory.lend((256, 256), np.float32)
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:  # the child: lend, and report through the exit status
                try:
                    a = memory.lend((256, 256), np.float32)
                    a[...] = 1
                    os._exit(0 if a.sum() == 256 * 256 else 1)
                except BaseException:
                    os._exit(2)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        thread.join()


def test_a_block_can_come_back_while_this_thread_holds_the_cache_lock():
    """The garbage collector may free a lent array inside any allocation, also one the cache
    makes while this thread holds its lock: giving the block back then must not wait forever."""
    held, done = [memory.lend((10,), np.float32)], []

    def free_under_the_lock():
        with memory._cache.lock:
            held.clear()                                       # the block goes back here
        done.append(True)
    thread = threading.Thread(target=free_under_the_lock, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert done, "giving a block back under the cache's own lock deadlocked"


def test_blocks_of_sizes_no_longer_asked_for_go_first():
    """Past the cap, the oldest idle blocks go back to the system, not the one just given back:
    after four other sizes filled the cache, a block of a fifth size is still kept."""
    memory.empty_cache()
    peak = max(memory.cache_stats()["peak_lent_bytes"], 2**22)
    part = (peak // 4 // memory.PAGE + 1) * memory.PAGE
    for extra in range(4):                                 # each size: 4 blocks lent at once
        group = [memory.lend((part + extra * memory.PAGE,), np.uint8) for _ in range(4)]
        del group
    stats = memory.cache_stats()
    cap = memory.IDLE_CAP * stats["peak_lent_bytes"]
    assert cap - 2 * part < stats["idle_bytes"] <= cap     # full: no room for the next block
    fresh = memory.lend((2 * part,), np.uint8)
    where = address(fresh)
    del fresh                                              # over the cap: old blocks go
    again = memory.lend((2 * part,), np.uint8)
    assert address(again) == where
    assert memory.cache_stats()["idle_bytes"] <= cap
    del again


def test_lending_python_objects_is_refused():
    with pytest.raises(TypeError, match=r"lend: dtype object holds Python objects.*\(4,\)"):
        memory.lend((4,), object)
