"""benchmarks/gpu_check.py, the one command for a lent GPU machine, as a dry run on the CuPy
stand-in: every step runs (at tiny sizes) and passes, so the script is ready when a GPU is. It is
also the end-to-end test of `python -m minires gradients --device cuda` and `python -m minires
train --device cuda` as commands (their checkpoint is loaded on the CPU here)."""
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minires
from minires import models
from minires.checkpoint import load_checkpoint

import cupy_standin

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STEPS = ("env", "fast tests", "cuda tests", "suite", "main job", "train", "train_step")
# gpu_check times and tests the GPU fast path: a build without minires/fast has none to check
needs_the_fast_layer = pytest.mark.skipif(not (ROOT / "minires" / "fast").is_dir(),
                                          reason="no minires/fast in this build")


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not cupy_standin.is_registered(), reason="on a GPU, gpu_check runs for real")
@needs_the_fast_layer
def test_gpu_check_dry_run_passes_every_step_and_writes_its_log(tmp_path):
    log = tmp_path / "gpu_check.log"
    result = subprocess.run([sys.executable, str(SCRIPT), "--standin", "--log", str(log)],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for step in STEPS:  # the summary table: step, pass, seconds, key numbers
        assert re.search(rf"^{step}\s+pass\s+[\d.]+\s+\S", result.stdout, re.M), result.stdout
    assert re.search(r"^main job .*first/last ratio plain-8 [\d.]+, residual-8 [\d.]+",
                     result.stdout, re.M), result.stdout
    assert re.search(r"^train_step .*minires [\d.]+ img/s, minires-gpufast [\d.]+ img/s",
                     result.stdout, re.M), result.stdout
    text = log.read_text()
    assert [line[4:].split(" (")[0] for line in text.splitlines()
            if line.startswith("=== ")] == list(STEPS)
    assert text.count("exit status: 0") == len(STEPS)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) <= 7, written  # what a lease copies back from $OUT
    files = tmp_path / "gpu_check_files"
    assert (files / "gradients" / "layers.csv").is_file() and (files / "train_step.json").is_file()
    # the checkpoint `minires train --device cuda` wrote loads on the CPU
    model = models.get_model("resnet8").to("cpu")
    model.load_state_dict(load_checkpoint(files / "train" / "checkpoint.npz")["model"])
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
    logits = model.eval()(minires.tensor(np.zeros((2, 3, 32, 32), np.float32), device="cpu"))
    assert np.isfinite(logits.numpy()).all()


def test_a_step_that_hangs_is_stopped_at_its_time_limit():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    start = time.monotonic()
    status, _, _ = gpu_check.run_step([sys.executable, "-c", "import time; time.sleep(60)"], 1,
                                      _env())
    assert status == "timeout" and time.monotonic() - start < 20
    table = gpu_check.summary_table([("env", "FAIL (timeout)", 1.0, "")])
    assert re.search(r"^env\s+FAIL \(timeout\)\s+1\.0", table, re.M), table


@needs_the_fast_layer
def test_the_real_plan_fits_a_480_second_lease_and_runs_the_fast_path(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    plan = gpu_check.steps(tmp_path, standin=False)
    assert [step[0] for step in plan] == list(STEPS)
    assert sum(step[2] for step in plan) <= 450  # room for start-up and the copies back
    commands = {name: command for name, command, _, _ in plan}
    assert set(gpu_check.FAST_TESTS) <= set(commands["fast tests"])
    assert gpu_check.STEP_ENV["fast tests"] == {"MINIRES_GPU_FAST_OPS": "1"}
    assert "minires-gpufast" in commands["train_step"] and "torch" in commands["train_step"]
