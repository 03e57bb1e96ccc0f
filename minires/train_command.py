"""`minires train`: the paper's CIFAR-10 recipe from the command line, on top of minires.train.

    minires train --data synthetic --epochs 2 --out runs/demo
    minires train --data synthetic --epochs 2 --out runs/demo --resume          # goes on
    minires train --data synthetic --epochs 4 --out runs/demo --resume --allow-change epochs

Every user mistake (a bad option value, missing or corrupt data, a checkpoint that does not fit,
changed settings on resume, a diverged run) ends with one line "minires train: ..." on stderr and
exit status 1, not a traceback.

On resume the learning-rate schedule is the one the run started with: the lr drops at 50% and 75%
of the epochs first asked for (`schedule_epochs` in the checkpoint), also after `--allow-change
epochs`, so more epochs go on at the last learning rate.
"""
import argparse
import contextlib
from pathlib import Path

from . import backend, manual_seed
from .cli import count_at_least
from .checkpoint import CheckpointError, load_checkpoint, read_int
from .data import DataLoader, load_cifar10, synthetic_cifar
from .models import get_model
from .train import CHANGEABLE, CHECKPOINT_NAME, SettingsChanged, Trainer, paper_recipe


def add_arguments(parser):
    """The options of `minires train`; defaults are the paper's CIFAR-10 recipe."""
    parser.add_argument("--model", default="resnet20",
                        help="resnet20/32/44/56/110, plain20..., preact20... (default: resnet20)")
    parser.add_argument("--data", choices=("cifar10", "synthetic"), default="cifar10",
                        help="CIFAR-10 (downloaded to $MINIRES_DATA) or a small learnable "
                             "synthetic stand-in (default: cifar10)")
    parser.add_argument("--data-root", help="folder holding CIFAR-10 (default: $MINIRES_DATA "
                                            "or ~/.cache/minires)")
    parser.add_argument("--epochs", type=count_at_least(0), default=164,
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
    parser.add_argument("--allow-change", action="append", default=[], choices=CHANGEABLE,
                        metavar="SETTING",
                        help="with --resume, let this setting differ from the checkpoint's: "
                             f"{', '.join(CHANGEABLE)} (the metrics note the change)")
    parser.add_argument("--seed", type=int, default=0,
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
    """Build data, model, SGD and MultiStepLR from `args`, resume if asked, train."""
    out_dir = Path(args.out or f"runs/{args.model}-{args.data}")
    path = out_dir / CHECKPOINT_NAME
    try:
        sections = _checkpoint_to_resume(args, path)
        trainer = _build_trainer(args, out_dir, _schedule_epochs(sections, args.epochs))
        if sections is not None:
            _resume(trainer, sections, path, args.allow_change)
    except (ValueError, RuntimeError, OSError) as err:  # bad model/device/data/checkpoint
        raise SystemExit(f"minires train: {err}") from None
    try:
        with _anomaly_mode(args.detect_anomaly):
            trainer.run()
    except (FloatingPointError, OSError) as err:  # diverged (or disk full): no traceback
        raise SystemExit(f"minires train: {err}") from None
    except KeyboardInterrupt:
        saved = trainer.last_checkpoint
        raise SystemExit(f"minires train: interrupted at step {trainer.step}; " + (
            f"go on from {saved[0]} (step {saved[1]}) with --resume" if saved else
            "no checkpoint was written")) from None
    print(f"metrics, learning curve and checkpoint in {out_dir}")
    return 0


def _checkpoint_to_resume(args, path):
    """The checkpoint's sections with --resume and a checkpoint; None (and why) otherwise."""
    if args.allow_change and not args.resume:
        raise ValueError("--allow-change only means something with --resume")
    if not args.resume:
        return None
    if not path.is_file():
        print(f"minires train: no checkpoint at {path}, starting a fresh run")
        return None
    return load_checkpoint(path)


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
    print(f"minires train: resuming from {path} at step {trainer.step} (epoch "
          f"{trainer.epoch + 1} of {trainer.epochs}, batch {trainer.batch}){changed}")


def _build_trainer(args, out_dir, schedule_epochs):
    device = backend.check_device(args.device or backend.default_device())
    manual_seed(args.seed)
    model = get_model(args.model).to(device)
    x_train, y_train, x_test, y_test = _load_data(args)
    train_loader = DataLoader(x_train, y_train, args.batch_size, shuffle=True,
                              augment=args.augment, seed=args.seed, device=device)
    test_loader = DataLoader(x_test, y_test, args.batch_size, shuffle=False, device=device)
    optimizer, scheduler = paper_recipe(model, schedule_epochs, args.lr, args.momentum,
                                        args.weight_decay)
    config = {"model": args.model.lower(), "data": args.data, "seed": args.seed,
              "schedule_epochs": schedule_epochs}
    return Trainer(model, optimizer, train_loader, test_loader, args.epochs, scheduler, out_dir,
                   args.checkpoint_every, args.progress, steps_per_epoch=args.steps_per_epoch,
                   config=config, allow_nonfinite=args.allow_nonfinite)


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
