"""Training: one step, one evaluation, and a Trainer with a progress bar, metrics, checkpoints,
exact resume and a divergence guard. (The `minires train` command is minires/commands/train.py;
checking a checkpoint is minires/checkpoint_checks.py, the guard minires/divergence.py.)

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
- **Every field is checked on load** (types, ranges, shapes, which model it belongs to, the
  optimizer's hyperparameters and scheduled lr, batch norm's running variances >= 0; every array's
  size from the zip headers before it is read): a bad file is a one-line CheckpointError naming
  the field, and the trainer is left as it was. No value in a file can make the loop run backwards
  or forever.
- **A divergence guard, on the device.** A non-finite loss or gradient, a forward pass that makes
  a buffer (batch norm's running statistics) non-finite, or an update that would make a parameter
  non-finite: the update is not applied (a device-side flag, no host sync inside the step), and
  the flags are read every `sync_every` steps, at the end of an epoch and before any checkpoint,
  where the run stops with a DivergenceError naming the epoch, the step and the first thing that
  went bad. The parameters stay as they were before that step, and a checkpoint is never written
  after it, so the last good one stays. `allow_nonfinite=True` turns all of this off, for
  studying divergence.
- **Few host syncs.** The loss and the error count are summed on the device and read once per
  progress-bar update (every `sync_every` steps) and at the end of an epoch.
- **A stop when asked.** `should_stop()` (a callable; the commands set it on Ctrl-C) is asked
  between steps: when it says yes, `run` writes a checkpoint (with an out_dir) and returns.
"""
import csv
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend
from . import functional as F
from .autograd import Tensor, no_grad
from .checkpoint import (CheckpointError, atomic_write, load_checkpoint, remove_stale_temp_files,
                         save_checkpoint)
from .checkpoint_checks import (CHANGEABLE, METRIC_COLUMNS, SettingsChanged, check_sections,
                                compare_settings, first_nonfinite, member_check, run_settings,
                                setting, show)
from .divergence import DivergenceError, DivergenceGuard
from .optim import SGD
from .optim.lr_scheduler import MultiStepLR
from .plots import plot_learning_curve

COLUMNS = METRIC_COLUMNS  # epoch, train_loss, train_error, test_error, lr, note
CHECKPOINT_NAME = "checkpoint.npz"


# --- one step, one evaluation ------------------------------------------------------------------

def train_step(model, optimizer, x, y):
    """One step of `optimizer` on the mean cross-entropy of batch (x, y); returns the loss."""
    loss, _ = _train_batch(model, optimizer, x, y)
    return float(loss)


def evaluate(model, loader):
    """(mean loss, error in %) of `model` over every batch of `loader`.

    Runs in eval mode (batch norm uses its running statistics) without recording a graph, then puts
    the model back in the mode it was in. The sums stay on the device until the end.
    """
    if len(loader) == 0:
        raise ValueError("evaluate: the loader yields no batches (an empty test set?)")
    was_training = model.training
    model.eval()
    loss_sum, wrong, seen = 0.0, 0, 0
    try:
        with no_grad():
            for x, y in loader:
                x, y = _on_device(model, x, y)
                logits = model(x)
                loss_sum = loss_sum + _as_float64(F.cross_entropy(logits, y).data) * len(y)
                wrong = wrong + _count_wrong(logits, y)
                seen += len(y)
    finally:
        model.train(was_training)
    return float(loss_sum) / seen, 100.0 * int(wrong) / seen


def _train_batch(model, optimizer, x, y, guard=None):
    """zero_grad, forward, backward, step (guarded by a DivergenceGuard if given); returns
    (loss, number wrong) as 0-d arrays on the model's device: reading them is up to the caller."""
    x, y = _on_device(model, x, y)
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    if guard is not None:
        guard.before_update(loss.data)
    optimizer.step()
    if guard is not None:
        guard.after_update()
    return loss.data, _count_wrong(logits, y)


def _on_device(model, x, y):
    """The batch as Tensors on the model's device (arrays or Tensors in)."""
    device = model.device
    return tuple(Tensor(backend.to_device(v.data if isinstance(v, Tensor) else v, device))
                 for v in (x, y))


def _count_wrong(logits, y):
    """How many rows of logits (N, K) do not have their largest value at label y (N,): a 0-d
    integer array on the device."""
    return (logits.data.argmax(axis=1) != y.data).sum()


def _as_float64(array):
    """A (0-d) float array in float64, as the loss sums are kept."""
    return array.astype("float64")


# --- the Trainer -------------------------------------------------------------------------------

class Trainer:
    """The training loop, step by step: `run(max_steps)` trains until `epochs` epochs are done or
    the optimizer has taken `max_steps` steps in all, and can be called again to go on.

    `steps_per_epoch` cuts every epoch short (quick runs); `checkpoint_every` is in epochs, and a
    checkpoint is also written when `run` returns (both only with an `out_dir`). `device` moves the
    model; batches are moved to wherever the model is. `config` ({name: number, string or list of
    numbers}) adds settings to those a resume must share (see the module docstring);
    `allow_nonfinite` turns the divergence guard off. `name` labels the progress bar and the
    epoch lines ("ResNet-20 epoch 2/8"); `sync_every` is how many steps pass between reads of the
    device (the guard's flags and the running loss); `should_stop` is asked between steps.
    """

    def __init__(self, model, optimizer, train_loader, test_loader, epochs, scheduler=None,
                 out_dir=None, checkpoint_every=1, progress=True, device=None,
                 steps_per_epoch=None, config=None, allow_nonfinite=False, name=None,
                 sync_every=10, should_stop=None):
        self.model = model if device is None else model.to(device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.test_loader = train_loader, test_loader
        self.epochs, self.checkpoint_every, self.progress = epochs, checkpoint_every, progress
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.allow_nonfinite = allow_nonfinite
        self.name, self.sync_every, self.should_stop = name, sync_every, should_stop
        self.batches_per_epoch = min(len(train_loader), steps_per_epoch or len(train_loader))
        _check_counts(epochs, checkpoint_every, steps_per_epoch, sync_every,
                      self.batches_per_epoch, len(train_loader), len(test_loader))
        self.epoch = 0           # epochs completed
        self.step = 0            # optimizer steps taken
        self.batch = 0           # batches done in the current epoch
        self.history = []        # one {column: value} per completed epoch
        self._sums = (0.0, 0, 0)  # the current epoch's (loss * batch size, wrong, seen); the first
        #                           two are 0-d device arrays while an epoch runs
        self._epoch_start = None  # the loader's state when the current epoch began
        self._note = ""           # goes into the next metrics row: settings a resume changed
        self.changes = []         # (setting, old, new) that the latest load let change
        self.last_checkpoint = None  # (path, step) of the latest checkpoint written
        self._guard = None if allow_nonfinite else DivergenceGuard(self.model, optimizer)
        self._read_at = 0         # self.step when the guard was last read
        self._diverged = None     # the DivergenceError's message, once the run has diverged
        self.config = run_settings(self)
        for key, value in (config or {}).items():
            if key in self.config:
                raise ValueError(f"Trainer: config[{key!r}] is a setting the Trainer reads off "
                                 f"its own objects ({self.config[key]!r}); leave it out")
            self.config[key] = setting(f"Trainer: config[{key!r}]", value, ValueError)

    def run(self, max_steps=None):
        """Train until done (or `max_steps` steps in all, or `should_stop()`); returns the
        metrics history."""
        if self.out_dir is not None:
            remove_stale_temp_files(self.out_dir)
        while self.epoch < self.epochs and not self._reached(max_steps) and not self._stopping():
            self._train_epoch(max_steps)
            self._check_guard()
            if self.batch == self.batches_per_epoch:
                self._end_epoch()
            elif not self._reached(max_steps) and not self._stopping():
                raise RuntimeError(
                    f"Trainer: the training loader stopped after {self.batch} batches of epoch "
                    f"{self.epoch + 1}, {self.batches_per_epoch} were expected (len(loader) is "
                    f"{len(self.train_loader)})")
        if self.out_dir is not None:
            self.save()
        return self.history

    def _reached(self, max_steps):
        return max_steps is not None and self.step >= max_steps

    def _stopping(self):
        return self.should_stop is not None and self.should_stop()

    def _label(self):
        return f"{self.name} " if self.name else ""

    def _train_epoch(self, max_steps):
        """Train on the current epoch's batches from `self.batch` on, stopping at `max_steps`."""
        if self.batch == 0:
            self._epoch_start = self.train_loader.state_dict()
        else:  # mid-epoch: replay the epoch's shuffle and augmentation, skip what is done
            self.train_loader.load_state_dict(self._epoch_start)
        batches = itertools.islice(self.train_loader, self.batch, self.batches_per_epoch)
        self.model.train()
        with tqdm(total=self.batches_per_epoch, initial=self.batch, leave=False,
                  desc=f"{self._label()}epoch {self.epoch + 1}/{self.epochs}",
                  disable=not self.progress) as bar:
            for x, y in batches:
                loss, wrong = _train_batch(self.model, self.optimizer, x, y, self._guard)
                loss_sum, total_wrong, seen = self._sums
                self._sums = (loss_sum + _as_float64(loss) * len(y), total_wrong + wrong,
                              seen + len(y))
                self.batch += 1
                self.step += 1
                if self.step % self.sync_every == 0:  # the one read of the device for a while
                    self._check_guard()
                    bar.set_postfix(loss=f"{float(self._sums[0]) / self._sums[2]:.4f}",
                                    refresh=False)
                bar.update()
                if self._reached(max_steps) or self._stopping():
                    break

    def _end_epoch(self):
        """Evaluate, record the epoch, step the schedule, write metrics and maybe a checkpoint."""
        loss_sum, wrong, seen = self._sums
        _, test_error = evaluate(self.model, self.test_loader)
        row = {"epoch": self.epoch + 1, "train_loss": float(loss_sum) / seen,
               "train_error": 100.0 * int(wrong) / seen, "test_error": test_error,
               "lr": float(self.optimizer.param_groups[0]["lr"]), "note": self._note}
        self.history.append(row)
        self.epoch, self.batch, self._sums, self._note = self.epoch + 1, 0, (0.0, 0, 0), ""
        if self.scheduler is not None:
            self.scheduler.step()
        if self.progress:
            tqdm.write(f"{self._label()}epoch {row['epoch']}/{self.epochs}: train loss "
                       f"{row['train_loss']:.4f}, train error {row['train_error']:.2f}%, test "
                       f"error {row['test_error']:.2f}%, lr {row['lr']:.4g}")
        if self.out_dir is not None:
            write_metrics(self.history, self.out_dir)
            if self.epoch % self.checkpoint_every == 0:
                self.save()

    # --- the divergence guard (minires/divergence.py) ------------------------------------------
    def _check_guard(self):
        """Read the guard's flags; a DivergenceError naming the first bad step if there was one."""
        if self._diverged is not None:
            raise DivergenceError(self._diverged)
        found = None if self._guard is None else self._guard.read()
        read_at, self._read_at = self._read_at, self.step
        if found is None:
            return
        index, loss, (kind, name) = found[0], found[1], found[2] or ("loss", None)
        step = read_at + index  # steps before the bad one; it is in the current epoch
        where = (f"training diverged in epoch {step // self.batches_per_epoch + 1}, step "
                 f"{step + 1} (batch {step % self.batches_per_epoch + 1} of "
                 f"{self.batches_per_epoch})")
        if kind == "buffer":
            what = (f"the forward pass made the buffer '{name}' non-finite (its layer's input is "
                    "too large for float32)")
        elif kind == "update":
            what = (f"the update would make '{name}' non-finite (lr "
                    f"{self.optimizer.param_groups[0]['lr']:g}), so it was not applied")
        else:
            what = f"the loss is {loss:.4g}" + ("" if kind == "loss" else
                                                f" and the gradient of '{name}' is the first "
                                                "non-finite one")
        saved = ("no checkpoint was written" if self.last_checkpoint is None else
                 f"the last checkpoint, {self.last_checkpoint[0]} (step "
                 f"{self.last_checkpoint[1]}), is kept")
        find = (" Find the op that made it by running again under minires.detect_anomaly() "
                "(minires train: --detect-anomaly)." if kind in ("loss", "gradient") else "")
        self._diverged = (f"{where}: {what}; the parameters are as before this step, {saved}."
                          f"{find} Train on regardless with allow_nonfinite=True "
                          "(--allow-nonfinite).")
        raise DivergenceError(self._diverged)

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
                     "loss_sum": float(loss_sum), "wrong": int(wrong), "seen": seen,
                     "note": self._note},
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
        changes = compare_settings(self, sections, allow_changes)
        counters = check_sections(self, sections)
        previous = self.state_dict(), self._counters()
        try:
            self._restore(sections, counters)
        except CheckpointError:
            self._restore(*previous)
            raise
        self.changes = changes
        self._note = "; ".join(filter(None, [counters["note"]] + [
            f"{key} {show(old)} -> {show(new)}" for key, old, new in changes]))

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
        self._read_at, self._diverged = self.step, None

    def save(self, path=None):
        """Write a checkpoint (default: out_dir/checkpoint.npz) atomically; returns its path.

        Unless `allow_nonfinite`, nothing is written once the run has diverged or from a
        non-finite model or optimizer state (a DivergenceError says why), so the previous
        checkpoint stays.
        """
        path = self._checkpoint_path(path)
        try:
            self._check_guard()
        except DivergenceError as err:
            raise DivergenceError(f"not writing {path}: {err}") from None
        sections = self.state_dict()
        if not self.allow_nonfinite:
            bad = first_nonfinite((f"{name}/{key}", np.asarray(value))
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
        sections = load_checkpoint(path, member_check(self.model))
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


# --- checking the arguments ----------------------------------------------------------------

def _check_counts(epochs, checkpoint_every, steps_per_epoch, sync_every, batches_per_epoch,
                  train_batches, test_batches):
    """Refuse counts that would make the loop do nonsense (a ValueError naming the argument), and
    loaders that yield nothing, when the Trainer is built rather than after an epoch."""
    for name, value, low in (("epochs", epochs, 0), ("checkpoint_every", checkpoint_every, 1),
                             ("steps_per_epoch", steps_per_epoch, 1),
                             ("sync_every", sync_every, 1)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < low):
            raise ValueError(f"Trainer: {name} must be an integer >= {low}, got {value!r}")
    if batches_per_epoch < 1:
        raise ValueError(f"Trainer: the training loader yields no batches (len {train_batches}, "
                         f"steps_per_epoch {steps_per_epoch})")
    if test_batches < 1:
        raise ValueError("Trainer: the test loader yields no batches (an empty test set?); "
                         "every epoch ends with an evaluation on it")


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
