"""conv2d forward + backward at ResNet-20 (CIFAR-10) shapes: minires against PyTorch, in one run.

    python benchmarks/conv.py                      # B=128, CPU, float32
    python benchmarks/conv.py --batch 32 --json out.json
    python benchmarks/conv.py --device cuda        # CuPy against torch on the GPU (if it has CUDA)

Each row is one convolution of the network (3x3 kernels, padding 1, no bias as before batch norm):
the stem, the three stages' stride-1 convs, and the two stride-2 convs that open stages 2 and 3.
One call is y = conv2d(x, w); y.backward(g) with gradients for x and w. The two frameworks take
turns (minires, torch, minires, torch, ...) after a warm-up, so drifts in machine load hit both
alike; each turn is an untimed call and a timed one, since torch's OpenMP threads keep spinning
for a while after its calls and would slow the framework that runs right after them; each time is the median of the repeats, and the ratio is minires / torch (lower is
better for minires). Without torch, only minires's times are printed.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository

import minires  # noqa: E402
import minires.functional as F  # noqa: E402
from minires import backend  # noqa: E402

# (name, in channels, out channels, input height = width, stride)
SHAPES = [
    ("stem 3->16, 32x32", 3, 16, 32, 1),
    ("stage 1 16->16, 32x32", 16, 16, 32, 1),
    ("down 16->32, 32x32 s2", 16, 32, 32, 2),
    ("stage 2 32->32, 16x16", 32, 32, 16, 1),
    ("down 32->64, 16x16 s2", 32, 64, 16, 2),
    ("stage 3 64->64, 8x8", 64, 64, 8, 1),
]


def load_torch(device):
    """torch, or None when it is not installed (or has no CUDA when --device cuda)."""
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    return torch


def minires_call(x, w, g, stride, device):
    """One forward + backward in minires; returns a function that runs it and waits for it."""
    tx = minires.tensor(x, requires_grad=True, device=device)
    tw = minires.tensor(w, requires_grad=True, device=device)
    tg = backend.to_device(g, device)

    def call():
        tx.zero_grad()
        tw.zero_grad()
        y = F.conv2d(tx, tw, stride=stride, padding=1)
        y.backward(tg)
        backend.synchronize(tx.grad.data)
    return call


def torch_call(torch, x, w, g, stride, device):
    tx = torch.tensor(x, device=device, requires_grad=True)
    tw = torch.tensor(w, device=device, requires_grad=True)
    tg = torch.tensor(g, device=device)

    def call():
        tx.grad = tw.grad = None
        y = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=1)
        y.backward(tg)
        if device == "cuda":
            torch.cuda.synchronize()
    return call


def seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def benchmark(batch, device, dtype, repeats, warmup, torch):
    rng = np.random.default_rng(0)
    rows = []
    for name, cin, cout, size, stride in SHAPES:
        x = rng.standard_normal((batch, cin, size, size)).astype(dtype)
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(dtype)
        out = (size + 2 - 3) // stride + 1
        g = rng.standard_normal((batch, cout, out, out)).astype(dtype)
        calls = {"minires": minires_call(x, w, g, stride, device)}
        if torch is not None:
            calls["torch"] = torch_call(torch, x, w, g, stride, device)
        times = {k: [] for k in calls}
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(repeats):  # taking turns; an untimed call first absorbs the switch
            for k, call in calls.items():
                call()
                times[k].append(seconds(call))
        row = {"conv": name, "x": [batch, cin, size, size], "w": [cout, cin, 3, 3],
               "stride": stride}
        for k, ts in times.items():
            row[f"{k}_ms"] = 1000 * statistics.median(ts)
        if torch is not None:
            row["ratio"] = row["minires_ms"] / row["torch_ms"]
        rows.append(row)
    return rows


def print_table(rows, header):
    print(header)
    with_torch = "torch_ms" in rows[0]
    title = f"{'conv (3x3, pad 1)':<24}{'minires ms':>12}"
    title += f"{'torch ms':>12}{'minires/torch':>15}" if with_torch else ""
    print(title)
    print("-" * len(title))
    for r in rows:
        line = f"{r['conv']:<24}{r['minires_ms']:>12.2f}"
        if with_torch:
            line += f"{r['torch_ms']:>12.2f}{r['ratio']:>15.2f}"
        print(line)
    total = sum(r["minires_ms"] for r in rows)
    line = f"{'all six':<24}{total:>12.2f}"
    if with_torch:
        total_torch = sum(r["torch_ms"] for r in rows)
        line += f"{total_torch:>12.2f}{total / total_torch:>15.2f}"
    print("-" * len(title))
    print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per framework (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    backend.check_device(args.device)
    torch = load_torch(args.device)
    rows = benchmark(args.batch, args.device, np.dtype(args.dtype), args.repeats, args.warmup,
                     torch)

    setup = {
        "device": args.device, "batch": args.batch, "dtype": args.dtype,
        "repeats": args.repeats, "warmup": args.warmup, "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    }
    header = (f"conv2d forward+backward, ResNet-20 CIFAR shapes: batch {args.batch}, "
              f"{args.dtype}, {args.device}; median of {args.repeats} calls each, taking turns, after "
              f"{args.warmup} warm-up")
    if torch is None:
        header += "\n(torch not available: minires times only)"
    else:
        header += (f"\nnumpy {np.__version__}, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads)")
    print_table(rows, header)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"setup": setup, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
