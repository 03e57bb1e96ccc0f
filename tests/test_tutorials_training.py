"""Tutorials 04, 05 and 07 run top to bottom as scripts in quick mode, save their figures and print
numbers in sane ranges, and each one is also a valid jupytext percent notebook.

Run only these with `pytest tests/test_tutorials_training.py` (or `-m "not slow"` to skip the
runs, about 35 s together on a 2-core CPU).
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
TIMEOUT = 180  # seconds; quick mode takes 5 to 15 s per tutorial on an idle 2-core CPU


def _check_04(stdout):
    """The quick preset's four nets, read back from curves.csv (3 epochs each), learned something;
    both verdicts are printed with their numbers."""
    assert "12 rows; columns net, depth, residual, epoch, train_error, test_error" in stdout
    table = re.findall(r"^(plain|ResNet)-(8|14)\s+3\s+([\d.]+)%\s+([\d.]+)%$", stdout, re.M)
    assert len(table) == 4, stdout
    train_errors = [float(row[2]) for row in table]
    assert max(train_errors) < 80, train_errors  # chance is 90%
    assert re.search(r"plain-14 ends at [\d.]+% training error, plain-8 at [\d.]+%", stdout)
    assert re.search(r"ResNet-14 ends at [\d.]+% training error, ResNet-8 at [\d.]+%", stdout)


def _check_05(stdout):
    """The counts are the hand-checkable ones (tests/test_flops.py derives them)."""
    assert re.search(r"ResNet-20 A\s+269,722\s+40\.55 M", stdout), stdout
    assert re.search(r"ResNet-56 A\s+853,018\s+125\.49 M", stdout), stdout
    assert re.search(r"ResNet-50\s+bottleneck\s+25,557,032\s+4\.09\s+3\.8", stdout), stdout


def _check_07(stdout):
    """The control at init is exactly 1; the quick preset's trained nets are read back, and their
    responses are positive and of order 1."""
    assert stdout.count("7 3x3 convs, response std min 1.0000, max 1.0000") == 2, stdout
    assert "loaded plain-8, ResNet-8, plain-14, ResNet-14" in stdout
    rows = re.findall(r"^(?:plain|ResNet)-(?:8\s+7|14\s+13)\s+([\d.]+)\s+([\d.]+)", stdout, re.M)
    assert len(rows) == 4, stdout
    for as_trained, refreshed in rows:
        assert 0.1 < float(refreshed) < 10 and 0.1 < float(as_trained) < 100


TUTORIAL_CHECKS = {  # script: (figures it must save, check of its printed numbers)
    "04_degradation_problem.py": (["04_degradation.png"], _check_04),
    "05_shortcut_options_and_bottleneck.py": (["05_shortcut_options.png",
                                               "05_imagenet_cost.png"], _check_05),
    "07_layer_responses.py": (["07_layer_responses.png"], _check_07),
}


def _env(figures):
    env = dict(os.environ)
    env.pop("MINIRES_DATASET", None)  # quick mode on the synthetic set, never a download
    env.update(MINIRES_QUICK="1", MINIRES_FIGURES=str(figures), MPLBACKEND="Agg",
               MINIRES_DEVICE="cpu",  # the cuda runs: test_cuda_tutorials.py
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TUTORIAL_CHECKS))
def test_tutorial_runs_in_quick_mode(script, tmp_path):
    result = subprocess.run([sys.executable, str(TUTORIALS / script)], cwd=ROOT,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (f"{script} failed (rc {result.returncode})"
                                    f"\n--- stdout ---\n{result.stdout[-4000:]}"
                                    f"\n--- stderr ---\n{result.stderr[-4000:]}")
    figures, check_output = TUTORIAL_CHECKS[script]
    for name in figures:
        figure = tmp_path / name
        assert figure.is_file(), f"{script} did not save {name}; stdout:\n{result.stdout[-2000:]}"
        assert figure.stat().st_size > 1000, f"{name} is only {figure.stat().st_size} bytes"
        assert str(figure) in result.stdout  # the path is printed
    check_output(result.stdout)


@pytest.mark.parametrize("script", sorted(TUTORIAL_CHECKS))
def test_tutorial_is_a_percent_notebook(script):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(TUTORIALS / script, fmt="py:percent")
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds.count("markdown") >= 3 and kinds.count("code") >= 3, kinds
    assert kinds[0] == "markdown"  # it opens with its title and prose
    first_code = next(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert 'QUICK = os.environ.get("MINIRES_QUICK") == "1"' in first_code
    assert 'os.environ.get("MINIRES_FIGURES", "figures")' in first_code


@pytest.mark.slow
def test_tutorial_04_as_a_notebook_shows_its_figure_inline(tmp_path, monkeypatch):
    """Executed by a Jupyter kernel (nbclient) with no MPLBACKEND, as a student opens it: the
    figure that run_degradation draws appears under its cell, and the PNG is still written."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    for name, value in _env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MPLBACKEND")  # the kernel picks Jupyter's inline backend itself
    notebook = jupytext.read(TUTORIALS / "04_degradation_problem.py", fmt="py:percent")
    nbclient.NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    images = [cell for cell in notebook.cells if cell.cell_type == "code"
              and any("image/png" in output.get("data", {}) for output in cell.outputs)]
    assert len(images) == 1, "the run's cell should show the Figure 6 plot inline"
    assert "run_degradation(" in images[0].source
    assert (tmp_path / "04_degradation.png").stat().st_size > 1000
