"""Tests for minires.train and minires.checkpoint: exact resume, atomic and pickle-free checkpoints,
a training run that learns, and the metrics files it writes.

Everything runs on the CPU with small networks (cifar_resnet(8)) on small synthetic images, so the
whole file takes seconds.
"""
import csv
import json

import numpy as np
import pytest

import minires
from minires import checkpoint
from minires.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minires.data import DataLoader, synthetic_cifar
from minires.models import cifar_resnet
from minires.optim import SGD
from minires.optim.lr_scheduler import MultiStepLR
from minires.train import COLUMNS, Trainer, evaluate, paper_recipe, train, train_step

DATA = synthetic_cifar(48, 16, image_size=16, seed=0)  # 3 batches of 16 per epoch


def make_trainer(seed, data=DATA, epochs=2, batch_size=16, milestones=(1,), **kwargs):
    """Fresh model, SGD (momentum + weight decay), MultiStepLR and augmenting loader from `seed`.

    By default the lr drops after epoch 1, so a run of 4 steps (3 per epoch) crosses an epoch end,
    an evaluation and a schedule step.
    """
    minires.manual_seed(seed)
    model = cifar_resnet(8)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
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
