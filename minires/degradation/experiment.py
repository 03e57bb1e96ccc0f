"""The degradation experiment (Figure 6): train plain and residual nets at each depth, the same way.

Every net gets the paper's recipe (`minires.train.paper_recipe`: SGD, momentum 0.9, weight decay
1e-4, lr 0.1 divided by 10 at 50% and 75% of the epochs), He init, option-A shortcuts (so a plain
net and the ResNet of its depth have exactly the same parameters), batch norm, the same seed and
the same batches. Only the shortcuts differ.

Output folder::

    config.json          the settings; a rerun with other settings is refused (use another --out)
    curves.csv           net, depth, residual, epoch, train_error, test_error (per net per epoch)
    degradation.png      the figure (plain left, residual right)
    nets/plain-20/       the Trainer's checkpoint.npz, metrics.csv, learning_curve.png for one net

Resumable: each net checkpoints every epoch, and a rerun goes on from the checkpoints (a finished
net is not trained again, a half-trained one resumes exactly where it stopped). config.json is
written only once the run can start (settings valid, data loaded), so a failed start leaves nothing
that blocks the corrected rerun. (`minires degradation` also locks the folder and asks for
--resume: minires/commands/degradation.py.)
"""
import csv
import io
import json
import math
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

from tqdm import tqdm

from .. import backend, manual_seed
from ..checkpoint import atomic_write, load_checkpoint
from ..data import DataLoader, load_cifar10, synthetic_cifar
from ..models import cifar_block_count, cifar_resnet
from ..train import CHECKPOINT_NAME, Trainer, paper_recipe

CURVE_COLUMNS = ("net", "depth", "residual", "epoch", "train_error", "test_error")
TEST_BATCH = 500
SYNTHETIC_SIZES = (5000, 1000)  # (train, test) images when n_train/n_test are None
CIFAR10_TRAIN_SIZE = 50000


class Preset(NamedTuple):
    """One experiment's settings (None in n_train/n_test: the whole split)."""
    depths: Tuple[int, ...]
    epochs: int
    n_train: Optional[int]
    n_test: Optional[int]
    width: int = 16          # channels of the first stage (the paper: 16)
    batch_size: int = 128
    augment: bool = True     # the paper's pad-4-and-crop and flip
    data: str = "cifar10"
    about: str = ""


PRESETS = {
    "gpu": Preset(depths=(20, 32, 44, 56), epochs=164, n_train=None, n_test=None,
                  about="the paper's run: all of CIFAR-10, 164 epochs (64k iterations at batch "
                        "128); needs a GPU (--device cuda)"),
    "laptop": Preset(depths=(8, 20), epochs=8, n_train=5000, n_test=1000, width=8,
                     augment=False,
                     about="real CIFAR-10 on a CPU: the first 5000 training images, depths 8 "
                           "and 20 at half the paper's width, 8 epochs (320 steps per net)"),
    "laptop-56": Preset(depths=(20, 56), epochs=8, n_train=5000, n_test=1000, width=8,
                        augment=False,
                        about="as laptop, at the paper's depths 20 and 56 (about 2.6 times the "
                              "work)"),
    "quick": Preset(depths=(8, 14), epochs=3, n_train=256, n_test=128, width=4, batch_size=32,
                    augment=False, data="synthetic",
                    about="a smoke test on 256 synthetic images (about 10 s of CPU time)"),
}


def net_name(residual, depth):
    """'ResNet-56' or 'plain-56', as the paper labels its curves."""
    return f"{'ResNet' if residual else 'plain'}-{depth}"


def run_degradation(out_dir, preset="laptop", progress=True, device=None, seed=0, data_root=None,
                    should_stop=None, **overrides):
    """Train every net of `preset` (a name of PRESETS or a Preset), with fields replaced by
    `overrides` (depths=, epochs=, n_train=, n_test=, width=, batch_size=, augment=, data=).

    Writes the output folder described in the module docstring, resuming what is already there, and
    returns the curves as a list of dicts (the rows of curves.csv). `should_stop()` is asked between
    training steps: when it says yes, the net in training writes its checkpoint, and the curves so
    far are returned (no figure is drawn).
    """
    config = _config(preset, overrides, seed)
    out_dir = Path(out_dir)
    _check_config(out_dir, config)
    device = backend.check_device(device or backend.default_device())
    splits = _load_data(config, data_root, progress)
    _write_config(out_dir, config)
    nets = [(residual, depth) for residual in (False, True) for depth in config["depths"]]
    histories = {}
    for residual, depth in tqdm(nets, desc="nets", unit="net", disable=not progress):
        histories[(residual, depth)] = _train_one(out_dir, config, splits, residual, depth,
                                                  device, progress, should_stop)
        rows = _curve_rows(histories)
        _write_curves(rows, out_dir / "curves.csv")
        if should_stop is not None and should_stop():
            return rows
    write_figure(out_dir, rows)
    return rows


def write_figure(out_dir, rows=None, path=None):
    """Draw `rows` (default: out_dir's curves.csv) into `path` (default: out_dir/degradation.png);
    returns the Figure (shown inline in a notebook). The x axis is iterations, as in the paper.
    A `path` elsewhere draws a run that must not be written into (the tutorials' shipped one)."""
    from .plots import plot_degradation

    out_dir = Path(out_dir)
    config = _read_config(out_dir)
    rows = read_curves(out_dir) if rows is None else rows
    steps_per_epoch = math.ceil(_train_size(config) / config["batch_size"])
    path = out_dir / "degradation.png" if path is None else path
    return plot_degradation(rows, path, _title(config), steps_per_epoch)


def _config(preset, overrides, seed):
    """The run's settings as a plain dict (what config.json holds)."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"degradation: unknown preset {preset!r}; choose from "
                             f"{', '.join(PRESETS)}")
        preset = PRESETS[preset]
    unknown = set(overrides) - set(Preset._fields) - {"about"}
    if unknown:
        raise TypeError(f"degradation: unknown settings {sorted(unknown)}; the settings are "
                        f"{', '.join(Preset._fields)}")
    chosen = preset._replace(**{k: v for k, v in overrides.items() if v is not None})
    _check_counts(chosen)
    for depth in chosen.depths:
        cifar_block_count(depth)  # a clear error for a depth that is not 6n+2, before any work
    if chosen.data not in ("cifar10", "synthetic"):
        raise ValueError(f"degradation: data must be 'cifar10' or 'synthetic', got {chosen.data!r}")
    config = chosen._asdict()
    del config["about"]
    config["depths"] = sorted(set(int(d) for d in config["depths"]))
    config["seed"] = int(seed)
    return config


def _check_counts(chosen):
    """Every count is a positive integer (0 is not "the default"); n_train/n_test may be None."""
    if not chosen.depths:
        raise ValueError("degradation: depths must name at least one depth")
    counts = [("epochs", chosen.epochs), ("width", chosen.width),
              ("batch_size", chosen.batch_size), ("n_train", chosen.n_train),
              ("n_test", chosen.n_test)] + [("depths", depth) for depth in chosen.depths]
    for name, value in counts:
        if value is None and name in ("n_train", "n_test"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"degradation: {name} must be an integer >= 1, got {value!r}")


def _check_config(out_dir, config):
    """Refuse to resume a folder trained with other settings."""
    path = out_dir / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        if changed:
            details = ", ".join(f"{k}: {a} there, {b} now" for k, (a, b) in changed.items())
            raise ValueError(f"degradation: {out_dir} holds a run with other settings "
                             f"({details}); choose another output folder")


def _write_config(out_dir, config):
    """Record the settings (atomically), once the run can start."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2) + "\n"
    atomic_write(out_dir / "config.json", lambda f: f.write(text.encode()))


def _load_data(config, data_root, progress):
    """(x_train, y_train, x_test, y_test), cut to n_train/n_test."""
    if config["data"] == "synthetic":
        n_test = SYNTHETIC_SIZES[1] if config["n_test"] is None else config["n_test"]
        return synthetic_cifar(_train_size(config), n_test, seed=config["seed"])
    x_train, y_train, x_test, y_test = load_cifar10(data_root, progress=progress)
    n_train, n_test = config["n_train"], config["n_test"]
    return x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test]


def _train_size(config):
    """How many training images the run uses (n_train=None: the whole training split)."""
    n_train = config["n_train"]
    if config["data"] == "synthetic":
        return SYNTHETIC_SIZES[0] if n_train is None else n_train
    return CIFAR10_TRAIN_SIZE if n_train is None else min(n_train, CIFAR10_TRAIN_SIZE)


def _build(config, residual, depth):
    """The net of `depth`, initialised from the run's seed (so plain and ResNet start alike)."""
    manual_seed(config["seed"])
    return cifar_resnet(depth, residual=residual, shortcut="A", width=config["width"])


def _train_one(out_dir, config, splits, residual, depth, device, progress, should_stop=None):
    """Train (or resume, or just read back) one net; returns its Trainer history."""
    x_train, y_train, x_test, y_test = splits
    model = _build(config, residual, depth).to(device)
    train_loader = DataLoader(x_train, y_train, config["batch_size"], shuffle=True,
                              augment=config["augment"], seed=config["seed"], device=device)
    test_loader = DataLoader(x_test, y_test, TEST_BATCH, shuffle=False, device=device)
    optimizer, scheduler = paper_recipe(model, config["epochs"])
    trainer = Trainer(model, optimizer, train_loader, test_loader, config["epochs"], scheduler,
                      out_dir=out_dir / "nets" / net_name(residual, depth), progress=progress,
                      name=net_name(residual, depth), should_stop=should_stop)
    if (trainer.out_dir / CHECKPOINT_NAME).is_file():
        trainer.load()
    return trainer.run()


def _curve_rows(histories):
    return [{"net": net_name(residual, depth), "depth": depth, "residual": int(residual),
             "epoch": row["epoch"], "train_error": row["train_error"],
             "test_error": row["test_error"]}
            for (residual, depth), history in histories.items() for row in history]


def _write_curves(rows, path):
    """curves.csv, written atomically (a reader or a Ctrl-C never sees half of it)."""
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(table.getvalue().encode()))


def read_curves(path):
    """curves.csv (or the folder holding it) as a list of dicts with typed values."""
    path = Path(path)
    path = path / "curves.csv" if path.is_dir() else path
    with open(path, newline="") as f:
        return [{"net": r["net"], "depth": int(r["depth"]), "residual": bool(int(r["residual"])),
                 "epoch": int(r["epoch"]), "train_error": float(r["train_error"]),
                 "test_error": float(r["test_error"])} for r in csv.DictReader(f)]


def is_finished(out_dir):
    """True when out_dir holds a whole run: its config.json, and a curves.csv row for every epoch
    of every net (an interrupted run, or an empty folder, is not finished)."""
    out_dir = Path(out_dir)
    if not (out_dir / "config.json").is_file() or not (out_dir / "curves.csv").is_file():
        return False
    config = _read_config(out_dir)
    done = {(r["residual"], r["depth"], r["epoch"]) for r in read_curves(out_dir)}
    return all((residual, depth, epoch) in done for residual in (False, True)
               for depth in config["depths"] for epoch in range(1, config["epochs"] + 1))


def final_errors(rows):
    """{(residual, depth): (train_error, test_error) of the last epoch}."""
    last = {}
    for r in rows:
        key = (bool(r["residual"]), int(r["depth"]))
        if key not in last or r["epoch"] > last[key]["epoch"]:
            last[key] = r
    return {k: (r["train_error"], r["test_error"]) for k, r in last.items()}


def verdicts(rows):
    """The paper's two halves of Figure 6, checked on the last epoch of the shallowest and deepest
    nets: {'plain_degrades': plain-deep trains to a higher error than plain-shallow,
    'residual_improves': ResNet-deep to a lower one than ResNet-shallow, 'lines': one sentence
    each, with the numbers}. The training error of an epoch is that of its mini-batches as they
    were trained on (train mode, augmented), as the paper's thin curves."""
    final = final_errors(rows)
    depths = sorted({d for _, d in final})
    shallow, deep = depths[0], depths[-1]
    result, lines = {}, []
    for residual, key, wanted in ((False, "plain_degrades", "higher"),
                                  (True, "residual_improves", "lower")):
        d, s = final[(residual, deep)][0], final[(residual, shallow)][0]
        result[key] = (d < s) if residual else (d > s)
        lines.append(f"{net_name(residual, deep)} ends at {d:.1f}% training error, "
                     f"{net_name(residual, shallow)} at {s:.1f}%: the deeper net's is "
                     f"{wanted if result[key] else 'NOT ' + wanted}"
                     f" ({'as' if result[key] else 'unlike'} Figure 6)")
    result["lines"] = lines
    return result


def load_run_data(out_dir, data_root=None):
    """The (x_train, y_train, x_test, y_test) a run in `out_dir` trained and tested on."""
    return _load_data(_read_config(out_dir), data_root, progress=False)


def _read_config(out_dir):
    return json.loads((Path(out_dir) / "config.json").read_text())


def load_trained(out_dir, residual, depth):
    """The net trained by `run_degradation` in `out_dir` (its last checkpoint), in eval mode."""
    out_dir = Path(out_dir)
    model = _build(_read_config(out_dir), residual, depth)
    sections = load_checkpoint(out_dir / "nets" / net_name(residual, depth) / CHECKPOINT_NAME)
    model.load_state_dict(sections["model"])
    return model.eval()


def _title(config):
    data = "CIFAR-10" if config["data"] == "cifar10" else "synthetic data"
    size = "all" if config["n_train"] is None else f"{config['n_train']}"
    return (f"{data} ({size} training images), width {config['width']}, {config['epochs']} "
            f"epochs at batch {config['batch_size']}")
