"""Learning-rate schedules, shaped like torch.optim.lr_scheduler.

A scheduler sets ``group["lr"]`` of its optimizer's parameter groups. Construct it after the
optimizer (it records each group's starting lr as ``group["initial_lr"]`` and sets the epoch-0
value), then call ``scheduler.step()`` once per epoch, after ``optimizer.step()``:

    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    warmup = LinearLR(opt, start_factor=0.1, total_iters=5)
    decay = MultiStepLR(opt, milestones=[100, 150], gamma=0.1)   # counted from its own start
    sched = SequentialLR(opt, [warmup, decay], milestones=[5])

Every schedule here is a closed form of (base lr, last_epoch), so a value never depends on the
history of steps; the values agree with PyTorch's (recursive) ones to rounding. ``state_dict`` is
flat and ``.npz``-storable; it does not hold the lr itself, which is in the optimizer's state_dict.
"""
import math
from bisect import bisect_right

import numpy as np

from .optimizer import Optimizer, from_flat, to_flat


class LRScheduler:
    """Base: subclasses define `get_lr()` (the lrs at `last_epoch`) and list `hyperparameters`."""

    hyperparameters = ()

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a minires Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [group.setdefault("initial_lr", group["lr"])
                         for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def step(self):
        """Advance one epoch and write the new lr into every parameter group."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The lrs (one per parameter group) that the latest step set."""
        return list(self._last_lr)

    def state_dict(self):
        """Flat {str: numpy array or Python scalar}: epoch, base_lrs, last_lr, hyperparameters."""
        flat = {"last_epoch": self.last_epoch,
                "base_lrs": np.array(self.base_lrs, dtype=np.float64),
                "last_lr": np.array(self._last_lr, dtype=np.float64)}
        flat.update({name: to_flat(getattr(self, name)) for name in self.hyperparameters})
        return flat

    def load_state_dict(self, state_dict):
        """Restore from `state_dict`; keys and the number of groups must match this scheduler."""
        _check_keys(self, state_dict, self.state_dict())
        for key in ("base_lrs", "last_lr"):
            if np.shape(state_dict[key]) != (len(self.base_lrs),):
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has shape "
                                 f"{np.shape(state_dict[key])}, the optimizer has "
                                 f"{len(self.base_lrs)} parameter group(s)")
        self.last_epoch = from_flat(state_dict["last_epoch"])
        self.base_lrs = np.asarray(state_dict["base_lrs"]).tolist()
        self._last_lr = np.asarray(state_dict["last_lr"]).tolist()
        for name in self.hyperparameters:
            setattr(self, name, from_flat(state_dict[name], getattr(self, name)))


class MultiStepLR(LRScheduler):
    """lr_t = base_lr * gamma ** (number of milestones <= t)."""

    hyperparameters = ("milestones", "gamma")

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self):
        factor = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2."""

    hyperparameters = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):
        if T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be > 0, got {T_max}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer)

    def get_lr(self):
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * cosine for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """lr_t = base_lr * (start + (end - start) * min(t, total_iters) / total_iters): a warm-up."""

    hyperparameters = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor}")
        if total_iters <= 0:
            raise ValueError(f"LinearLR: total_iters must be > 0, got {total_iters}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer)

    def get_lr(self):
        progress = min(self.last_epoch, self.total_iters) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * progress
        return [base_lr * factor for base_lr in self.base_lrs]


class SequentialLR(LRScheduler):
    """schedulers[k] runs from milestones[k-1] (epoch 0 for k = 0), restarted at its own epoch 0."""

    def __init__(self, optimizer, schedulers, milestones):
        if not schedulers:
            raise ValueError("SequentialLR: expects at least one scheduler")
        for i, scheduler in enumerate(schedulers):
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {i} ({type(scheduler).__name__}) "
                                 f"belongs to another optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: {len(schedulers)} schedulers need "
                             f"{len(schedulers) - 1} milestones, got {len(milestones)}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"SequentialLR: milestones must be increasing, got {list(milestones)}")
        self.schedulers = list(schedulers)
        self.milestones = [int(m) for m in milestones]
        super().__init__(optimizer)

    def step(self):
        """Advance one epoch; the scheduler in charge sets the lr at its own epoch."""
        self.last_epoch += 1
        k = bisect_right(self.milestones, self.last_epoch)
        scheduler = self.schedulers[k]
        scheduler.last_epoch = self.last_epoch - (self.milestones[k - 1] if k else 0) - 1
        scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        """Flat: its own entries plus "schedulers.{k}.{key}" for each scheduler's."""
        flat = {"last_epoch": self.last_epoch, "milestones": np.array(self.milestones),
                "last_lr": np.array(self._last_lr, dtype=np.float64)}
        for k, scheduler in enumerate(self.schedulers):
            flat.update({f"schedulers.{k}.{key}": value
                         for key, value in scheduler.state_dict().items()})
        return flat

    def load_state_dict(self, state_dict):
        _check_keys(self, state_dict, self.state_dict())
        for k, scheduler in enumerate(self.schedulers):
            prefix = f"schedulers.{k}."
            scheduler.load_state_dict({key[len(prefix):]: value for key, value in state_dict.items()
                                       if key.startswith(prefix)})
        self.last_epoch = from_flat(state_dict["last_epoch"])
        self.milestones = np.asarray(state_dict["milestones"]).tolist()
        self._last_lr = np.asarray(state_dict["last_lr"]).tolist()


def _check_keys(scheduler, state_dict, expected):
    """Raise a ValueError listing missing and unexpected keys of a scheduler state_dict."""
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        raise ValueError(f"{type(scheduler).__name__}.load_state_dict: missing keys {missing}, "
                         f"unexpected keys {extra}")
