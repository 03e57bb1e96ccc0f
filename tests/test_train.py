"""Tests for minires.train and minires.checkpoint: exact resume, atomic and pickle-free checkpoints,
a training run that learns, and the metrics files it writes; the divergence guard, run settings
that a resume must share, every checkpoint field checked on load, and clean files.

Everything runs on the CPU with small networks (cifar_resnet(8)) on small synthetic images, so the
whole file takes seconds.
"""
import csv
import io
import itertools
import json
import os
import re
import struct
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import minires
from minires import backend, checkpoint
from minires.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minires.data import DataLoader, synthetic_cifar
from minires.models import cifar_resnet
from minires.optim import SGD
from minires.optim.lr_scheduler import MultiStepLR
from minires.train import COLUMNS, Trainer, evaluate, paper_recipe, train, train_step

DATA = synthetic_cifar(48, 16, image_size=16, seed=0)  # 3 batches of 16 per epoch


def make_trainer(seed, data=DATA, epochs=2, batch_size=16, milestones=(1,), fused=False,
                 **kwargs):
    """Fresh model, SGD (momentum + weight decay), MultiStepLR and augmenting loader from `seed`.

    By default the lr drops after epoch 1, so a run of 4 steps (3 per epoch) crosses an epoch end,
    an evaluation and a schedule step.
    """
    minires.manual_seed(seed)
    model = cifar_resnet(8)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, fused=fused)
    scheduler = MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    train_loader = DataLoader(data.x_train, data.y_train, batch_size, shuffle=True,
                              augment=True, seed=seed)
    test_loader = DataLoader(data.x_test, data.y_test, batch_size, shuffle=False)
    return Trainer(model, optimizer, train_loader, test_loader, epochs, scheduler,
                   progress=False, **kwargs)


def snapshot(trainer):
    """Every number a resumed run must reproduce, as {name: NumPy array}."""
    state = {f"model/{k}": v for k, v in trainer.model.state_dict().items()}
    for name in ("optimizer", "scheduler"):
        flat = getattr(trainer, name).state_dict()
        state.update({f"{name}/{k}": np.asarray(v) for k, v in flat.items()})
    state.update({f"loader/{k}": v for k, v in trainer.train_loader.state_dict().items()})
    state["rng/keys"] = np.random.get_state()[1]
    state["counters"] = np.array([trainer.epoch, trainer.step, trainer.batch])
    state["history"] = np.array([[row[c] for c in COLUMNS] for row in trainer.history])
    return state


def assert_same(actual, expected):
    assert sorted(actual) == sorted(expected)
    different = [k for k in expected if not np.array_equal(actual[k], expected[k])]
    assert not different, f"not bit-identical after resume: {different}"


# ---------------------------------------------------------------- exact resume

@pytest.mark.parametrize("split", [2, 3], ids=["mid-epoch", "epoch-end"])
def test_resume_is_bit_exact(tmp_path, split):
    """4 steps == `split` steps + save + load into fresh objects + the rest, bit for bit."""
    straight = make_trainer(seed=0)
    straight.run(max_steps=4)
    expected = snapshot(straight)  # now: NumPy's global RNG is shared by all trainers

    first = make_trainer(seed=0)
    first.run(max_steps=split)
    first.save(tmp_path / "ck.npz")
    np.random.seed(12345)  # anything the checkpoint does not restore would now differ
    resumed = make_trainer(seed=7)  # other init, other loader seed: the checkpoint must win
    resumed.load(tmp_path / "ck.npz")
    assert (resumed.step, resumed.batch) == (split, split % 3)
    resumed.run(max_steps=4)

    assert resumed.step == 4
    assert_same(snapshot(resumed), expected)


def test_run_can_go_on_in_the_same_process():
    """run(max_steps=2) then run(max_steps=4) on one Trainer equals run(max_steps=4)."""
    straight = make_trainer(seed=0)
    straight.run(max_steps=4)
    expected = snapshot(straight)
    stepwise = make_trainer(seed=0)
    stepwise.run(max_steps=2)
    stepwise.run(max_steps=4)
    assert_same(snapshot(stepwise), expected)


def test_train_resume_from_out_dir(tmp_path):
    """train(..., resume=True) goes on from out_dir/checkpoint.npz to the full run's numbers."""
    straight = make_trainer(seed=0)
    straight.run()
    first = make_trainer(seed=0, out_dir=tmp_path)
    first.run(max_steps=4)  # stops in epoch 2 and leaves a checkpoint
    resumed = make_trainer(seed=1)
    history = train(resumed.model, resumed.optimizer, resumed.train_loader, resumed.test_loader,
                    epochs=2, scheduler=resumed.scheduler, out_dir=tmp_path, resume=True,
                    progress=False)
    assert history == straight.history
    assert_same(load_checkpoint(tmp_path / "checkpoint.npz")["model"], straight.model.state_dict())


def test_resume_needs_a_matching_scheduler(tmp_path):
    trainer = make_trainer(seed=0)
    trainer.save(tmp_path / "ck.npz")
    other = make_trainer(seed=0)
    other.scheduler = None
    with pytest.raises(ValueError, match="schedule"):
        other.load(tmp_path / "ck.npz")


# ---------------------------------------------------------------- checkpoint files

def test_checkpoint_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "ck.npz", model={"conv1.weight": np.ones((2, 3), np.float32)},
                           meta={"epoch": 3, "lr": 0.1, "name": "resnet20"})
    with np.load(path, allow_pickle=False) as raw:  # plain NumPy can read it, keys namespaced
        assert "model/conv1.weight" in raw.files and "meta/epoch" in raw.files
    sections = load_checkpoint(path)
    assert sections["model"]["conv1.weight"].dtype == np.float32
    assert np.array_equal(sections["model"]["conv1.weight"], np.ones((2, 3)))
    assert (sections["meta"]["epoch"], sections["meta"]["lr"]) == (3, 0.1)
    assert sections["meta"]["name"] == "resnet20"


def test_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """An error in the middle of writing leaves the previous file whole and no temporary file."""
    path = save_checkpoint(tmp_path / "ck.npz", meta={"epoch": 1})

    def half_write(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, meta={"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["meta"]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


def test_object_arrays_are_refused(tmp_path):
    """Loading uses allow_pickle=False: a file holding Python objects is rejected, not unpickled."""
    path = tmp_path / "evil.npz"
    np.savez(path, **{checkpoint.FORMAT_KEY: np.array(checkpoint.FORMAT),
                      "model/w": np.array([{"run": "code"}], dtype=object)})
    with pytest.raises(CheckpointError, match="allow_pickle=False"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="without pickle"):
        save_checkpoint(tmp_path / "ck.npz", meta={"config": {"lr": 0.1}})


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    np.savez(tmp_path / "weights.npz", w=np.ones(3))
    with pytest.raises(CheckpointError, match="not a minires checkpoint"):
        load_checkpoint(tmp_path / "weights.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz file at all")
    with pytest.raises(CheckpointError, match="not a readable minires checkpoint"):
        load_checkpoint(tmp_path / "junk.npz")


# ---------------------------------------------------------------- a run that learns

@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """3 epochs of cifar_resnet(8) on 512 learnable 16x16 synthetic images, with an out_dir."""
    out = tmp_path_factory.mktemp("run")
    data = synthetic_cifar(512, 128, image_size=16, seed=0)
    trainer = make_trainer(seed=0, data=data, epochs=3, batch_size=64, milestones=(2,), out_dir=out)
    return trainer.run(), out


def test_training_loss_falls(learned):
    history, _ = learned
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["train_error"] < history[0]["train_error"]
    assert [row["lr"] for row in history] == pytest.approx([0.05, 0.05, 0.005])


def test_metrics_files(learned):
    history, out = learned
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(COLUMNS) == ["epoch", "train_loss", "train_error", "test_error", "lr",
                                        "note"]
    assert len(rows) == 1 + len(history)
    assert json.loads((out / "metrics.json").read_text()) == history
    png = (out / "learning_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"] == 3


# ---------------------------------------------------------------- the low-level pieces

def test_train_step_and_evaluate():
    trainer = make_trainer(seed=0)
    x, y = next(iter(trainer.train_loader))
    loss = train_step(trainer.model, trainer.optimizer, x, y)
    assert isinstance(loss, float) and np.isfinite(loss)
    trainer.model.train()
    test_loss, error = evaluate(trainer.model, trainer.test_loader)
    assert trainer.model.training  # evaluate puts the model back in train mode
    assert np.isfinite(test_loss) and 0 <= error <= 100


def test_paper_recipe_divides_the_learning_rate_by_ten_at_half_and_three_quarters():
    optimizer, scheduler = paper_recipe(cifar_resnet(8), epochs=8)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 1e-4)
    lrs = []
    for _ in range(8):
        lrs.append(group["lr"])
        scheduler.step()
    np.testing.assert_allclose(lrs, [0.1] * 4 + [0.01] * 2 + [0.001] * 2)


# ---------------------------------------------------------------- the divergence guard

def parameters_and_optimizer(trainer):
    state = {name: backend.to_numpy(p.data).copy() for name, p in trainer.model.named_parameters()}
    optimizer = trainer.optimizer.state_dict()
    state.update({f"optimizer/{k}": np.asarray(v) for k, v in optimizer.items()})
    return state


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings
def test_a_nonfinite_loss_stops_before_the_update(tmp_path, device):
    """A NaN loss stops the step before the update, naming the epoch, the step and the first
    parameter whose gradient went bad; the parameters and the checkpoint on disk stay finite."""
    trainer = make_trainer(seed=0, out_dir=tmp_path, device=device)
    trainer.run(max_steps=3)                            # epoch 1 done: checkpoint at step 3
    trainer.model.conv1.weight.data *= 1e38             # the next forward overflows to NaN
    before = parameters_and_optimizer(trainer)
    with pytest.raises(minires.train.DivergenceError) as err:
        trainer.run()
    message = str(err.value)
    assert message.startswith("training diverged in epoch 2, step 4 (batch 1 of 3): the loss is")
    assert "the gradient of 'conv1.weight' is the first non-finite one" in message
    assert "(step 3), is kept" in message and "minires.detect_anomaly()" in message
    assert_same(parameters_and_optimizer(trainer), before)  # the failed step did not update
    saved = load_checkpoint(tmp_path / "checkpoint.npz")
    assert saved["meta"]["step"] == 3 and np.isfinite(saved["model"]["conv1.weight"]).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_an_update_that_overflows_is_not_applied_and_never_saved(tmp_path):
    """An update that would make a parameter non-finite is undone on the device; the run stops at
    the next read, and nothing is written from then on."""
    trainer = make_trainer(seed=0, out_dir=tmp_path)
    trainer.run(max_steps=3)
    written = (tmp_path / "checkpoint.npz").read_bytes()
    trainer.optimizer.param_groups[0]["lr"] = np.inf
    before = parameters_and_optimizer(trainer)
    with pytest.raises(minires.train.DivergenceError, match=r"epoch 2, step 4 .*the update would "
                       r"make 'conv1.weight' non-finite \(lr inf\), so it was not applied"):
        trainer.run()
    assert_same(parameters_and_optimizer(trainer), before)
    with pytest.raises(minires.train.DivergenceError, match="not writing .*training diverged"):
        trainer.save()
    assert (tmp_path / "checkpoint.npz").read_bytes() == written


@pytest.mark.parametrize("fused", [False, True], ids=["per-parameter", "fused"])
def test_an_infinite_gradient_with_a_finite_loss_stops_before_the_update(monkeypatch, fused):
    """The guard reads the gradients, not only the loss: one infinite gradient entry (the loss
    finite) and the parameters and optimizer state stay exactly as they were (with a fused
    optimizer the guard saves and restores its flat buffers, not each parameter's view)."""
    trainer = make_trainer(seed=0, sync_every=1, fused=fused)
    trainer.run(max_steps=2)
    before = parameters_and_optimizer(trainer)
    backward = minires.Tensor.backward

    def backward_then_poison(self, *args, **kwargs):
        backward(self, *args, **kwargs)
        trainer.model.fc.weight.grad.data[0, 0] = np.inf
    monkeypatch.setattr(minires.Tensor, "backward", backward_then_poison)
    with pytest.raises(minires.train.DivergenceError) as err:
        trainer.run()
    message = str(err.value)
    assert "step 3 (batch 3 of 3)" in message
    assert re.search(r"the loss is \d", message), message  # finite
    assert "the gradient of 'fc.weight' is the first non-finite one" in message
    assert_same(parameters_and_optimizer(trainer), before)
    assert np.isfinite(backend.to_numpy(trainer.model.fc.weight.data)).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_the_guard_is_read_every_sync_every_steps_and_names_the_first_bad_step():
    """With sync_every=3 a NaN at step 4 is found when the flags are read (end of epoch 2, step
    6), and the message names step 4; steps 5 and 6 changed nothing either."""
    trainer = make_trainer(seed=0, sync_every=3, epochs=3)
    trainer.run(max_steps=3)
    trainer.model.conv1.weight.data *= 1e38
    before = parameters_and_optimizer(trainer)
    with pytest.raises(minires.train.DivergenceError, match=r"epoch 2, step 4 \(batch 1 of 3\)"):
        trainer.run()
    assert trainer.step == 6
    assert_same(parameters_and_optimizer(trainer), before)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_allow_nonfinite_trains_on_and_saves(tmp_path):
    """The opt-out, for studying divergence: no stop, non-finite checkpoints written and read."""
    trainer = make_trainer(seed=0, out_dir=tmp_path, allow_nonfinite=True)
    trainer.model.conv1.weight.data *= 1e38
    history = trainer.run(max_steps=4)
    assert np.isnan(history[0]["train_loss"]) and trainer.step == 4
    with pytest.raises(CheckpointError, match="holds NaN or Inf.*allow_nonfinite=True"):
        make_trainer(seed=0).load(tmp_path / "checkpoint.npz")
    make_trainer(seed=0, allow_nonfinite=True).load(tmp_path / "checkpoint.npz")


# ---------------------------------------------------------------- settings live in the checkpoint

def test_changed_settings_are_refused_naming_each(tmp_path):
    make_trainer(seed=0, out_dir=tmp_path, config={"seed": 0}).run(max_steps=4)
    minires.manual_seed(0)
    model = cifar_resnet(8)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    other = Trainer(model, optimizer,
                    DataLoader(DATA.x_train, DATA.y_train, 8, augment=True, seed=0),
                    DataLoader(DATA.x_test, DATA.y_test, 16, shuffle=False), 2,
                    MultiStepLR(optimizer, milestones=(1,)), progress=False, config={"seed": 1})
    with pytest.raises(minires.train.SettingsChanged) as err:
        other.load(tmp_path / "checkpoint.npz")
    message = str(err.value)
    for expected in ("batch_size: 16 in the checkpoint, 8 now",
                     "lr: 0.05 in the checkpoint, 0.1 now",
                     "seed: 0 in the checkpoint, 1 now",
                     "steps_per_epoch: 3 in the checkpoint, 6 now"):
        assert expected in message
    assert "\n" not in message and other.step == 0  # refused before anything changed


def test_a_different_steps_per_epoch_is_refused(tmp_path):
    """Resumed with other steps per epoch the old trainer spun at 'epoch 0, batch 6' forever."""
    make_trainer(seed=0, out_dir=tmp_path, steps_per_epoch=3).run(max_steps=2)
    with pytest.raises(minires.train.SettingsChanged,
                       match="steps_per_epoch: 3 in the checkpoint, 2 now"):
        make_trainer(seed=0, steps_per_epoch=2).load(tmp_path / "checkpoint.npz")


def test_more_epochs_with_allow_changes_are_noted(tmp_path):
    """epochs may change when asked; the schedule stays the checkpoint's; the next row notes it."""
    make_trainer(seed=0, out_dir=tmp_path, epochs=1).run()
    with pytest.raises(minires.train.SettingsChanged, match="epochs: 1 in the checkpoint, 3 now; "
                       "to change epochs pass allow_changes"):
        make_trainer(seed=0, epochs=3).load(tmp_path / "checkpoint.npz")
    more = make_trainer(seed=0, out_dir=tmp_path, epochs=3)
    more.load(allow_changes=("epochs",))
    assert more.changes == [("epochs", 1, 3)]
    history = more.run()
    assert [row["note"] for row in history] == ["", "epochs 1 -> 3", ""]
    assert make_trainer(seed=0, epochs=3).load(tmp_path / "checkpoint.npz") is None  # the run's now
    with pytest.raises(minires.train.SettingsChanged, match="completed 3 epochs, more than the 2"):
        make_trainer(seed=0, epochs=2).load(tmp_path / "checkpoint.npz", allow_changes=("epochs",))
    with pytest.raises(ValueError, match="only epochs may change on resume, not lr"):
        make_trainer(seed=0, epochs=3).load(tmp_path / "checkpoint.npz", allow_changes=("lr",))


# ---------------------------------------------------------------- every field is checked on load

@pytest.fixture(scope="module")
def saved_sections(tmp_path_factory):
    """The sections of a checkpoint taken mid-epoch (epoch 1 done, batch 1 of epoch 2)."""
    path = tmp_path_factory.mktemp("saved") / "ck.npz"
    make_trainer(seed=0).run(max_steps=4)
    trainer = make_trainer(seed=0)
    trainer.run(max_steps=4)
    trainer.save(path)
    return load_checkpoint(path)


def tampered(sections, name, value):
    """A deep copy of `sections` with field "section/key" set to `value` (or deleted: None)."""
    copy = {section: dict(values) for section, values in sections.items()}
    section, _, key = name.partition("/")
    if not key:
        del copy[section]
    elif value is None:
        del copy[section][key]
    else:
        copy.setdefault(section, {})[key] = value
    return copy


@pytest.mark.parametrize("name, value, message", [
    ("meta/batch", np.int64(10 ** 6), "meta/batch is 1000000, expected 0..2"),
    ("meta/epoch", np.int64(-5), "meta/epoch is -5, expected 0..2"),
    ("meta/step", np.int64(3), "meta/step is 3, expected 4"),
    ("meta/epoch", np.float64(1.0), "meta/epoch must be an integer, got float64 1.0"),
    ("meta/wrong", np.int64(10 ** 9), "meta/wrong is 1000000000, expected 0..16"),
    ("meta/loss_sum", np.float64(np.nan), "meta/loss_sum holds NaN or Inf"),
    ("meta/seen", None, "the checkpoint has no field meta/seen"),
    ("optimizer", None, "the checkpoint has no section 'optimizer'"),
    ("config", None, "the checkpoint has no section 'config': it comes from a minires that did "
                     "not record the run's settings"),
    ("model/fc.bias", None, r"model: the checkpoint's model is not this CifarResNet: it lacks 1 "
                            r"of this model's arrays \(first 'fc.bias'\) and has 0 others;"),
    ("model/fc.weight", np.zeros((10, 3), np.float32), r"model/fc.weight must be an array of "
                                                       r"shape \(10, 64\)"),
    ("model/conv1.weight", np.full((16, 3, 3, 3), np.inf, np.float32),
     "model/conv1.weight holds NaN or Inf"),
    ("metrics/epoch", np.array([7]), r"metrics/epoch is \[7\], expected 1..1"),
    ("metrics/lr", np.array([0.05, 0.05]), r"metrics/lr must be an array of shape \(1,\)"),
    ("rng/keys", np.zeros(3, np.uint32), r"rng/keys must be an array of shape \(624,\)"),
    ("rng/pos", np.int64(10 ** 6), "rng/pos is 1000000, expected 0..624"),
    ("scheduler/last_epoch", np.int64(7), "scheduler/last_epoch is 7, expected 1"),
    ("scheduler/milestones", np.array([9]),
     r"scheduler/milestones is \[9\], this trainer's is \[1\]"),
    ("optimizer/param_groups.0.momentum", np.float64(0.5),
     "optimizer/param_groups.0.momentum is 0.5, this trainer's is 0.9"),
    ("optimizer/param_groups.0.lr", np.float64(5.0), r"optimizer/param_groups.0.lr is 5.0, but "
                                                     r"the run's settings give 0.005\d* after 1 "
                                                     r"epoch"),
    ("model/bn1.running_var", np.full(16, -1e6, np.float32),
     r"model/bn1.running_var holds a negative variance \(-1e\+06\)"),
    ("model/bn1.running_mean", np.full(16, np.nan, np.float32),
     "model/bn1.running_mean holds NaN or Inf"),
    ("optimizer/state.0.momentum_buffer", np.zeros(2, np.float32),
     r"optimizer: SGD.load_state_dict: state.0.momentum_buffer has shape \(2,\)"),
    ("loader/rng_has_uint32", np.int64(5), "loader: DataLoader.load_state_dict: rng_has_uint32 "
                                           "must be 0 or 1, got 5"),
    ("extra/x", np.int64(1), "unexpected section 'extra'"),
])
def test_every_field_is_checked_and_a_bad_one_changes_nothing(saved_sections, name, value,
                                                                 message):
    """A bad field is a one-line CheckpointError naming it, and the trainer stays as it was (even
    when the error comes after the model and optimizer were loaded: the loader's state)."""
    trainer = make_trainer(seed=3)
    before = snapshot(trainer)
    with pytest.raises(CheckpointError, match=message) as err:
        trainer.load_state_dict(tampered(saved_sections, name, value))
    assert "\n" not in str(err.value)
    assert_same(snapshot(trainer), before)
    trainer.load_state_dict(saved_sections)  # the untouched sections load
    assert (trainer.epoch, trainer.batch, trainer.step) == (1, 1, 4)


def test_the_size_check_lets_a_good_checkpoint_through(saved_sections, tmp_path):
    """member_check passes every member of a real checkpoint (it refuses only what is larger
    than a checkpoint of this model can hold)."""
    path = save_checkpoint(tmp_path / "ck.npz", **saved_sections)
    trainer = make_trainer(seed=3)
    trainer.load(path)
    assert (trainer.epoch, trainer.batch, trainer.step) == (1, 1, 4)


def deflated_zeros(npy_header, chunks, chunk=1 << 24):
    """A raw deflate stream of `npy_header` and `chunks` * `chunk` zero bytes, built in well under
    a second: one compressed chunk, full-flushed (no reference back), repeated."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = head.compress(npy_header) + head.flush(zlib.Z_FULL_FLUSH)
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = zeros.compress(bytes(chunk)) + zeros.flush(zlib.Z_FULL_FLUSH)
    return stream + block * chunks + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def add_bomb(source, target, name, gib=2):
    """Copy the checkpoint `source` to `target` with member `name` (replaced or added) declaring
    `gib` GiB of float64 zeros, deflated to a few MB: a zip bomb in a checkpoint's clothing."""
    chunks = gib * 64
    shape = (chunks * (1 << 24) // 8,)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": shape})
    header = header.getvalue()
    data = deflated_zeros(header, chunks)
    crc = zlib.crc32(header)
    zero_chunk = bytes(1 << 24)
    for _ in range(chunks):
        crc = zlib.crc32(zero_chunk, crc)
    member = f"{name}.npy"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename != member:
                new.writestr(info, old.read(info))
        new.writestr(zipfile.ZipInfo(member), data)  # stored; the headers are patched below
    raw = bytearray(Path(target).read_bytes())
    size = len(header) + chunks * (1 << 24)
    for signature, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        name_at = 30 if signature == b"PK\x03\x04" else 46
        start = 0
        while True:
            start = raw.index(signature, start)
            if raw[start + name_at:start + name_at + len(member)] == member.encode():
                break
            start += 1
        struct.pack_into("<H", raw, start + method_at, zipfile.ZIP_DEFLATED)
        struct.pack_into("<III", raw, start + method_at + 6, crc, len(data), size)
    Path(target).write_bytes(bytes(raw))
    return size


@pytest.mark.parametrize("name", ["model/fc.weight", "optimizer/state.0.momentum_buffer",
                                  "meta/extra"])
def test_a_zip_bomb_is_refused_from_its_headers(saved_sections, tmp_path, name):
    """A 2 GiB member in a checkpoint of a few MB: refused from the zip and .npy headers, naming
    the member, without inflating it (memory measured with tracemalloc)."""
    good = save_checkpoint(tmp_path / "good.npz", **saved_sections)
    bomb = tmp_path / "bomb.npz"
    declared = add_bomb(good, bomb, name)
    assert declared > 2 ** 31 and bomb.stat().st_size < 5 * 2 ** 20
    with zipfile.ZipFile(bomb) as archive:  # a real bomb: zipfile inflates it without complaint
        with archive.open(f"{name}.npy") as member:
            assert member.read(1 << 20)[-1:] == b"\x00"
    trainer = make_trainer(seed=3)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=rf"{re.escape(name)} declares float64 of shape "
                                                  r"\(268435456,\) \(2147483648 bytes\)"):
            trainer.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB allocated while refusing"
    assert trainer.step == 0


def test_an_npy_header_that_lies_about_its_size_is_refused(saved_sections, tmp_path):
    """A member whose .npy header declares more data than the zip says it holds: refused."""
    good = save_checkpoint(tmp_path / "good.npz", **saved_sections)
    forged = tmp_path / "forged.npz"
    with zipfile.ZipFile(good) as old, zipfile.ZipFile(forged, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "meta/epoch.npy":
                data = data.replace(b"'shape': ()", b"'shape': (9999,)")
            new.writestr(info, data)
    with pytest.raises(CheckpointError, match=r"meta/epoch declares int64 of shape \(9999,\)"):
        load_checkpoint(forged)


def test_a_reader_of_the_old_checkpoint_keeps_the_old_file(tmp_path):
    """The atomic write makes a new file under the old name: a reader that opened the old one
    goes on reading it whole (a copy over the old file would change it under the reader)."""
    trainer = make_trainer(seed=0, out_dir=tmp_path)
    trainer.run(max_steps=1)
    path = tmp_path / "checkpoint.npz"
    old_bytes = path.read_bytes()
    with open(path, "rb") as reader:
        head = reader.read(100)
        trainer.run(max_steps=2)          # writes the checkpoint again
        rest = reader.read()
    assert head + rest == old_bytes
    assert path.read_bytes() != old_bytes
    assert load_checkpoint(path)["meta"]["step"] == 2


def test_other_data_sizes_are_refused_on_resume(tmp_path):
    make_trainer(seed=0, out_dir=tmp_path).run(max_steps=1)
    other = make_trainer(seed=0, data=synthetic_cifar(64, 32, image_size=16, seed=0))
    with pytest.raises(minires.train.SettingsChanged) as err:
        other.load(tmp_path / "checkpoint.npz")
    assert "test_size: 16 in the checkpoint, 32 now" in str(err.value)
    assert "train_size: 48 in the checkpoint, 64 now" in str(err.value)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    """ResNet-14's checkpoint into ResNet-8: one line naming the differing settings, no KeyError."""
    make_trainer(seed=0, out_dir=tmp_path).save()
    minires.manual_seed(0)
    model = cifar_resnet(14)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    deeper = Trainer(model, optimizer, DataLoader(DATA.x_train, DATA.y_train, 16, augment=True),
                     DataLoader(DATA.x_test, DATA.y_test, 16, shuffle=False), 2,
                     MultiStepLR(optimizer, milestones=(1,)), progress=False)
    with pytest.raises(minires.train.SettingsChanged, match=r"ck.*parameters: \d+ in the "
                       r"checkpoint, \d+ now"):
        deeper.load(tmp_path / "checkpoint.npz")


def test_a_loader_that_stops_short_is_an_error_not_a_loop():
    class ShortLoader(DataLoader):
        def __iter__(self):  # says 3 batches per epoch, yields 2
            return itertools.islice(super().__iter__(), 2)

    trainer = make_trainer(seed=0)
    trainer.train_loader = ShortLoader(DATA.x_train, DATA.y_train, 16, seed=0)
    with pytest.raises(RuntimeError, match="stopped after 2 batches of epoch 1, 3 were expected"):
        trainer.run()


# ---------------------------------------------------------------- clean files

def test_stale_temp_files_are_removed_at_start(tmp_path):
    """A kill during a write leaves .checkpoint.npz.<pid>.<hex>.tmp; the next run removes it,
    but not a file that a still-running process may be writing, nor anything else."""
    dead = tmp_path / ".checkpoint.npz.999999999.0badc0de.tmp"       # no such process
    mine = tmp_path / f".metrics.csv.{os.getpid()}.12345678.tmp"     # this process, not writing
    live = tmp_path / f".checkpoint.npz.{os.getppid()}.abcdef01.tmp"  # a running process's
    other = tmp_path / ".notes.tmp"
    for path in (dead, mine, live, other):
        path.write_bytes(b"half")
    make_trainer(seed=0, out_dir=tmp_path).run(max_steps=1)
    assert not dead.exists() and not mine.exists()
    assert live.exists() and other.exists()


def test_metrics_are_written_atomically(tmp_path, monkeypatch):
    """A failure while writing the metrics (disk full at fsync) leaves the previous files whole."""
    row = {"epoch": 1, "train_loss": 2.0, "train_error": 50.0, "test_error": 60.0, "lr": 0.1,
           "note": ""}
    minires.train.write_metrics([row], tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(fd):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        minires.train.write_metrics([row, dict(row, epoch=2)], tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_resume_true_on_an_empty_folder_starts_fresh(tmp_path):
    trainer = make_trainer(seed=0)
    history = train(trainer.model, trainer.optimizer, trainer.train_loader, trainer.test_loader,
                    epochs=1, scheduler=trainer.scheduler, out_dir=tmp_path, resume=True,
                    progress=False)
    assert len(history) == 1 and load_checkpoint(tmp_path / "checkpoint.npz")["meta"]["step"] == 3


# ---------------------------------------------------------------- devices

def test_resume_on_another_device_goes_on(tmp_path, device):
    """A CPU checkpoint resumed on `device`: on the CPU bit-identical to the run without a break;
    on another device the same run, up to float32 rounding (the change is noted in the metrics)."""
    straight = make_trainer(seed=0, device="cpu")
    straight.run(max_steps=4)
    first = make_trainer(seed=0, device="cpu")
    first.run(max_steps=2)
    first.save(tmp_path / "ck.npz")
    resumed = make_trainer(seed=0, device=device)
    resumed.load(tmp_path / "ck.npz")
    assert resumed.changes == ([] if device == "cpu" else [("device", "cpu", device)])
    resumed.run(max_steps=4)
    if device == "cpu":
        assert_same(snapshot(resumed), snapshot(straight))
    for key, value in straight.model.state_dict().items():
        np.testing.assert_allclose(resumed.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    assert resumed.history[0]["note"] == ("" if device == "cpu" else f"device 'cpu' -> '{device}'")


def test_the_trainer_reads_the_device_per_epoch_not_per_step(monkeypatch):
    """No host sync inside a training step (issue 26): on the CuPy stand-in every device-to-host
    read (get, float, int, bool, format) is counted with the minires file that asked for it. The
    Trainer's and the guard's reads in an epoch are as many for 6 steps as for 2 (the loss, the
    error count and the guard's flags are read once, at the epoch's end)."""
    import cupy_standin

    if not cupy_standin.is_registered():
        pytest.skip("counts reads on the CuPy stand-in")
    reads = []

    def counted(original):
        def read(self, *args):
            frame = sys._getframe(1)  # the asker: the innermost frame not in the array modules
            while frame.f_code.co_filename.endswith(("cupy_standin.py", "backend.py")):
                frame = frame.f_back
            asker = os.path.basename(frame.f_code.co_filename)
            if asker in ("train.py", "divergence.py"):
                reads.append(f"{asker}:{frame.f_code.co_name}")
            return original(self, *args)
        return read
    for name in ("get", "__float__", "__int__", "__bool__", "__format__"):
        monkeypatch.setattr(cupy_standin.ndarray, name, counted(getattr(cupy_standin.ndarray,
                                                                        name)))
    per_epoch = []
    for steps in (2, 6):
        data = synthetic_cifar(16 * steps, 16, image_size=16, seed=0)
        trainer = make_trainer(seed=0, data=data, epochs=1, device="cuda", sync_every=100)
        reads.clear()
        trainer.run()
        per_epoch.append(list(reads))
    assert per_epoch[0] == per_epoch[1], per_epoch
    assert 0 < len(per_epoch[0]) <= 6, per_epoch[0]
