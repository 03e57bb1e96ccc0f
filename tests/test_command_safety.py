"""Runs that never lose data (issue 24): every `minires` command locks, refuses and explains.

- two commands on one output folder: the second is refused at once, naming the folder and the
  first one's pid; the first finishes and its files are all its own;
- a folder holding a run is refused without --resume, nothing on disk changes; --overwrite moves
  the old files aside, byte for byte;
- 0 is never "the default": each count of 0 is refused, and config.json is written only once a
  run can start;
- every failure is one line, never a traceback: an output folder that is a file, unwritable, or on
  a full disk, for train, degradation, gradients and `assignment grade --json`;
- Ctrl-C at a random moment (SIGINT to the real command): one line, exit status 130, every file
  whole, and --resume ends bit for bit where the uninterrupted run ends.

The commands run with cifar_resnet(8) on a few synthetic images; the subprocess tests take a few
seconds each.
"""
import csv
import errno
import fcntl
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minires.checkpoint import load_checkpoint
from minires.cli import main
from minires.commands.common import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--model", "resnet8", "--batch-size", "32", "--data", "synthetic", "--steps-per-epoch",
         "3", "--n-train", "256", "--n-test", "64", "--no-progress"]
TINY_DEGRADATION = ["--preset", "quick", "--depths", "8", "--epochs", "1", "--n-train", "64",
                    "--n-test", "32", "--width", "4", "--batch-size", "32", "--no-progress",
                    "--data", "synthetic", "--device", "cpu"]
UNWRITABLE = Path("/sys/minires-test-out")  # refused to every user, root included


def command(*args):
    """`python -m minires ARGS` as a child process (stdout and stderr piped, text)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "minires", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def refusal(*args):
    """The SystemExit message of `minires ARGS` run in this process (it must fail with one)."""
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    message = stop.value.code
    assert isinstance(message, str), message
    assert "\n" not in message and "Traceback" not in message, message
    return message


def one_line_failure(returncode, err, prefix, status=1):
    assert returncode == status, err
    assert "Traceback" not in err, err
    assert err.startswith(prefix) and err.count("\n") == 1, err


def wait_for_lock(folder, process, timeout=120):
    """Wait until `process` holds the output folder's lock (it is then past its imports)."""
    deadline = time.monotonic() + timeout
    path = Path(folder) / LOCK_NAME
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if path.exists():
            with open(path, "rb") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
                fcntl.flock(f, fcntl.LOCK_UN)
        time.sleep(0.02)
    raise AssertionError("the command never took the lock")


def wait_for_text(process, text, timeout=120):
    """Read the process's stderr until `text` appears; returns what was read."""
    seen, deadline = b"", time.monotonic() + timeout
    while text.encode() not in seen:
        assert time.monotonic() < deadline and process.poll() is None, seen
        ready, _, _ = select.select([process.stderr], [], [], 0.1)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096)
    return seen.decode()


def files_of(folder):
    """{relative path: bytes} of every file under `folder` (the lock file aside)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_whole_run(folder):
    """Every file of a train run parses, and the metrics agree with the checkpoint."""
    sections = load_checkpoint(folder / "checkpoint.npz")
    epochs = int(sections["meta"]["epoch"])
    rows = read_rows(folder / "metrics.csv") if (folder / "metrics.csv").exists() else []
    assert len(rows) in (epochs, epochs + 1)  # a Ctrl-C may fall between metrics and checkpoint
    if rows:
        assert json.loads((folder / "metrics.json").read_text())[-1]["epoch"] == len(rows)
        assert (folder / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
    assert not list(folder.glob(".*.tmp"))
    return sections


# ---------------------------------------------------------------- one folder, one run

@pytest.mark.cpu_only
def test_a_second_command_on_a_busy_folder_is_refused_at_once(tmp_path):
    """Two trainings into one folder: the second is refused while the first runs, naming the
    folder and the first one's pid; the first finishes, and every file is from its run."""
    first = command("train", "--out", str(tmp_path), *QUICK, "--epochs", "5", "--lr", "0.1")
    wait_for_lock(tmp_path, first)
    for args in (["train", "--out", str(tmp_path), *QUICK, "--epochs", "3", "--lr", "0.05"],
                 ["degradation", "--out", str(tmp_path), *TINY_DEGRADATION]):
        message = refusal(*args)
        assert f"{tmp_path} is in use by another minires command (pid {first.pid})" in message
    returncode, _, err = finished(first)
    assert returncode == 0, err
    sections = assert_whole_run(tmp_path)
    assert int(sections["meta"]["step"]) == 15 and float(sections["config"]["lr"]) == 0.1
    rows = read_rows(tmp_path / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert [float(row["lr"]) for row in rows] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.001])


def test_a_finished_run_is_not_replaced_silently(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *QUICK, "--epochs", "2"]) == 0
    before = files_of(out)
    message = refusal("train", "--out", str(out), *QUICK, "--epochs", "1")
    assert message.startswith(f"minires train: {out} holds a run (checkpoint.npz, metrics.csv")
    for words in ("its checkpoint is at step 6, 2 epoch(s) done", "--resume", "another --out",
                  "--overwrite to move its files aside"):
        assert words in message
    assert files_of(out) == before
    message = refusal("degradation", "--out", str(out), *TINY_DEGRADATION, "--overwrite",
                      "--resume")
    assert "pass one of them" in message
    assert files_of(out) == before


def test_overwrite_moves_the_old_files_aside(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *QUICK, "--epochs", "2"]) == 0
    before = files_of(out)
    assert main(["train", "--out", str(out), *QUICK, "--epochs", "1", "--overwrite"]) == 0
    [aside] = list(out.glob("replaced-*"))
    assert f"moved the old run's files to {aside}" in capsys.readouterr().out
    assert files_of(aside) == before
    assert int(load_checkpoint(out / "checkpoint.npz")["meta"]["step"]) == 3


def test_a_degradation_folder_needs_resume(tmp_path, capsys):
    out = tmp_path / "fig6"
    assert main(["degradation", "--out", str(out), *TINY_DEGRADATION]) == 0
    before = files_of(out)
    message = refusal("degradation", "--out", str(out), *TINY_DEGRADATION)
    assert message.startswith(f"minires degradation: {out} holds a run (config.json, curves.csv")
    assert "plain-8 at step 2" in message and "--resume" in message
    assert files_of(out) == before
    assert main(["degradation", "--out", str(out), *TINY_DEGRADATION, "--resume"]) == 0
    assert files_of(out)["curves.csv"] == before["curves.csv"]


# ---------------------------------------------------------------- settings are what they say

@pytest.mark.parametrize("command_name, option", [
    ("degradation", "--n-train"), ("degradation", "--n-test"), ("degradation", "--epochs"),
    ("degradation", "--batch-size"), ("train", "--epochs"), ("train", "--batch-size"),
    ("train", "--n-train"), ("train", "--n-test")])
def test_zero_is_refused_not_taken_for_the_default(tmp_path, capsys, command_name, option):
    base = TINY_DEGRADATION if command_name == "degradation" else QUICK
    args = [command_name, "--out", str(tmp_path / "out"), *base]
    if option in args:
        args[args.index(option) + 1] = "0"
    else:
        args += [option, "0"]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert f"argument {option}: must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting", ["n_train", "n_test", "epochs", "batch_size", "width"])
def test_the_library_refuses_zero_too(tmp_path, setting):
    from minires.degradation import run_degradation

    settings = dict(depths=(8,), epochs=1, n_train=64, n_test=32, width=4, batch_size=32)
    settings[setting] = 0
    with pytest.raises(ValueError, match=f"^degradation: {setting} must be an integer >= 1, "
                                         "got 0$"):
        run_degradation(tmp_path, "quick", progress=False, **settings)
    assert not (tmp_path / "config.json").exists()


def test_a_failed_start_leaves_nothing_that_blocks_the_rerun(tmp_path, monkeypatch, capsys):
    """No data: one line, no config.json, no run files; the corrected command then runs."""
    from minires.data import DatasetNotFound
    from minires.degradation import experiment

    def no_cifar(*args, **kwargs):
        raise DatasetNotFound("CIFAR-10 not found in /nowhere")
    monkeypatch.setattr(experiment, "load_cifar10", no_cifar)
    out = tmp_path / "fig6"
    args = ["degradation", "--out", str(out), *TINY_DEGRADATION]
    message = refusal(*[a if a != "synthetic" else "cifar10" for a in args])
    assert message == "minires degradation: CIFAR-10 not found in /nowhere"
    assert files_of(out) == {}
    assert main(args) == 0


def test_the_error_prefix_is_not_doubled(tmp_path):
    message = refusal("degradation", "--out", str(tmp_path), *TINY_DEGRADATION,
                      "--depths", "8", "10")
    assert message.startswith("minires degradation: cifar_resnet: depth 10"), message
    assert "degradation: degradation:" not in message


def test_progress_bars_name_the_net_and_the_epoch(tmp_path, capsys):
    args = [a for a in TINY_DEGRADATION if a != "--no-progress"]
    assert main(["degradation", "--out", str(tmp_path), *args]) == 0
    err = capsys.readouterr().err
    for net in ("plain-8", "ResNet-8"):
        assert f"{net} epoch 1/1" in err


# ---------------------------------------------------------------- one line, never a traceback

@pytest.mark.cpu_only
@pytest.mark.parametrize("args, prefix", [
    (["train", *QUICK, "--epochs", "1"], "minires train: "),
    (["degradation", *TINY_DEGRADATION], "minires degradation: "),
    (["gradients", "--depths", "8", "--batch-size", "4", "--data", "synthetic"],
     "minires gradients: "),
])
def test_an_unusable_output_folder_is_one_line_before_any_work(tmp_path, args, prefix):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for out, reason in ((a_file, "File exists"), (a_file / "below", "Not a directory"),
                        (UNWRITABLE, "")):
        returncode, _, err = finished(command(*args[:1], "--out", str(out), *args[1:]))
        one_line_failure(returncode, err, f"{prefix}cannot write")
        assert str(out) in err or str(out.parent) in err, err
        assert reason in err, err
    assert a_file.read_text() == "not a folder"


def test_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """The disk fills while `gradients` writes (simulated: the CSV write fails with ENOSPC)."""
    import minires.inspect

    def disk_full(runs, layers, blocks):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(layers))
    monkeypatch.setattr(minires.inspect, "write_csv", disk_full)
    out = tmp_path / "grads"
    message = refusal("gradients", "--depths", "8", "--batch-size", "4", "--data", "synthetic",
                      "--out", str(out))
    assert message == (f"minires gradients: cannot write {out / 'layers.csv'}: No space left on "
                       "device")


def test_a_full_disk_in_training_is_one_line(tmp_path, monkeypatch):
    """The disk is full from the start (the folder check's fsync fails), or fills after it (the
    first metrics file's): one line naming the folder, or the file."""
    from minires import checkpoint

    fsync, calls = os.fsync, []

    def full_after(allowed):
        def disk_full(descriptor):
            calls.append(descriptor)
            if len(calls) > allowed:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            fsync(descriptor)
        return disk_full
    out = tmp_path / "run"
    for allowed, path in ((0, out), (1, out / "metrics.csv")):
        calls.clear()
        monkeypatch.setattr(checkpoint.os, "fsync", full_after(allowed))
        message = refusal("train", "--out", str(out), *QUICK, "--epochs", "1")
        assert message == f"minires train: cannot write {path}: No space left on device"
        assert not list(out.glob("*.tmp")) and not (out / "metrics.csv").exists()


def test_a_negative_seed_is_refused_by_the_parser(capsys):
    for name in ("gradients", "train", "degradation"):
        with pytest.raises(SystemExit) as stop:
            main([name, "--seed", "-1"])
        assert stop.value.code == 2
        assert "argument --seed: must be an integer >= 0, got -1" in capsys.readouterr().err


@pytest.mark.cpu_only
def test_assignment_grade_json_to_an_unwritable_place_is_one_line(tmp_path):
    workspace = tmp_path / "hw"
    assert finished(command("assignment", "make", "conv", "--out", str(workspace)))[0] == 0
    returncode, _, err = finished(command("assignment", "grade", str(workspace), "--assignment",
                                          "conv", "--json", str(UNWRITABLE / "results.json")))
    one_line_failure(returncode, err, f"minires assignment: cannot write {UNWRITABLE}")


# ---------------------------------------------------------------- Ctrl-C

def interrupt_at_a_random_moment(process, folder, longest):
    """SIGINT to `process` a random time (0..longest s) after it holds the folder's lock."""
    wait_for_lock(folder, process)
    delay = random.uniform(0, longest)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    return delay


def model_and_optimizer(path):
    sections = load_checkpoint(path)
    return {f"{name}/{key}": np.asarray(value) for name in ("model", "optimizer", "meta",
                                                            "metrics", "rng", "loader")
            for key, value in sections[name].items()}


@pytest.mark.cpu_only
@pytest.mark.slow
def test_ctrl_c_in_training_saves_and_resume_is_bit_identical(tmp_path):
    """SIGINT at a random moment: one line, exit 130, every file whole; --resume then ends with
    the same checkpoint, bit for bit, as a run never interrupted."""
    args = [*QUICK, "--epochs", "4"]
    straight = tmp_path / "straight"
    assert finished(command("train", "--out", str(straight), *args))[0] == 0
    expected = model_and_optimizer(straight / "checkpoint.npz")

    stopped = tmp_path / "stopped"
    process = command("train", "--out", str(stopped), *args)
    delay = interrupt_at_a_random_moment(process, stopped, longest=2.0)
    returncode, _, err = finished(process)
    if returncode == 0:
        pytest.skip(f"the run finished before the SIGINT at {delay:.2f} s")
    one_line_failure(returncode, err, "minires train: interrupted; ", status=130)
    assert "--resume" in err or "no checkpoint was written" in err, err
    if (stopped / "checkpoint.npz").exists():
        assert_whole_run(stopped)
    resume = ["--resume"] if (stopped / "checkpoint.npz").exists() else []
    returncode, _, err = finished(command("train", "--out", str(stopped), *args, *resume))
    assert returncode == 0, f"{err} (SIGINT after {delay:.2f} s)"
    actual = model_and_optimizer(stopped / "checkpoint.npz")
    different = [k for k in expected if not np.array_equal(actual[k], expected[k])]
    assert sorted(actual) == sorted(expected) and not different, (different, delay)
    assert read_rows(stopped / "metrics.csv") == read_rows(straight / "metrics.csv")


@pytest.mark.cpu_only
@pytest.mark.parametrize("name, args", [
    ("degradation", TINY_DEGRADATION[:5] + ["3"] + TINY_DEGRADATION[6:]),
    ("gradients", ["--depths", "8", "20", "56", "--batch-size", "8", "--data", "synthetic"]),
])
def test_ctrl_c_in_the_other_commands_is_one_line(tmp_path, name, args):
    out = tmp_path / "out"
    process = command(name, "--out", str(out), *args)
    early = ""
    if name == "degradation":
        interrupt_at_a_random_moment(process, out, longest=1.0)
    else:  # gradients takes no lock (it makes its folder at the end): wait for its progress bar
        early = wait_for_text(process, "plain and residual nets")
        time.sleep(random.uniform(0, 1.0))
        process.send_signal(signal.SIGINT)
    returncode, _, err = finished(process)
    err = early + err
    if returncode == 0:
        pytest.skip("the command finished before the SIGINT")
    one_line_failure(returncode, err.splitlines()[-1] + "\n", f"minires {name}: interrupted; ",
                     status=130)
    assert "Traceback" not in err
    if name == "degradation" and (out / "curves.csv").exists():
        read_rows(out / "curves.csv")
