"""`minires degradation`: Figure 6 of He et al. (2015), plain vs residual nets trained per depth.

    minires degradation --preset laptop --data cifar10 --out runs/degradation
    minires degradation --preset gpu --device cuda               # the paper's full run
    minires degradation --data synthetic --depths 8 20 --epochs 3 --n-train 512
    minires degradation --data synthetic --depths 8 20 --epochs 3 --n-train 512 --resume

writes curves.csv (one row per net per epoch), degradation.png, and each net's checkpoint under
nets/. The output folder is locked while the command runs, and a folder that holds a run is
refused unless `--resume` goes on with it (a finished net is read back, a half-trained one resumes
exactly) or `--overwrite` moves its files aside (minires/commands/common.py). Every failure is one
line "minires degradation: ..." (exit 1); Ctrl-C stops between two steps, writes the net's
checkpoint and says how to go on (exit 130).
"""
import argparse
from pathlib import Path

from .common import (StopRequest, add_overwrite_option, checkpoint_counters, count_at_least,
                     interrupted, one_line, output_folder)

RUN_FILES = ("config.json", "curves.csv", "degradation.png", "nets")


def add_arguments(parser):
    from ..degradation.experiment import PRESETS

    presets = "; ".join(f"{name}: {p.about}" for name, p in PRESETS.items())
    parser.add_argument("--preset", choices=tuple(PRESETS), default="laptop",
                        help=f"the starting settings, which the options below override "
                             f"(default: laptop). {presets}")
    parser.add_argument("--data", choices=("cifar10", "synthetic"),
                        help="CIFAR-10 (from $MINIRES_DATA, downloaded if missing) or the "
                             "synthetic stand-in (default: the preset's)")
    parser.add_argument("--data-root", help="folder holding CIFAR-10 (default: $MINIRES_DATA "
                                            "or ~/.cache/minires)")
    parser.add_argument("--depths", type=count_at_least(1), nargs="+",
                        help="CIFAR depths, 6n+2 (e.g. 20 32 44 56)")
    parser.add_argument("--epochs", type=count_at_least(1),
                        help="epochs per net; the lr drops 10x at 50%% and 75%% of them")
    parser.add_argument("--n-train", type=count_at_least(1), help="training images (the first N)")
    parser.add_argument("--n-test", type=count_at_least(1), help="test images (the first N)")
    parser.add_argument("--width", type=count_at_least(1),
                        help="channels of the first stage (paper: 16)")
    parser.add_argument("--batch-size", type=count_at_least(1))
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="the paper's pad-and-crop and flip (default: the preset's)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="cpu (NumPy) or cuda (CuPy) (default: $MINIRES_DEVICE or cpu)")
    parser.add_argument("--seed", type=count_at_least(0), default=0)
    parser.add_argument("--out", default="runs/degradation", help="output folder (default: "
                                                                  "runs/degradation)")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the run in --out (its settings must be these)")
    add_overwrite_option(parser)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bars (default: on)")


def run(args):
    from ..data import DatasetNotFound
    from ..degradation.experiment import run_degradation, verdicts

    if args.overwrite and args.resume:
        raise SystemExit("minires degradation: --overwrite starts afresh and --resume goes on: "
                         "pass one of them")
    settings = {name: getattr(args, name) for name in
                ("depths", "epochs", "n_train", "n_test", "width", "batch_size", "augment", "data")}
    try:
        with StopRequest() as stop, output_folder("degradation", args.out, RUN_FILES, args.resume,
                                                  args.overwrite, _describe_run):
            rows = run_degradation(args.out, args.preset, args.progress, args.device, args.seed,
                                   args.data_root, should_stop=stop, **settings)
    except (ValueError, RuntimeError, FloatingPointError, OSError, DatasetNotFound) as err:
        raise SystemExit(one_line("degradation", _without_prefix(err))) from None
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training began
        return interrupted("degradation", _how_to_go_on(args.out))
    if stop.requested:
        return interrupted("degradation", _how_to_go_on(args.out))
    print("\n".join(verdicts(rows)["lines"]))
    print(f"wrote {args.out}/curves.csv, {args.out}/degradation.png; checkpoints in "
          f"{args.out}/nets/")
    return 0


def _without_prefix(err):
    """The library's "degradation: ..." messages without their prefix (the command adds its own);
    OSErrors as they are, since one_line reads their path."""
    text = str(err)
    if isinstance(err, OSError) or not text.startswith("degradation: "):
        return err
    return text[len("degradation: "):]


def _how_to_go_on(out):
    nets = sorted(p.parent.name for p in Path(out).glob("nets/*/checkpoint.npz"))
    if not nets:
        return "no checkpoint was written; run the command again to start"
    return (f"checkpoints of {', '.join(nets)} are in {out}/nets/; go on with the same command "
            "and --resume")


def _describe_run(out):
    """Which nets have checkpoints, and how far each got, for the refusal message."""
    from ..checkpoint import CheckpointError

    done = []
    for path in sorted(Path(out).glob("nets/*/checkpoint.npz")):
        try:
            done.append(f"{path.parent.name} at step {checkpoint_counters(path)[0]}")
        except (CheckpointError, OSError):
            done.append(f"{path.parent.name} unreadable")
    return "checkpoints: " + ", ".join(done) if done else "no checkpoint yet"
