"""How far a resumed run drifts when only the summation order changes, as on another device.

    PYTHONPATH=$PWD python benchmarks/resume_drift.py                    # resnet20, B=64
    PYTHONPATH=$PWD python benchmarks/resume_drift.py --model resnet8 --after 1 3 10

A resume on the same device and core count is bit-identical (tests/test_train.py). A resume on
another device runs the same math with sums taken in another order. This script stands in for a
second device on the CPU: it trains `--first` steps, saves a checkpoint, and resumes it twice,
once with the fast CPU ops and once with the readable reference ops (ops/conv.py, ops/norm.py),
whose results differ from the fast ones only by rounding. After each count of `--after` steps it
prints the largest parameter difference (relative to the largest value of that parameter array)
and the test loss and error of both resumed models.
"""
import argparse

import numpy as np

import minires
from minires import functional as F
from minires.data import DataLoader, synthetic_cifar
from minires.models import get_model
from minires.ops import conv, norm
from minires.train import Trainer, evaluate, paper_recipe


def make_trainer(model_name, data, batch):
    minires.manual_seed(0)
    model = get_model(model_name)
    optimizer, scheduler = paper_recipe(model, epochs=10)
    train_loader = DataLoader(data.x_train, data.y_train, batch, augment=True, seed=0)
    test_loader = DataLoader(data.x_test, data.y_test, 256, shuffle=False)
    return Trainer(model, optimizer, train_loader, test_loader, 1, scheduler, progress=False)


def resume(args, data, path):
    """[(parameters, (test loss, test error))] after each count of steps in args.after."""
    trainer = make_trainer(args.model, data, args.batch)
    trainer.load(path)
    points = []
    for steps in args.after:
        trainer.run(max_steps=args.first + steps)
        points.append((trainer.model.state_dict(), evaluate(trainer.model, trainer.test_loader)))
    return points


def largest_relative_difference(a, b):
    return max(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-12)
               for k in a if a[k].dtype.kind == "f")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--first", type=int, default=10, help="steps before the checkpoint")
    parser.add_argument("--after", type=int, nargs="+", default=[1, 3, 10, 30],
                        help="steps after the resume at which to compare")
    parser.add_argument("--checkpoint", default="resume_drift.npz")
    args = parser.parse_args()
    data = synthetic_cifar(args.batch * (args.first + max(args.after) + 1), 256, seed=0)
    first = make_trainer(args.model, data, args.batch)
    first.run(max_steps=args.first)
    first.save(args.checkpoint)
    fast = resume(args, data, args.checkpoint)
    F.conv2d, F.batch_norm = conv.conv2d, norm.batch_norm  # this script's process only
    reference = resume(args, data, args.checkpoint)
    for steps, (a, test_a), (b, test_b) in zip(args.after, fast, reference):
        print(f"{args.model} B={args.batch}, resumed after {args.first} steps, {steps} steps on: "
              f"largest parameter difference {largest_relative_difference(a, b):.1e} of its "
              f"array's scale; test loss {test_a[0]:.4f} vs {test_b[0]:.4f}, test error "
              f"{test_a[1]:.1f}% vs {test_b[1]:.1f}%")


if __name__ == "__main__":
    main()
