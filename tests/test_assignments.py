"""Tests for minires.assignments: the student workspaces, the grader and `minires assignment`.

One marker per assignment, so a teacher can run one: `pytest -m assignment_conv` (also
assignment_engine, assignment_batchnorm, assignment_residual). The attacks on the grader are in
test_grading_attacks.py, the Gradescope bundle and the student release in
test_grading_gradescope.py. For each assignment: the untouched workspace scores 0,
the reference (a `--with-solutions` workspace) scores full marks, and a planted bug loses exactly
its part. A planted bug is code appended to a reference workspace file, so it keeps working when
minires' ops change. Crashes, infinite loops and wrong shapes are planted in im2col.
"""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minires.assignments import all_assignments, grade, gradescope_results, load_workspace
from minires.assignments.registry import Target
from minires.assignments.workspace import BEGIN, END, make_workspace, stub_source
from minires.assignments import block
from minires.autograd import Tensor
from minires.cli import main
from minires.nn import BasicBlock
from minires.ops import norm

ROOT = Path(__file__).resolve().parents[1]
SEED, TIMEOUT = 20240501, 60.0  # generous: a loaded 2-core CI machine must not time a part out
MARKS = {name: getattr(pytest.mark, f"assignment_{name}") for name in all_assignments()}


def each_assignment():
    return [pytest.param(name, marks=MARKS[name], id=name) for name in all_assignments()]


def scores(directory, timeout=TIMEOUT, parts=None):
    """{part: PartResult} of a seeded grading run (of `parts` only, if given), against the
    assignment the test made the workspace for (the teacher names it, never the hand-in)."""
    name = json.loads((Path(directory) / "assignment.json").read_text())["assignment"]
    _, results = grade(directory, name, seed=SEED, timeout=timeout, parts=parts)
    return {r.name: r for r in results}


def reference_workspace(tmp_path, name, bug_file=None, bug=""):
    """A workspace with minires' own solutions, with `bug` appended to `bug_file`."""
    make_workspace(name, tmp_path, with_solutions=True)
    if bug_file is not None:
        path = tmp_path / bug_file
        path.write_text(path.read_text() + "\n\n# planted by the test\n" + textwrap.dedent(bug))
    return tmp_path


def assert_only_failing(results, failing):
    """The parts in `failing` lose points (a part scores per case: the cases the bug does not
    touch keep theirs); every other part scores full marks."""
    assert {name for name, r in results.items() if r.score < r.max_score} == set(failing), \
        {name: r.output for name, r in results.items()}


# --- the three outcomes every assignment must get right ------------------------------------------

@pytest.mark.parametrize("name", each_assignment())
def test_untouched_workspace_scores_zero(tmp_path, name):
    make_workspace(name, tmp_path)
    results = scores(tmp_path)
    assert sum(r.score for r in results.values()) == 0
    for r in results.values():
        assert r.verdict.startswith("NotImplementedError: TODO:"), r.output
        assert re.search(r"\n +at \w+\.py, line \d+, in ", r.output)  # in the student's file


@pytest.mark.parametrize("name", each_assignment())
def test_reference_scores_full_marks(tmp_path, name):
    results = scores(reference_workspace(tmp_path, name))
    assert_only_failing(results, [])
    assert sum(r.score for r in results.values()) == all_assignments()[name].points


COL2IM_WITH_EQUALS = """
import numpy as np

def col2im(cols, x_shape, stride, padding):
    n, c, kh, kw, oh, ow = cols.shape
    (sy, sx), (py, px), (h, w) = stride, padding, x_shape[2:]
    out = np.zeros((n, c, h + 2 * py, w + 2 * px), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sy * oh:sy, j:j + sx * ow:sx] = cols[:, :, i, j]  # `=`, not `+=`
    return out[:, :, py:py + h, px:px + w]
"""

CONV_BACKWARD_RESHAPE_FOR_TRANSPOSE = """
def _backward_reshaping_w(self, gy):
    n, out_channels, oh, ow = gy.shape
    gy = gy.reshape(n, out_channels, oh * ow)
    w2t = self.w.reshape(-1, out_channels)  # a reshape where W^T is needed: same shape, and the
    #                                         same numbers only when OC == 1
    gw = (gy @ self.cols.transpose(0, 2, 1)).sum(axis=0).reshape(self.w.shape)
    gcols = (w2t @ gy).reshape(n, self.x_shape[1], *self.kernel, oh, ow)
    gx = col2im(gcols, self.x_shape, self.stride, self.padding)
    return (gx, gw) if not self.has_bias else (gx, gw, gy.sum(axis=(0, 2)))

Conv2d.backward = _backward_reshaping_w
"""

# the two batch-norm bugs below keep x and gamma from the forward, to add a term back
BATCHNORM_KEEPING_X = """
import numpy as np

_forward, _backward = BatchNorm.forward, BatchNorm.backward

def _forward_keeping_x(self, x, gamma, beta):
    self.planted = x, gamma
    return _forward(self, x, gamma, beta)
"""

BATCHNORM_WITHOUT_VARIANCE_TERM = BATCHNORM_KEEPING_X + """
def _backward_without_variance_term(self, gy):
    dx, dgamma, dbeta = _backward(self, gy)
    if self.training:  # add back the term through the variance: it is now missing
        x, gamma = self.planted
        axes, shape = (0,) if x.ndim == 2 else (0, 2, 3), (1, -1) + (1,) * (x.ndim - 2)
        inv_std = (1 / np.sqrt(x.var(axis=axes) + self.eps)).reshape(shape)
        xhat = (x - x.mean(axis=axes).reshape(shape)) * inv_std
        dxhat_xhat = (gy * gamma.reshape(shape) * xhat).sum(axis=axes).reshape(shape)
        dx = dx + inv_std * xhat * dxhat_xhat / (x.size // x.shape[1])
    return dx, dgamma, dbeta

BatchNorm.forward, BatchNorm.backward = _forward_keeping_x, _backward_without_variance_term
"""

RELU_GRADIENT_ONE_AT_ZERO = """
import numpy as np

_forward = ReLU.forward

def _forward_with_mask_at_zero(self, x):
    self.planted_mask = x >= 0  # relu'(0) taken as 1
    return _forward(self, x)

ReLU.forward = _forward_with_mask_at_zero
ReLU.backward = lambda self, gy: np.where(self.planted_mask, gy, 0)
"""

RELU_BACKWARD_AS_A_PRODUCT = """
ReLU.backward = lambda self, gy: gy * self.mask  # inf * 0 = NaN where x <= 0
"""

RELU_FORWARD_AS_A_PRODUCT = """
def _forward_as_a_product(self, x):
    self.mask = x > 0
    return x * self.mask  # -inf * 0 = NaN

ReLU.forward = _forward_as_a_product
"""

BATCHNORM_WITHOUT_MEAN_TERM = BATCHNORM_KEEPING_X + """
def _backward_without_mean_term(self, gy):
    dx, dgamma, dbeta = _backward(self, gy)
    if self.training:  # add back the term through the mean: it is now missing
        x, gamma = self.planted
        axes, shape = (0,) if x.ndim == 2 else (0, 2, 3), (1, -1) + (1,) * (x.ndim - 2)
        inv_std = (1 / np.sqrt(x.var(axis=axes) + self.eps)).reshape(shape)
        dx = dx + inv_std * (gy * gamma.reshape(shape)).mean(axis=axes).reshape(shape)
    return dx, dgamma, dbeta

BatchNorm.forward, BatchNorm.backward = _forward_keeping_x, _backward_without_mean_term
"""

BATCHNORM_BIASED_RUNNING_VARIANCE = """
_update_running = BatchNorm._update_running

def _update_running_biased(self, mean, var, m):
    _update_running(self, mean, var * (m - 1) / m, m)  # the running variance ends up biased

BatchNorm._update_running = _update_running_biased
"""

RESIDUAL_ADD_IN_PLACE = """
def _forward_in_place(self, shortcut, branch):
    shortcut += branch  # right output, but the caller's shortcut array is overwritten
    return shortcut

ResidualAdd.forward = _forward_in_place
"""

BLOCK_BACKWARD_WITHOUT_THE_SHORTCUT = """
_block_backward = block_backward

def block_backward(gy, ops):  # forgets the "+1": nothing comes back through the shortcut
    grads = _block_backward(gy, ops)
    grads["dx"], grads["dx_shortcut"] = grads["dx_branch"], 0 * grads["dx_shortcut"]
    return grads
"""

PAD_CHANNELS_BACKWARD_IGNORING_THE_STRIDE = """
def _backward_ignoring_the_stride(self, gy):
    gx = np.zeros(self.x_shape)
    c, (h, w) = self.x_shape[1], gy.shape[2:]
    gx[:, :, :h, :w] = gy[:, self.before:self.before + c]  # the first pixels, not every s-th
    return gx

PadChannels.backward = _backward_ignoring_the_stride
"""

RESIDUAL_ADD_HALF_TO_BRANCH = """
ResidualAdd.backward = lambda self, gy: (gy, 0.5 * gy)
"""


@pytest.mark.parametrize("name, file, bug, failing, message", [
    pytest.param("conv", "conv.py", COL2IM_WITH_EQUALS, ["col2im"],
                 "ok    2x2 kernel, stride 2, no padding\n"  # `=` passes the 2x2 stride-2 case
                 "FAIL  3x3 kernel, stride 1, padding 1 (overlapping windows)\n"
                 "      x: first wrong element at index", marks=MARKS["conv"],
                 id="conv-col2im-equals"),
    pytest.param("conv", "conv.py", CONV_BACKWARD_RESHAPE_FOR_TRANSPOSE, ["conv2d_backward"],
                 "x: first wrong element at index", marks=MARKS["conv"],
                 id="conv-backward-reshape-for-transpose"),
    pytest.param("batchnorm", "norm.py", BATCHNORM_WITHOUT_VARIANCE_TERM, ["backward_train"],
                 "dx: first wrong element at index", marks=MARKS["batchnorm"],
                 id="batchnorm-no-variance-term"),
    pytest.param("batchnorm", "norm.py", BATCHNORM_WITHOUT_MEAN_TERM, ["backward_train"],
                 "dx: first wrong element at index", marks=MARKS["batchnorm"],
                 id="batchnorm-no-mean-term"),
    pytest.param("batchnorm", "norm.py", BATCHNORM_BIASED_RUNNING_VARIANCE,
                 ["forward_eval_and_running_stats"], "running_var: first wrong element at index",
                 marks=MARKS["batchnorm"], id="batchnorm-biased-running-variance"),
    pytest.param("residual", "residual.py", RESIDUAL_ADD_IN_PLACE,
                 ["residual_add_forward", "residual_add_backward"],
                 "shortcut: your code changed this input in place", marks=MARKS["residual"],
                 id="residual-add-in-place"),
    pytest.param("residual", "block.py", BLOCK_BACKWARD_WITHOUT_THE_SHORTCUT,
                 ["block_backward_by_hand", "plus_one_split"], "dx: first wrong element",
                 marks=MARKS["residual"], id="residual-block-backward-without-the-plus-one"),
    pytest.param("residual", "residual.py", "import numpy as np\n" +
                 PAD_CHANNELS_BACKWARD_IGNORING_THE_STRIDE, ["pad_channels_backward"],
                 "FAIL  4 -> 8 channels, stride 2", marks=MARKS["residual"],
                 id="residual-pad-channels-ignores-the-stride"),
    pytest.param("residual", "activation.py", RELU_GRADIENT_ONE_AT_ZERO, ["relu_backward"],
                 "FAIL  x of shape (2, 3, 4, 4) with exact zeros (relu'(0) = 0)",
                 marks=MARKS["residual"], id="residual-relu-at-zero"),
    pytest.param("residual", "activation.py", RELU_BACKWARD_AS_A_PRODUCT, ["relu_backward"],
                 "FAIL  upstream gradient with inf and -inf (dx = 0 where x <= 0, not inf * 0)\n"
                 "      dx: first wrong element", marks=MARKS["residual"],
                 id="residual-relu-backward-as-a-product"),
    pytest.param("residual", "activation.py", RELU_FORWARD_AS_A_PRODUCT, ["relu_forward"],
                 "FAIL  x with -inf and inf (relu(-inf) = 0)\n      y: first wrong element",
                 marks=MARKS["residual"], id="residual-relu-forward-as-a-product"),
    pytest.param("residual", "residual.py", RESIDUAL_ADD_HALF_TO_BRANCH,
                 ["residual_add_backward", "basic_block_backward"], "dbranch: first wrong element",
                 marks=MARKS["residual"], id="residual-add-backward-reaches-the-block"),
])
def test_planted_bug_loses_exactly_its_part(tmp_path, name, file, bug, failing, message):
    """Graded: the failing parts and the part before the first of them (each part is its own
    process, so the rest would only repeat test_reference_scores_full_marks)."""
    parts = [p.name for p in all_assignments()[name].parts]
    neighbour = parts[max(0, parts.index(failing[0]) - 1)]
    if neighbour in failing:
        neighbour = parts[parts.index(failing[-1]) + 1]
    results = scores(reference_workspace(tmp_path, name, file, bug), parts=[neighbour, *failing])
    assert_only_failing(results, failing)
    output = results[failing[0]].output
    assert message in output, output
    assert "in place" in message or ("got " in output and "expected " in output)


@pytest.mark.assignment_batchnorm
def test_missing_variance_term_would_pass_a_sum_of_outputs_check(tmp_path):
    """Why the grader uses a random upstream gradient: with gy all ones this bug is invisible."""
    student = load_workspace(reference_workspace(tmp_path, "batchnorm", "norm.py",
                                                 BATCHNORM_WITHOUT_VARIANCE_TERM), ["norm.py"])
    x = 3 + 2 * np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    gamma, beta, ones = np.full(3, 1.5), np.zeros(3), np.ones_like(x)
    dx = []
    for module in (student.norm, norm):
        op = module.BatchNorm(None, None, True, 0.1, 1e-5)
        op.apply(x, gamma, beta)
        op.needs_input_grad = (True, True, True)
        dx.append(op.backward(ones)[0])
    np.testing.assert_allclose(dx[0], dx[1], atol=1e-12)


# --- student code that misbehaves costs its part only ---------------------------------------------

@pytest.mark.assignment_conv
@pytest.mark.parametrize("bug, message", [
    ("def im2col(x, kernel, stride, padding, pad_value=0.0):\n    while True:\n        pass\n",
     "timed out after 3 s"),
    ("import numpy\n\ndef im2col(x, kernel, stride, padding, pad_value=0.0):\n"
     "    return numpy.zeros((x.shape[0], 12, 4))\n",
     "cols: wrong shape: got (2, 12, 4), expected (2, 3, 2, 2, 2, 2)"),
    ("import os\n\ndef im2col(x, kernel, stride, padding, pad_value=0.0):\n    os._exit(3)\n",
     "died (exit code 3)"),
    ("def im2col(x, kernel, stride, padding, pad_value=0.0):\n    return x[5]\n",
     "IndexError: index 5 is out of bounds"),
], ids=["infinite-loop", "wrong-shape", "process-dies", "exception"])
def test_misbehaving_part_costs_that_part_only(tmp_path, bug, message):
    timeout = 3 if "while True" in bug else TIMEOUT  # short only where a part must time out
    results = scores(reference_workspace(tmp_path, "conv", "conv.py", bug), timeout=timeout,
                     parts=["im2col", "col2im"])
    assert_only_failing(results, ["im2col"])
    assert message in results["im2col"].verdict, results["im2col"].output
    assert "FAIL  2x2 kernel, stride 2, no padding" in results["im2col"].output


# --- the workspace -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", each_assignment())
def test_workspace_files_are_stubbed_with_absolute_imports(tmp_path, name):
    assignment = all_assignments()[name]
    make_workspace(name, tmp_path)
    sources = {f: (tmp_path / f).read_text() for f in assignment.files}
    for source in sources.values():
        assert "from ." not in source and "from minires" in source
        assert BEGIN not in source and END not in source
    for part in assignment.parts:
        for qualname in part.uses:
            assert f'raise NotImplementedError("TODO: {qualname}; see the docstring")' in \
                "".join(sources.values())
    modules = load_workspace(tmp_path, assignment.files)
    assert "Function" in {base.__name__ for m in vars(modules).values()
                          for c in vars(m).values() if isinstance(c, type) for base in c.__mro__}
    assert "minires assignment grade" in (tmp_path / "README.md").read_text()


def test_a_target_without_solution_markers_is_an_error():
    source = 'def f(x):\n    """The answer."""\n    return x\n'
    with pytest.raises(ValueError, match="m.py: f: expected one '# BEGIN SOLUTION' line"):
        stub_source(source, [Target("m.py", "f", "TODO: f")], "m.py")


def test_loading_a_workspace_leaves_imports_alone(tmp_path):
    make_workspace("conv", tmp_path, with_solutions=True)
    path, modules = list(sys.path), set(sys.modules)
    student = load_workspace(tmp_path, ["conv.py"])
    assert sys.path == path and set(sys.modules) == modules
    import minires.ops.conv

    assert student.conv is not minires.ops.conv
    assert student.conv.__file__ == str(tmp_path / "conv.py")


def test_make_does_not_overwrite_a_students_work(tmp_path):
    make_workspace("conv", tmp_path)
    with pytest.raises(SystemExit, match="not overwriting"):
        make_workspace("conv", tmp_path)


@pytest.mark.assignment_residual
def test_compare_script_runs_on_the_students_ops(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINIRES_DEVICE="cpu")
    untouched, solved = tmp_path / "untouched", tmp_path / "solved"
    make_workspace("residual", untouched)
    make_workspace("residual", solved, with_solutions=True)
    run = [sys.executable, "compare_gradients.py", "8"]
    failed = subprocess.run(run, cwd=untouched, env=env, capture_output=True, text=True)
    assert failed.returncode != 0 and "TODO: ReLU.forward" in failed.stderr
    done = subprocess.run(run, cwd=solved, env=env, capture_output=True, text=True, check=True)
    assert "plain-8" in done.stdout and "residual-8" in done.stdout and "ratio" in done.stdout
    assert "identity shortcut: |dx| = " in done.stdout and "|branch part|" in done.stdout


@pytest.mark.assignment_residual
@pytest.mark.cpu_only  # the grader computes on the CPU
def test_the_reference_block_backward_by_hand_is_autograds():
    """block.py's op-by-op backward gives what minires' engine gives for nn.BasicBlock."""
    rng = np.random.default_rng(0)
    for in_channels, channels, stride in ((4, 4, 1), (4, 8, 2)):
        params = block.random_params(rng, in_channels, channels)
        x = rng.standard_normal((2, in_channels, 6, 6))
        y, ops = block.block_forward(x, params, stride)
        gy = rng.standard_normal(y.shape)
        grads = block.block_backward(gy, ops)
        module = BasicBlock(in_channels, channels, stride, shortcut="A").train()
        for layer, name in ((module.conv1, "w1"), (module.conv2, "w2")):
            layer.weight.data = params[name]
        for layer, i in ((module.bn1, 1), (module.bn2, 2)):
            layer.weight.data, layer.bias.data = params[f"gamma{i}"], params[f"beta{i}"]
        x_tensor = Tensor(x, requires_grad=True)
        y_module = module(x_tensor)
        y_module.backward(gy)
        np.testing.assert_allclose(y, y_module.data, atol=1e-12)
        np.testing.assert_allclose(grads["dx"], x_tensor.grad.data, atol=1e-12)
        np.testing.assert_allclose(grads["dx_shortcut"] + grads["dx_branch"], grads["dx"])
        np.testing.assert_allclose(grads["dw1"], module.conv1.weight.grad.data, atol=1e-12)
        np.testing.assert_allclose(grads["dgamma2"], module.bn2.weight.grad.data, atol=1e-12)


# --- the command line ----------------------------------------------------------------------------

def test_cli_list(capsys):
    assert main(["assignment", "list"]) == 0
    out = capsys.readouterr().out
    for a in all_assignments().values():
        assert f"{a.number}. {a.name}" in out and all(p.name in out for p in a.parts)


@pytest.mark.assignment_conv
def test_cli_make_and_grade_write_gradescope_results(tmp_path, capsys):
    workspace, results_json = tmp_path / "hw1", tmp_path / "results.json"
    assert main(["assignment", "make", "conv", "--out", str(workspace)]) == 0
    grade_args = ["assignment", "grade", str(workspace), "--assignment", "conv", "--json",
                  str(results_json), "--seed", str(SEED), "--timeout", str(TIMEOUT)]
    assert main(grade_args) == 1
    out = capsys.readouterr().out
    assert f"seed {SEED}" in out
    assert [line.split() for line in out.splitlines() if line.startswith("total")] == [
        ["total", "0", "/", "10"]]
    results = json.loads(results_json.read_text())
    assert set(results) == {"score", "tests", "output", "extra_data"} and results["score"] == 0
    assert results["extra_data"]["assignment"] == "conv" and results["extra_data"]["seed"] == SEED
    assert results["extra_data"]["minires_version"] and results["extra_data"]["finished"]
    for test in results["tests"]:
        assert set(test) == {"name", "score", "max_score", "output"}
        assert isinstance(test["output"], str) and test["score"] == 0 < test["max_score"]
    make_workspace("conv", workspace, with_solutions=True, force=True)
    assert main(grade_args + ["--part", "col2im"]) == 0
    results = json.loads(results_json.read_text())
    assert results["tests"] == gradescope_results(
        grade(workspace, "conv", seed=SEED, parts=["col2im"])[1])["tests"]
    assert results["score"] == 2 and [t["name"] for t in results["tests"]] == ["col2im"]
    assert results["extra_data"]["parts"] == ["col2im"]


def test_cli_grade_errors(tmp_path):
    with pytest.raises(SystemExit, match="--assignment NAME"):
        main(["assignment", "grade", str(tmp_path)])
    make_workspace("conv", tmp_path)
    with pytest.raises(SystemExit, match="has no part 'nope'"):
        main(["assignment", "grade", str(tmp_path), "--assignment", "conv", "--part", "nope"])


def test_fresh_seed_every_run(tmp_path):
    make_workspace("residual", tmp_path)
    seeds = {grade(tmp_path, "residual", parts=["relu_forward"])[0] for _ in range(3)}
    assert len(seeds) == 3
