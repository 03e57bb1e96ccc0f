"""The speed layer is a guest in the user's process: its pool survives fork, BLAS keeps the thread
count the user's program had, only the training commands (which own their process) set malloc,
`import minires` needs only NumPy, and minires runs without the `minires/fast` folder (on the
references)."""
import os
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import minires
import minires.functional as F
from minires import cli
from minires.fast import conv as fast_conv
from minires.fast import threads as fast_threads
from minires.ops import conv as reference_conv
from helpers import make

pytestmark = pytest.mark.cpu_only  # the CPU speed layer: see conftest.py

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code, pythonpath=REPO, **env):
    """Run `code` in a fresh interpreter; its stdout. Fails (not hangs) after 120 s."""
    env = dict(os.environ, PYTHONPATH=pythonpath, **env)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=pythonpath)  # cwd: `python -c` imports from there first
    assert out.returncode == 0, out.stderr
    return out.stdout


CONV = """
import numpy as np, minires, minires.functional as F
rng = np.random.default_rng(0)
def conv_step():
    x = minires.tensor(rng.standard_normal((8, 4, 12, 12)), requires_grad=True)
    w = minires.tensor(rng.standard_normal((6, 4, 3, 3)), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    return x.grad.numpy()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_conv2d_after_the_parent_used_the_pool():
    """The parent's pool has threads; the child has none of them and must start its own."""
    code = CONV + """
import os
conv_step()
pid = os.fork()
if pid == 0:
    ok = np.isfinite(conv_step()).all()
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""
    assert run_python(code, MINIRES_NUM_THREADS="2").strip() == "child exit 0"


def blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")  # a test-only dependency
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]


def test_blas_thread_count_unchanged_by_convs_in_two_threads(rng, monkeypatch):
    """BLAS's thread count belongs to the process: convs in two threads at once leave it as it
    was, and so does every conv while it runs (seen from a third thread)."""
    monkeypatch.setenv("MINIRES_NUM_THREADS", "2")
    before = blas_threads()
    assert before, "no BLAS library found"
    seen, errors = [], []

    def convs():
        try:
            for _ in range(5):
                x = make(rng.standard_normal((8, 4, 16, 16)), "cpu", requires_grad=True)
                w = make(rng.standard_normal((8, 4, 3, 3)), "cpu", requires_grad=True)
                fast_conv.conv2d(x, w, padding=1).sum().backward()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
    workers = [threading.Thread(target=convs) for _ in range(2)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        seen.append(blas_threads())
    for worker in workers:
        worker.join()
    assert not errors
    assert blas_threads() == before
    assert all(counts == before for counts in seen)


@pytest.mark.parametrize("command, sets_malloc", [(["train", "--data", "synthetic"], True),
                                                  (["gradients"], False)])
def test_only_a_training_command_sets_malloc_for_its_process(monkeypatch, command, sets_malloc):
    """`minires train` owns its process and keeps freed memory (minires/_process.py); a command
    that trains nothing, and every library call, leaves malloc as it was."""
    import minires._process
    import minires.commands.gradients
    import minires.commands.train

    calls = []
    monkeypatch.setattr(minires._process, "keep_freed_memory", lambda: calls.append(1))
    for module in (minires.commands.train, minires.commands.gradients):
        monkeypatch.setattr(module, "run", lambda args: 0)
    assert cli.main(command) == 0
    assert calls == ([1] if sets_malloc else [])


def test_import_minires_needs_only_numpy():
    """No threadpoolctl, plots, models or inspect at import, nor after a fast conv."""
    loaded = run_python(CONV + """
import sys
conv_step()
print(" ".join(sorted(sys.modules)))
""").split()
    for name in ("threadpoolctl", "matplotlib", "tqdm", "torch", "minires.models",
                 "minires.inspect", "minires.nn", "minires.train"):
        assert name not in loaded, name


def test_minires_runs_without_the_fast_folder(tmp_path):
    """A student build deletes minires/fast: functional then runs the references. The copy has
    another name, so that an editable install of minires cannot lend it its own fast folder."""
    shutil.copytree(os.path.join(REPO, "minires"), tmp_path / "minires_nofast",
                    ignore=shutil.ignore_patterns("fast", "__pycache__"))
    out = run_python(CONV.replace("import numpy as np, minires, minires.functional as F",
                                  "import numpy as np, minires_nofast as minires") + """
import minires_nofast.functional as F
print(F.fast_ops_enabled(), np.isfinite(conv_step()).all(), type(F.conv2d(
    minires.tensor(np.ones((1, 1, 3, 3)), requires_grad=True), minires.tensor(np.ones((1, 1, 3, 3)))
    ).creator).__module__)
""", pythonpath=str(tmp_path))
    assert out.split() == ["False", "True", "minires_nofast.ops.conv"]


def op_class(y):
    return type(y.creator)


def test_reference_ops_on_request_and_back(rng):
    x = make(rng.standard_normal((2, 3, 5, 5)), "cpu", requires_grad=True)
    w = make(rng.standard_normal((4, 3, 3, 3)), "cpu", requires_grad=True)
    g, b = make(np.ones(4), "cpu", requires_grad=True), make(np.zeros(4), "cpu")
    assert op_class(F.conv2d(x, w)) is fast_conv.FastConv2d
    minires.use_reference_ops()
    try:
        assert not F.fast_ops_enabled()
        y = F.conv2d(x, w)
        assert op_class(y) is reference_conv.Conv2d
        assert type(F.batch_norm(y, g, b).creator).__module__ == "minires.ops.norm"
    finally:
        minires.use_fast_ops()
    assert op_class(F.conv2d(x, w)) is fast_conv.FastConv2d


def test_numpy_arrays_and_tensors_alike_go_to_the_fast_op(rng):
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    assert op_class(F.conv2d(x, make(w, "cpu", requires_grad=True))) is fast_conv.FastConv2d
    assert op_class(F.conv2d(make(x, "cpu", requires_grad=True), w)) is fast_conv.FastConv2d


def test_minires_fast_ops_0_runs_the_references():
    out = run_python(CONV + """
import minires.functional as F
x = minires.tensor(np.ones((1, 1, 3, 3)), requires_grad=True)
print(F.fast_ops_enabled(), type(F.conv2d(x, x).creator).__module__)
""", MINIRES_FAST_OPS="0")
    assert out.split() == ["False", "minires.ops.conv"]


def _overflow(chunk):
    """float16 overflow (65504 is the largest value) in whichever thread takes the chunk."""
    return np.full(4, 6e4, np.float16) * np.float16(chunk)


def test_the_callers_floating_point_error_settings_hold_in_the_pool(monkeypatch):
    """np.errstate is per context (a context variable): the helpers run in the caller's, so
    overflow raises where the caller asked it to, and is silent where the caller silenced it."""
    monkeypatch.setattr(fast_threads, "num_threads", lambda: 2)
    chunks = [2.0] * 64                                     # enough for the helper to take some
    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        fast_threads.run_chunks(_overflow, chunks)
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")                     # any warning fails the test
        assert all(np.isinf(r).all() for r in fast_threads.run_chunks(_overflow, chunks))


def test_errstate_raise_catches_an_overflow_inside_a_fast_conv(rng):
    """What a user sees: the float16 conv that overflows raises under np.errstate(over="raise")."""
    x = make(np.full((8, 16, 16, 16), 200.0, np.float16), "cpu")
    w = make(np.full((16, 16, 3, 3), 200.0, np.float16), "cpu")
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        F.conv2d(x, w, padding=1)
