"""The Gradescope bundle, end to end (the student release: test_release.py).

The bundle is unzipped into a temporary directory laid out as Gradescope lays out /autograder
(source/, submission/, results/), and its own run_autograder grades the submission there
(MINIRES_AUTOGRADER_ROOT points it at the temporary directory).
"""
import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile

import pytest

from minires.assignments import get
from minires.assignments.release import unpack
from minires.assignments.workspace import make_workspace
from minires.cli import main

pytestmark = [pytest.mark.grading, pytest.mark.cpu_only]  # grading runs on the CPU


@pytest.mark.assignment_residual
def test_gradescope_bundle_grades_a_submission_end_to_end(tmp_path):
    bundle = tmp_path / "autograder.zip"
    assert main(["assignment", "gradescope", "residual", "--out", str(bundle)]) == 0
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
    assert {"setup.sh", "run_autograder", "minires/__init__.py"} <= names
    root = tmp_path / "autograder"
    unpack(bundle, root / "source")
    (root / "run_autograder").write_bytes((root / "source" / "run_autograder").read_bytes())
    os.chmod(root / "run_autograder", 0o755)
    make_workspace("residual", root / "submission", with_solutions=True)
    (root / "submission" / "assignment.json").unlink()  # a student uploads only the .py files
    # the README's dry run names only the root: without setup.sh's venv, python3 grades
    env = dict(os.environ, MINIRES_AUTOGRADER_ROOT=str(root),
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    env.pop("PYTHONPATH", None)  # the bundle's own minires, as on Gradescope
    env.pop("MINIRES_PYTHON", None)
    done = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "grading with python3" in done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 20 and results["extra_data"]["finished"], results
    assert results["extra_data"]["assignment"] == "residual"
    assert [t["name"] for t in results["tests"]] == [p.name for p in get("residual").parts]
    (root / "submission" / "residual.py").rename(root / "submission" / "my_residual.py")
    subprocess.run([str(root / "run_autograder")], cwd=root, env=env, check=True,
                   capture_output=True, timeout=300)
    results = json.loads((root / "results" / "results.json").read_text())
    scores = {t["name"]: t["score"] for t in results["tests"]}
    assert scores == {"relu_forward": 1, "relu_backward": 2, "residual_add_forward": 0,
                      "residual_add_backward": 0, "pad_channels_backward": 0,
                      "basic_block_backward": 0, "block_backward_by_hand": 6,
                      "plus_one_split": 4}  # residual.py's parts only, never filled in
    assert "residual.py is missing" in results["tests"][2]["output"]


def dry_run_root(tmp_path, name, timeout=60):
    """The bundle for `name` unpacked as Gradescope lays out /autograder; returns (root, run)."""
    bundle = tmp_path / "autograder.zip"
    assert main(["assignment", "gradescope", name, "--out", str(bundle), "--timeout",
                 str(timeout)]) == 0
    root = tmp_path / "autograder"
    unpack(bundle, root / "source")
    (root / "run_autograder").write_bytes((root / "source" / "run_autograder").read_bytes())
    os.chmod(root / "run_autograder", 0o755)

    def run(python=sys.executable):
        env = dict(os.environ, MINIRES_AUTOGRADER_ROOT=str(root), MINIRES_PYTHON=python)
        env.pop("PYTHONPATH", None)  # the bundle's own minires, as on Gradescope
        done = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads((root / "results" / "results.json").read_text())
    return root, run


def test_setup_builds_a_venv_on_ubuntu_22_04_and_24_04(tmp_path):
    """24.04's pip refuses system-wide installs (PEP 668): the dependencies go into a venv, and
    run_autograder runs that venv's Python."""
    root, _ = dry_run_root(tmp_path, "conv")
    setup = (root / "source" / "setup.sh").read_text()
    assert "python3-venv" in setup and "util-linux" in setup
    assert "python3 -m venv /autograder/minires-venv" in setup
    assert "/autograder/minires-venv/bin/pip install" in setup
    assert "\npip3 install" not in setup and "--break-system-packages" not in setup
    assert "/autograder/minires-venv/bin/python" in (root / "run_autograder").read_text()
    assert subprocess.run(["bash", "-n", str(root / "source" / "setup.sh")]).returncode == 0


def test_results_say_zero_before_python_starts(tmp_path):
    """A Python that cannot start (a missing dependency, a crash) leaves every part at 0 with a
    message, never an older score."""
    root, run = dry_run_root(tmp_path, "conv")
    (root / "results").mkdir()
    (root / "results" / "results.json").write_text('{"score": 10, "tests": []}')
    make_workspace("conv", root / "submission", with_solutions=True)
    results = run(python="/bin/false")
    assert results["score"] == 0
    assert [(t["name"], t["score"]) for t in results["tests"]] == [
        (p.name, 0) for p in get("conv").parts]
    assert all("did not finish" in t["output"] for t in results["tests"])


@pytest.mark.assignment_conv
def test_gradescope_dry_run_against_hostile_hand_ins(tmp_path):
    """Through the bundle: an untouched workspace that loads the complete package's conv.py
    scores 0, a link in the output leaks nothing, and source/ is root's alone afterwards."""
    root, run = dry_run_root(tmp_path, "conv", timeout=20)
    source_conv = root / "source" / "minires" / "ops" / "conv.py"
    make_workspace("conv", root / "submission")
    path = root / "submission" / "conv.py"
    path.write_text(path.read_text() + textwrap.dedent(f"""

        import importlib.util as _util
        import os as _os

        def _fresh():
            spec = _util.spec_from_file_location("minires.ops.fresh", {str(source_conv)!r})
            module = _util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module

        def im2col(x, kernel, stride, padding, pad_value=0.0):
            return _fresh().im2col(x, kernel, stride, padding, pad_value)

        def col2im(cols, x_shape, stride, padding):
            _os.symlink({str(source_conv)!r}, "case0.txt")
            _os._exit(0)
        """))
    results = run()
    assert results["score"] == 0 and results["extra_data"]["finished"], results
    feedback = json.dumps(results)
    assert "BEGIN SOLUTION" not in feedback and "cannot be opened as a plain file" in feedback
    assert stat.S_IMODE((root / "source").stat().st_mode) == 0o700
    assert stat.S_IMODE(source_conv.stat().st_mode) & 0o077 == 0
