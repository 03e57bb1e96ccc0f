"""`minires degradation`: Figure 6 of He et al. (2015), plain vs residual nets trained per depth.

    minires degradation --preset laptop --data cifar10 --out runs/degradation
    minires degradation --preset gpu --device cuda               # the paper's full run
    minires degradation --data synthetic --depths 8 20 --epochs 3 --n-train 512

writes curves.csv (one row per net per epoch), degradation.png, and each net's checkpoint under
nets/; run the same command again to resume.
"""
import argparse


def add_arguments(parser):
    from .experiment import PRESETS

    presets = "; ".join(f"{name}: {p.about}" for name, p in PRESETS.items())
    parser.add_argument("--preset", choices=tuple(PRESETS), default="laptop",
                        help=f"the starting settings, which the options below override "
                             f"(default: laptop). {presets}")
    parser.add_argument("--data", choices=("cifar10", "synthetic"),
                        help="CIFAR-10 (from $MINIRES_DATA, downloaded if missing) or the "
                             "synthetic stand-in (default: the preset's)")
    parser.add_argument("--data-root", help="folder holding CIFAR-10 (default: $MINIRES_DATA "
                                            "or ~/.cache/minires)")
    parser.add_argument("--depths", type=int, nargs="+",
                        help="CIFAR depths, 6n+2 (e.g. 20 32 44 56)")
    parser.add_argument("--epochs", type=int, help="epochs per net; the lr drops 10x at 50%% "
                                                   "and 75%% of them")
    parser.add_argument("--n-train", type=int, help="training images (the first N)")
    parser.add_argument("--n-test", type=int, help="test images (the first N)")
    parser.add_argument("--width", type=int, help="channels of the first stage (paper: 16)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="the paper's pad-and-crop and flip (default: the preset's)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="cpu (NumPy) or cuda (CuPy) (default: $MINIRES_DEVICE or cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/degradation", help="output folder (default: "
                                                                  "runs/degradation)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bars (default: on)")


def run(args):
    from ..data import DatasetNotFound
    from .experiment import run_degradation, verdicts

    settings = {name: getattr(args, name) for name in
                ("depths", "epochs", "n_train", "n_test", "width", "batch_size", "augment", "data")}
    try:
        rows = run_degradation(args.out, args.preset, args.progress, args.device, args.seed,
                               args.data_root, **settings)
    except (ValueError, DatasetNotFound) as err:
        raise SystemExit(f"minires degradation: {err}") from None
    print("\n".join(verdicts(rows)["lines"]))
    print(f"wrote {args.out}/curves.csv, {args.out}/degradation.png; checkpoints in "
          f"{args.out}/nets/ (run again to resume)")
    return 0
