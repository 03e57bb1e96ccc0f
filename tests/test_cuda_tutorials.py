"""The tutorials in quick mode with MINIRES_DEVICE=cuda: a real GPU, or the CuPy stand-in.

On the stand-in the ops run their NumPy reference code, several times slower than the CPU's fast
ops, so by default CI runs the two cheap tutorials here (01, 02: the chain, the residual add's
backward and its Jacobian); the others' cuda code paths (compare and the recorder, the Trainer,
the DataLoader) run on cuda in test_cuda_end_to_end.py, test_cuda_gpu_check.py and the cuda
variants of test_inspect.py. MINIRES_CUDA_TUTORIALS=all
runs all seven, as benchmarks/gpu_check.py does on a GPU (the training tutorials take minutes each
on the stand-in).

Each run is checked as in test_tutorials_inspect.py and test_tutorials_training.py: exit status,
figures saved, and the printed numbers.
"""
import os
import subprocess
import sys

import pytest

import cupy_standin
from test_tutorials_inspect import FIGURES
from test_tutorials_training import ROOT, TUTORIAL_CHECKS, TUTORIALS

RUNNER = ROOT / "tests" / "standin_run.py"
CHEAP = ("01_vanishing_gradients_in_a_chain.py", "02_the_residual_add_backward.py")
ALL = sorted(set(FIGURES) | set(TUTORIAL_CHECKS))
CHOSEN = ALL if os.environ.get("MINIRES_CUDA_TUTORIALS") == "all" else CHEAP


def _env(figures):
    env = dict(os.environ)
    env.pop("MINIRES_DATASET", None)  # quick mode on the synthetic set, never a download
    env.update(MINIRES_QUICK="1", MINIRES_FIGURES=str(figures), MPLBACKEND="Agg",
               MINIRES_DEVICE="cuda",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


def test_every_tutorial_is_known_here():
    assert len(ALL) == 7 and set(CHEAP) <= set(ALL)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.parametrize("script", CHOSEN)
def test_tutorial_runs_on_cuda_in_quick_mode(script, tmp_path):
    runner = [str(RUNNER)] if cupy_standin.is_registered() else []
    result = subprocess.run([sys.executable] + runner + [str(TUTORIALS / script)], cwd=ROOT,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (f"{script} failed on cuda (rc {result.returncode})"
                                    f"\n--- stdout ---\n{result.stdout[-4000:]}"
                                    f"\n--- stderr ---\n{result.stderr[-4000:]}")
    figures, check_output = TUTORIAL_CHECKS.get(script, (FIGURES.get(script), None))
    for name in figures:
        figure = tmp_path / name
        assert figure.is_file() and figure.stat().st_size > 1000, f"{script}: {name} missing"
        assert str(figure) in result.stdout
    if check_output is not None:
        check_output(result.stdout)
