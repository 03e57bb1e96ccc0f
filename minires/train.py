"""Training: one step, one evaluation, and a Trainer with a progress bar, metrics, checkpoints and
exact resume. Also the `minires train` command (the paper's CIFAR-10 recipe).

The pieces, from small to large:

    loss = train_step(model, optimizer, x, y)        # one SGD step on one batch
    loss, error = evaluate(model, test_loader)       # error in percent, eval mode, no graph
    history = train(model, optimizer, train_loader, test_loader, epochs=10,
                    scheduler=scheduler, out_dir="runs/demo")

`train` runs a `Trainer`. After every epoch it evaluates the test set and writes, into `out_dir`,
``metrics.csv`` and ``metrics.json`` (one row per epoch: epoch, train_loss, train_error,
test_error, lr) and ``learning_curve.png``. The train loss and error are those of the epoch's
mini-batches as they were trained on (train mode, augmented), as in the paper's curves.

Exact resume. ``checkpoint.npz`` holds the model, optimizer and schedule state, NumPy's global RNG,
the counters (epoch, step, batch within the epoch), the running sums of the current epoch's
metrics, the metrics history, and the loader's RNG state *at the start of the current epoch*. A
checkpoint may be taken in the middle of an epoch: on resume the loader goes back to the epoch's
start, draws the same permutation and augmentations again, and skips the batches already trained
on. A seeded CPU run of 4 steps therefore equals 2 steps + save + load + 2 steps, bit for bit.
The schedule steps once per epoch, as torch's MultiStepLR is used.
"""
import argparse
import csv
import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend, manual_seed
from . import functional as F
from .autograd import Tensor, no_grad
from .checkpoint import load_checkpoint, save_checkpoint
from .data import DataLoader, load_cifar10, synthetic_cifar
from .models import get_model
from .optim import SGD
from .optim.lr_scheduler import MultiStepLR

COLUMNS = ("epoch", "train_loss", "train_error", "test_error", "lr")
CHECKPOINT_NAME = "checkpoint.npz"


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


def _train_batch(model, optimizer, x, y):
    """zero_grad, forward, backward, step; returns (loss, number of wrong predictions)."""
    x, y = _on_device(model, x, y)
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    return loss.item(), _count_wrong(logits, y)


def _on_device(model, x, y):
    """The batch as Tensors on the model's device (arrays or Tensors in)."""
    device = model.device
    return tuple(Tensor(backend.to_device(v.data if isinstance(v, Tensor) else v, device))
                 for v in (x, y))


def _count_wrong(logits, y):
    """How many rows of logits (N, K) do not have their largest value at label y (N,)."""
    return int((logits.data.argmax(axis=1) != y.data).sum())


# --- the Trainer -------------------------------------------------------------------------------

class Trainer:
    """The training loop, step by step: `run(max_steps)` trains until `epochs` epochs are done or
    the optimizer has taken `max_steps` steps in all, and can be called again to go on.

    `steps_per_epoch` cuts every epoch short (quick runs); `checkpoint_every` is in epochs, and a
    checkpoint is also written when `run` returns (both only with an `out_dir`). `device` moves the
    model; batches are moved to wherever the model is.
    """

    def __init__(self, model, optimizer, train_loader, test_loader, epochs, scheduler=None,
                 out_dir=None, checkpoint_every=1, progress=True, device=None,
                 steps_per_epoch=None):
        self.model = model if device is None else model.to(device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.test_loader = train_loader, test_loader
        self.epochs, self.checkpoint_every, self.progress = epochs, checkpoint_every, progress
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.batches_per_epoch = min(len(train_loader), steps_per_epoch or len(train_loader))
        if self.batches_per_epoch < 1:
            raise ValueError(f"Trainer: the training loader yields no batches (len "
                             f"{len(train_loader)}, steps_per_epoch {steps_per_epoch})")
        self.epoch = 0           # epochs completed
        self.step = 0            # optimizer steps taken
        self.batch = 0           # batches done in the current epoch
        self.history = []        # one {column: value} per completed epoch
        self._sums = (0.0, 0, 0)  # the current epoch's (loss * batch size, wrong, seen)
        self._epoch_start = None  # the loader's state when the current epoch began

    def run(self, max_steps=None):
        """Train until done (or `max_steps` steps in all); returns the metrics history."""
        while self.epoch < self.epochs and not self._reached(max_steps):
            self._train_epoch(max_steps)
            if self.batch == self.batches_per_epoch:
                self._end_epoch()
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
        self.model.train()
        with tqdm(total=self.batches_per_epoch, initial=self.batch, leave=False,
                  desc=f"epoch {self.epoch + 1}/{self.epochs}", disable=not self.progress) as bar:
            for x, y in batches:
                loss, wrong = _train_batch(self.model, self.optimizer, x, y)
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
               "lr": float(self.optimizer.param_groups[0]["lr"])}
        self.history.append(row)
        self.epoch, self.batch, self._sums = self.epoch + 1, 0, (0.0, 0, 0)
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

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self):
        """Everything an exact resume needs, as checkpoint sections of flat arrays."""
        loss_sum, wrong, seen = self._sums
        sections = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": _numpy_rng_state(),
            "loader": self._epoch_start if self.batch else self.train_loader.state_dict(),
            "meta": {"epoch": self.epoch, "step": self.step, "batch": self.batch,
                     "loss_sum": loss_sum, "wrong": wrong, "seen": seen},
            "metrics": {c: np.array([row[c] for row in self.history]) for c in COLUMNS},
        }
        if self.scheduler is not None:
            sections["scheduler"] = self.scheduler.state_dict()
        return sections

    def load_state_dict(self, sections):
        """Restore from `state_dict()` sections (as `load_checkpoint` returns them)."""
        if (self.scheduler is None) != ("scheduler" not in sections):
            raise ValueError("Trainer.load_state_dict: the checkpoint has "
                             f"{'a' if 'scheduler' in sections else 'no'} schedule state, this "
                             f"trainer has {'a' if self.scheduler else 'no'} scheduler")
        self.model.load_state_dict(sections["model"])
        self.optimizer.load_state_dict(sections["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(sections["scheduler"])
        _set_numpy_rng_state(sections["rng"])
        self._epoch_start = sections["loader"]
        self.train_loader.load_state_dict(self._epoch_start)
        meta = sections["meta"]
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
        self.batch = int(meta["batch"])
        self._sums = (float(meta["loss_sum"]), int(meta["wrong"]), int(meta["seen"]))
        columns = [np.atleast_1d(sections["metrics"][c]).tolist() for c in COLUMNS]
        self.history = [dict(zip(COLUMNS, values)) for values in zip(*columns)]

    def save(self, path=None):
        """Write a checkpoint (default: out_dir/checkpoint.npz) atomically; returns its path."""
        return save_checkpoint(self._checkpoint_path(path), **self.state_dict())

    def load(self, path=None):
        """Resume from a checkpoint (default: out_dir/checkpoint.npz)."""
        self.load_state_dict(load_checkpoint(self._checkpoint_path(path)))

    def _checkpoint_path(self, path):
        if path is None and self.out_dir is None:
            raise ValueError("Trainer: give a checkpoint path, or an out_dir to keep it in")
        return Path(path) if path is not None else self.out_dir / CHECKPOINT_NAME


def train(model, optimizer, train_loader, test_loader, epochs, scheduler=None, out_dir=None,
          checkpoint_every=1, resume=False, progress=True, device=None, steps_per_epoch=None,
          max_steps=None):
    """Train `model` for `epochs` epochs (see Trainer); returns the metrics history.

    resume: False, True (out_dir/checkpoint.npz) or a checkpoint path to go on from.
    """
    trainer = Trainer(model, optimizer, train_loader, test_loader, epochs, scheduler, out_dir,
                      checkpoint_every, progress, device, steps_per_epoch)
    if resume:
        trainer.load(None if resume is True else resume)
    return trainer.run(max_steps)


def _numpy_rng_state():
    """NumPy's global (legacy MT19937) generator state as arrays and numbers."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"keys": keys, "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached_gaussian}


def _set_numpy_rng_state(state):
    np.random.set_state(("MT19937", np.asarray(state["keys"], dtype=np.uint32), int(state["pos"]),
                         int(state["has_gauss"]), float(state["cached_gaussian"])))


# --- metrics files -----------------------------------------------------------------------------

def write_metrics(history, out_dir):
    """metrics.csv, metrics.json and learning_curve.png of `history` in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(history)
    (out_dir / "metrics.json").write_text(json.dumps(history, indent=2) + "\n")
    plot_learning_curve(history, out_dir / "learning_curve.png")


def plot_learning_curve(history, path):
    """Train/test error (%) and train loss against epoch, side by side, as a PNG.

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
    fig.savefig(path, dpi=100)
    return path


# --- the `minires train` command ---------------------------------------------------------------

def add_arguments(parser):
    """The options of `minires train`; defaults are the paper's CIFAR-10 recipe."""
    parser.add_argument("--model", default="resnet20",
                        help="resnet20/32/44/56/110, plain20..., preact20... (default: resnet20)")
    parser.add_argument("--data", choices=("cifar10", "synthetic"), default="cifar10",
                        help="CIFAR-10 (downloaded to $MINIRES_DATA) or a small learnable "
                             "synthetic stand-in (default: cifar10)")
    parser.add_argument("--data-root", help="folder holding CIFAR-10 (default: $MINIRES_DATA "
                                            "or ~/.cache/minires)")
    parser.add_argument("--epochs", type=int, default=164,
                        help="epochs; the lr drops 10x at 50%% and 75%% of them (default: 164, "
                             "about the paper's 64k iterations)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="pad-and-crop and flip the training images (default: on)")
    parser.add_argument("--device", choices=backend.DEVICES,
                        help="cpu (NumPy) or cuda (CuPy) (default: $MINIRES_DEVICE or cpu)")
    parser.add_argument("--out", help="folder for metrics, curve and checkpoint "
                                      "(default: runs/<model>-<data>)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from <out>/checkpoint.npz")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the initialisation, shuffle, augmentation and synthetic data "
                             "(default: 0)")
    parser.add_argument("--steps-per-epoch", type=int,
                        help="train on at most K batches per epoch (quick runs)")
    parser.add_argument("--n-train", type=int, help="training images (synthetic default: 5000; "
                                                    "cifar10: the first N, default all)")
    parser.add_argument("--n-test", type=int, help="test images (synthetic default: 1000; "
                                                   "cifar10: the first N, default all)")
    parser.add_argument("--checkpoint-every", type=int, default=1,
                        help="epochs between checkpoints (default: 1)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar (default: on)")


def run_command(args):
    """`minires train`: build data, model, SGD and MultiStepLR from `args`, then train."""
    out_dir = Path(args.out or f"runs/{args.model}-{args.data}")
    try:
        trainer = _build_trainer(args, out_dir)
        if args.resume:
            trainer.load()
    except (ValueError, RuntimeError, OSError) as err:  # bad model/device/data: a message, no trace
        raise SystemExit(f"minires train: {err}") from None
    trainer.run()
    print(f"metrics, learning curve and checkpoint in {out_dir}")
    return 0


def paper_recipe(model, epochs, lr=0.1, momentum=0.9, weight_decay=1e-4):
    """The optimizer and schedule of He et al. 2015 (section 4.2) for `epochs` scheduler steps:
    SGD with momentum and weight decay, the learning rate divided by 10 at 50% and 75% of the run.
    Returns (optimizer, scheduler)."""
    optimizer = SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    milestones = [math.ceil(epochs * 0.5), math.ceil(epochs * 0.75)]
    return optimizer, MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


def _build_trainer(args, out_dir):
    device = backend.check_device(args.device or backend.default_device())
    manual_seed(args.seed)
    model = get_model(args.model).to(device)
    x_train, y_train, x_test, y_test = _load_data(args)
    train_loader = DataLoader(x_train, y_train, args.batch_size, shuffle=True,
                              augment=args.augment, seed=args.seed, device=device)
    test_loader = DataLoader(x_test, y_test, args.batch_size, shuffle=False, device=device)
    optimizer, scheduler = paper_recipe(model, args.epochs, args.lr, args.momentum,
                                        args.weight_decay)
    return Trainer(model, optimizer, train_loader, test_loader, args.epochs, scheduler, out_dir,
                   args.checkpoint_every, args.progress, steps_per_epoch=args.steps_per_epoch)


def _load_data(args):
    """(x_train, y_train, x_test, y_test) of --data, cut to --n-train/--n-test."""
    if args.data == "synthetic":
        return synthetic_cifar(args.n_train or 5000, args.n_test or 1000, seed=args.seed)
    x_train, y_train, x_test, y_test = load_cifar10(args.data_root, progress=args.progress)
    return (x_train[:args.n_train], y_train[:args.n_train],
            x_test[:args.n_test], y_test[:args.n_test])
