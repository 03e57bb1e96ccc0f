"""`minires train`: the paper's CIFAR-10 recipe from the command line, on top of minires.train.

    minires train --data synthetic --epochs 2 --out runs/demo
    minires train --data synthetic --epochs 2 --out runs/demo --resume          # goes on
    minires train --data synthetic --epochs 4 --out runs/demo --resume --allow-change epochs

Every user mistake (a bad option value, missing or corrupt data, a checkpoint that does not fit,
changed settings on resume, a diverged run, an output folder that cannot be written) ends with one
line "minires train: ..." on stderr and exit status 1, not a traceback.

The output folder belongs to one run (minires/commands/common.py): it is locked while the command
runs (a second command on it is refused at once), and a folder holding a run is refused unless
`--resume` goes on with it or `--overwrite` moves its files aside. Ctrl-C stops between two steps:
the command writes a checkpoint, says where, and exits with status 130; `--resume` goes on from
it bit for bit. A second Ctrl-C stops at once (the last checkpoint written is then the one kept).

On resume the learning-rate schedule is the one the run started with: the lr drops at 50% and 75%
of the epochs first asked for (`schedule_epochs` in the checkpoint), also after `--allow-change
epochs`, so more epochs go on at the last learning rate.
"""
import argparse
import contextlib
from pathlib import Path

from .. import backend, manual_seed
from ..checkpoint import CheckpointError, load_checkpoint, read_int
from ..checkpoint_checks import member_check
from ..data import DataLoader, load_cifar10, synthetic_cifar
from ..models import get_model
from ..train import CHANGEABLE, CHECKPOINT_NAME, SettingsChanged, Trainer, paper_recipe
from .common import (StopRequest, add_overwrite_option, checkpoint_counters, count_at_least,
                     interrupted, one_line, output_folder)

RUN_FILES = (CHECKPOINT_NAME, "metrics.csv", "metrics.json", "learning_curve.png")


def add_arguments(parser):
    """The options of `minires train`; defaults are the paper's CIFAR-10 recipe."""
    parser.add_argument("--model", default="resnet20",
                        help="resnet20/32/44/56/110, plain20..., preact20... (default: resnet20)")
    parser.add_argument("--data", choices=("cifar10", "synthetic"), default="cifar10",
                        help="CIFAR-10 (downloaded to $MINIRES_DATA) or a small learnable "
                             "synthetic stand-in (default: cifar10)")
    parser.add_argument("--data-root", help="folder holding CIFAR-10 (default: $MINIRES_DATA "
                                            "or ~/.cache/minires)")
    parser.add_argument("--epochs", type=count_at_least(1), default=164,
                        help="epochs; the lr drops 10x at 50%% and 75%% of them (default: 164, "
                             "about the paper's 64k iterations)")
    parser.add_argument("--batch-size", type=count_at_least(1), default=128)
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
                        help="go on from <out>/checkpoint.npz if it is there (else start fresh); "
                             "every setting must be as in the checkpoint")
    add_overwrite_option(parser)
    parser.add_argument("--allow-change", action="append", default=[], choices=CHANGEABLE,
                        metavar="SETTING",
                        help="with --resume, let this setting differ from the checkpoint's: "
                             f"{', '.join(CHANGEABLE)} (the metrics note the change)")
    parser.add_argument("--seed", type=count_at_least(0), default=0,
                        help="seeds the initialisation, shuffle, augmentation and synthetic data "
                             "(default: 0)")
    parser.add_argument("--steps-per-epoch", type=count_at_least(1),
                        help="train on at most K batches per epoch (quick runs)")
    parser.add_argument("--n-train", type=count_at_least(1),
                        help="training images (synthetic default: 5000; cifar10: the first N, "
                             "default all)")
    parser.add_argument("--n-test", type=count_at_least(1),
                        help="test images (synthetic default: 1000; cifar10: the first N, "
                             "default all)")
    parser.add_argument("--checkpoint-every", type=count_at_least(1), default=1,
                        help="epochs between checkpoints (default: 1)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="train on through NaN/Inf instead of stopping, and write and load "
                             "non-finite checkpoints (for studying divergence)")
    parser.add_argument("--detect-anomaly", action="store_true",
                        help="stop at the first op that makes a NaN or Inf, naming it and its "
                             "layer (slower; see minires.detect_anomaly)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar (default: on)")


def run(args):
    """Lock the output folder, build data, model, SGD and MultiStepLR from `args`, resume if
    asked, train; returns the exit status (0, or 130 after Ctrl-C)."""
    out_dir = Path(args.out or f"runs/{args.model}-{args.data}")
    if args.allow_change and not args.resume:
        raise SystemExit("minires train: --allow-change only means something with --resume")
    if args.overwrite and args.resume:
        raise SystemExit("minires train: --overwrite starts afresh and --resume goes on: pass "
                         "one of them")
    trainer = None
    try:
        with StopRequest() as stop, output_folder("train", out_dir, RUN_FILES, args.resume,
                                                  args.overwrite, _describe_run):
            trainer = _prepare(args, out_dir, stop)
            with _anomaly_mode(args.detect_anomaly):
                trainer.run()
    except (FloatingPointError, OSError) as err:  # diverged, disk full: no traceback
        raise SystemExit(one_line("train", err)) from None
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training began
        return interrupted("train", _what_was_saved(trainer))
    if stop.requested:
        return interrupted("train", _what_was_saved(trainer))
    print(f"metrics, learning curve and checkpoint in {out_dir}")
    return 0


def _prepare(args, out_dir, stop):
    """The Trainer of `args`, resumed from the checkpoint with --resume; one line on a mistake."""
    try:
        return _build_trainer(args, out_dir, stop)
    except (ValueError, RuntimeError, OSError) as err:  # bad model/device/data/checkpoint
        raise SystemExit(one_line("train", err)) from None


def _what_was_saved(trainer):
    saved = None if trainer is None else trainer.last_checkpoint
    if saved is None:
        return "no checkpoint was written; run the command again to start"
    return (f"the checkpoint {saved[0]} (step {saved[1]}) holds the run; go on with the same "
            "command and --resume")


def _describe_run(out_dir):
    """"its checkpoint is at step N" for the refusal of a folder that holds a run."""
    path = out_dir / CHECKPOINT_NAME
    if not path.is_file():
        return "no checkpoint yet"
    try:
        step, epochs = checkpoint_counters(path)
    except (CheckpointError, OSError) as err:
        return f"its checkpoint cannot be read: {err}"
    return f"its checkpoint is at step {step}, {epochs} epoch(s) done"


def _checkpoint_to_resume(args, path, model):
    """The checkpoint's sections with --resume and a checkpoint; None (and why) otherwise."""
    if not args.resume:
        return None
    if not path.is_file():
        print(f"minires train: no checkpoint at {path}, starting a fresh run")
        return None
    return load_checkpoint(path, member_check(model))


def _schedule_epochs(sections, epochs):
    """The epochs the lr schedule is planned for: the checkpoint's, else `epochs`."""
    if sections is None or "schedule_epochs" not in sections.get("config", {}):
        return epochs  # a fresh run (an old checkpoint without config is refused later)
    return read_int(sections, "config/schedule_epochs", 0, 2 ** 62)


def _resume(trainer, sections, path, allow_changes):
    try:
        trainer.load_state_dict(sections, allow_changes)
    except (CheckpointError, SettingsChanged) as err:
        raise type(err)(f"{path}: {err}") from None
    trainer.last_checkpoint = (path, trainer.step)
    changed = "".join(f"; {key} {old!r} -> {new!r}" for key, old, new in trainer.changes)
    if trainer.epoch >= trainer.epochs:
        print(f"minires train: {path} holds a finished run (epoch {trainer.epochs} of "
              f"{trainer.epochs}, step {trainer.step}){changed}; nothing to train (to go on: "
              f"--resume --epochs N --allow-change epochs)")
        return
    print(f"minires train: resuming from {path} at step {trainer.step} (epoch "
          f"{trainer.epoch + 1} of {trainer.epochs}, batch {trainer.batch}){changed}")


def _build_trainer(args, out_dir, stop):
    """Device, seed, model, data, checkpoint (with --resume), optimizer and schedule, Trainer."""
    device = backend.check_device(args.device or backend.default_device())
    manual_seed(args.seed)
    model = get_model(args.model).to(device)
    x_train, y_train, x_test, y_test = _load_data(args)
    path = out_dir / CHECKPOINT_NAME
    sections = _checkpoint_to_resume(args, path, model)
    schedule_epochs = _schedule_epochs(sections, args.epochs)
    train_loader = DataLoader(x_train, y_train, args.batch_size, shuffle=True,
                              augment=args.augment, seed=args.seed, device=device)
    test_loader = DataLoader(x_test, y_test, args.batch_size, shuffle=False, device=device)
    optimizer, scheduler = paper_recipe(model, schedule_epochs, args.lr, args.momentum,
                                        args.weight_decay)
    config = {"model": args.model.lower(), "data": args.data, "seed": args.seed,
              "schedule_epochs": schedule_epochs}
    trainer = Trainer(model, optimizer, train_loader, test_loader, args.epochs, scheduler,
                      out_dir, args.checkpoint_every, args.progress,
                      steps_per_epoch=args.steps_per_epoch, config=config,
                      allow_nonfinite=args.allow_nonfinite, name=args.model, should_stop=stop)
    if sections is not None:
        _resume(trainer, sections, path, args.allow_change)
    return trainer


def _load_data(args):
    """(x_train, y_train, x_test, y_test) of --data, cut to --n-train/--n-test."""
    if args.data == "synthetic":
        return synthetic_cifar(args.n_train or 5000, args.n_test or 1000, seed=args.seed)
    x_train, y_train, x_test, y_test = load_cifar10(args.data_root, progress=args.progress)
    return (x_train[:args.n_train], y_train[:args.n_train],
            x_test[:args.n_test], y_test[:args.n_test])


def _anomaly_mode(on):
    if not on:
        return contextlib.nullcontext()
    from . import detect_anomaly
    return detect_anomaly()
