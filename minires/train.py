"""Training: one step, one evaluation, and a Trainer with a progress bar, metrics, checkpoints,
exact resume and a divergence guard. (The `minires train` command is minires/train_command.py.)

The pieces, from small to large:

    loss = train_step(model, optimizer, x, y)        # one SGD step on one batch
    loss, error = evaluate(model, test_loader)       # error in percent, eval mode, no graph
    history = train(model, optimizer, train_loader, test_loader, epochs=10,
                    scheduler=scheduler, out_dir="runs/demo")

`train` runs a `Trainer`. After every epoch it evaluates the test set and writes, into `out_dir`,
``metrics.csv`` and ``metrics.json`` (one row per epoch: epoch, train_loss, train_error,
test_error, lr, note) and ``learning_curve.png``, each atomically. The train loss and error are
those of the epoch's mini-batches as they were trained on (train mode, augmented), as in the
paper's curves. `note` is empty unless a resume changed a setting (e.g. "epochs 2 -> 4").

What a Trainer guarantees:

- **Exact resume.** ``checkpoint.npz`` holds the model, optimizer and schedule state, NumPy's
  global RNG, the counters (epoch, step, batch within the epoch), the running sums of the current
  epoch's metrics, the metrics history, and the loader's RNG state *at the start of the current
  epoch*. A checkpoint may be taken in the middle of an epoch: on resume the loader goes back to
  the epoch's start, draws the same permutation and augmentations again, and skips the batches
  already trained on. A seeded run of 4 steps therefore equals 2 steps + save + load + 2 steps,
  bit for bit, on the same device and the same number of cores. The schedule steps once per epoch.
- **The run's settings live in the checkpoint** (section ``config``): what the Trainer reads off
  its objects (epochs, steps per epoch, model class and size, device, data sizes, batch size,
  augmentation, optimizer and schedule settings) plus the caller's `config` (the CLI adds model
  name, data, seed). `load` refuses a checkpoint whose settings differ from this trainer's with a
  SettingsChanged naming each one, old and new. `allow_changes=("epochs",)` lets the number of
  epochs change (the schedule stays the one in the checkpoint), a device change is allowed, and the
  next metrics row notes either.
- **Every field is checked on load** (types, ranges, shapes, which model it belongs to): a bad file
  is a one-line CheckpointError naming the field, and the trainer is left as it was. No value in a
  file can make the loop run backwards or forever.
- **A divergence guard.** A non-finite loss or gradient stops the run before the update with a
  DivergenceError naming the epoch, the step and the first parameter that went bad; so does a
  forward pass that makes a buffer (batch norm's running statistics) non-finite, or an update that
  makes a parameter non-finite. A checkpoint is never written from non-finite state, so the last
  good one stays. `allow_nonfinite=True` turns all of this off, for studying divergence.
"""
import csv
import io
import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend
from . import functional as F
from .autograd import Tensor, no_grad
from .checkpoint import (CheckpointError, atomic_write, field, load_checkpoint, read_array,
                         read_float, read_int, remove_stale_temp_files, save_checkpoint, section)
from .optim import SGD
from .optim.lr_scheduler import MultiStepLR

COLUMNS = ("epoch", "train_loss", "train_error", "test_error", "lr", "note")
CHECKPOINT_NAME = "checkpoint.npz"
CHANGEABLE = ("epochs",)   # settings that `allow_changes` may let differ on resume
RECORDED = ("device",)     # settings that may differ on resume without asking (both are noted)
SECTIONS = ("config", "model", "optimizer", "rng", "loader", "meta", "metrics")
_COLUMN_KINDS = {"epoch": "iu", "note": "U"}  # the others are floats ("f")


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss, gradient, parameter or buffer."""


class SettingsChanged(ValueError):
    """A checkpoint's run settings differ from those of the trainer that resumes from it."""


# --- one step, one evaluation ------------------------------------------------------------------

def train_step(model, optimizer, x, y):
    """One step of `optimizer` on the mean cross-entropy of batch (x, y); returns the loss."""
    loss, _ = _train_batch(model, optimizer, x, y)
    return loss


def evaluate(model, loader):
    """(mean loss, error in %) of `model` over every batch of `loader`.

    Runs in eval mode (batch norm uses its running statistics) without recording a graph, then puts
    the model back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    loss_sum, wrong, seen = 0.0, 0, 0
    try:
        with no_grad():
            for x, y in loader:
                x, y = _on_device(model, x, y)
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y).item() * len(y)
                wrong += _count_wrong(logits, y)
                seen += len(y)
    finally:
        model.train(was_training)
    return loss_sum / seen, 100.0 * wrong / seen


def _train_batch(model, optimizer, x, y, before_update=None):
    """zero_grad, forward, backward, `before_update(loss)`, step; returns (loss, number wrong)."""
    x, y = _on_device(model, x, y)
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    loss_value = loss.item()
    if before_update is not None:
        before_update(loss_value)
    optimizer.step()
    return loss_value, _count_wrong(logits, y)


def _on_device(model, x, y):
    """The batch as Tensors on the model's device (arrays or Tensors in)."""
    device = model.device
    return tuple(Tensor(backend.to_device(v.data if isinstance(v, Tensor) else v, device))
                 for v in (x, y))


def _count_wrong(logits, y):
    """How many rows of logits (N, K) do not have their largest value at label y (N,)."""
    return int((logits.data.argmax(axis=1) != y.data).sum())


def _first_nonfinite(named_arrays):
    """The name of the first floating-point array that holds a NaN or an Inf, else None.

    The per-array flags are stacked before they are read: one device-to-host transfer on a GPU.
    """
    names, flags = [], []
    for name, array in named_arrays:
        if array.dtype.kind == "f":
            names.append(name)
            flags.append(backend.xp(array).isfinite(array).all())
    if not flags:
        return None
    bad = np.flatnonzero(~backend.to_numpy(backend.xp(flags[0]).stack(flags)))
    return names[bad[0]] if bad.size else None


# --- the Trainer -------------------------------------------------------------------------------

class Trainer:
    """The training loop, step by step: `run(max_steps)` trains until `epochs` epochs are done or
    the optimizer has taken `max_steps` steps in all, and can be called again to go on.

    `steps_per_epoch` cuts every epoch short (quick runs); `checkpoint_every` is in epochs, and a
    checkpoint is also written when `run` returns (both only with an `out_dir`). `device` moves the
    model; batches are moved to wherever the model is. `config` ({name: number, string or list of
    numbers}) adds settings to those a resume must share (see the module docstring);
    `allow_nonfinite` turns the divergence guard off.
    """

    def __init__(self, model, optimizer, train_loader, test_loader, epochs, scheduler=None,
                 out_dir=None, checkpoint_every=1, progress=True, device=None,
                 steps_per_epoch=None, config=None, allow_nonfinite=False):
        self.model = model if device is None else model.to(device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.test_loader = train_loader, test_loader
        self.epochs, self.checkpoint_every, self.progress = epochs, checkpoint_every, progress
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.allow_nonfinite = allow_nonfinite
        self.batches_per_epoch = min(len(train_loader), steps_per_epoch or len(train_loader))
        _check_counts(epochs, checkpoint_every, steps_per_epoch, self.batches_per_epoch,
                      len(train_loader))
        self.epoch = 0           # epochs completed
        self.step = 0            # optimizer steps taken
        self.batch = 0           # batches done in the current epoch
        self.history = []        # one {column: value} per completed epoch
        self._sums = (0.0, 0, 0)  # the current epoch's (loss * batch size, wrong, seen)
        self._epoch_start = None  # the loader's state when the current epoch began
        self._note = ""           # goes into the next metrics row: settings a resume changed
        self.changes = []         # (setting, old, new) that the latest load let change
        self.last_checkpoint = None  # (path, step) of the latest checkpoint written
        self.config = _run_settings(self)
        for key, value in (config or {}).items():
            if key in self.config:
                raise ValueError(f"Trainer: config[{key!r}] is a setting the Trainer reads off "
                                 f"its own objects ({self.config[key]!r}); leave it out")
            self.config[key] = _setting(f"Trainer: config[{key!r}]", value, ValueError)

    def run(self, max_steps=None):
        """Train until done (or `max_steps` steps in all); returns the metrics history."""
        if self.out_dir is not None:
            remove_stale_temp_files(self.out_dir)
        while self.epoch < self.epochs and not self._reached(max_steps):
            self._train_epoch(max_steps)
            if self.batch == self.batches_per_epoch:
                self._end_epoch()
            elif not self._reached(max_steps):
                raise RuntimeError(
                    f"Trainer: the training loader stopped after {self.batch} batches of epoch "
                    f"{self.epoch + 1}, {self.batches_per_epoch} were expected (len(loader) is "
                    f"{len(self.train_loader)})")
        if self.out_dir is not None:
            self.save()
        return self.history

    def _reached(self, max_steps):
        return max_steps is not None and self.step >= max_steps

    def _train_epoch(self, max_steps):
        """Train on the current epoch's batches from `self.batch` on, stopping at `max_steps`."""
        if self.batch == 0:
            self._epoch_start = self.train_loader.state_dict()
        else:  # mid-epoch: replay the epoch's shuffle and augmentation, skip what is done
            self.train_loader.load_state_dict(self._epoch_start)
        batches = itertools.islice(self.train_loader, self.batch, self.batches_per_epoch)
        guard = None if self.allow_nonfinite else self._check_gradients
        self.model.train()
        with tqdm(total=self.batches_per_epoch, initial=self.batch, leave=False,
                  desc=f"epoch {self.epoch + 1}/{self.epochs}", disable=not self.progress) as bar:
            for x, y in batches:
                loss, wrong = _train_batch(self.model, self.optimizer, x, y, guard)
                if guard is not None:
                    self._check_parameters()
                loss_sum, total_wrong, seen = self._sums
                self._sums = (loss_sum + loss * len(y), total_wrong + wrong, seen + len(y))
                self.batch += 1
                self.step += 1
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update()
                if self._reached(max_steps):
                    break

    def _end_epoch(self):
        """Evaluate, record the epoch, step the schedule, write metrics and maybe a checkpoint."""
        loss_sum, wrong, seen = self._sums
        _, test_error = evaluate(self.model, self.test_loader)
        row = {"epoch": self.epoch + 1, "train_loss": loss_sum / seen,
               "train_error": 100.0 * wrong / seen, "test_error": test_error,
               "lr": float(self.optimizer.param_groups[0]["lr"]), "note": self._note}
        self.history.append(row)
        self.epoch, self.batch, self._sums, self._note = self.epoch + 1, 0, (0.0, 0, 0), ""
        if self.scheduler is not None:
            self.scheduler.step()
        if self.progress:
            tqdm.write(f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f}, "
                       f"train error {row['train_error']:.2f}%, test error "
                       f"{row['test_error']:.2f}%, lr {row['lr']:.4g}")
        if self.out_dir is not None:
            write_metrics(self.history, self.out_dir)
            if self.epoch % self.checkpoint_every == 0:
                self.save()

    # --- the divergence guard ------------------------------------------------------------------
    def _check_gradients(self, loss):
        """Before the update: the loss, every gradient and every buffer must be finite."""
        bad = _first_nonfinite((name, p.grad.data) for name, p in self.model.named_parameters()
                               if p.grad is not None)
        if not math.isfinite(loss) or bad is not None:
            what = f"the loss is {loss:.4g}" + (
                "" if bad is None else f" and the gradient of '{bad}' is the first non-finite one")
            raise DivergenceError(self._diverged(what, "the parameters are as before this step"))
        bad = _first_nonfinite(self.model.named_buffers())
        if bad is not None:
            raise DivergenceError(self._diverged(
                f"the forward pass made the buffer '{bad}' non-finite (its layer's input is too "
                "large for float32)", "the parameters are as before this step", find_op=False))

    def _check_parameters(self):
        """After the update: every parameter must still be finite."""
        bad = _first_nonfinite((name, p.data) for name, p in self.model.named_parameters())
        if bad is not None:
            lr = self.optimizer.param_groups[0]["lr"]
            raise DivergenceError(self._diverged(
                f"the update made '{bad}' non-finite (lr {lr:g})", "the model is not finite now"))

    def _diverged(self, what, state, find_op=True):
        saved = ("no checkpoint was written" if self.last_checkpoint is None else
                 f"the last checkpoint, {self.last_checkpoint[0]} (step "
                 f"{self.last_checkpoint[1]}), is kept")
        find = (" Find the op that made it by running again under minires.detect_anomaly() "
                "(minires train: --detect-anomaly)." if find_op else "")
        return (f"training diverged in epoch {self.epoch + 1}, step {self.step + 1} (batch "
                f"{self.batch + 1} of {self.batches_per_epoch}): {what}; {state}, {saved}.{find}"
                " Train on regardless with allow_nonfinite=True (--allow-nonfinite).")

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self):
        """Everything an exact resume needs, as checkpoint sections of flat arrays."""
        loss_sum, wrong, seen = self._sums
        sections = {
            "config": {key: np.asarray(value) for key, value in self.config.items()},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": _numpy_rng_state(),
            "loader": self._epoch_start if self.batch else self.train_loader.state_dict(),
            "meta": {"epoch": self.epoch, "step": self.step, "batch": self.batch,
                     "loss_sum": loss_sum, "wrong": wrong, "seen": seen, "note": self._note},
            "metrics": {c: np.array([row[c] for row in self.history],
                                    dtype=np.str_ if c == "note" else None) for c in COLUMNS},
        }
        if not self.history:  # np.array([]) is float64: give the integer column its kind
            sections["metrics"]["epoch"] = np.zeros(0, dtype=np.int64)
        if self.scheduler is not None:
            sections["scheduler"] = self.scheduler.state_dict()
        return sections

    def load_state_dict(self, sections, allow_changes=()):
        """Restore from `state_dict()` sections (as `load_checkpoint` returns them).

        Checks first: the settings (SettingsChanged naming every one that differs, unless it is in
        `allow_changes` or RECORDED), then every field (CheckpointError naming the first bad one).
        On an error the trainer is left as it was.
        """
        unknown = sorted(set(allow_changes) - set(CHANGEABLE))
        if unknown:
            raise ValueError(f"Trainer.load: only {', '.join(CHANGEABLE)} may change on resume, "
                             f"not {', '.join(unknown)}")
        changes = self._compare_settings(sections, allow_changes)
        counters = self._check_sections(sections)
        previous = self.state_dict(), self._counters()
        try:
            self._restore(sections, counters)
        except CheckpointError:
            self._restore(*previous)
            raise
        self.changes = changes
        self._note = "; ".join(filter(None, [counters["note"]] + [
            f"{key} {_show(old)} -> {_show(new)}" for key, old, new in changes]))

    def _counters(self):
        loss_sum, wrong, seen = self._sums
        return {"epoch": self.epoch, "step": self.step, "batch": self.batch, "loss_sum": loss_sum,
                "wrong": wrong, "seen": seen, "note": self._note, "history": list(self.history)}

    def _restore(self, sections, counters):
        """Load the (checked) sections into the model, optimizer, schedule, RNGs and counters."""
        for name, target in (("model", self.model), ("optimizer", self.optimizer),
                             ("scheduler", self.scheduler), ("loader", self.train_loader)):
            if target is not None:
                try:
                    target.load_state_dict(sections[name])
                except (ValueError, KeyError, TypeError) as err:  # the object's own checks
                    message = err.args[0] if err.args else repr(err)
                    raise CheckpointError(f"{name}: {message}") from None
        _set_numpy_rng_state(sections["rng"])
        self._epoch_start = sections["loader"]
        self.epoch, self.step, self.batch = counters["epoch"], counters["step"], counters["batch"]
        self._sums = (counters["loss_sum"], counters["wrong"], counters["seen"])
        self._note, self.history = counters["note"], counters["history"]

    def _compare_settings(self, sections, allow_changes):
        """[(setting, old, new)] that may differ; SettingsChanged if any other one differs."""
        if "config" not in sections:  # written before checkpoints recorded their settings
            raise CheckpointError(
                "the checkpoint has no section 'config': it comes from a minires that did not "
                "record the run's settings, so resuming cannot check that they are the same; "
                "start a new run in another folder (or resume it with that older minires)")
        saved = {key: _setting(f"config/{key}", value)
                 for key, value in sections["config"].items()}
        differ = [(key, saved.get(key), self.config.get(key))
                  for key in sorted(set(saved) | set(self.config))
                  if saved.get(key) != self.config.get(key)]
        refused = [d for d in differ if d[0] not in set(allow_changes) | set(RECORDED)]
        if refused:
            hint = ("; to change epochs pass allow_changes=('epochs',) (minires train: "
                    "--allow-change epochs)" if all(d[0] in CHANGEABLE for d in refused) else
                    "; to train with other settings, start a new run in another folder")
            raise SettingsChanged("the checkpoint was written with other settings: " + "; ".join(
                f"{key}: {_show(old)} in the checkpoint, {_show(new)} now"
                for key, old, new in refused) + hint)
        done = read_int(sections, "meta/epoch", 0, read_int(sections, "config/epochs", 0, 2**62))
        if done > self.epochs:
            raise SettingsChanged(f"epochs: the checkpoint has completed {done} epochs, more "
                                  f"than the {self.epochs} asked for now")
        return differ

    def _check_sections(self, sections):
        """Check every field but the config (done first); returns the counters and history."""
        expected = set(SECTIONS) | ({"scheduler"} if self.scheduler is not None else set())
        if (self.scheduler is None) != ("scheduler" not in sections):
            raise CheckpointError(f"the checkpoint has {'a' if 'scheduler' in sections else 'no'} "
                                  f"schedule state, this trainer has "
                                  f"{'a' if self.scheduler else 'no'} scheduler")
        unexpected = sorted(set(sections) - expected)
        if unexpected:
            raise CheckpointError(f"the checkpoint has an unexpected section '{unexpected[0]}'")
        for name in sorted(expected):
            section(sections, name)
        self._check_model_section(sections)
        if not self.allow_nonfinite:
            bad = _first_nonfinite((f"{name}/{key}", np.asarray(value))
                                   for name in sorted(expected - {"config"})
                                   for key, value in sections[name].items())
            if bad is not None:
                raise CheckpointError(f"{bad} holds NaN or Inf (from a diverged run?); pass "
                                      "allow_nonfinite=True (--allow-nonfinite) to load it anyway")
        read_array(sections, "rng/keys", "u", (624,))
        read_int(sections, "rng/pos", 0, 624)
        read_int(sections, "rng/has_gauss", 0, 1)
        read_float(sections, "rng/cached_gaussian", finite=not self.allow_nonfinite)
        counters = self._check_meta(sections)
        counters["history"] = self._check_metrics(sections, counters["epoch"])
        if self.scheduler is not None:
            self._check_schedule_section(sections, counters["epoch"])
        self._check_optimizer_section(sections)
        return counters

    def _check_model_section(self, sections):
        """The model section must hold exactly this model's arrays, with its shapes."""
        expected = {name: array for name, array in itertools.chain(
            ((name, p.data) for name, p in self.model.named_parameters()),
            self.model.named_buffers())}
        saved = sections["model"]
        missing = [key for key in expected if key not in saved]
        extra = [key for key in saved if key not in expected]
        if missing or extra:
            raise CheckpointError(
                f"model: the checkpoint's model is not this {type(self.model).__name__}: it lacks "
                f"{len(missing)} of this model's arrays{_first(missing)} and has {len(extra)} "
                f"others{_first(extra)}; it was saved from another architecture")
        for key, array in expected.items():
            read_array(sections, f"model/{key}", "f" if array.dtype.kind == "f" else "iu",
                       tuple(array.shape))

    def _check_meta(self, sections):
        """The counters: in range, and consistent with each other (step = epoch * steps + batch)."""
        epoch = read_int(sections, "meta/epoch", 0, self.epochs)
        batch = read_int(sections, "meta/batch", 0, self.batches_per_epoch - 1)
        step = epoch * self.batches_per_epoch + batch
        read_int(sections, "meta/step", step, step)
        batch_size = getattr(self.train_loader, "batch_size", 2 ** 62 // max(batch, 1))
        seen = read_int(sections, "meta/seen", batch, batch * batch_size)  # 0 at an epoch start
        wrong = read_int(sections, "meta/wrong", 0, seen)
        loss_sum = read_float(sections, "meta/loss_sum", 0, np.inf, not self.allow_nonfinite)
        note = str(read_array(sections, "meta/note", "U", ()))
        return {"epoch": epoch, "step": step, "batch": batch, "loss_sum": loss_sum,
                "wrong": wrong, "seen": seen, "note": note}

    def _check_metrics(self, sections, epochs_done):
        """One row per completed epoch, numbered 1..epochs_done; returns the history."""
        columns = {c: read_array(sections, f"metrics/{c}", _COLUMN_KINDS.get(c, "f"),
                                 (epochs_done,)) for c in COLUMNS}
        if not np.array_equal(columns["epoch"], np.arange(1, epochs_done + 1)):
            raise CheckpointError(f"metrics/epoch is {columns['epoch'].tolist()}, expected "
                                  f"1..{epochs_done}")
        values = [columns[c].tolist() for c in COLUMNS]
        return [dict(zip(COLUMNS, row)) for row in zip(*values)]

    def _check_schedule_section(self, sections, epochs_done):
        """The schedule's settings are this trainer's, and it has stepped once per epoch."""
        read_int(sections, "scheduler/last_epoch", epochs_done, epochs_done)
        _check_same_settings(sections, "scheduler", self.scheduler.state_dict(),
                             lambda key: key.split(".")[-1] not in ("last_epoch", "last_lr"))

    def _check_optimizer_section(self, sections):
        """The optimizer's settings but the (scheduled) lr are this trainer's."""
        _check_same_settings(sections, "optimizer", self.optimizer.state_dict(),
                             lambda key: key.startswith("param_groups.")
                             and key.split(".")[-1] not in ("lr", "params"))

    def save(self, path=None):
        """Write a checkpoint (default: out_dir/checkpoint.npz) atomically; returns its path.

        Unless `allow_nonfinite`, a non-finite model or optimizer state is never written (a
        DivergenceError says which array), so the previous checkpoint stays.
        """
        path = self._checkpoint_path(path)
        sections = self.state_dict()
        if not self.allow_nonfinite:
            bad = _first_nonfinite((f"{name}/{key}", np.asarray(value))
                                   for name in ("model", "optimizer")
                                   for key, value in sections[name].items())
            if bad is not None:
                raise DivergenceError(f"not writing {path}: {bad} holds NaN or Inf; the "
                                      "previous checkpoint is kept")
        save_checkpoint(path, **sections)
        self.last_checkpoint = (path, self.step)
        return path

    def load(self, path=None, allow_changes=()):
        """Resume from a checkpoint (default: out_dir/checkpoint.npz); see load_state_dict."""
        path = self._checkpoint_path(path)
        sections = load_checkpoint(path)
        try:
            self.load_state_dict(sections, allow_changes)
        except (CheckpointError, SettingsChanged) as err:
            raise type(err)(f"{path}: {err}") from None
        self.last_checkpoint = (path, self.step)

    def _checkpoint_path(self, path):
        if path is None and self.out_dir is None:
            raise ValueError("Trainer: give a checkpoint path, or an out_dir to keep it in")
        return Path(path) if path is not None else self.out_dir / CHECKPOINT_NAME


def train(model, optimizer, train_loader, test_loader, epochs, scheduler=None, out_dir=None,
          checkpoint_every=1, resume=False, progress=True, device=None, steps_per_epoch=None,
          max_steps=None, config=None, allow_changes=(), allow_nonfinite=False):
    """Train `model` for `epochs` epochs (see Trainer); returns the metrics history.

    resume: False; True: go on from out_dir/checkpoint.npz if there is one, else start fresh; or
    the path of a checkpoint to go on from (it must exist). allow_changes: see Trainer.load.
    """
    trainer = Trainer(model, optimizer, train_loader, test_loader, epochs, scheduler, out_dir,
                      checkpoint_every, progress, device, steps_per_epoch, config, allow_nonfinite)
    if resume is True:
        if out_dir is None:
            raise ValueError("train: resume=True needs an out_dir (or pass a checkpoint path)")
        if (trainer.out_dir / CHECKPOINT_NAME).is_file():
            trainer.load(allow_changes=allow_changes)
    elif resume:
        trainer.load(resume, allow_changes)
    return trainer.run(max_steps)


# --- settings, and checking them ---------------------------------------------------------------

def _run_settings(trainer):
    """The settings a resume must share with its run, read off the trainer's objects."""
    model, loader = trainer.model, trainer.train_loader
    settings = {"epochs": trainer.epochs, "steps_per_epoch": trainer.batches_per_epoch,
                "architecture": type(model).__name__,
                "parameters": sum(int(p.data.size) for p in model.parameters()),
                "device": model.device, "optimizer": type(trainer.optimizer).__name__,
                "schedule": type(trainer.scheduler).__name__ if trainer.scheduler else "none"}
    for split, data in (("train", loader), ("test", trainer.test_loader)):
        if hasattr(data, "images"):
            settings[f"{split}_size"] = len(data.images)
    for name in ("batch_size", "augment", "shuffle", "drop_last"):  # a DataLoader's
        if hasattr(loader, name):
            settings[name] = getattr(loader, name)
    settings.update(_optimizer_settings(trainer.optimizer.param_groups))
    if trainer.scheduler is not None:
        settings.update({f"schedule.{key}": value
                         for key, value in trainer.scheduler.state_dict().items()
                         if key.split(".")[-1] not in ("last_epoch", "last_lr", "base_lrs")})
    return {key: _setting(key, value) for key, value in settings.items()}


def _optimizer_settings(groups):
    """Each group's hyperparameters ("momentum", "group1.momentum"), its starting lr as "lr"."""
    settings = {}
    for i, group in enumerate(groups):
        prefix = f"group{i}." if i else ""
        for key, value in group.items():
            if key not in ("params", "initial_lr"):
                settings[prefix + key] = group.get("initial_lr", value) if key == "lr" else value
    return settings


def _setting(name, value, error=CheckpointError):
    """A setting as plain Python (number, bool, string or list of numbers), as compared."""
    array = np.asarray(backend.to_numpy(value) if backend.is_array(value) else value)
    if array.ndim > 1 or array.dtype.kind not in "biufU":
        raise error(f"{name} must be a number, a string or a list of numbers, got "
                    f"{array.dtype} of shape {array.shape}")
    return array.tolist()


def _check_same_settings(sections, name, current, is_setting):
    """Every `is_setting` key of section `name` must be there and equal this trainer's value."""
    saved = sections[name]
    for key in sorted(k for k in set(saved) | set(current) if is_setting(k)):
        old = _setting(f"{name}/{key}", field(sections, f"{name}/{key}"))
        new = _setting(key, current[key]) if key in current else None
        if old != new:
            raise CheckpointError(f"{name}/{key} is {_show(old)}, this trainer's is {_show(new)}")


def _check_counts(epochs, checkpoint_every, steps_per_epoch, batches_per_epoch, loader_len):
    """Refuse counts that would make the loop do nonsense (a ValueError naming the argument)."""
    for name, value, low in (("epochs", epochs, 0), ("checkpoint_every", checkpoint_every, 1),
                             ("steps_per_epoch", steps_per_epoch, 1)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < low):
            raise ValueError(f"Trainer: {name} must be an integer >= {low}, got {value!r}")
    if batches_per_epoch < 1:
        raise ValueError(f"Trainer: the training loader yields no batches (len {loader_len}, "
                         f"steps_per_epoch {steps_per_epoch})")


def _first(names):
    return f" (first '{names[0]}')" if names else ""


def _show(value):
    return "not set" if value is None else repr(value)


def _numpy_rng_state():
    """NumPy's global (legacy MT19937) generator state as arrays and numbers."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"keys": keys, "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached_gaussian}


def _set_numpy_rng_state(state):
    np.random.set_state(("MT19937", np.asarray(state["keys"], dtype=np.uint32), int(state["pos"]),
                         int(state["has_gauss"]), float(state["cached_gaussian"])))


# --- the paper's recipe ------------------------------------------------------------------------

def paper_recipe(model, epochs, lr=0.1, momentum=0.9, weight_decay=1e-4):
    """The optimizer and schedule of He et al. 2015 (section 4.2) for `epochs` scheduler steps:
    SGD with momentum and weight decay, the learning rate divided by 10 at 50% and 75% of the run.
    Returns (optimizer, scheduler)."""
    optimizer = SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    milestones = [math.ceil(epochs * 0.5), math.ceil(epochs * 0.75)]
    return optimizer, MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


# --- metrics files -----------------------------------------------------------------------------

def write_metrics(history, out_dir):
    """metrics.csv, metrics.json and learning_curve.png of `history` in `out_dir`, each written
    atomically (a reader or a crash never sees half a file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(history)
    atomic_write(out_dir / "metrics.csv", lambda f: f.write(table.getvalue().encode()))
    text = json.dumps(history, indent=2) + "\n"
    atomic_write(out_dir / "metrics.json", lambda f: f.write(text.encode()))
    plot_learning_curve(history, out_dir / "learning_curve.png")


def plot_learning_curve(history, path):
    """Train/test error (%) and train loss against epoch, side by side, as a PNG (atomically).

    matplotlib (the `plot` extra) is imported here only; without it the figure is skipped with a
    warning. The figure is drawn on an Agg canvas, so no display and no pyplot state is involved.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        warnings.warn(f"matplotlib is not installed, so {path} is not drawn: "
                      "pip install 'minires[plot]'")
        return None
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    error, loss = fig.subplots(1, 2)
    error.plot(epochs, [row["train_error"] for row in history], ".-", label="train")
    error.plot(epochs, [row["test_error"] for row in history], ".-", label="test")
    error.set(xlabel="epoch", ylabel="error (%)", title="error")
    error.legend()
    loss.plot(epochs, [row["train_loss"] for row in history], ".-", label="train")
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    for ax in (error, loss):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path
