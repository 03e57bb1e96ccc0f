"""The attacks of issue 15 on the grader: each scores 0 (or is refused) and breaks nothing else.

Every attack is planted in im2col of a reference conv workspace; col2im, graded in the same run,
must keep its full marks. Most attacks are refused by the screen (guard.py) before they run; the
`unscreened` fixture turns the screen off to show that the sandbox and the trust boundary hold by
themselves (defence in depth): the child's arrays are compared in the grader's own process,
nothing is unpickled, and every process the child started is gone when grading ends.
"""
import json
import os
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minires import functional as F
from minires.assignments import grade, grader, isolation
from minires.assignments.grader import screen_workspace
from minires.assignments.workspace import make_workspace
from minires.cli import main

pytestmark = [pytest.mark.grading, pytest.mark.cpu_only]  # grading runs on the CPU
SEED, TIMEOUT = 7, 60.0
PARTS = ["im2col", "col2im"]


@pytest.fixture
def unscreened(monkeypatch):
    monkeypatch.setattr(grader, "screen_workspace", lambda directory, assignment: {})


def attacked(tmp_path, attack):
    """A reference conv workspace whose im2col is replaced by `attack` (module-level code)."""
    make_workspace("conv", tmp_path, with_solutions=True)
    path = tmp_path / "conv.py"
    path.write_text(path.read_text() + "\n\n# the attack\n" + textwrap.dedent(attack))
    return tmp_path


def graded(directory, timeout=TIMEOUT):
    return {r.name: r for r in grade(directory, seed=SEED, timeout=timeout, parts=PARTS)[1]}


def assert_im2col_zero_col2im_full(results, message):
    assert results["im2col"].score == 0, results["im2col"].output
    assert message in results["im2col"].output, results["im2col"].output
    assert results["col2im"].score == results["col2im"].max_score, results["col2im"].output


def assert_refused(results, message):
    for r in results.values():
        assert r.score == 0 and r.verdict.startswith("refused: conv.py"), r.output
        assert message in r.output, r.output


# --- 1. importing the answer ----------------------------------------------------------------------

IMPORT_ANSWER = """
from minires.ops import conv as _reference
im2col = _reference.im2col
"""


def test_importing_the_answer_is_refused(tmp_path):
    assert_refused(graded(attacked(tmp_path, IMPORT_ANSWER)), "imports conv from minires.ops")


def test_a_link_to_the_answer_is_refused(tmp_path):
    make_workspace("conv", tmp_path)
    (tmp_path / "conv.py").unlink()
    (tmp_path / "conv.py").symlink_to(Path(grader.__file__).parents[1] / "ops" / "conv.py")
    assert_refused(graded(tmp_path), "conv.py is a link")


def test_importing_the_answer_finds_no_answer_even_unscreened(tmp_path, unscreened):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, IMPORT_ANSWER)),
                                   "minires' reference im2col is not available")


# --- 2. patching the checks, numpy, reading frames ------------------------------------------------

PATCH_CHECKS = """
import minires.assignments.checks as _checks
_checks.expect_close = _checks.compare_case = lambda *args, **kwargs: None

def im2col(x, kernel, stride, padding, pad_value=0.0):
    return x
"""

PATCH_NUMPY = """
import numpy
numpy.isclose = lambda a, b, **kwargs: numpy.ones(numpy.broadcast(a, b).shape, dtype=bool)
numpy.array_equal = lambda *args, **kwargs: True

def im2col(x, kernel, stride, padding, pad_value=0.0):
    return numpy.zeros((x.shape[0], x.shape[1], *kernel, 2, 2))
"""

READ_FRAMES = """
import sys

def im2col(x, kernel, stride, padding, pad_value=0.0):
    return sys._getframe(1).f_locals["expected"]
"""


def test_patching_the_checks_is_refused_and_useless(tmp_path, unscreened):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, PATCH_CHECKS)), "cols: wrong shape")
    assert screen_workspace(tmp_path, grader.get("conv"))["conv.py"].startswith(
        "refused: conv.py, line ")


def test_patching_numpy_in_the_child_changes_nothing(tmp_path):
    """Allowed by the screen (it is plain numpy), and harmless: the grader compares."""
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, PATCH_NUMPY)),
                                   "cols: first wrong element")


def test_reading_frames_is_refused(tmp_path):
    assert_refused(graded(attacked(tmp_path, READ_FRAMES)), "uses ._getframe")


def test_frames_hold_no_expected_value_even_unscreened(tmp_path, unscreened):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, READ_FRAMES)), "KeyError")


# --- 3. forging the result, a pickle payload ------------------------------------------------------

def forge(marker):
    return f"""
import os, pickle, numpy

class Payload:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))

def im2col(x, kernel, stride, padding, pad_value=0.0):
    with open("error.txt", "w") as forged:
        forged.write("ok")
    numpy.savez("case0.npz", **{{"output:cols": numpy.array([Payload()], dtype=object)}})
    os._exit(0)
"""


def test_a_pickle_payload_is_never_unpickled(tmp_path, unscreened):
    marker = tmp_path / "the grader ran student code"
    os.chmod(tmp_path, 0o777)  # even where the child could write the marker, nothing runs it
    results = graded(attacked(tmp_path / "workspace", forge(marker)))
    assert_im2col_zero_col2im_full(results, "cannot read as plain arrays")
    assert not marker.exists()


# --- 4. a setsid grandchild rewriting the results -------------------------------------------------

def rewriter(results_json, pid_file):
    return f"""
import json, os, time

def im2col(x, kernel, stride, padding, pad_value=0.0):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open("{pid_file}", "w") as out:
                out.write(str(os.getpid()))
            time.sleep(2)
            with open("{results_json}", "w") as out:
                json.dump({{"score": 10, "tests": []}}, out)
            os._exit(0)
        os._exit(0)
    time.sleep(0.5)
    raise ValueError("left a grandchild behind")
"""


@pytest.mark.parametrize("layers", ["as-configured", "subreaper-alone"])
def test_a_setsid_grandchild_cannot_rewrite_the_results(tmp_path, unscreened, monkeypatch,
                                                        capsys, layers):
    """As configured here (PID namespace, `nobody`), and with the subreaper as the only layer
    (same user, no namespace): without both, the grandchild does rewrite the file (checked by
    hand when this test was written)."""
    if layers == "subreaper-alone":
        monkeypatch.setattr(grader, "sandbox_uid", lambda: None)
        monkeypatch.setattr(isolation, "namespace_prefix", lambda: ())
    with tempfile.TemporaryDirectory() as shared:  # open to the sandbox's user too: only the
        os.chmod(shared, 0o777)                    # killing of every descendant protects it
        results_json, pid_file = Path(shared) / "results.json", Path(shared) / "grandchild.pid"
        workspace = attacked(tmp_path, rewriter(results_json, pid_file))
        main(["assignment", "grade", str(workspace), "--json", str(results_json), "--seed",
              str(SEED), "--part", "im2col", "--part", "col2im"])
        written = results_json.read_text()
        assert json.loads(written)["score"] == 2  # col2im only
        assert pid_file.exists()  # the grandchild ran
        time.sleep(3)  # it would have rewritten the results by now
        assert results_json.read_text() == written
        assert not isolation.children()


# --- 5. a malformed result, killing the parent, no limits -----------------------------------------

MALFORMED = """
import os

def im2col(x, kernel, stride, padding, pad_value=0.0):
    with open("case0.npz", "wb") as out:
        out.write(b"PK\\x03\\x04 not a zip at all")
    os._exit(0)
"""

ZIP_BOMB = """
import os, zipfile

def im2col(x, kernel, stride, padding, pad_value=0.0):
    header = (b"\\x93NUMPY\\x01\\x00v\\x00{'descr': '<f8', 'fortran_order': False, "
              b"'shape': (33554432,), }")
    header = header + b" " * (127 - len(header)) + b"\\n"
    with zipfile.ZipFile("case0.npz", "w", zipfile.ZIP_DEFLATED) as bomb:
        with bomb.open("output:cols.npy", "w", force_zip64=True) as member:
            member.write(header)
            zeros = bytes(1 << 24)
            for _ in range(16):  # 256 MiB of zeros, a few hundred kB on disk
                member.write(zeros)
    os._exit(0)
"""

KILL_PARENT = """
import os, signal

def im2col(x, kernel, stride, padding, pad_value=0.0):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in (os.getppid(), 0, -1):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    raise ValueError("still here")
"""

FORK_BOMB = """
import os

def im2col(x, kernel, stride, padding, pad_value=0.0):
    while True:
        try:
            os.fork()
        except OSError:
            pass
"""

MEMORY_HOG = """
import numpy

def im2col(x, kernel, stride, padding, pad_value=0.0):
    return numpy.ones((1 << 40,))
"""


def test_a_malformed_result_costs_its_part_only(tmp_path, unscreened):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, MALFORMED)),
                                   "cannot read as plain arrays")


def test_a_zip_bomb_is_not_unpacked(tmp_path, unscreened):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, ZIP_BOMB)), "the grader reads at most")


def test_killing_the_parent_is_not_possible(tmp_path, unscreened):
    results = graded(attacked(tmp_path, KILL_PARENT))  # this test process is the grader
    assert results["im2col"].score == 0 and results["col2im"].score == 2


def test_memory_is_limited(tmp_path):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, MEMORY_HOG)), "MemoryError")


@pytest.mark.skipif(isolation.sandbox_uid() is None and not isolation.namespace_prefix(),
                    reason="a process limit needs the sandbox's own user or a PID namespace")
def test_a_fork_bomb_is_contained(tmp_path, unscreened):
    results = graded(attacked(tmp_path, FORK_BOMB), timeout=4)
    assert_im2col_zero_col2im_full(results, "FAIL  2x2 kernel")
    assert not isolation.children()


# --- 6. fork after threads ----------------------------------------------------------------------

def test_grading_after_threads_ran_does_not_hang(tmp_path):
    """The grader's process has run a fast conv (its thread pool) and holds a lock in another
    thread; the children are fresh interpreters, so the reference still scores full marks."""
    x = np.random.default_rng(0).standard_normal((64, 8, 16, 16)).astype(np.float32)
    F.conv2d(x, np.ones((8, 8, 3, 3), np.float32), padding=1)
    held, release = threading.Lock(), threading.Event()

    def hold():
        with held:
            release.wait(30)
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        make_workspace("conv", tmp_path, with_solutions=True)
        results = grade(tmp_path, seed=SEED, timeout=TIMEOUT, parts=["conv2d_forward"])[1]
        assert results[0].score == results[0].max_score, results[0].output
    finally:
        release.set()
        holder.join()


# --- a class of submissions ---------------------------------------------------------------------

def test_grading_many_submissions_leaks_no_processes_or_files(tmp_path, monkeypatch):
    # the grader's temporary folders go to a folder of this test's own, apart from other runs'
    # (pytest's tmp_path would not do: the sandboxed child, user nobody, cannot enter it)
    temporary = Path(tempfile.mkdtemp(prefix="minires-test-"))
    temporary.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    before = set(temporary.glob("minires-grade-*"))
    for i in range(10):
        workspace = tmp_path / f"student{i}"
        make_workspace("residual", workspace, with_solutions=i % 2 == 0)
        results = grade(workspace, seed=i, timeout=TIMEOUT, parts=["relu_forward"])[1]
        assert results[0].score == (1 if i % 2 == 0 else 0), results[0].output
    assert set(temporary.glob("minires-grade-*")) == before
    temporary.rmdir()  # empty: nothing else was left there either
    assert not isolation.children()
    if isolation.sandbox_uid() is not None:
        owners = [p for p in Path("/proc").iterdir() if p.name.isdigit() and
                  _uid(p) == isolation.SANDBOX_UID]
        assert not owners


def _uid(process):
    try:
        return process.stat().st_uid
    except OSError:
        return None


# --- the fast ops are answers too -----------------------------------------------------------------

THROUGH_FUNCTIONAL = {  # (assignment, file, part graded, code that answers through minires)
    "conv": ("conv.py", "conv2d_forward", """
import minires as _minires
_minires.use_fast_ops()  # undoes the grader's switch to the references: the overrides are hidden

def _through_functional(self, x, w, b=None):
    t = _minires.tensor
    return _minires.functional.conv2d(t(x), t(w), None if b is None else t(b), self.stride,
                                      self.padding).data
Conv2d.forward = _through_functional
"""),
    "residual": ("activation.py", "relu_forward", """
import minires as _minires
_minires.use_fast_ops()
ReLU.forward = lambda self, x: _minires.functional.relu(_minires.tensor(x)).data
"""),
}


@pytest.mark.parametrize("name", THROUGH_FUNCTIONAL)
def test_answering_through_minires_fast_ops_finds_no_answer_even_unscreened(tmp_path, unscreened,
                                                                            name):
    """minires.functional would run the fast op (a subclass that overrides the hidden method) on
    NumPy arrays: the grading process runs the references, and even with the fast ops switched
    back on, their overrides of the graded methods raise too."""
    filename, part, attack = THROUGH_FUNCTIONAL[name]
    make_workspace(name, tmp_path, with_solutions=True)
    path = tmp_path / filename
    path.write_text(path.read_text() + "\n\n# the attack\n" + attack)
    result = grade(tmp_path, seed=SEED, timeout=TIMEOUT, parts=[part])[1][0]
    assert result.score == 0, result.output
    assert "is not available while your" in result.output, result.output
