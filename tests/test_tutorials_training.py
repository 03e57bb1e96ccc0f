"""Tutorials 04, 05 and 07 run top to bottom as scripts in quick mode, save their figures and print
numbers in sane ranges, and each one is also a valid jupytext percent notebook. In quick mode 04 and
07 read the real `laptop` run shipped in tutorials/data/degradation-laptop, and their verdicts must
agree with Figures 6 and 7; with MINIRES_TRAIN=1 too they train the tiny `quick` preset instead.

Run only these with `pytest tests/test_tutorials_training.py` (or `-m "not slow"` to skip the
runs, about 35 s together on a 2-core CPU).
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from minires.degradation import (PRESETS, final_errors, is_finished, load_trained, read_curves,
                                 verdicts)

ROOT = pathlib.Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
SHIPPED = TUTORIALS / "data" / "degradation-laptop"
TIMEOUT = 180  # seconds; quick mode takes 5 to 15 s per tutorial on an idle 2-core CPU


def _check_04(stdout):
    """The shipped run's curves are read (not trained), its last-epoch errors printed as they are in
    its curves.csv, and both verdicts are Figure 6's."""
    assert f"reading {SHIPPED}" in stdout and "run_degradation:" not in stdout  # nothing trained
    assert "32 rows; columns net, depth, residual, epoch, train_error, test_error" in stdout
    table = re.findall(r"^(plain|ResNet)-(8|20)\s+8\s+([\d.]+)%\s+([\d.]+)%$", stdout, re.M)
    expected = final_errors(read_curves(SHIPPED))
    assert {(net == "ResNet", int(depth)): (float(train), float(test))
            for net, depth, train, test in table} == {
        key: (round(train, 1), round(test, 1)) for key, (train, test) in expected.items()}, stdout
    result = verdicts(read_curves(SHIPPED))
    assert result["plain_degrades"] and result["residual_improves"]  # the shipped run shows both
    for line in result["lines"]:
        assert line in stdout and "(as Figure 6)" in line


def _check_04_trained(stdout):
    """The quick preset's four nets, trained here (3 epochs each), learned something; both
    verdicts are printed with their numbers."""
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


def _response_rows(stdout, depths):
    """(as trained, refreshed mean) of each net's row in 07's table: nets of `depths`, whose 3x3
    convs are all layers but the fc."""
    rows = re.findall(r"^(?:plain|ResNet)-(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)", stdout, re.M)
    assert sorted(int(d) for d, _, _, _ in rows) == sorted(2 * depths), stdout
    assert all(int(layers) == int(depth) - 1 for depth, layers, _, _ in rows), rows
    return [(float(a), float(b)) for _, _, a, b in rows]


def _check_07(stdout):
    """The control at init is exactly 1; the shipped nets are read back, and Figure 7's two
    observations hold on them: the ResNet's responses are smaller than the plain net's at depth 20,
    and ResNet-20's smaller than ResNet-8's."""
    assert f"nets from {SHIPPED}, 32 test images" in stdout
    assert stdout.count("7 3x3 convs, response std min 1.0000, max 1.0000") == 2, stdout
    assert "loaded plain-8, ResNet-8, plain-20, ResNet-20" in stdout
    for as_trained, refreshed in _response_rows(stdout, (8, 20)):
        assert 0.5 < refreshed < 2 and 0.5 < as_trained < 2
    assert re.search(r"^depth 20: ResNet responses are SMALLER than plain", stdout, re.M), stdout
    assert re.search(r"^ResNet-20 vs ResNet-8: .* smaller for the deeper net$", stdout, re.M)
    assert "NOT" not in stdout


def _check_07_trained(stdout):
    """The control at init is exactly 1; the quick preset's nets, trained here, are read back, and
    their responses are positive and of order 1."""
    assert stdout.count("7 3x3 convs, response std min 1.0000, max 1.0000") == 2, stdout
    assert "loaded plain-8, ResNet-8, plain-14, ResNet-14" in stdout
    for as_trained, refreshed in _response_rows(stdout, (8, 14)):
        assert 0.1 < refreshed < 10 and 0.1 < as_trained < 100


TUTORIAL_CHECKS = {  # script: (figures it must save, check of its printed numbers)
    "04_degradation_problem.py": (["04_degradation.png"], _check_04),
    "05_shortcut_options_and_bottleneck.py": (["05_shortcut_options.png",
                                               "05_imagenet_cost.png"], _check_05),
    "07_layer_responses.py": (["07_layer_responses.png"], _check_07),
}
TRAINED_CHECKS = {"04_degradation_problem.py": _check_04_trained,
                  "07_layer_responses.py": _check_07_trained}


def _env(figures, train=False):
    env = dict(os.environ)
    env.pop("MINIRES_DATASET", None)  # quick mode on the synthetic set, never a download
    env.pop("MINIRES_TRAIN", None)
    env.update(MINIRES_QUICK="1", MINIRES_FIGURES=str(figures), MPLBACKEND="Agg",
               MINIRES_DEVICE="cpu",  # the cuda runs: test_cuda_tutorials.py
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    if train:
        env["MINIRES_TRAIN"] = "1"
    return env


def _run(script, env):
    result = subprocess.run([sys.executable, str(TUTORIALS / script)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (f"{script} failed (rc {result.returncode})"
                                    f"\n--- stdout ---\n{result.stdout[-4000:]}"
                                    f"\n--- stderr ---\n{result.stderr[-4000:]}")
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TUTORIAL_CHECKS))
def test_tutorial_runs_in_quick_mode(script, tmp_path):
    stdout = _run(script, _env(tmp_path))
    figures, check_output = TUTORIAL_CHECKS[script]
    for name in figures:
        figure = tmp_path / name
        assert figure.is_file(), f"{script} did not save {name}; stdout:\n{stdout[-2000:]}"
        assert figure.stat().st_size > 1000, f"{name} is only {figure.stat().st_size} bytes"
        assert str(figure) in stdout  # the path is printed
    check_output(stdout)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TRAINED_CHECKS))
def test_tutorial_trains_the_quick_preset_when_asked(script, tmp_path):
    """MINIRES_TRAIN=1: the tutorial's own training path, on the tiny synthetic preset."""
    stdout = _run(script, _env(tmp_path, train=True))
    assert "(the quick preset:" in stdout
    TRAINED_CHECKS[script](stdout)


def test_shipped_run_is_a_small_whole_laptop_run():
    """What 04 and 07 read: every net of the laptop preset, every epoch, a README that says how
    to make it again, a few hundred KB, and no file the tutorials cannot read without pickle."""
    assert is_finished(SHIPPED)
    config = json.loads((SHIPPED / "config.json").read_text())
    laptop = PRESETS["laptop"]
    assert {k: config[k] for k in ("depths", "epochs", "n_train", "n_test", "width", "data")} == {
        "depths": list(laptop.depths), "epochs": laptop.epochs, "n_train": laptop.n_train,
        "n_test": laptop.n_test, "width": laptop.width, "data": "cifar10"}
    sizes = {p.relative_to(SHIPPED).as_posix(): p.stat().st_size
             for p in SHIPPED.rglob("*") if p.is_file()}
    assert sum(sizes.values()) < 650_000, sizes
    for residual in (False, True):
        for depth in laptop.depths:
            assert not load_trained(SHIPPED, residual, depth).training
    with np.load(SHIPPED / "images.npz", allow_pickle=False) as images:
        assert images["x_test"].shape == images["x_train"].shape == (32, 3, 32, 32)
        assert images["x_test"].dtype == np.uint8
    readme = (SHIPPED / "README.md").read_text()
    assert ("minires degradation --preset laptop --data cifar10 \\\n        "
            "--out runs/degradation-laptop") in readme
    assert "tutorials/data/ship_run.py" in readme


def test_readme_and_tutorials_use_the_same_run_folder():
    """The README's laptop command writes the folder that tutorials 04 and 07 read."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^minires degradation --preset laptop .*--out (\S+)", readme, re.M)
    assert command and command.group(1) == "runs/degradation-laptop"
    for script in ("04_degradation_problem.py", "07_layer_responses.py"):
        source = (TUTORIALS / script).read_text(encoding="utf-8")
        assert ('RUN = pathlib.Path(os.environ.get("MINIRES_RUNS", "runs")) / '
                'f"degradation-{PRESET}"') in source, script
        assert 'os.environ.get("MINIRES_PRESET", "laptop")' in source, script


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


def _execute_notebook(script, env, monkeypatch):
    """Run `script` in a Jupyter kernel (nbclient) with no MPLBACKEND, as a student opens it; the
    code cells that show a figure."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MPLBACKEND")  # the kernel picks Jupyter's inline backend itself
    if "MINIRES_TRAIN" not in env:
        monkeypatch.delenv("MINIRES_TRAIN", raising=False)
    notebook = jupytext.read(TUTORIALS / script, fmt="py:percent")
    nbclient.NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    return [cell for cell in notebook.cells if cell.cell_type == "code"
            and any("image/png" in output.get("data", {}) for output in cell.outputs)]


@pytest.mark.slow
def test_tutorial_04_as_a_notebook_shows_its_figure_inline(tmp_path, monkeypatch):
    """The Figure 6 plot of the shipped run appears under the cell that draws it, once, and the PNG
    is still written."""
    images = _execute_notebook("04_degradation_problem.py", _env(tmp_path), monkeypatch)
    assert len(images) == 1, "the curves' cell should show the Figure 6 plot inline"
    assert "write_figure(" in images[0].source
    assert (tmp_path / "04_degradation.png").stat().st_size > 1000


@pytest.mark.slow
def test_tutorial_07_as_a_notebook_shows_only_figure_7(tmp_path, monkeypatch):
    """Trained in the notebook (MINIRES_TRAIN=1), run_degradation draws a Figure 6 plot too; only
    the Figure 7 plot may appear, under the cell that draws it."""
    images = _execute_notebook("07_layer_responses.py", _env(tmp_path, train=True), monkeypatch)
    assert len(images) == 1, [cell.source[:80] for cell in images]
    assert "save_figure(fig" in images[0].source
    assert (tmp_path / "07_layer_responses.png").stat().st_size > 1000
