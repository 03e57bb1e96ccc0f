"""Hostile hand-ins against `minires assignment grade` (issues 15 and 22): each scores what the
work deserves, damages nothing else, leaks no reference text, and the grader finishes in its time.

The screen (guard.py) only advises now, so every attack here runs for real inside the sandbox:
what holds it is that the sandbox has no answer to find (the stripped minires, the jail), runs
apart (own namespaces and uid), and that the grader reads what it leaves as a careful stranger.
Most attacks are planted in a conv workspace and graded on a part or two, to stay fast.
"""
import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minires import functional as F
from minires.assignments import get, grade, grader, isolation, sandbox, stripped
from minires.assignments.checks import Failure, expect_close
from minires.assignments.workspace import PACKAGE_DIR, make_workspace
from minires.cli import main

pytestmark = [pytest.mark.grading, pytest.mark.cpu_only]  # grading runs on the CPU
SEED, TIMEOUT = 7, 60.0
PARTS = ["im2col", "col2im"]
ROOT = Path(__file__).resolve().parents[1]
JAILED = bool(isolation.namespace_prefix())
needs_jail = pytest.mark.skipif(not JAILED, reason="needs namespaces (unshare) for the jail")


def attacked(directory, attack, name="conv", file="conv.py", solutions=True):
    """A workspace (the reference's, or the untouched stubs) with `attack` appended to `file`."""
    make_workspace(name, directory, with_solutions=solutions)
    path = Path(directory) / file
    path.write_text(path.read_text() + "\n\n# the attack\n" + textwrap.dedent(attack))
    return Path(directory)


def graded(directory, name="conv", parts=PARTS, timeout=TIMEOUT):
    return {r.name: r for r in grade(directory, name, seed=SEED, timeout=timeout,
                                     parts=parts)[1]}


def assert_im2col_zero_col2im_full(results, message):
    assert results["im2col"].score == 0, results["im2col"].output
    assert message in results["im2col"].output, results["im2col"].output
    assert results["col2im"].score == results["col2im"].max_score, results["col2im"].output


def sandbox_processes():
    """Processes of the grader's own sandbox uids (other programs' `nobody` does not count)."""
    return [pid for uid in isolation.SANDBOX_UIDS for pid in isolation.processes_of(uid)] \
        if isolation.switches_user() else []


def solution_lines(relative):
    """The non-trivial lines found only between the solution markers of one of minires' files."""
    text = (PACKAGE_DIR / relative).read_text()
    chunks = [chunk.split("# END SOLUTION") for chunk in text.split("# BEGIN SOLUTION")[1:]]
    elsewhere = text.split("# BEGIN SOLUTION")[0] + "".join(c[-1] for c in chunks)
    return [line.strip() for chunk in chunks for line in chunk[0].splitlines()
            if len(line.strip()) > 25 and line.strip() not in elsewhere]


# --- 1. nothing to find --------------------------------------------------------------------------

REACH_THE_REFERENCE = f"""
import dataclasses, operator
_importlib = dataclasses.inspect.importlib
_sys = operator.attrgetter("os.sys")(_importlib.import_module("minires").backend)
_PATHS = [{str(PACKAGE_DIR / "ops" / "conv.py")!r}, "/work/main/minires/ops/conv.py",
          _sys.modules["minires"].__file__.replace("__init__.py", "ops/conv.py")]
_LOAD = bytes.fromhex({'''
def _fresh(path, name):
    spec = _importlib.util.spec_from_file_location(name, path)
    module = _importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
'''.encode().hex()!r}).decode()
dataclasses.builtins.exec(_LOAD)


def _answer(name, *args):
    found = []
    for index, path in enumerate(_PATHS):
        try:
            return getattr(_fresh(path, "minires.ops.fresh_conv_%d" % index), name)(*args)
        except Exception as error:
            found.append(repr(error)[:60])
    raise RuntimeError("no answer: " + "; ".join(found))


def im2col(x, kernel, stride, padding, pad_value=0.0):
    return _answer("im2col", x, kernel, stride, padding, pad_value)


def col2im(cols, x_shape, stride, padding):
    return _answer("col2im", cols, x_shape, stride, padding)
"""


def test_an_untouched_workspace_finds_no_answer_to_load(tmp_path):
    """Reaching importlib through allowed modules, exec of a hex payload, loading conv.py again
    under a new name from the complete package and from the sandbox's own: nothing answers."""
    results = graded(attacked(tmp_path, REACH_THE_REFERENCE, solutions=False))
    for r in results.values():
        assert r.score == 0, r.output
        assert "no answer" in r.output and "TODO" in r.output, r.output


@needs_jail
def test_the_sandbox_cannot_read_the_complete_package_nor_the_graders_files(tmp_path):
    attack = f"""
    import numpy as _np

    def im2col(x, kernel, stride, padding, pad_value=0.0):
        texts = []
        for path in ({str(PACKAGE_DIR / "ops" / "norm.py")!r},
                     {str(PACKAGE_DIR / "assignments" / "block.py")!r},
                     {str(ROOT / ".git" / "HEAD")!r}, "/etc/passwd"):
            try:
                texts.append(_np.fromfile(path, dtype=_np.uint8).tobytes().decode())
            except Exception as error:
                texts.append(type(error).__name__)
        raise ValueError("\\n".join(texts))
    """
    json_path = tmp_path / "results.json"
    main(["assignment", "grade", str(attacked(tmp_path / "hw", attack)), "--assignment", "conv",
          "--part", "im2col", "--seed", str(SEED), "--json", str(json_path)])
    feedback = json_path.read_text()
    assert "FileNotFoundError" in feedback
    for line in solution_lines("ops/norm.py") + solution_lines("assignments/block.py"):
        assert json.dumps(line)[1:-1] not in feedback, line


def test_a_hand_in_that_links_to_the_answer_is_refused(tmp_path):
    """The grader reads the hand-in itself (as root, on Gradescope): never through a link."""
    make_workspace("conv", tmp_path)
    (tmp_path / "conv.py").unlink()
    (tmp_path / "conv.py").symlink_to(PACKAGE_DIR / "ops" / "conv.py")
    for r in graded(tmp_path).values():
        assert r.score == 0 and "refused: conv.py cannot be opened as a plain file" in r.output


def test_the_fast_ops_are_not_there(tmp_path):
    attack = """
    from minires.fast import conv as _fast

    Conv2d.backward = _fast.FastConv2d.backward
    """
    results = graded(attacked(tmp_path, attack), parts=["conv2d_backward"])
    assert results["conv2d_backward"].score == 0
    assert "No module named 'minires.fast'" in results["conv2d_backward"].output


def test_col2im_cannot_borrow_the_reference_im2col_as_its_adjoint(tmp_path):
    attack = """
    import numpy as _np
    import minires.ops.conv as _reference

    def col2im(cols, x_shape, stride, padding):
        kh, kw = cols.shape[2:4]
        return _reference.im2col(_np.zeros(x_shape), (kh, kw), stride, padding)  # any use
    """
    results = graded(attacked(tmp_path, attack, solutions=False), parts=["col2im"])
    assert results["col2im"].score == 0 and "TODO: im2col" in results["col2im"].output


def test_the_screen_advises_but_never_refuses(tmp_path):
    attack = """
    from minires.ops import conv as _reference
    """
    results = graded(attacked(tmp_path, attack))
    for r in results.values():
        assert r.score == r.max_score, r.output
        assert "advice only" in r.output and "imports conv from minires.ops" in r.output


# --- 2. each target on its own ------------------------------------------------------------------

def test_the_order_check_counts_the_real_functions_not_tags(tmp_path):
    attack = """
    class _Tagged:
        def __init__(self, tag):
            self.tag = tag

    def _topological_functions(root):
        return [_Tagged(tag) for tag in range(8, -1, -1)]
    """
    results = graded(attacked(tmp_path, attack, "engine", "autograd.py"), "engine",
                     ["topological_order"])
    assert results["topological_order"].score == 0
    assert "exactly once" in results["topological_order"].output


def test_accumulating_in_place_into_a_leafs_grad_loses_the_part(tmp_path):
    attack = """
    def _accumulate_leaf(leaf, grad):
        if leaf.grad is None:
            leaf.grad = Tensor(grad.copy())
        else:
            leaf.grad.data += grad
    """
    results = graded(attacked(tmp_path, attack, "engine", "autograd.py"), "engine",
                     ["gradient_accumulation"])
    r = results["gradient_accumulation"]
    assert r.score == 0 and "must not add into it in place" in r.output, r.output


def test_the_basic_block_runs_the_students_relu_and_add_classes(tmp_path):
    """Module-level relu and residual_add written with other ops earn nothing: the block calls the
    student's ReLU and ResidualAdd (untouched stubs here)."""
    make_workspace("residual", tmp_path)
    for file, code in (("activation.py", "def relu(x):\n    return x * (x > 0)\n"),
                       ("residual.py", "def residual_add(a, b):\n    return a + b\n")):
        path = tmp_path / file
        path.write_text(path.read_text() + "\n\n" + code)
    r = graded(tmp_path, "residual", ["basic_block_backward"])["basic_block_backward"]
    assert r.score == 0 and "TODO: ReLU.forward" in r.output, r.output


def test_the_teacher_names_the_assignment_never_the_hand_in(tmp_path, capsys):
    make_workspace("conv", tmp_path, with_solutions=True)
    (tmp_path / "assignment.json").write_text(json.dumps({"assignment": "engine"}))
    with pytest.raises(SystemExit, match="never chooses it .this one's says engine.$"):
        main(["assignment", "grade", str(tmp_path)])
    with pytest.raises(SystemExit, match="name the assignment"):
        grade(tmp_path, None)
    capsys.readouterr()
    assert main(["assignment", "grade", str(tmp_path), "--assignment", "conv", "--part",
                 "col2im"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"isolation: {isolation.isolation_summary()}\n")  # said first
    assert "assignment 1: conv" in out


def test_python_m_minires_imports_nothing_from_the_hand_in(tmp_path):
    hand_in = tmp_path / "hand-in"
    make_workspace("conv", hand_in, with_solutions=True)
    marker = tmp_path / "the grader imported the hand-in"
    for module in ("textwrap", "secrets", "zipfile", "shutil", "tempfile"):
        (hand_in / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                              "raise ImportError('hijacked')\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "minires", "assignment", "grade", ".",
                           "--assignment", "conv", "--part", "col2im"], cwd=hand_in, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists()


# --- 3. a backward by hand -----------------------------------------------------------------------

BY_FINITE_DIFFERENCES = """
import numpy as np

_forward = Conv2d.forward  # an alias taken at import: still counted


def _numerical_backward(self, gy):
    x, w = self._x, self._w
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for array, grad in ((x, dx), (w, dw)):
        flat, out = array.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + 1e-6
            up = _forward(self, x, w, self._b)
            flat[i] = keep - 1e-6
            down = _forward(self, x, w, self._b)
            flat[i] = keep
            out[i] = np.sum((up - down) * gy) / 2e-6
    grads = (dx, dw) + ((gy.sum(axis=(0, 2, 3)),) if self.has_bias else ())
    return grads


def _saving_forward(self, x, w, b=None):
    self._x, self._w, self._b = x, w, b
    return _forward(self, x, w, b)


Conv2d.backward = _numerical_backward
Conv2d.forward = _saving_forward
"""

THROUGH_AUTOGRAD = """
import minires as _minires


def _autograd_backward(self, gy):
    x = _minires.tensor(self._x, requires_grad=True)
    y = _minires.functional.relu(x)
    y.backward(_minires.tensor(gy))
    return x.grad.data


_relu_forward = ReLU.forward


def _saving_forward(self, x):
    self._x = x
    return _relu_forward(self, x)


ReLU.forward = _saving_forward
ReLU.backward = _autograd_backward
"""


def test_a_backward_by_finite_differences_scores_zero(tmp_path):
    r = graded(attacked(tmp_path, BY_FINITE_DIFFERENCES), parts=["conv2d_backward"])
    r = r["conv2d_backward"]
    assert r.score == 0 and "your forward" in r.output and "by hand" in r.output, r.output


def test_a_backward_through_autograd_scores_zero(tmp_path):
    r = graded(attacked(tmp_path, THROUGH_AUTOGRAD, "residual", "activation.py"), "residual",
               ["relu_backward"])["relu_backward"]
    assert r.score == 0 and "minires.functional.relu" in r.output, r.output


# --- 4. the grader reads what the sandbox leaves as a careful stranger ---------------------------

def leaving(code):
    """An im2col whose process leaves `code`'s work behind and exits (no result of its own)."""
    return f"""
import os


def im2col(x, kernel, stride, padding, pad_value=0.0):
{textwrap.indent(textwrap.dedent(code), "    ")}
    os._exit(0)
"""


def test_a_link_in_the_output_is_never_followed(tmp_path):
    secret_folder = Path(tempfile.mkdtemp())  # root's only, 0700
    secret = secret_folder / "secret.txt"
    secret.write_text("THE TEACHER'S SECRET")
    secret.chmod(0o600)
    try:
        attack = leaving(f"""
        for name in ("case0.txt", "case1.txt", "error.txt", "case2.npz"):
            os.symlink({str(secret)!r}, name)
        """)
        results = graded(attacked(tmp_path, attack))
        assert "SECRET" not in results["im2col"].output
        assert "cannot be opened as a plain file" in results["im2col"].output
        assert results["col2im"].score == 2
    finally:
        secret.unlink()
        secret_folder.rmdir()


def test_a_fifo_in_the_output_does_not_hang_the_grader(tmp_path):
    attack = leaving("""
    for name in ("case0.txt", "case1.npz", "error.txt"):
        os.mkfifo(name)
    """)
    workspace = attacked(tmp_path, attack)
    done = subprocess.run([sys.executable, "-m", "minires", "assignment", "grade",
                           str(workspace), "--assignment", "conv", "--part", "im2col"],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=120)
    assert "not a regular file" in done.stdout, done.stdout + done.stderr


def test_an_npz_of_many_members_is_refused_before_it_is_parsed(tmp_path):
    attack = leaving("""
    import zipfile
    with zipfile.ZipFile("case0.npz", "w") as many:
        for i in range(100000):
            many.writestr("m%d.npy" % i, b"")
    """)
    results = graded(attacked(tmp_path, attack))
    assert_im2col_zero_col2im_full(results, "arrays; the grader reads at most 64")


def test_terminal_escapes_never_reach_the_teachers_screen(tmp_path, capsys):
    attack = """
    def im2col(x, kernel, stride, padding, pad_value=0.0):
        raise ValueError("\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07total  10 / 10\\u202e")
    """
    json_path = tmp_path / "results.json"
    main(["assignment", "grade", str(attacked(tmp_path / "hw", attack)), "--assignment", "conv",
          "--part", "im2col", "--seed", str(SEED), "--json", str(json_path)])
    out = capsys.readouterr().out
    for text in (out, json.loads(json_path.read_text())["tests"][0]["output"]):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        assert "[2J[H]0;pwned" not in text  # sequences go whole, not their tails


@needs_jail
def test_the_sandbox_has_no_network(tmp_path):
    """A server of the grader's machine on its loopback: the sandbox cannot reach it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    attack = f"""
    import socket

    def im2col(x, kernel, stride, padding, pad_value=0.0):
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"answers?")
            raise ValueError("CONNECTED")
        except OSError as error:
            raise ValueError("network: " + error.strerror)
    """
    try:
        r = graded(attacked(tmp_path, attack), parts=["im2col"])["im2col"]
        assert "network: Network is unreachable" in r.output and "CONNECTED" not in r.output
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_files_written_outside_the_sandbox_folder_do_not_stay(tmp_path):
    marker = f"minires-escape-{os.getpid()}"
    attack = leaving(f"""
    for folder in ("/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~")):
        try:
            with open(os.path.join(folder, {marker!r}), "wb") as out:
                out.write(bytes(1 << 20))
        except OSError:
            pass
    """)
    graded(attacked(tmp_path, attack), parts=["im2col"])
    for folder in ("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir()):
        assert not (Path(folder) / marker).exists(), folder


def test_results_are_written_through_a_random_temporary_name(tmp_path):
    target = tmp_path / "results.json"
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / f".results.json.{os.getpid()}.tmp").symlink_to(victim)  # the old fixed name
    grader.write_results(target, {"score": 1})
    assert victim.read_text() == "untouched" and json.loads(target.read_text()) == {"score": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


# --- 5. every sandbox apart ---------------------------------------------------------------------

HOSTILE = """
import os, signal


def im2col(x, kernel, stride, padding, pad_value=0.0):
    seen = []
    for entry in os.listdir("/proc"):  # signal and chmod whatever can be reached
        if entry.isdigit() and int(entry) != os.getpid():
            seen.append(entry)
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    for top, folders, files in os.walk("/tmp"):
        for name in folders + files:
            if os.path.join(top, name).startswith(os.getcwd()):
                continue  # its own output: what it says is the test's evidence
            try:
                os.chmod(os.path.join(top, name), 0o500)
            except OSError:
                pass
        for name in files:
            if name.endswith(".npz"):
                try:
                    os.unlink(os.path.join(top, name))
                except OSError:
                    pass
    raise ValueError("saw processes %s" % seen)
"""


@pytest.mark.slow
def test_three_students_graded_at_once_one_hostile(tmp_path):
    """Three `minires assignment grade` processes at once: the hostile one kills, chmods and
    deletes whatever it can reach; the honest two keep full marks, the empty one 0."""
    students = {"honest": tmp_path / "honest", "empty": tmp_path / "empty",
                "hostile": attacked(tmp_path / "hostile", HOSTILE)}
    make_workspace("conv", students["honest"], with_solutions=True)
    make_workspace("conv", students["empty"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    running = {name: subprocess.Popen(
        [sys.executable, "-m", "minires", "assignment", "grade", str(path), "--assignment",
         "conv", "--part", "im2col", "--part", "col2im", "--json", str(tmp_path / f"{name}.json")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, path in students.items()}
    outputs = {name: process.communicate(timeout=300)[0] for name, process in running.items()}
    scores = {name: {t["name"]: t["score"] for t in
                     json.loads((tmp_path / f"{name}.json").read_text())["tests"]}
              for name in students}
    assert scores == {"honest": {"im2col": 2, "col2im": 2}, "empty": {"im2col": 0, "col2im": 0},
                      "hostile": {"im2col": 0, "col2im": 2}}, outputs
    if JAILED:
        assert "saw processes []" in outputs["hostile"], outputs["hostile"]
    assert not sandbox_processes()


# --- 6. what the earlier attacks (issue 15) showed, kept -----------------------------------------

PICKLE_PAYLOAD = """
import os, pickle, numpy

class Payload:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))

def im2col(x, kernel, stride, padding, pad_value=0.0):
    numpy.savez("case0.npz", **{{"output:cols": numpy.array([Payload()], dtype=object)}})
    os._exit(0)
"""


def test_a_pickle_payload_is_never_unpickled(tmp_path):
    marker = tmp_path / "the grader ran student code"
    os.chmod(tmp_path, 0o777)  # even where the child could write the marker, nothing runs it
    results = graded(attacked(tmp_path / "workspace", PICKLE_PAYLOAD.format(marker=marker)))
    assert_im2col_zero_col2im_full(results, "cannot read as plain arrays")
    assert not marker.exists()


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


def test_a_setsid_grandchild_cannot_rewrite_the_results_with_the_subreaper_alone(
        tmp_path, monkeypatch):
    """No namespaces, no uid of its own (the grader as an ordinary user would run it): the
    subreaper still kills the grandchild before it writes."""
    monkeypatch.setattr(isolation, "switches_user", lambda: False)
    monkeypatch.setattr(isolation, "namespace_prefix", lambda: ())
    monkeypatch.setattr(grader, "namespace_prefix", lambda: ())
    with tempfile.TemporaryDirectory() as shared:
        os.chmod(shared, 0o777)
        results_json, pid_file = Path(shared) / "results.json", Path(shared) / "grandchild.pid"
        workspace = attacked(tmp_path, rewriter(results_json, pid_file))
        main(["assignment", "grade", str(workspace), "--assignment", "conv", "--json",
              str(results_json), "--seed", str(SEED), "--part", "im2col", "--part", "col2im"])
        written = results_json.read_text()
        assert json.loads(written)["score"] == 2  # col2im only
        assert "WARNING" in json.loads(written)["extra_data"]["isolation"]
        assert pid_file.exists()  # the grandchild ran
        time.sleep(3)  # it would have rewritten the results by now
        assert results_json.read_text() == written
        assert not isolation.children()


MALFORMED = leaving("""
with open("case0.npz", "wb") as out:
    out.write(b"PK\\x03\\x04 not a zip at all")
""")

ZIP_BOMB = leaving("""
import zipfile
header = (b"\\x93NUMPY\\x01\\x00v\\x00{'descr': '<f8', 'fortran_order': False, "
          b"'shape': (33554432,), }")
header = header + b" " * (127 - len(header)) + b"\\n"
with zipfile.ZipFile("case0.npz", "w", zipfile.ZIP_DEFLATED) as bomb:
    with bomb.open("output:cols.npy", "w", force_zip64=True) as member:
        member.write(header)
        zeros = bytes(1 << 24)
        for _ in range(16):  # 256 MiB of zeros, a few hundred kB on disk
            member.write(zeros)
""")

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


def test_a_malformed_result_costs_its_case_only(tmp_path):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, MALFORMED)),
                                   "not a .npz (zip) file")


def test_a_zip_bomb_is_not_unpacked(tmp_path):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, ZIP_BOMB)), "the grader reads at")


def test_killing_the_parent_is_not_possible(tmp_path):
    results = graded(attacked(tmp_path, KILL_PARENT))  # this test process is the grader
    assert results["im2col"].score == 0 and results["col2im"].score == 2


def test_memory_is_limited(tmp_path):
    assert_im2col_zero_col2im_full(graded(attacked(tmp_path, MEMORY_HOG)), "MemoryError")


@pytest.mark.parametrize("namespaces", ["as configured", "user namespace"])
def test_a_fork_bomb_is_contained(tmp_path, monkeypatch, namespaces):
    """As configured here (own uid: 63 forks, then EAGAIN), and in a user namespace as an
    ordinary user's grader runs it (its limit is the user's process count plus 64; the kernel
    exempts real root from it, so here the timeout and the PID namespace's end contain it)."""
    if namespaces == "user namespace":
        if not JAILED:
            pytest.skip("needs namespaces (unshare)")
        prefix = isolation.namespace_prefix() + ("--user", "--map-root-user")
        monkeypatch.setattr(isolation, "namespace_prefix", lambda: prefix)
        monkeypatch.setattr(grader, "namespace_prefix", lambda: prefix)
        monkeypatch.setattr(isolation, "switches_user", lambda: False)
    results = graded(attacked(tmp_path, FORK_BOMB), timeout=4)
    assert_im2col_zero_col2im_full(results, "FAIL  2x2 kernel")
    assert not isolation.children() and not sandbox_processes()


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
        result = graded(tmp_path, parts=["conv2d_forward"])["conv2d_forward"]
        assert result.score == result.max_score, result.output
    finally:
        release.set()
        holder.join()


def test_grading_many_submissions_leaks_no_processes_or_files(tmp_path, monkeypatch):
    temporary = Path(tempfile.mkdtemp(prefix="minires-test-"))
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    for i in range(6):
        workspace = tmp_path / f"student{i}"
        make_workspace("residual", workspace, with_solutions=i % 2 == 0)
        result = grade(workspace, "residual", seed=i, timeout=TIMEOUT,
                       parts=["relu_forward"])[1][0]
        assert result.score == (1 if i % 2 == 0 else 0), result.output
    assert not list(temporary.glob("minires-grade-*"))
    assert not isolation.children() and not sandbox_processes()
    shutil.rmtree(temporary)


# --- 7. the checks themselves -------------------------------------------------------------------

def test_a_backward_returning_none_for_one_gradient_scores_zero(tmp_path):
    attack = """
    _backward = Conv2d.backward

    def _no_dw(self, gy):
        grads = _backward(self, gy)
        return (grads[0], None) + tuple(grads[2:])

    Conv2d.backward = _no_dw
    """
    r = graded(attacked(tmp_path, attack), parts=["conv2d_backward"])["conv2d_backward"]
    assert r.score == 0 and "dw: your code returned no array for it" in r.output, r.output


def test_expect_close_rejects_a_relative_error_of_1e_5():
    expected = np.linspace(1.0, 2.0, 10)
    expect_close("y", expected * (1 + 1e-8), expected)
    with pytest.raises(Failure, match="first wrong element"):
        expect_close("y", expected * (1 + 1e-5), expected)


HONEST = """
from __future__ import annotations

import numpy as np


def im2col(x: np.ndarray, kernel, stride, padding, pad_value=0.0) -> np.ndarray:
    input = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2),
                   constant_values=pad_value)
    (kh, kw), (sy, sx) = kernel, stride
    oh = (input.shape[2] - kh) // sy + 1
    ow = (input.shape[3] - kw) // sx + 1
    rows = [np.stack([input[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx] for j in range(kw)],
                     axis=2) for i in range(kh)]
    return np.stack(rows, axis=2)


def _einsum_forward(self, x: np.ndarray, w: np.ndarray, b=None) -> np.ndarray:
    cols = im2col(x, self.kernel, self.stride, self.padding)
    n, oh, ow = x.shape[0], cols.shape[4], cols.shape[5]
    self.cols, self.x_shape, self.w = cols.reshape(n, -1, oh * ow), x.shape, w
    y = np.einsum("ncijyx,ocij->noyx", cols, w)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


Conv2d.forward = _einsum_forward
"""


def test_honest_code_scores_full_marks_and_no_advice(tmp_path):
    """np.stack, einsum, loops, a variable named `input`, `from __future__ import annotations` and
    a UTF-8 BOM: full marks, nothing suspicious."""
    make_workspace("conv", tmp_path, with_solutions=True)
    path = tmp_path / "conv.py"
    source = path.read_text()
    start = source.index("def im2col(")
    end = source.index("\ndef ", start + 1)
    honest = source[:start] + source[end:] + textwrap.dedent(HONEST)
    future = "from __future__ import annotations\n"
    honest = future + honest.replace(future, "")  # a __future__ import goes first
    path.write_bytes(b"\xef\xbb\xbf" + honest.encode())
    for r in graded(tmp_path, parts=[*PARTS, "conv2d_forward", "conv2d_backward"]).values():
        assert r.score == r.max_score and "advice" not in r.output, r.output


@pytest.mark.parametrize("allowed", [False, True], ids=["by-hand", "autograd-allowed"])
def test_a_teacher_can_allow_autograd_in_backward(tmp_path, allowed):
    """The child's side, run here: with the assignment's flag set, the same backward through
    autograd is not reported."""
    workspace = attacked(tmp_path / "hw", THROUGH_AUTOGRAD, "residual", "activation.py")
    assignment = dataclasses.replace(get("residual"), autograd_in_backward=allowed)
    part = assignment.part("relu_backward")
    cases = part.cases(np.random.default_rng(0))[:2]
    out = tmp_path / "out"
    out.mkdir()
    sandbox.run(cases, [{}, {}], str(workspace), assignment, part, out)
    assert (out / sandbox.BY_HAND_FILE).exists() is not allowed
    assert (out / sandbox.case_file(0)).exists() and (out / sandbox.case_file(1)).exists()


ESCAPE_THE_JAIL = f"""
import os


def im2col(x, kernel, stride, padding, pad_value=0.0):
    tried = []
    try:  # the classic chroot escape, for a process that keeps CAP_SYS_CHROOT
        os.makedirs("inner", exist_ok=True)
        os.chroot("inner")
        for _ in range(64):
            os.chdir("..")
        os.chroot(".")
        tried.append("chroot escape ran")
    except OSError as error:
        tried.append("chroot: " + error.strerror)
    try:
        with open({str(PACKAGE_DIR / "ops" / "conv.py")!r}) as reference:
            tried.append("READ THE REFERENCE " + reference.read(40))
    except OSError as error:
        tried.append("reference: " + error.strerror)
    try:
        with open({str(PACKAGE_DIR / "assignments" / "grader.py")!r}, "a") as grader:
            tried.append("CHANGED THE GRADER")
    except OSError as error:
        tried.append("grader: " + error.strerror)
    raise ValueError("; ".join(tried))
"""


@needs_jail
@pytest.mark.parametrize("namespaces", ["as root", "user namespace"])
def test_the_jail_cannot_be_left(tmp_path, monkeypatch, namespaces):
    """As root (the child drops to its own uid) and as in a user namespace (what an ordinary
    user's grader gets: the child stays root there, with CAP_SYS_CHROOT), the old root is
    detached (pivot_root), so escaping a chroot finds nothing."""
    if namespaces == "user namespace":
        prefix = isolation.namespace_prefix() + ("--user", "--map-root-user")
        monkeypatch.setattr(isolation, "namespace_prefix", lambda: prefix)
        monkeypatch.setattr(grader, "namespace_prefix", lambda: prefix)
        monkeypatch.setattr(isolation, "switches_user", lambda: False)
    r = graded(attacked(tmp_path, ESCAPE_THE_JAIL), parts=["im2col"])["im2col"]
    assert r.score == 0 and "reference: No such file or directory" in r.output, r.output
    assert "grader: No such file or directory" in r.output
    assert "READ THE REFERENCE" not in r.output and "CHANGED THE GRADER" not in r.output


@needs_jail
def test_a_complete_package_inside_a_readable_folder_is_covered(tmp_path, monkeypatch):
    """A teacher's venv must stay world-readable, and may hold the complete minires: in the
    sandbox's mount namespace that folder is an empty tmpfs, the rest of the venv readable."""
    venv = Path(tempfile.mkdtemp(prefix="minires-test-venv-"))
    try:
        venv.chmod(0o755)
        (venv / "visible.txt").write_text("the venv's other files")
        (venv / "minires").mkdir(mode=0o755)
        (venv / "minires" / "answer.txt").write_text("AN ANSWER")
        for path in (venv / "visible.txt", venv / "minires" / "answer.txt"):
            path.chmod(0o644)
        plan = grader.jail_plan
        monkeypatch.setattr(grader, "jail_plan", lambda readable, writable, hidden: plan(
            [*readable, venv], writable, [*hidden, venv / "minires"]))
        attack = f"""
        def im2col(x, kernel, stride, padding, pad_value=0.0):
            found = []
            for name in ("visible.txt", "minires/answer.txt"):
                try:
                    with open({str(venv)!r} + "/" + name) as file:
                        found.append(file.read())
                except OSError as error:
                    found.append(name + ": " + error.strerror)
            raise ValueError(" | ".join(found))
        """
        r = graded(attacked(tmp_path, attack), parts=["im2col"])["im2col"]
        assert "the venv's other files | minires/answer.txt: No such file" in r.output, r.output
        assert "AN ANSWER" not in r.output
    finally:
        shutil.rmtree(venv)


def test_the_isolation_line_warns_where_the_sandbox_could_read_the_answers(monkeypatch, tmp_path):
    monkeypatch.setattr(isolation, "namespace_prefix", lambda: ())
    monkeypatch.setattr(isolation, "switches_user", lambda: True)
    monkeypatch.setattr(isolation, "PACKAGE", tmp_path)
    tmp_path.chmod(0o700)
    assert "WARNING" not in isolation.isolation_summary()
    tmp_path.chmod(0o755)
    assert all(os.stat(p).st_mode & 0o001 for p in tmp_path.parents) == \
        ("WARNING: no jail" in isolation.isolation_summary())
    monkeypatch.setattr(isolation, "switches_user", lambda: False)
    assert "grade untrusted code in a container" in isolation.isolation_summary()


@pytest.mark.skipif(not isolation.switches_user(), reason="the grader mounts a tmpfs as root")
def test_filling_the_output_folder_fills_only_a_bounded_tmpfs(tmp_path):
    attack = """
    def im2col(x, kernel, stride, padding, pad_value=0.0):
        written, block = 0, bytes(1 << 24)
        try:
            for i in range(64):  # 1 GiB, if nothing stopped it
                with open("filler%d" % i, "wb") as filler:
                    filler.write(block)
                written += len(block)
        except OSError as error:
            raise ValueError("wrote %d MiB: %s" % (written >> 20, error.strerror))
        raise ValueError("wrote 1 GiB")
    """
    r = graded(attacked(tmp_path, attack), parts=["im2col"])["im2col"]
    assert "No space left on device" in r.output, r.output
    mounts = Path("/proc/self/mounts").read_text()
    assert "minires-grade-" not in mounts


def test_the_stripped_build_has_no_solution_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv(stripped.CACHE_ENV, str(tmp_path / "cache"))
    old = tmp_path / "cache" / "an-old-version"
    old.mkdir(parents=True)
    os.utime(old, (0, 0))
    root = stripped.stripped_root()
    assert stripped.stripped_root() == root and not old.exists()
    package = root / "minires"
    assert not (package / "fast").exists()
    for relative in ("ops/conv.py", "ops/norm.py", "ops/activation.py", "ops/residual.py",
                     "autograd.py", "assignments/block.py"):
        text = (package / relative).read_text()
        assert "# BEGIN SOLUTION" not in text and "NotImplementedError(\"TODO:" in text
        for line in solution_lines(relative):
            assert line not in text, (relative, line)
    assert stat.S_IMODE((package / "ops" / "conv.py").stat().st_mode) == 0o644


def test_each_case_scores_its_share_and_results_list_them(tmp_path):
    """An im2col that ignores pad_value fails one case of five: 4/5 of the part's 2 points."""
    attack = """
    _im2col = im2col

    def im2col(x, kernel, stride, padding, pad_value=0.0):
        return _im2col(x, kernel, stride, padding)
    """
    json_path = tmp_path / "results.json"
    assert main(["assignment", "grade", str(attacked(tmp_path / "hw", attack)), "--assignment",
                 "conv", "--part", "im2col", "--seed", str(SEED), "--json", str(json_path)]) == 1
    results = json.loads(json_path.read_text())
    assert results["score"] == 1.6 and results["tests"][0]["score"] == 1.6
    cases = results["extra_data"]["cases"]["im2col"]
    assert [(c["passed"], c["score"], c["max_score"]) for c in cases] == \
        [(True, 0.4, 0.4)] * 4 + [(False, 0, 0.4)]
    assert "4 of 5 cases pass: 1.6 / 2 points" in results["tests"][0]["output"]
