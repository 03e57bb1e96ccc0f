"""The student copy: what `minires assignment release` writes, and a student's whole round trip.

test_student_round_trip is the issue's done-when test: a course that assigns conv is released,
installed with `pip install -e .` into a fresh virtual environment, completed with a solution
written here (not minires' own: sliding windows, np.add.at and einsum), and then gradcheck,
tutorial 01 and the public checks pass in that environment, the Gradescope dry run gives full
marks, the untouched copy gives 0 with the TODO named, and no reference body is in the copy.
"""
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minires.assignments import all_assignments, get, grade
from minires.assignments.leaks import find_leaks, text_tokens, best_match, reference_bodies
from minires.assignments.public_checks import run_checks
from minires.assignments.release import RELEASE_MARK, course, gradescope_bundle, release, unpack
from minires.assignments.submit import submit
from minires.assignments.workspace import doc_for, make_workspace
from minires.cli import main

pytestmark = [pytest.mark.grading, pytest.mark.cpu_only]  # grading runs on the CPU
ROOT = Path(__file__).resolve().parents[1]
SEED = 20240501


def run_in_copy(copy, code, **kwargs):
    """`python -c code` on the copy's minires (PYTHONPATH), from outside the copy."""
    env = dict(os.environ, PYTHONPATH=str(copy), MINIRES_DEVICE="cpu")
    return subprocess.run([sys.executable, "-c", code], cwd=copy.parent, env=env,
                          capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def conv_copy(tmp_path_factory):
    """A release for a course that has assigned conv only."""
    out = tmp_path_factory.mktemp("release") / "student-minires"
    release(out, assign=["conv"])
    return out


def test_the_copys_list_says_which_assignments_are_the_students(conv_copy):
    done = run_in_copy(conv_copy, "from minires.cli import main; main(['assignment', 'list'])")
    lines = [line for line in done.stdout.splitlines() if line[:1].isdigit()]
    assert len(lines) == 4, done.stdout + done.stderr
    assert [line.endswith("[yours to write]") for line in lines] == [False, True, False, False]
    assert all(line.endswith("]") for line in lines)


def test_only_the_assigned_parts_are_blank(conv_copy):
    package = conv_copy / "minires"
    conv = (package / "ops/conv.py").read_text()
    assert conv.count('raise NotImplementedError("TODO:') == 4
    for unassigned in ("autograd.py", "ops/norm.py", "ops/activation.py", "assignments/block.py"):
        assert "TODO:" not in (package / unassigned).read_text()
    assert [p.name for p in (package / "fast").iterdir()] == ["__init__.py"]  # it raises
    assert (package / RELEASE_MARK).exists()
    done = run_in_copy(conv_copy, """
import numpy as np, minires
from minires import functional as F
x = minires.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
assert minires.gradcheck(lambda t: F.sigmoid(F.relu(t)), x)   # the engine and relu work
g = minires.tensor(np.ones(3)); b = minires.tensor(np.zeros(3))
print(F.batch_norm(minires.tensor(np.ones((2, 3))) * 2, g, b).shape)
F.conv2d(minires.tensor(np.ones((1, 1, 3, 3))), minires.tensor(np.ones((1, 1, 2, 2))))
""")
    assert "(2, 3)" in done.stdout and "NotImplementedError: TODO: Conv2d.forward" in done.stderr


def test_the_copy_ships_no_test_of_this_repository_and_no_reference(conv_copy):
    shipped = {p.relative_to(conv_copy).as_posix() for p in conv_copy.rglob("*") if p.is_file()}
    assert [p for p in shipped if p.startswith("tests/")] == ["tests/test_my_minires.py"]
    assert {"pyproject.toml", "README.md", "course.json", "assignments/conv.md"} <= shipped
    assert find_leaks(conv_copy, ["conv"]) == []


@pytest.mark.slow
def test_every_assignment_blank_leaks_nothing(tmp_path):
    release(tmp_path, assign=list(all_assignments()))
    assert find_leaks(tmp_path) == []


COL2IM_WITH_EQUALS = """
def col2im(cols, x_shape, stride, padding):
    xp = backend.xp(cols)
    n, c, kh, kw, oh, ow = cols.shape
    (sy, sx), (py, px) = stride, padding
    h, w = x_shape[2], x_shape[3]
    out = xp.zeros((n, c, h + 2 * py, w + 2 * px), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx] = cols[:, :, i, j]
    return out[:, :, py:py + h, px:px + w]
"""


def test_the_leak_detector_finds_near_copies(tmp_path):
    """The issue's leak: the col2im with `=` for `+=` that scored 2/2 once pasted back; also in a
    Markdown code block, and with a name changed. Code that computes the same another way
    passes."""
    (tmp_path / "test_x.py").write_text("import pytest\n" + COL2IM_WITH_EQUALS)
    (tmp_path / "notes.md").write_text("Don't do this:\n\n```python\n" +
                                       COL2IM_WITH_EQUALS.replace("out", "acc") + "```\n")
    (tmp_path / "honest.py").write_text(HONEST_CONV_TEXT)
    found = {(f, where) for f, where, _ in find_leaks(tmp_path, ["conv"])}
    assert found == {("test_x.py", "conv.py: col2im"), ("notes.md", "conv.py: col2im")}


def test_release_refuses_to_ship_a_leak(tmp_path, monkeypatch):
    from minires.assignments import handout

    monkeypatch.setattr(handout, "PUBLIC_TEST", "import numpy as np\n" + COL2IM_WITH_EQUALS)
    with pytest.raises(RuntimeError, match=r"tests/test_my_minires.py \(conv.py: col2im"):
        release(tmp_path, assign=["conv"])


def test_leak_windows_compare_tokens_not_text():
    body = dict(reference_bodies(["residual"]))["activation.py: ReLU.backward"]
    assert body == text_tokens("return backend.xp(gy).where(self.mask, gy, 0)")
    respaced = text_tokens("x = 1\n#   return backend.xp( gy ).where(self.mask,gy,0)  # hmm\n")
    assert best_match(body, respaced)[0] == 1.0


def test_course_file_and_flags(tmp_path):
    assert course()["blank"] == ["conv", "batchnorm", "residual"]  # engine works by default
    plan = tmp_path / "course.json"
    plan.write_text(json.dumps({"assign": ["engine", "conv", "batchnorm"],
                                "solutions": ["engine"], "hints": "full"}))
    assert course(course_file=plan) == {"blank": ["conv", "batchnorm"], "solutions": ["engine"],
                                        "hints": "full"}
    assert course(["conv"], course_file=plan)["blank"] == ["conv"]  # flags win
    assert course(hints="shapes", course_file=plan)["hints"] == "shapes"
    with pytest.raises(SystemExit, match="no assignment 'convv'"):
        course(["convv"])
    plan.write_text(json.dumps({"assigned": ["conv"]}))
    with pytest.raises(SystemExit, match="unknown keys"):
        course(course_file=plan)
    for text, message in (('{"assign": ["conv"]', "is not valid JSON"),
                          ('["conv"]', "must hold a JSON object")):
        plan.write_text(text)
        with pytest.raises(SystemExit, match=message):
            course(course_file=plan)
    with pytest.raises(SystemExit, match="cannot read the course file .*missing.json"):
        course(course_file=tmp_path / "missing.json")


def test_hints_choose_how_much_math(tmp_path):
    doc = get("conv").targets[4].doc  # Conv2d.backward
    none, shapes, full = (doc_for(doc, h) for h in ("none", "shapes", "full"))
    assert "Shapes:" not in none and "Math:" not in none and "(OC, C, kh, kw)" in none
    assert "Shapes:" in shapes and "Math:" not in shapes
    assert "gy[n] @ cols[n]^T" in full and "gy[n] @ cols[n]^T" not in shapes
    make_workspace("residual", tmp_path / "none", hints="none")
    make_workspace("residual", tmp_path / "full", hints="full")
    relu = (tmp_path / "full" / "activation.py").read_text()
    assert "dx = gy where x > 0, and 0 where x <= 0" in relu
    assert "dx = gy * [x > 0]" not in relu and "even where gy is inf or -inf" in relu
    assert "Math:" not in (tmp_path / "none" / "block.py").read_text()


def test_tutorial_headers_stay_intact(conv_copy):
    jupytext = pytest.importorskip("jupytext")
    first = (conv_copy / "tutorials/01_vanishing_gradients_in_a_chain.py").read_text()
    assert first == (ROOT / "tutorials/01_vanishing_gradients_in_a_chain.py").read_text()
    path = conv_copy / "tutorials/02_the_residual_add_backward.py"
    notebook = jupytext.read(path)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert "runs your code for conv (minires/ops/conv.py)" in notebook.cells[0].source


def test_submit_gathers_the_files_the_grader_reads(tmp_path):
    written, warnings = submit("residual", tmp_path / "hand-in")
    assert sorted(p.name for p in written) == ["activation.py", "assignment.json", "block.py",
                                                "hand-in.zip", "residual.py"]
    text = (tmp_path / "hand-in" / "residual.py").read_text()
    assert "from minires.autograd import Function" in text and "from .." not in text
    with zipfile.ZipFile(tmp_path / "hand-in.zip") as bundle:
        assert sorted(bundle.namelist()) == ["activation.py", "block.py", "residual.py"]
    assert warnings == []
    _, results = grade(tmp_path / "hand-in", "residual", seed=SEED, parts=["relu_backward"])
    assert results[0].score == results[0].max_score


def test_check_command_exit_codes(tmp_path, capsys):
    assert main(["assignment", "check", "conv"]) == 0  # minires' own code passes
    assert "8 / 8 checks pass" in capsys.readouterr().out
    make_workspace("batchnorm", tmp_path)
    assert main(["assignment", "check", "batchnorm", "--workspace", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "0 / 5 checks pass" in out and "NotImplementedError: TODO: BatchNorm.forward" in out


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf * 0, the bug itself
def test_public_checks_catch_planted_bugs(tmp_path):
    """A col2im that writes `=` (the issue's bug) fails the adjoint check; a ReLU backward that
    multiplies by the mask fails the infinities; without a variance term batch norm fails
    gradcheck."""
    for name, file, bug, failing in (
            ("conv", "conv.py", COL2IM_WITH_EQUALS.replace("backend.xp(cols)", "np"),
             "col2im: the adjoint of your im2col"),
            ("residual", "activation.py", "ReLU.backward = lambda self, gy: gy * self.mask\n",
             "ReLU: known values"),
            ("batchnorm", "norm.py", "BatchNorm.backward = lambda self, gy: (gy * self.gamma "
             "* self.inv_std, (gy * self.xhat).sum(0), gy.sum(0))\n",
             "training backward: gradcheck")):
        workspace = tmp_path / name
        make_workspace(name, workspace, with_solutions=True)
        path = workspace / file
        path.write_text(path.read_text() + "\nimport numpy as np\n" + bug)
        results = {check: passed for check, passed, _ in run_checks(name, workspace)}
        assert [c for c, ok in results.items() if not ok and c.startswith(failing)], results


# --- the done-when test ---------------------------------------------------------------------------

HONEST_CONV = {  # a solution written for this test: not minires' own
    "im2col": """\
(kh, kw), (sy, sx), (py, px) = kernel, stride, padding
padded = np.pad(x, ((0, 0), (0, 0), (py, py), (px, px)), constant_values=pad_value)
views = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
rows, columns = (x.shape[2] + 2 * py - kh) // sy + 1, (x.shape[3] + 2 * px - kw) // sx + 1
picked = views[:, :, ::sy, ::sx][:, :, :rows, :columns]
return np.ascontiguousarray(picked.transpose(0, 1, 4, 5, 2, 3))""",
    "col2im": """\
n, c, kh, kw, oh, ow = cols.shape
(sy, sx), (py, px) = stride, padding
height, width = x_shape[2] + 2 * py, x_shape[3] + 2 * px
down = sy * np.arange(oh)[None, :] + np.arange(kh)[:, None]
across = sx * np.arange(ow)[None, :] + np.arange(kw)[:, None]
where = down[:, None, :, None] * width + across[None, :, None, :]
total = np.zeros((height * width, n, c), dtype=cols.dtype)
np.add.at(total, where.ravel(), cols.reshape(n, c, -1).transpose(2, 0, 1))
grid = total.transpose(1, 2, 0).reshape(n, c, height, width)
return grid[:, :, py:height - py, px:width - px]""",
    "Conv2d.forward": """\
patches = im2col(x, self.kernel, self.stride, self.padding)
self.remembered = (x.shape, patches, w)
out = np.einsum("ocij,ncijyx->noyx", w, patches)
return out if b is None else out + b[None, :, None, None]""",
    "Conv2d.backward": """\
x_shape, patches, w = self.remembered
dw = np.einsum("noyx,ncijyx->ocij", gy, patches)
dx = col2im(np.einsum("ocij,noyx->ncijyx", w, gy), x_shape, self.stride, self.padding)
return (dx, dw, gy.sum(axis=(0, 2, 3))) if self.has_bias else (dx, dw)""",
}
HONEST_CONV_TEXT = "\n".join(HONEST_CONV.values())


def complete(path, bodies):
    """Replace each TODO stub in `path` by its body from `bodies`, indented to match."""
    text = path.read_text().replace("from .. import backend\n",
                                    "from .. import backend\nimport numpy as np\n", 1)
    for qualname, body in bodies.items():
        stub = re.search(rf'( *)raise NotImplementedError\("TODO: {re.escape(qualname)};.*\n',
                         text)
        indented = "".join(f"{stub[1]}{line}\n" for line in body.splitlines())
        text = text[:stub.start()] + indented + text[stub.end():]
    path.write_text(text)


def dry_run(tmp_path, submission, name):
    """Gradescope's layout (source/, submission/, results/), graded by the bundle's own
    run_autograder; returns results.json."""
    root = tmp_path / f"autograder-{submission.name}"
    gradescope_bundle(name, tmp_path / "autograder.zip")
    unpack(tmp_path / "autograder.zip", root / "source")
    (root / "run_autograder").write_bytes((root / "source" / "run_autograder").read_bytes())
    os.chmod(root / "run_autograder", 0o755)
    (root / "submission").mkdir()
    for path in submission.glob("*.py"):  # a student uploads the .py files only
        (root / "submission" / path.name).write_bytes(path.read_bytes())
    env = dict(os.environ, MINIRES_AUTOGRADER_ROOT=str(root), MINIRES_PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    subprocess.run([str(root / "run_autograder")], cwd=root, env=env, check=True,
                   capture_output=True, timeout=300)
    return json.loads((root / "results" / "results.json").read_text())


GRADCHECK_CONV = """
import numpy as np, minires
from minires import functional as F
rng = np.random.default_rng(0)
x = minires.tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)
w = minires.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
b = minires.tensor(rng.standard_normal(4), requires_grad=True)
print(minires.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), x, w, b))
print(F.conv2d.__module__, minires.__file__)
"""


@pytest.mark.slow
@pytest.mark.assignment_conv
def test_student_round_trip(tmp_path):
    """Release (conv assigned) -> pip install -e . in a fresh venv -> an honest conv -> gradcheck,
    tutorial 01, public checks -> Gradescope dry run 10/10; untouched copy 0/10; no leak.

    The venv sees the system's numpy, pip and setuptools (--system-site-packages --without-pip:
    a venv's own bundled setuptools may be too old to build an editable wheel), and pip installs
    with --no-deps --no-build-isolation --no-index: nothing is downloaded, so the test runs
    offline."""
    copy, venv = tmp_path / "student-minires", tmp_path / "venv"
    assert main(["assignment", "release", "--out", str(copy), "--assign", "conv"]) == 0
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, capture_output=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-e", str(copy)], check=True, capture_output=True,
                   timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MINIRES_DEVICE="cpu", MINIRES_QUICK="1", MINIRES_FIGURES=str(tmp_path / "figures"))

    def student(*args, check=True):
        done = subprocess.run([str(venv / "bin" / "minires"), "assignment", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert not check or done.returncode == 0, done.stdout + done.stderr
        return done

    untouched = student("check", "conv", check=False)
    assert untouched.returncode == 1 and "0 / 8 checks pass" in untouched.stdout
    student("submit", "conv", "--out", str(tmp_path / "untouched"))
    untouched_results = dry_run(tmp_path, tmp_path / "untouched", "conv")
    assert untouched_results["score"] == 0
    assert all("NotImplementedError: TODO" in t["output"] and "conv.py, line" in t["output"]
               for t in untouched_results["tests"]), untouched_results

    complete(copy / "minires" / "ops" / "conv.py", HONEST_CONV)
    checked = subprocess.run([python, "-c", GRADCHECK_CONV], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count(": ok;") == 3 and "MISMATCH" not in checked.stdout
    assert str(copy / "minires" / "__init__.py") in checked.stdout  # the installed copy ran
    first_tutorial = copy / "tutorials" / "01_vanishing_gradients_in_a_chain.py"
    tutorial = subprocess.run([python, str(first_tutorial)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    assert tutorial.returncode == 0, tutorial.stderr
    assert "8 / 8 checks pass" in student("check", "conv").stdout
    tests = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0 and "1 passed" in tests.stdout, tests.stdout
    submitted = student("submit", "conv", "--out", str(tmp_path / "hw1"))
    assert "warning" not in submitted.stdout
    results = dry_run(tmp_path, tmp_path / "hw1", "conv")
    assert results["score"] == 10 and results["extra_data"]["finished"], results
    assert find_leaks(copy, ["conv"]) == []
