"""Checking a training checkpoint against the Trainer that resumes from it (used by minires.train).

A checkpoint is data from a file: any value in it may have been edited, truncated or forged. Before
a Trainer takes anything from one, the functions here check

- **the run's settings** (`compare_settings`): section ``config`` against the settings the
  Trainer reads off its own objects (`run_settings`): a SettingsChanged names each that differs;
- **every field** (`check_sections`): the sections present, the model's arrays (names, shapes,
  finite; batch norm's running variances >= 0), the RNG state, the counters (in range, and
  step = epoch * steps per epoch + batch), the metrics rows, the schedule, and the optimizer's
  hyperparameters, its learning rate included: it must be the one the schedule gives at the
  checkpoint's epoch. The first bad field is a CheckpointError naming it;
- **sizes before inflating** (`member_check`): passed to `load_checkpoint`, it refuses a member
  whose declared size (from the zip and .npy headers) is beyond what a checkpoint of this model
  holds, before the member is read, so a small file declaring gigabytes costs neither time nor
  memory.
"""
import copy
import itertools

import numpy as np

from . import backend
from .checkpoint import CheckpointError, field, read_array, read_float, read_int, section

METRIC_COLUMNS = ("epoch", "train_loss", "train_error", "test_error", "lr", "note")
CHANGEABLE = ("epochs",)   # settings that `allow_changes` may let differ on resume
RECORDED = ("device",)     # settings that may differ on resume without asking (both are noted)
SECTIONS = ("config", "model", "optimizer", "rng", "loader", "meta", "metrics")
MEMBER_SLACK = 8               # a member may be 8 times the model's largest array,
SMALL_MEMBER_BYTES = 1 << 22   # or 4 MiB;
SMALL_MEMBERS_BYTES = 1 << 24  # all of them 8 times the model and its optimizer state, or 16 MiB
_COLUMN_KINDS = {"epoch": "iu", "note": "U"}  # the others are floats ("f")


class SettingsChanged(ValueError):
    """A checkpoint's run settings differ from those of the trainer that resumes from it."""


def first_nonfinite(named_arrays):
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


# --- sizes, from the headers -------------------------------------------------------------------

def member_check(model):
    """A `check_member(name, shape, dtype)` for `load_checkpoint`, from `model` alone.

    Before a member is inflated its declared size must fit a checkpoint of this model: no member
    larger than MEMBER_SLACK times the model's largest array (at least SMALL_MEMBER_BYTES), all
    of them together at most MEMBER_SLACK times the model and its optimizer state (at least
    SMALL_MEMBERS_BYTES). The slack lets the checkpoint of another architecture of about this size
    through to the settings check, which names what differs; a few-MB file that declares
    gigabytes is refused from its headers, in constant time and memory. The exact shapes are
    checked once the sections are read (check_sections).
    """
    arrays = _model_arrays(model).values()
    largest = max(SMALL_MEMBER_BYTES, MEMBER_SLACK * max(a.nbytes for a in arrays))
    budget = [max(SMALL_MEMBERS_BYTES, MEMBER_SLACK * 2 * sum(a.nbytes for a in arrays))]

    def check(name, shape, dtype):
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        budget[0] -= size
        if size > largest or budget[0] < 0:
            raise CheckpointError(f"{name} declares {dtype} of shape {shape} ({size} bytes), more "
                                  f"than a checkpoint of this {type(model).__name__} holds; the "
                                  "file is not read")
    return check


def _model_arrays(model):
    return dict(itertools.chain(((name, p.data) for name, p in model.named_parameters()),
                                model.named_buffers()))


# --- settings ----------------------------------------------------------------------------------

def run_settings(trainer):
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
    return {key: setting(key, value) for key, value in settings.items()}


def _optimizer_settings(groups):
    """Each group's hyperparameters ("momentum", "group1.momentum"), its starting lr as "lr"."""
    settings = {}
    for i, group in enumerate(groups):
        prefix = f"group{i}." if i else ""
        for key, value in group.items():
            if key not in ("params", "initial_lr"):
                settings[prefix + key] = group.get("initial_lr", value) if key == "lr" else value
    return settings


def setting(name, value, error=CheckpointError):
    """A setting as plain Python (number, bool, string or list of numbers), as compared."""
    array = np.asarray(backend.to_numpy(value) if backend.is_array(value) else value)
    if array.ndim > 1 or array.dtype.kind not in "biufU":
        raise error(f"{name} must be a number, a string or a list of numbers, got "
                    f"{array.dtype} of shape {array.shape}")
    return array.tolist()


def compare_settings(trainer, sections, allow_changes):
    """[(setting, old, new)] that may differ; SettingsChanged if any other one differs."""
    if "config" not in sections:  # written before checkpoints recorded their settings
        raise CheckpointError(
            "the checkpoint has no section 'config': it comes from a minires that did not "
            "record the run's settings, so resuming cannot check that they are the same; "
            "start a new run in another folder (or resume it with that older minires)")
    saved = {key: setting(f"config/{key}", value) for key, value in sections["config"].items()}
    differ = [(key, saved.get(key), trainer.config.get(key))
              for key in sorted(set(saved) | set(trainer.config))
              if saved.get(key) != trainer.config.get(key)]
    refused = [d for d in differ if d[0] not in set(allow_changes) | set(RECORDED)]
    if refused:
        hint = ("; to change epochs pass allow_changes=('epochs',) (minires train: "
                "--allow-change epochs)" if all(d[0] in CHANGEABLE for d in refused) else
                "; to train with other settings, start a new run in another folder")
        raise SettingsChanged("the checkpoint was written with other settings: " + "; ".join(
            f"{key}: {show(old)} in the checkpoint, {show(new)} now"
            for key, old, new in refused) + hint)
    done = read_int(sections, "meta/epoch", 0, read_int(sections, "config/epochs", 0, 2**62))
    if done > trainer.epochs:
        raise SettingsChanged(f"epochs: the checkpoint has completed {done} epochs, more "
                              f"than the {trainer.epochs} asked for now")
    return differ


# --- every field -------------------------------------------------------------------------------

def check_sections(trainer, sections):
    """Check every field but the config (compare_settings does that); returns the counters
    {epoch, step, batch, loss_sum, wrong, seen, note, history}."""
    scheduler = trainer.scheduler
    expected = set(SECTIONS) | ({"scheduler"} if scheduler is not None else set())
    if (scheduler is None) != ("scheduler" not in sections):
        raise CheckpointError(f"the checkpoint has {'a' if 'scheduler' in sections else 'no'} "
                              f"schedule state, this trainer has "
                              f"{'a' if scheduler else 'no'} scheduler")
    unexpected = sorted(set(sections) - expected)
    if unexpected:
        raise CheckpointError(f"the checkpoint has an unexpected section '{unexpected[0]}'")
    for name in sorted(expected):
        section(sections, name)
    _check_model_section(trainer.model, sections)
    if not trainer.allow_nonfinite:
        bad = first_nonfinite((f"{name}/{key}", np.asarray(value))
                              for name in sorted(expected - {"config"})
                              for key, value in sections[name].items())
        if bad is not None:
            raise CheckpointError(f"{bad} holds NaN or Inf (from a diverged run?); pass "
                                  "allow_nonfinite=True (--allow-nonfinite) to load it anyway")
    read_array(sections, "rng/keys", "u", (624,))
    read_int(sections, "rng/pos", 0, 624)
    read_int(sections, "rng/has_gauss", 0, 1)
    read_float(sections, "rng/cached_gaussian", finite=not trainer.allow_nonfinite)
    counters = _check_meta(trainer, sections)
    counters["history"] = _check_metrics(sections, counters["epoch"])
    if scheduler is not None:
        read_int(sections, "scheduler/last_epoch", counters["epoch"], counters["epoch"])
        _check_same_settings(sections, "scheduler", scheduler.state_dict(),
                             lambda key: key.split(".")[-1] not in ("last_epoch", "last_lr"))
    _check_optimizer_section(trainer, sections, counters["epoch"])
    return counters


def _check_model_section(model, sections):
    """The model section must hold exactly this model's arrays, with its shapes; batch norm's
    running variances must not be negative (a NaN is the finiteness check's business)."""
    expected = _model_arrays(model)
    saved = sections["model"]
    missing = [key for key in expected if key not in saved]
    extra = [key for key in saved if key not in expected]
    if missing or extra:
        raise CheckpointError(
            f"model: the checkpoint's model is not this {type(model).__name__}: it lacks "
            f"{len(missing)} of this model's arrays{_first(missing)} and has {len(extra)} "
            f"others{_first(extra)}; it was saved from another architecture")
    for key, array in expected.items():
        value = read_array(sections, f"model/{key}", "f" if array.dtype.kind == "f" else "iu",
                           tuple(array.shape))
        if key.split(".")[-1] == "running_var" and (value < 0).any():
            raise CheckpointError(f"model/{key} holds a negative variance "
                                  f"({float(value.min()):g}); a running variance is >= 0")


def _check_meta(trainer, sections):
    """The counters: in range, and consistent with each other (step = epoch * steps + batch)."""
    epoch = read_int(sections, "meta/epoch", 0, trainer.epochs)
    batch = read_int(sections, "meta/batch", 0, trainer.batches_per_epoch - 1)
    step = epoch * trainer.batches_per_epoch + batch
    read_int(sections, "meta/step", step, step)
    batch_size = getattr(trainer.train_loader, "batch_size", 2 ** 62 // max(batch, 1))
    seen = read_int(sections, "meta/seen", batch, batch * batch_size)  # 0 at an epoch start
    wrong = read_int(sections, "meta/wrong", 0, seen)
    loss_sum = read_float(sections, "meta/loss_sum", 0, np.inf, not trainer.allow_nonfinite)
    note = str(read_array(sections, "meta/note", "U", ()))
    return {"epoch": epoch, "step": step, "batch": batch, "loss_sum": loss_sum,
            "wrong": wrong, "seen": seen, "note": note}


def _check_metrics(sections, epochs_done):
    """One row per completed epoch, numbered 1..epochs_done; returns the history."""
    columns = {c: read_array(sections, f"metrics/{c}", _COLUMN_KINDS.get(c, "f"),
                             (epochs_done,)) for c in METRIC_COLUMNS}
    if not np.array_equal(columns["epoch"], np.arange(1, epochs_done + 1)):
        raise CheckpointError(f"metrics/epoch is {columns['epoch'].tolist()}, expected "
                              f"1..{epochs_done}")
    values = [columns[c].tolist() for c in METRIC_COLUMNS]
    return [dict(zip(METRIC_COLUMNS, row)) for row in zip(*values)]


def _check_optimizer_section(trainer, sections, epochs_done):
    """The optimizer's hyperparameters are this trainer's, and each group's lr is the one the
    schedule gives after `epochs_done` epochs (without a schedule: the group's lr)."""
    optimizer = trainer.optimizer
    _check_same_settings(sections, "optimizer", optimizer.state_dict(),
                         lambda key: key.startswith("param_groups.")
                         and key.split(".")[-1] not in ("lr", "params"))
    lrs = _scheduled_lrs(trainer.scheduler, epochs_done, sections, optimizer)
    for i, lr in enumerate(lrs):
        saved = read_float(sections, f"optimizer/param_groups.{i}.lr")
        if saved != lr:
            raise CheckpointError(f"optimizer/param_groups.{i}.lr is {saved!r}, but the run's "
                                  f"settings give {lr!r} after {epochs_done} epoch(s)")


def _scheduled_lrs(scheduler, epochs_done, sections, optimizer):
    """Each group's lr after `epochs_done` schedule steps, from the schedule's closed form (a
    composed schedule without one: the lr the checkpoint's schedule says it set last)."""
    if scheduler is None:
        return [group["lr"] for group in optimizer.param_groups]
    if not hasattr(scheduler, "get_lr"):
        return read_array(sections, "scheduler/last_lr", "f",
                          (len(optimizer.param_groups),)).tolist()
    at_epoch = copy.copy(scheduler)  # shares nothing get_lr changes
    at_epoch.last_epoch = epochs_done
    return [float(lr) for lr in at_epoch.get_lr()]


def _check_same_settings(sections, name, current, is_setting):
    """Every `is_setting` key of section `name` must be there and equal this trainer's value."""
    saved = sections[name]
    for key in sorted(k for k in set(saved) | set(current) if is_setting(k)):
        old = setting(f"{name}/{key}", field(sections, f"{name}/{key}"))
        new = setting(key, current[key]) if key in current else None
        if old != new:
            raise CheckpointError(f"{name}/{key} is {show(old)}, this trainer's is {show(new)}")


def _first(names):
    return f" (first '{names[0]}')" if names else ""


def show(value):
    """A setting's value as messages print it ("not set" for a missing one)."""
    return "not set" if value is None else repr(value)
