"""Make the small copy of a finished `minires degradation` run that the tutorials ship.

    python tools/cifar10_from_jpeg.py ../shared/data/cifar10-jpeg.npz /tmp/cifar
    MINIRES_DATA=/tmp/cifar python -m minires degradation --preset laptop --data cifar10 \\
        --out runs/degradation-laptop
    MINIRES_DATA=/tmp/cifar python tutorials/data/ship_run.py runs/degradation-laptop \\
        tutorials/data/degradation-laptop

(the first command only on a machine with the development copy of CIFAR-10; with the official
release, leave it and MINIRES_DATA out). The copy is what tutorials 04 and 07 read unless they are
asked to train: a whole run folder is megabytes (each checkpoint carries the optimizer's momentum
too), the copy a few hundred KB. It holds

    config.json, curves.csv         the run's own files, unchanged
    nets/<net>/checkpoint.npz       a minires checkpoint with only the "model" section (weights and
                                    batch-norm statistics), rounded to float16 and compressed (a
                                    third of the float32 size); `load_trained` reads it as it reads
                                    the run's own checkpoints
    images.npz                      x_train, y_train, x_test, y_test: the first IMAGES of the run's
                                    training and test images (uint8, as stored), for tutorial 07

The files are written with numbers and strings only (no pickle).
"""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from minires.checkpoint import FORMAT, FORMAT_KEY, load_checkpoint
from minires.degradation import is_finished, load_run_data, net_name
from minires.train import CHECKPOINT_NAME

IMAGES = 32  # of each split: tutorial 07's probe, and its batch-norm refresh


def ship_nets(run, dest, depths):
    """Each net's checkpoint, model section only, floating-point arrays rounded to float16."""
    for residual in (False, True):
        for depth in depths:
            name = net_name(residual, depth)
            model = load_checkpoint(run / "nets" / name / CHECKPOINT_NAME)["model"]
            arrays = {f"model/{key}": value.astype(np.float16) if value.dtype.kind == "f" else value
                      for key, value in model.items()}
            path = dest / "nets" / name / CHECKPOINT_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **{FORMAT_KEY: np.array(FORMAT)}, **arrays)
            load_checkpoint(path)  # refuses anything that is not a minires checkpoint


def ship_images(run, dest):
    """The first IMAGES training and test images of the run (the run's own data, as loaded)."""
    x_train, y_train, x_test, y_test = load_run_data(run)
    np.savez_compressed(dest / "images.npz", x_train=x_train[:IMAGES], y_train=y_train[:IMAGES],
                        x_test=x_test[:IMAGES], y_test=y_test[:IMAGES])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run, e.g. runs/degradation-laptop")
    parser.add_argument("dest", type=Path, help="e.g. tutorials/data/degradation-laptop")
    args = parser.parse_args()
    if not is_finished(args.run):
        raise SystemExit(f"{args.run} is not a finished run: train every net first")
    args.dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "curves.csv"):
        shutil.copy(args.run / name, args.dest / name)
    ship_nets(args.run, args.dest, json.loads((args.run / "config.json").read_text())["depths"])
    ship_images(args.run, args.dest)
    sizes = sorted((p.stat().st_size, p) for p in args.dest.rglob("*") if p.is_file())
    for size, path in sizes:
        print(f"{size / 1024:8.1f} KB  {path}")
    print(f"{sum(s for s, _ in sizes) / 1024:8.1f} KB  in all")


if __name__ == "__main__":
    main()
