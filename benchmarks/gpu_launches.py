"""Kernel launches, blocking syncs and bytes of one CIFAR ResNet training step on the GPU, counted
without a GPU: the CuPy stand-in (tests/cupy_standin.py) charges every call the CUDA work CuPy 14
does for it (its docstring's table, pinned by tests/test_cuda_ledger.py).

    python benchmarks/gpu_launches.py                       # ResNet-20 and -56, B=128, 32x32
    python benchmarks/gpu_launches.py --size 8              # the same counts, 16x fewer pixels

On a GPU, minires is bound by launches (CuPy costs about 10 us a launch from Python): a step's
launch count times 10 us is a floor under its time, whatever the GPU. Three configurations:

  reference     the ops minires.functional picks on CuPy by default, SGD(fused=False)
  fast          MINIRES_GPU_FAST_OPS=1 (minires/fast/gpu.py) and SGD(fused=True)
  trainer_fast  the fast configuration inside minires.train.Trainer: its whole step (batch moved
                to the device, divergence guard, loss and wrong-count read back)

Each is counted on a warm step (the second: the first builds the fused optimizer's buffers),
split into forward (logits and loss), backward and optimizer step. Launches and syncs do not
depend on the image size (every op runs once per layer whatever its shape) as long as the last
stage's maps stay larger than 1x1 (at 4x4 input they are 1x1, and some reshapes become views
instead of copies), so `--size 8` gives the 32x32 counts; bytes (device memory traffic, see the
stand-in) do scale with the size, and are reported for the size run. The LAST line of output is one JSON object:

    {"resnet20": {"reference": {"launches": n, "syncs": n, "bytes": n, "forward": {...}, ...},
                  "fast": {...}, "trainer_fast": {...}}, "resnet56": {...},
     "batch": 128, "size": 32}
"""
import argparse
import contextlib
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

import cupy_standin  # noqa: E402

cupy_standin.register()

import minires  # noqa: E402
from minires import functional as F  # noqa: E402
from minires import models  # noqa: E402
from minires.data import DataLoader  # noqa: E402
from minires.optim import SGD  # noqa: E402
from minires.train import Trainer  # noqa: E402

PHASES = ("forward", "backward", "optimizer")
FIELDS = ("launches", "syncs", "bytes", "h2d", "d2h")
TOP_CALLS = 12  # the calls that launch most, per configuration, in the JSON


@contextlib.contextmanager
def gpu_fast_ops(on):
    """MINIRES_GPU_FAST_OPS set (or unset) for the block."""
    before = os.environ.get("MINIRES_GPU_FAST_OPS")
    os.environ["MINIRES_GPU_FAST_OPS"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["MINIRES_GPU_FAST_OPS"]
        else:
            os.environ["MINIRES_GPU_FAST_OPS"] = before


def brief(ledger):
    summary = ledger.summary()
    return {field: summary[field] for field in FIELDS}


def total(parts):
    return {field: sum(p[field] for p in parts.values()) for field in FIELDS}


def make_model(depth):
    minires.manual_seed(0)
    return models.cifar_resnet(depth).to("cuda").train()


def batch(size, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 10, batch_size)
    return (minires.tensor(x, device="cuda"), minires.tensor(y, device="cuda"))


def count_step(depth, size, batch_size, fast):
    """{phase: counts} of one warm step, plus the whole step's counts."""
    model = make_model(depth)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=fast)
    x, y = batch(size, batch_size)
    with gpu_fast_ops(fast):
        for warm in (True, False):
            optimizer.zero_grad()
            with cupy_standin.counting() as forward:
                loss = F.cross_entropy(model(x), y)
            with cupy_standin.counting() as backward:
                loss.backward()
            with cupy_standin.counting() as step:
                optimizer.step()
    parts = {"forward": brief(forward), "backward": brief(backward), "optimizer": brief(step)}
    calls = forward.calls + backward.calls + step.calls
    return dict(total(parts), **parts, top_calls=dict(calls.most_common(TOP_CALLS)))


def count_trainer_step(depth, size, batch_size):
    """The Trainer's whole second step, fast configuration, from host batches to the next one."""
    model = make_model(depth)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3 * batch_size, 3, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, 3 * batch_size)
    loader = DataLoader(images, labels, batch_size, seed=0, device="cuda", mean=(0.5,) * 3,
                        std=(0.25,) * 3)
    trainer = Trainer(model, optimizer, loader, loader, epochs=1, progress=False)
    with gpu_fast_ops(True):
        trainer.run(max_steps=1)
        with cupy_standin.counting() as step:
            trainer.run(max_steps=2)
    return brief(step)


def table(results):
    lines = [f"{'model':<10}{'configuration':<14}{'phase':<11}{'launches':>9}{'syncs':>7}"
             f"{'h2d':>5}{'d2h':>5}{'MiB moved':>11}", "-" * 72]
    for net, configs in results.items():
        for name, counts in configs.items():
            rows = [(phase, counts[phase]) for phase in PHASES if phase in counts]
            for phase, c in rows + [("step", counts)]:
                lines.append(f"{net:<10}{name:<14}{phase:<11}{c['launches']:>9}{c['syncs']:>7}"
                             f"{c['h2d']:>5}{c['d2h']:>5}{c['bytes'] / 2**20:>11.1f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32, help="image height and width (the "
                        "launch and sync counts are the same at any size; bytes scale)")
    args = parser.parse_args(argv)
    results = {}
    for depth in args.depths:
        results[f"resnet{depth}"] = {
            "reference": count_step(depth, args.size, args.batch, fast=False),
            "fast": count_step(depth, args.size, args.batch, fast=True),
            "trainer_fast": count_trainer_step(depth, args.size, args.batch),
        }
    print(f"one warm training step, batch {args.batch}, {args.size}x{args.size} images, counted "
          f"on the CuPy stand-in (CuPy 14's work per call)")
    print(table(results))
    for net, configs in results.items():
        for name in ("reference", "fast"):
            calls = ", ".join(f"{call} {n}" for call, n in configs[name]["top_calls"].items())
            print(f"{net} {name}, launches by call: {calls}")
    print(json.dumps(dict(results, batch=args.batch, size=args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
