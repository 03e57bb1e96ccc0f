"""Tutorials 01, 02, 03 and 06 run top to bottom in quick mode, write their figures, and open as
jupytext percent notebooks. Each tutorial asserts its own story, so a run that finishes is also a
check that the story still holds."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"

FIGURES = {
    "01_vanishing_gradients_in_a_chain.py": ["01_chain_gradient_vs_depth.png"],
    "02_the_residual_add_backward.py": ["02_residual_split.png",
                                        "02_jacobian_singular_values.png"],
    "03_plain_vs_residual_gradient_norms.py": ["03_layer_gradients_no_bn.png",
                                               "03_layer_gradients_bn.png",
                                               "03_residual_split_no_bn.png",
                                               "03_residual_split_bn.png"],
    "06_preactivation_identity_mappings.py": ["06_shortcut_split_original_vs_preact.png"],
}


def _env(figures):
    env = dict(os.environ)
    env.update(MINIRES_QUICK="1", MINIRES_FIGURES=str(figures), MPLBACKEND="Agg",
               MINIRES_DEVICE="cpu")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_tutorial_runs_in_quick_mode_and_saves_its_figures(name, tmp_path):
    result = subprocess.run([sys.executable, str(TUTORIALS / name)], cwd=ROOT, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (f"{name} failed:\n--- stdout ---\n{result.stdout[-4000:]}\n"
                                    f"--- stderr ---\n{result.stderr[-4000:]}")
    for figure in FIGURES[name]:
        path = tmp_path / figure
        written = sorted(os.listdir(tmp_path))
        assert path.is_file(), f"{name} did not write {figure}; it wrote {written}"
        assert path.stat().st_size > 1024, f"{figure} is only {path.stat().st_size} bytes"
        assert str(path) in result.stdout, f"{name} should print the path of {figure}"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_tutorial_is_a_jupytext_percent_notebook(name):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.reads((TUTORIALS / name).read_text(encoding="utf-8"), fmt="py:percent")
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds.count("markdown") >= 3 and kinds.count("code") >= 3, kinds
    assert kinds[0] == "markdown", "a tutorial opens with its title and argument"
    first_code = next(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert 'os.environ.get("MINIRES_QUICK") == "1"' in first_code
    assert 'os.environ.get("MINIRES_FIGURES", "figures")' in first_code


def test_tutorial_index_lists_all_seven():
    index = (TUTORIALS / "README.md").read_text(encoding="utf-8")
    for prefix in ("01_", "02_", "03_", "04_", "05_", "06_", "07_"):
        assert f"({prefix}" in index, f"tutorials/README.md does not link a {prefix}*.py tutorial"
    for name in FIGURES:
        assert f"({name})" in index
