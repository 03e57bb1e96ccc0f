"""What each piece of the CPU speed layer earns: a ResNet-20 SGD step with one piece taken out.

    python benchmarks/fast_pieces.py                     # ResNet-20, batch 128, median of 3
    python benchmarks/fast_pieces.py --depth 56 --batch 64 --repeats 5

Every variant trains the same network on the same batch (forward, cross-entropy, backward, SGD
with momentum and weight decay). The variants take turns, one untimed and one timed step each
per round, so drifts in machine load hit all alike; each time is the median of the rounds. The
table gives each variant's step time against "fast", the layer as minires ships it, and against
"reference" (minires.ops only): a piece stays in minires/fast only if taking it out costs at
least 5% of the step (issue 25).

The variants: "gemm: one call per product" multiplies each chunk's cols in one BLAS call, which
BLAS may thread (fast/gemm.py cuts it into pieces that stay in the calling thread); "pool: 1
thread" runs every chunk in the calling thread (MINIRES_NUM_THREADS=1).
Without minires/fast only "reference" runs, and the script says so.

Measured on 2026-12-07 (2 cores shared with other jobs, so compare the ratios within rounds).
With the lent-block cache already out, at load 5-10: threaded relu/add (the former
fast/elementwise.py) 0.91x wall, 0.90x CPU: it cost time, and went; the norm's wide rows 0.92x
wall, 1.13x CPU (3-round runs: 1.18-1.20x wall): no consistent 5% of the wall time, and went;
products threaded by BLAS in the calling thread 7.2x and 7.7x. On the layer as it is now, at
load 2 (3 rounds): reference 2.93x, products as one call per chunk 1.96x, pool of 1 thread
1.48x: the pieces and the pool stay. BLAS on one thread for the whole process (the training
commands' former setting) gave 0.64x, 0.86x and 1.32x at load 5-10, and 1.02x and 1.02x at
load 2 (3 and 5 rounds): under 5% on a quiet machine, so it went.
"""
import argparse
import contextlib
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

import minires  # noqa: E402
import minires.functional as F  # noqa: E402
from minires.models import cifar_resnet  # noqa: E402
from minires.optim import SGD  # noqa: E402


@contextlib.contextmanager
def patched(*changes):
    """Set (object, attribute, value) for the block, and put the old values back after it."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in changes]
    for obj, name, value in changes:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def variants():
    """{name: a function that returns a context manager in which a step runs that variant}."""
    found = {"fast": contextlib.nullcontext,
             "reference": lambda: patched((F, "_fast_on", False))}
    if not F.fast_ops_enabled():
        return {"reference": found["reference"]}
    from minires.fast import gemm
    found.update({
        "gemm: one call per product": lambda: patched((gemm, "MIN_PIECE_ROWS", 2**62)),
        "pool: 1 thread": lambda: environment(MINIRES_NUM_THREADS="1"),
    })
    return found


@contextlib.contextmanager
def environment(**values):
    """os.environ with `values` for the block (the fast ops read MINIRES_NUM_THREADS per call)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def make_step(depth, batch, seed=0):
    """A training step of a CIFAR ResNet on a fixed random batch."""
    minires.manual_seed(seed)
    model = cifar_resnet(depth)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = minires.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = minires.tensor(rng.integers(0, 10, batch))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def seconds(step, context):
    """(wall seconds, CPU seconds of the whole process: every thread's user + system time)."""
    with context():
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", nargs="+", help="which to run (default: all)")
    args = parser.parse_args(argv)
    contexts = {name: c for name, c in variants().items()
                if not args.variants or name in args.variants or name == "fast"}
    if "fast" not in contexts:
        print("minires/fast is absent or switched off: only the reference ops run")
    steps = {name: make_step(args.depth, args.batch) for name in contexts}
    for _ in range(args.warmup):
        for name, context in contexts.items():
            seconds(steps[name], context)
    times = {name: [] for name in contexts}
    for _ in range(args.repeats):
        for name, context in contexts.items():
            seconds(steps[name], context)  # untimed: the last variant's threads and caches settle
            times[name].append(seconds(steps[name], context))
    print(f"ResNet-{args.depth} step at batch {args.batch}, median of {args.repeats} rounds; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print("ms: wall time of a step; vs fast: the median over rounds of the step's time over fast's "
          "in the same round (wall, and CPU time of all threads)")
    print(f"{'variant':<28}{'ms':>8}{'vs fast':>9}{'CPU ms':>8}{'vs fast':>9}   wall ms per round")
    for name, ts in times.items():
        wall, cpu = [t for t, _ in ts], [c for _, c in ts]
        line = f"{name:<28}{1000 * statistics.median(wall):>8.0f}"
        line += f"{_paired(wall, times, 0):>9}{1000 * statistics.median(cpu):>8.0f}"
        line += f"{_paired(cpu, times, 1):>9}   " + " ".join(f"{1000 * t:.0f}" for t in wall)
        print(line)


def _paired(values, times, which):
    """The median over rounds of values[i] / fast's value in round i ("-" without fast)."""
    if "fast" not in times:
        return "-"
    return f"{statistics.median(v / f[which] for v, f in zip(values, times['fast'])):.2f}x"


if __name__ == "__main__":
    main()
