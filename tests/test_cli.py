"""Tests for the `minires` command: help, the subcommand registry, `minires train` on synthetic
data (metrics, curve, checkpoint, resume) and clear errors for bad options.

Training runs use cifar_resnet(8) and batches of 32 to stay fast on a CPU; the default resnet20
with batches of 128 is the same code, only slower.
"""
import csv
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minires import backend
from minires.checkpoint import load_checkpoint
from minires.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--model", "resnet8", "--batch-size", "32", "--data", "synthetic", "--steps-per-epoch",
         "3", "--n-train", "256", "--n-test", "128", "--no-progress"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_writes_metrics_curve_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out)] + QUICK) == 0
    rows = read_csv(out / "metrics.csv")
    assert list(rows[0]) == ["epoch", "train_loss", "train_error", "test_error", "lr"]
    assert [row["epoch"] for row in rows] == ["1"] and float(rows[0]["lr"]) == 0.1
    assert (out / "metrics.json").stat().st_size > 0
    assert (out / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
    assert load_checkpoint(out / "checkpoint.npz")["meta"]["step"] == 3
    assert str(out) in capsys.readouterr().out


def test_train_resume_goes_on(tmp_path):
    out = str(tmp_path)
    main(["train", "--epochs", "1", "--out", out] + QUICK)
    main(["train", "--epochs", "2", "--out", out, "--resume"] + QUICK)
    assert [row["epoch"] for row in read_csv(tmp_path / "metrics.csv")] == ["1", "2"]
    assert load_checkpoint(tmp_path / "checkpoint.npz")["meta"]["step"] == 6


def test_resume_without_checkpoint_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint at"):
        main(["train", "--epochs", "1", "--out", str(tmp_path), "--resume"] + QUICK)


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--steps-per-epoch" in capsys.readouterr().out


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="minires train: unknown model 'vgg16'"):
        main(["train", "--model", "vgg16", "--data", "synthetic", "--out", str(tmp_path)])


def test_cuda_without_cupy_says_which_package_to_install(tmp_path, without_cuda):
    with pytest.raises(SystemExit, match="needs CuPy and a GPU") as info:
        main(["train", "--device", "cuda", "--data", "synthetic", "--out", str(tmp_path)])
    for advice in ("cupy-cuda12x", "cupy-cuda13x", "nvidia-smi"):
        assert advice in str(info.value), str(info.value)


def test_every_subcommand_module_has_its_functions():
    for command in SUBCOMMANDS:
        module = importlib.import_module(command.module)
        assert callable(getattr(module, command.add_arguments)), command
        assert callable(getattr(module, command.run)), command


def test_python_dash_m_minires():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "minires", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "train" in result.stdout
