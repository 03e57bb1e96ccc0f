"""Tests for the `minires` command: help, the subcommand registry, `minires train` on synthetic
data (metrics, curve, checkpoint, resume), and one-line errors (exit status 1, no traceback) for
every user mistake: changed settings on resume, a checkpoint of another model, a corrupt
checkpoint, a diverging run, bad labels in CIFAR-10 files, bad option values.

Training runs use cifar_resnet(8), batches of 32 and 3 steps per epoch to stay fast on a CPU; the
default resnet20 with batches of 128 is the same code, only slower.
"""
import contextlib
import csv
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minires import backend
from minires.checkpoint import load_checkpoint
from minires.cli import SUBCOMMANDS, main
from minires.data import cifar10

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--model", "resnet8", "--batch-size", "32", "--data", "synthetic", "--steps-per-epoch",
         "3", "--n-train", "256", "--n-test", "64", "--no-progress"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train(out, *options):
    """`minires train --out OUT ...QUICK... OPTIONS` in this process; returns the exit code."""
    return main(["train", "--out", str(out)] + QUICK + list(options))


def refused(out, *options):
    """The one-line message of a `minires train` that must fail (SystemExit with a message)."""
    with pytest.raises(SystemExit) as exit_info:
        train(out, *options)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("minires train: "), message
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A finished 1-epoch run (3 steps) to resume from; tests that only get refused share it."""
    out = tmp_path_factory.mktemp("one_epoch")
    assert train(out, "--epochs", "1") == 0
    return out


def test_train_writes_metrics_curve_and_checkpoint(one_epoch):
    rows = read_csv(one_epoch / "metrics.csv")
    assert list(rows[0]) == ["epoch", "train_loss", "train_error", "test_error", "lr", "note"]
    assert [row["epoch"] for row in rows] == ["1"] and float(rows[0]["lr"]) == 0.1
    assert (one_epoch / "metrics.json").stat().st_size > 0
    assert (one_epoch / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
    sections = load_checkpoint(one_epoch / "checkpoint.npz")
    assert sections["meta"]["step"] == 3
    config = sections["config"]
    assert (config["model"], config["data"], config["seed"], config["lr"]) == \
        ("resnet8", "synthetic", 0, 0.1)
    assert (config["batch_size"], config["steps_per_epoch"], config["augment"]) == (32, 3, True)
    assert list(config["schedule.milestones"]) == [1, 1]


# ---------------------------------------------------------------- resume

def test_more_epochs_need_the_flag_and_are_noted(tmp_path, capsys):
    assert train(tmp_path, "--epochs", "1") == 0
    message = refused(tmp_path, "--epochs", "2", "--resume")
    assert "epochs: 1 in the checkpoint, 2 now" in message and "--allow-change epochs" in message
    assert train(tmp_path, "--epochs", "2", "--resume", "--allow-change", "epochs") == 0
    assert "resuming from" in capsys.readouterr().out
    rows = read_csv(tmp_path / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert [row["note"] for row in rows] == ["", "epochs 1 -> 2"]
    assert float(rows[1]["lr"]) == pytest.approx(0.001)  # the 1-epoch schedule goes on: 0.1/100
    assert load_checkpoint(tmp_path / "checkpoint.npz")["meta"]["step"] == 6
    capsys.readouterr()
    assert train(tmp_path, "--epochs", "2", "--resume") == 0  # the new setting is now the run's
    assert len(read_csv(tmp_path / "metrics.csv")) == 2
    out = capsys.readouterr().out  # a finished run is said to be finished, not "resumed"
    assert "holds a finished run (epoch 2 of 2, step 6)" in out and "resuming" not in out


def test_resume_on_an_empty_folder_starts_fresh(tmp_path, capsys):
    assert train(tmp_path / "new", "--epochs", "1", "--resume") == 0
    assert f"no checkpoint at {tmp_path / 'new' / 'checkpoint.npz'}, starting a fresh run" in \
        capsys.readouterr().out
    assert load_checkpoint(tmp_path / "new" / "checkpoint.npz")["meta"]["step"] == 3


@pytest.mark.parametrize("option, value, expected", [
    ("--lr", "0.05", "lr: 0.1 in the checkpoint, 0.05 now"),
    ("--seed", "1", "seed: 0 in the checkpoint, 1 now"),
    ("--batch-size", "16", "batch_size: 32 in the checkpoint, 16 now"),
    ("--model", "resnet14", "model: 'resnet8' in the checkpoint, 'resnet14' now"),
    ("--steps-per-epoch", "2", "steps_per_epoch: 3 in the checkpoint, 2 now"),
    ("--no-augment", None, "augment: True in the checkpoint, False now"),
    ("--n-train", "128", "train_size: 256 in the checkpoint, 128 now"),
    ("--n-test", "32", "test_size: 64 in the checkpoint, 32 now"),
])
def test_changed_settings_are_refused(one_epoch, option, value, expected):
    before = (one_epoch / "checkpoint.npz").read_bytes()
    message = refused(one_epoch, "--epochs", "1", "--resume", option, *([value] if value else []))
    assert expected in message and "start a new run in another folder" in message
    assert (one_epoch / "checkpoint.npz").read_bytes() == before


def test_a_corrupt_checkpoint_is_one_line(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip file")
    assert "is not a readable minires checkpoint" in refused(tmp_path, "--epochs", "1",
                                                             "--resume")


def test_allow_change_needs_resume(tmp_path):
    assert "--allow-change only means something with --resume" in refused(
        tmp_path, "--epochs", "1", "--allow-change", "epochs")


# ---------------------------------------------------------------- divergence

def overflow_warnings():
    """NumPy warns as the weights overflow, before the stop; a GPU (and the CuPy stand-in)
    computes inf and NaN silently."""
    on_cpu = backend.default_device() == "cpu"
    return pytest.warns(RuntimeWarning) if on_cpu else contextlib.nullcontext()


def test_divergence_stops_keeps_the_checkpoint_and_can_be_allowed(tmp_path):
    """lr 10000: the run stops with a message; the checkpoint stays the last finite one.
    --allow-nonfinite trains on and writes non-finite checkpoints; a guarded resume refuses them."""
    diverge = ["--lr", "10000", "--n-test", "32", "--epochs", "3"]
    with overflow_warnings():
        message = refused(tmp_path, *diverge)
    assert "training diverged in epoch" in message and "--allow-nonfinite" in message
    sections = load_checkpoint(tmp_path / "checkpoint.npz")
    done = int(sections["meta"]["step"])
    assert done == 3 and "(step 3), is kept" in message  # diverges in epoch 2 (step 4)
    assert all(np.isfinite(v).all() for v in sections["model"].values() if v.dtype.kind == "f")

    with overflow_warnings():
        assert train(tmp_path, *diverge, "--resume", "--allow-nonfinite") == 0
    model = load_checkpoint(tmp_path / "checkpoint.npz")["model"]
    assert not all(np.isfinite(v).all() for v in model.values() if v.dtype.kind == "f")
    assert "holds NaN or Inf" in refused(tmp_path, *diverge, "--resume")


# ---------------------------------------------------------------- data errors

def test_bad_label_in_cifar_files_is_one_line(tmp_path, monkeypatch):
    """A CIFAR-10 record with label byte 200 stops `minires train --data cifar10`."""
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", 2)
    folder = tmp_path / cifar10.FOLDER_NAME
    folder.mkdir()
    for name in cifar10.TRAIN_FILES + (cifar10.TEST_FILE,):
        records = np.zeros((2, cifar10.RECORD_BYTES), dtype=np.uint8)
        records[1, 0] = 200 if name == cifar10.TRAIN_FILES[2] else 3
        (folder / name).write_bytes(records.tobytes())
    with pytest.raises(SystemExit, match=r"data_batch_3.bin: record 1 has label 200"):
        main(["train", "--data", "cifar10", "--data-root", str(tmp_path), "--out",
              str(tmp_path / "run"), "--no-progress"])


# ---------------------------------------------------------------- no tracebacks

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minires", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.cpu_only  # the command in a subprocess (its cuda runs: the gpu_check dry run)
def test_errors_print_one_line_and_exit_nonzero(one_epoch, tmp_path):
    """Through the real command: an error line on stderr, exit status 1 (argparse: 2)."""
    shutil.copy(one_epoch / "checkpoint.npz", tmp_path / "checkpoint.npz")
    result = run_cli("train", "--out", str(tmp_path), *QUICK, "--epochs", "1", "--resume",
                     "--lr", "0.05", "--seed", "3")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("minires train: ") and result.stderr.count("\n") == 1
    assert "lr: 0.1 in the checkpoint, 0.05 now; seed: 0 in the checkpoint, 3 now" \
        in result.stderr
    result = run_cli("train", "--batch-size", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--batch-size: must be an integer >= 1, got 0" in result.stderr


# ---------------------------------------------------------------- the command itself

def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--steps-per-epoch" in out and "--allow-change" in out and "--allow-nonfinite" in out


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="minires train: unknown model 'vgg16'"):
        main(["train", "--model", "vgg16", "--data", "synthetic", "--out", str(tmp_path)])


def test_cuda_without_cupy_says_which_package_to_install(tmp_path, without_cuda):
    with pytest.raises(SystemExit, match="needs CuPy and a GPU") as info:
        main(["train", "--device", "cuda", "--data", "synthetic", "--out", str(tmp_path)])
    for advice in ("cupy-cuda12x", "cupy-cuda13x", "nvidia-smi"):
        assert advice in str(info.value), str(info.value)


def test_every_subcommand_module_has_add_arguments_and_run():
    """The one convention of cli.py: each module defines add_arguments(parser) and run(args)."""
    for command in SUBCOMMANDS:
        module = importlib.import_module(command.module)
        assert callable(module.add_arguments) and callable(module.run), command


def test_train_library_keeps_its_public_names():
    """Tutorials and users import these from minires.train; the CLI moved, they did not."""
    import minires.train as library
    for name in ("train", "Trainer", "paper_recipe", "evaluate", "train_step", "write_metrics",
                 "plot_learning_curve", "COLUMNS", "CHECKPOINT_NAME"):
        assert hasattr(library, name), name


def test_python_dash_m_minires():
    result = run_cli("--help")
    assert result.returncode == 0 and "train" in result.stdout
