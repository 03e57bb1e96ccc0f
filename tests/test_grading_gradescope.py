"""The Gradescope bundle, end to end (the student release: test_release.py).

The bundle is unzipped into a temporary directory laid out as Gradescope lays out /autograder
(source/, submission/, results/), and its own run_autograder grades the submission there
(MINIRES_AUTOGRADER_ROOT points it at the temporary directory).
"""
import json
import os
import subprocess
import sys
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
    env = dict(os.environ, MINIRES_AUTOGRADER_ROOT=str(root), MINIRES_PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)  # the bundle's own minires, as on Gradescope
    done = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
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
