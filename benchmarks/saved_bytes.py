"""Bytes a training step keeps for its backward: the reference ops against minires.fast.gpu.

    python benchmarks/saved_bytes.py                          # ResNet-20/56/110/1202, B=128
    python benchmarks/saved_bytes.py --depths 20 56 --measure-batches 2 4

A step's forward builds a graph; until its backward has run, the graph keeps arrays alive:
    saved   what each op stored for its backward (Function attributes: cols, x-hat, masks, ...)
    held    saved, plus every op's inputs (autograd keeps them as graph links): the activations
Both are distinct arrays, views counted once by their base; parameters and buffers are left out
(they exist without a graph). The numbers are the same on NumPy and CuPy, since the code is
shared, so they are measured here on the CPU. They grow exactly linearly with the batch (every
activation is per image; per-channel vectors do not grow), so each net is measured at two small
batches and the line through them gives B=128 (`--check` measures ResNet-20 at B=128 directly).

This is not a GPU's peak memory: the pool also holds parameters, gradients, optimizer state, the
transient workspaces of each op (a conv's cols live through its forward) and what the caching
allocator keeps. PyTorch's reserved memory on an H200 (device report 2026-11-30) is printed beside
it as the target's scale: ResNet-20/56/110/1202 at B=128: 418 / 758 / 1,268 / 11,606 MiB.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import minires  # noqa: E402
import minires.functional as F  # noqa: E402
from minires import backend  # noqa: E402
from minires.models import cifar_resnet  # noqa: E402
from minires.ops import conv as reference_conv  # noqa: E402
from minires.ops import norm as reference_norm  # noqa: E402
from train_step import functional_ops  # noqa: E402

TORCH_RESERVED_MIB = {20: 418, 56: 758, 110: 1268, 1202: 11606}  # H200, B=128, device report


def gpu_fast_ops():
    """minires.fast.gpu's (conv2d, batch_norm), or None where minires/fast is absent."""
    try:
        from minires.fast import gpu
    except ModuleNotFoundError as missing:
        if missing.name != "minires.fast":
            raise
        return None
    return gpu.conv2d, gpu.batch_norm


VARIANTS = {"reference": (reference_conv.conv2d, reference_norm.batch_norm)}
if gpu_fast_ops() is not None:
    VARIANTS["gpu-fast"] = gpu_fast_ops()


def base_of(array):
    """The array that owns the memory of `array` (itself when it owns it)."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def graph_functions(output):
    """Every Function in the graph that made `output`."""
    seen, stack = {}, [output.creator]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen[id(fn)] = fn
        stack.extend(t.creator for t in getattr(fn, "_inputs", ()))
    return list(seen.values())


def graph_bytes(output, exclude=()):
    """{"saved": bytes, "held": bytes} that the graph of `output` keeps alive (see the module
    docstring); arrays in `exclude` (parameters, buffers) and their views are not counted."""
    excluded = {id(base_of(a)) for a in exclude}
    saved, held = {}, {}
    for fn in graph_functions(output):
        for value in vars(fn).values():
            if backend.is_array(value):
                saved[id(base_of(value))] = base_of(value)
        for t in getattr(fn, "_inputs", ()):
            held[id(base_of(t.data))] = base_of(t.data)
    held.update(saved)
    return {name: sum(a.nbytes for key, a in arrays.items() if key not in excluded)
            for name, arrays in (("saved", saved), ("held", held))}


def step_graph_bytes(depth, batch, variant, seed=0):
    """Bytes held by one training step's graph (forward + loss) of a CIFAR ResNet, float32."""
    backend.seed(seed)
    model = cifar_resnet(depth)
    rng = np.random.default_rng(seed)
    x = minires.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = minires.tensor(rng.integers(0, 10, batch))
    with functional_ops(*VARIANTS[variant]):  # functional would pick by device
        loss = F.cross_entropy(model(x), y)
    persistent = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    return graph_bytes(loss, exclude=persistent)


def at_batch(depth, variant, batches, target):
    """Bytes at batch `target` from the line through the measurements at two small batches."""
    (b1, b2) = batches
    m1, m2 = (step_graph_bytes(depth, b, variant) for b in (b1, b2))
    return {k: m2[k] + (m2[k] - m1[k]) / (b2 - b1) * (target - b2) for k in m1}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110, 1202])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--measure-batches", type=int, nargs=2, default=[2, 4])
    parser.add_argument("--check", action="store_true",
                        help="also measure ResNet-20 at --batch directly (the line's check)")
    args = parser.parse_args(argv)
    mib = 2**20
    print(f"bytes kept for the backward of one training step, float32, B={args.batch} "
          f"(measured at B={args.measure_batches[0]} and {args.measure_batches[1]}, "
          f"extrapolated linearly)")
    if "gpu-fast" not in VARIANTS:
        print("minires/fast is absent: the gpu-fast columns are skipped")
    header = (f"{'net':<12}{'ref saved':>11}{'ref held':>10}{'fast saved':>12}{'fast held':>11}"
              f"{'held ratio':>12}{'torch reserved':>16}{'fast held/torch':>17}")
    print(header + "\n" + "-" * len(header))
    rows = []
    for depth in tqdm(args.depths, desc="nets", leave=False):
        row = {v: at_batch(depth, v, args.measure_batches, args.batch) for v in VARIANTS}
        ref, fast = row["reference"], row.get("gpu-fast")
        torch_mib = TORCH_RESERVED_MIB.get(depth)
        line = f"ResNet-{depth:<5}{ref['saved'] / mib:>11.0f}{ref['held'] / mib:>10.0f}"
        if fast is None:
            line += f"{'-':>12}{'-':>11}{'-':>12}{torch_mib or '-':>16}{'-':>17}"
        else:
            vs_torch = f"{fast['held'] / mib / torch_mib:>16.2f}x" if torch_mib else f"{'-':>17}"
            line += (f"{fast['saved'] / mib:>12.0f}{fast['held'] / mib:>11.0f}"
                     f"{ref['held'] / fast['held']:>11.2f}x{torch_mib or '-':>16}{vs_torch}")
        print(line, flush=True)
        rows.append(row)
    print("MiB; ratio = reference held / gpu-fast held. torch reserved: PyTorch's "
          "max_memory_reserved on an H200 (whole pool, not only the graph)")
    if args.check:
        for variant in VARIANTS:
            direct = step_graph_bytes(20, args.batch, variant)
            line = at_batch(20, variant, args.measure_batches, args.batch)
            print(f"check ResNet-20 {variant}: measured at B={args.batch} "
                  f"{direct['held'] / mib:.1f} MiB held, {direct['saved'] / mib:.1f} saved; "
                  f"line {line['held'] / mib:.1f} / {line['saved'] / mib:.1f}")
    return rows


if __name__ == "__main__":
    main()
