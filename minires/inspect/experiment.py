"""The main job: gradient norms of plain and residual nets at initialisation, layer by layer.

For each depth, a plain net and a residual net of the same layers are built from the same seed, one
batch goes forward and backward in training mode, and `record` collects every layer's and every
block's numbers. `minires gradients` and tutorial 3 both run this.
"""
import csv

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import tensor
from ..models import cifar_resnet
from .recorder import record


def one_batch(batch_size=32, data="synthetic", seed=0, device=None):
    """A normalised CIFAR-shaped batch (x, y) on `device`.

    data: 'synthetic' (no download), 'cifar10' (the local copy, error if missing) or 'auto'
    (CIFAR-10 when it is already on disk, synthetic otherwise). Returns (x, y, source name).
    """
    from ..data import MEAN, STD, DatasetNotFound, load_cifar10, normalize, synthetic_cifar

    images = labels = None
    if data in ("cifar10", "auto"):
        try:
            x_train, y_train, _, _ = load_cifar10(download=False, progress=False)
            pick = np.random.default_rng(seed).choice(len(x_train), batch_size, replace=False)
            images, labels, data = x_train[pick], y_train[pick], "cifar10"
        except DatasetNotFound:
            if data == "cifar10":
                raise
    if images is None:
        images, labels, _, _ = synthetic_cifar(batch_size, 0, seed=seed)
        data = "synthetic"
    x = tensor(normalize(images, MEAN, STD), device=device)
    y = tensor(labels, device=device)
    return x, y, data


def record_gradients(depth, residual, x, y, batch_norm=True, seed=0, device=None, dtype=None):
    """Build the net (seeded), run one forward/backward on (x, y), return the Recorder.

    The net goes to `device` (default: where x is), and x and y with it; with `dtype` (say
    float64, for depths whose gradients overflow float32) the net and x are cast to it. With BN
    the convs get He init (fan_out); without BN, PyTorch's default uniform init.
    """
    device = device or x.device
    backend.seed(seed)
    model = cifar_resnet(depth, residual=residual, batch_norm=batch_norm,
                         init="he" if batch_norm else "torch")
    model.to(device).train()
    x_data = x.data
    if dtype is not None:
        model.astype(dtype)
        x_data = x_data.astype(dtype)
    x = tensor(x_data, requires_grad=True, device=device)  # a leaf: the first input gradient too
    y = tensor(y.data, device=device)
    with record(model) as rec, np.errstate(over="ignore", invalid="ignore"):  # range_notes says
        loss = F.cross_entropy(model(x), y)                                   # where, in words
        loss.backward()
    rec.loss = float(loss.item())
    rec.batch_norm = batch_norm
    return rec


def compare(depths, batch_norm=True, batch_size=32, seed=0, device=None, data="synthetic",
            progress=None, dtype=None):
    """{(net, depth): Recorder} for net in ('plain', 'residual') and every depth (in `dtype`,
    float32 by default)."""
    x, y, source = one_batch(batch_size, data, seed, device)
    results = {}
    for depth in depths:
        for net, residual in (("plain", False), ("residual", True)):
            results[(net, depth)] = record_gradients(depth, residual, x, y, batch_norm, seed,
                                                     device, dtype)
            if progress is not None:
                progress.update(1)
    return results, source


def range_notes(rec):
    """A line for each way the recorded gradient left its dtype's range (Recorder.
    out_of_range_layers), naming where; empty when it stayed inside."""
    notes = []
    for kind, layers in rec.range_exits():
        count = f"{len(layers)} layer input" + ("s" if len(layers) > 1 else "")
        where = layers[0] if len(layers) == 1 else f"from {layers[0]} to {layers[-1]}"
        hint = "" if rec.dtype == "float64" else " (float64 has a wider range: " \
                                                 "dtype='float64', or --dtype float64)"
        notes.append(f"the gradient {kind} {rec.dtype} at {count}, {where}{hint}")
    return notes


def summary_lines(results):
    """One line per net: ||dL/dx|| at the first block's input over the last block's input."""
    lines = []
    for (net, depth), rec in results.items():
        lines.append(f"{net:>8}-{depth:<5} first/last block input-gradient ratio "
                     f"{rec.summary():12.4g}   loss {rec.loss:.4f}")
        lines += [f"{'':15}{line}" for line in range_notes(rec)]
    return lines


LAYER_COLUMNS = ("net", "depth", "batch_norm", "dtype", "index", "layer", "type",
                 "input_grad_norm", "weight_grad_norm", "output_mean", "output_std", "bn_output_mean", "bn_output_std")
BLOCK_COLUMNS = ("net", "depth", "batch_norm", "dtype", "block", "kind", "shortcut",
                 "input_grad_norm", "output_grad_norm", "add_grad_norm", "shortcut_grad_norm", "branch_grad_norm",
                 "total_grad_norm", "shortcut_ratio", "cosine", "shortcut_is_g", "split_at")


def write_csv(runs, layers_path, blocks_path):
    """Every recorded number: one row per layer, and one row per block, of every net in `runs`
    ({batch_norm: compare()'s results}, or one results dict); the batch_norm column says which
    setting a row belongs to (1 with BN, 0 without), the dtype column what it was computed in."""
    runs = _as_runs(runs)
    for path, columns, rows_of in ((layers_path, LAYER_COLUMNS, lambda r: r.layers),
                                   (blocks_path, BLOCK_COLUMNS, lambda r: r.block_stats)):
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for batch_norm, results in runs.items():
                for (net, depth), rec in results.items():
                    for row in rows_of(rec):
                        writer.writerow({"net": net, "depth": depth, "dtype": rec.dtype,
                                         "batch_norm": int(batch_norm), **row})


def _as_runs(runs):
    """{batch_norm: results}: `runs` itself, or one results dict keyed by its recorders' setting."""
    first = next(iter(runs.values()), None)
    if isinstance(first, dict):
        return runs
    settings = {getattr(rec, "batch_norm", True) for rec in runs.values()}
    if len(settings) != 1:
        raise ValueError("write_csv: the results mix BN and no-BN nets; pass "
                         "{True: with_bn_results, False: no_bn_results}")
    return {settings.pop(): runs}
