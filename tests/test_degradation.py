"""`minires degradation` (Figure 6): the CSV and figure it writes, exact resume, refused setting
changes, the computed verdicts, and the dev tool that feeds the JPEG copy of CIFAR-10 through the
product's own loader."""
import contextlib
import csv
import importlib.util
import io
import pathlib

import numpy as np
import pytest

import minires
from minires import cli, nn
from minires import manual_seed
from minires.data import DataLoader, load_cifar10
from minires.degradation import (CURVE_COLUMNS, final_errors, is_finished, load_run_data,
                                 load_trained, read_curves, run_degradation, verdicts)
from minires.inspect import record
from minires.models import cifar_resnet
from minires.train import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(preset="quick", depths=(8, 14), epochs=2, n_train=64, n_test=32, width=4,
            batch_size=32, progress=False)
TINY_ARGS = ["--preset", "quick", "--depths", "8", "14", "--epochs", "2", "--n-train", "64",
             "--n-test", "32", "--width", "4", "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny run through the command, shared by the tests that only read it: (folder, stdout)."""
    out = tmp_path_factory.mktemp("degradation") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["degradation", "--data", "synthetic", "--device", "cpu", "--out", str(out),
                         *TINY_ARGS])
    assert code == 0
    return out, printed.getvalue()


def test_command_writes_one_row_per_net_per_epoch_and_the_figure(finished):
    out, printed = finished
    with open(out / "curves.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CURVE_COLUMNS
        rows = list(reader)
    keys = [(r["net"], r["depth"], r["residual"], r["epoch"]) for r in rows]
    assert sorted(keys) == sorted((f"{'ResNet' if res else 'plain'}-{d}", str(d), str(res), str(e))
                                  for res in (0, 1) for d in (8, 14) for e in (1, 2))
    assert all(0 <= float(r[k]) <= 100 for r in rows for k in ("train_error", "test_error"))
    assert (out / "degradation.png").stat().st_size > 10_000
    assert "ResNet-14 ends at" in printed and "plain-14 ends at" in printed


def test_a_finished_run_is_read_back_without_training(finished, monkeypatch):
    out, _ = finished
    first = read_curves(out)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished net was trained again")

    monkeypatch.setattr(Trainer, "_train_epoch", no_training)
    again = run_degradation(out, **TINY)
    assert [{**r, "residual": bool(r["residual"])} for r in again] == first


def test_an_interrupted_run_resumes_exactly(finished, tmp_path, monkeypatch):
    """Stop during the third net, run again: the curves equal those of the uninterrupted run."""
    end_epoch, calls = Trainer._end_epoch, []

    def interrupt_in_third_net(self):
        calls.append(1)
        if len(calls) == 5:  # nets 1 and 2 have had their 2 epochs each
            raise KeyboardInterrupt
        end_epoch(self)

    monkeypatch.setattr(Trainer, "_end_epoch", interrupt_in_third_net)
    with pytest.raises(KeyboardInterrupt):
        run_degradation(tmp_path, **TINY)
    monkeypatch.setattr(Trainer, "_end_epoch", end_epoch)
    resumed = run_degradation(tmp_path, **TINY)
    assert [{**r, "residual": bool(r["residual"])} for r in resumed] == read_curves(finished[0])


def test_a_folder_trained_with_other_settings_is_refused(finished):
    args = ["degradation", "--out", str(finished[0]), "--resume", *TINY_ARGS]
    args[args.index("--epochs") + 1] = "3"
    with pytest.raises(SystemExit, match="^minires degradation: /.* holds a run with other "
                                         "settings \\(epochs: 2 there, 3 now\\)"):
        cli.main(args)


def test_bad_depth_is_a_clear_error_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="depth 10 is not of the form 6n"):
        cli.main(["degradation", "--preset", "quick", "--depths", "8", "10", "--out",
                  str(tmp_path)])


def test_load_trained_returns_the_checkpointed_weights(finished):
    model = load_trained(finished[0], residual=True, depth=14)
    trained = np.load(finished[0] / "nets" / "ResNet-14" / "checkpoint.npz")
    name = next(k for k in trained.files if k.startswith("model") and "fc.weight" in k)
    np.testing.assert_array_equal(model.state_dict()["fc.weight"], trained[name])
    manual_seed(0)
    fresh = cifar_resnet(14, width=4)  # same seed as the run's nets: only training moved them
    assert not np.array_equal(fresh.state_dict()["fc.weight"], trained[name])
    assert not model.training


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A run whose nets have learned something (73 to 90% test error, chance 90%) on 128 test
    images, so that different nets give different errors; TINY's stay near chance."""
    out = tmp_path_factory.mktemp("degradation") / "learned"
    args = [*TINY_ARGS, "--data", "synthetic", "--device", "cpu", "--out", str(out)]
    for option, value in (("--n-train", "128"), ("--n-test", "128")):
        args[args.index(option) + 1] = value
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["degradation", *args]) == 0
    return out


@pytest.mark.slow
def test_each_trained_net_gives_its_own_last_test_error(learned):
    """Every net read back with load_trained, run on the run's test images, has the error that its
    own row of curves.csv ends with. A net stored under another's name (plain and residual swapped
    in the trainer, say) or a loader that builds the wrong architecture gives other errors."""
    out = learned
    _, _, x_test, y_test = load_run_data(out)
    images, labels = next(iter(DataLoader(x_test, y_test, len(y_test), shuffle=False)))
    finals = final_errors(read_curves(out))
    assert len(finals) == 4
    measured = {}
    for residual, depth in finals:
        with minires.no_grad():
            logits = load_trained(out, residual, depth)(minires.tensor(images)).numpy()
        measured[(residual, depth)] = 100.0 * np.mean(logits.argmax(axis=1) != labels)
    assert measured == pytest.approx({key: test for key, (_, test) in finals.items()}), measured


def test_is_finished_only_for_a_whole_run(finished, tmp_path):
    assert is_finished(finished[0])
    assert not is_finished(tmp_path)  # empty
    for name in ("config.json", "curves.csv"):
        (tmp_path / name).write_bytes((finished[0] / name).read_bytes())
    lines = (tmp_path / "curves.csv").read_text().splitlines(keepends=True)
    (tmp_path / "curves.csv").write_text("".join(lines[:-1]))  # ResNet-14's last epoch missing
    assert not is_finished(tmp_path)


def test_ship_run_keeps_what_the_tutorials_read(finished, tmp_path, monkeypatch):
    """tutorials/data/ship_run.py (how the shipped laptop run was made) copies the curves, keeps
    every net to float16 precision where load_trained finds it, and the run's first images."""
    spec = importlib.util.spec_from_file_location(
        "ship_run", ROOT / "tutorials" / "data" / "ship_run.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    run, dest = finished[0], tmp_path / "shipped"
    monkeypatch.setattr("sys.argv", ["ship_run.py", str(run), str(dest)])
    with contextlib.redirect_stdout(io.StringIO()):
        tool.main()
    assert is_finished(dest) and read_curves(dest) == read_curves(run)
    for residual in (False, True):
        for depth in (8, 14):
            shipped = load_trained(dest, residual, depth).state_dict()
            for key, value in load_trained(run, residual, depth).state_dict().items():
                np.testing.assert_allclose(shipped[key], value, rtol=1e-3, atol=1e-6, err_msg=key)
    with np.load(dest / "images.npz", allow_pickle=False) as images:
        for key, full in zip(("x_train", "y_train", "x_test", "y_test"), load_run_data(run)):
            np.testing.assert_array_equal(images[key], full[:tool.IMAGES])


# Figure 7 (tutorial 07) measures this experiment's nets with inspect.record: the std of the batch
# norm's output after each conv, over the batch, the channels and the pixels together.

def _figure7_model(rng):
    """A ResNet-8 whose batch norms have distinct per-channel scales, shifts and running statistics
    (at initialisation they are all alike, and many wrong stds read about 1)."""
    manual_seed(0)
    model = cifar_resnet(8, width=4)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.data = rng.uniform(0.1, 3.0, c).astype(np.float32)
            module.bias.data = rng.normal(0.0, 2.0, c).astype(np.float32)
            module._buffers["running_mean"] = rng.normal(0.0, 0.5, c).astype(np.float32)
            module._buffers["running_var"] = rng.uniform(0.2, 3.0, c).astype(np.float32)
    return model


@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_figure7_std_is_that_of_the_batch_norm_output_computed_directly(train_mode, rng):
    """Each conv's bn_output_std equals the std of gamma * (x - mean) / sqrt(var + eps) + beta,
    computed here from the conv's output x, with the batch's statistics (train mode) or the
    running ones (eval mode), as the tutorial measures."""
    model = _figure7_model(rng).train(train_mode)
    modules = dict(model.named_modules())
    conv_outputs = {}
    for name, module in modules.items():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(
                lambda m, inputs, output, name=name: conv_outputs.__setitem__(name, output.numpy()))
    x = minires.tensor(rng.normal(size=(16, 3, 32, 32)).astype(np.float32))
    with minires.no_grad(), record(model) as rec:
        model(x)
    rows = {row["layer"]: row for row in rec.layers if "bn_output_std" in row}
    assert len(rows) == 7  # the stem and two convs in each of the three blocks
    for layer, row in rows.items():
        bn = modules[layer.replace("conv", "bn")]
        y = conv_outputs[layer].astype(np.float64)
        if train_mode:
            mean, var = y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))
        else:
            mean, var = bn._buffers["running_mean"], bn._buffers["running_var"]
        gamma, beta = (np.asarray(p.data, dtype=np.float64).reshape(1, -1, 1, 1)
                       for p in (bn.weight, bn.bias))
        out = gamma * (y - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1)
                                                                + bn.eps) + beta
        assert row["bn_output_std"] == pytest.approx(out.std(), rel=1e-4), layer
        per_channel = out.std(axis=(0, 2, 3)).mean()  # a plausible wrong reading of "the std"
        assert abs(out.std() - per_channel) > 0.05 * out.std(), "the test could not tell them apart"


def _rows(errors):
    """curves rows from {(residual, depth): [train errors per epoch]}."""
    return [{"net": "", "depth": d, "residual": r, "epoch": e + 1, "train_error": t,
             "test_error": t} for (r, d), ts in errors.items() for e, t in enumerate(ts)]


@pytest.mark.parametrize("plain_deep, res_deep, expected", [
    (30.0, 5.0, (True, True)),   # Figure 6: deeper plain worse, deeper ResNet better
    (10.0, 15.0, (False, False)),
])
def test_verdicts_read_the_last_epoch_of_the_shallowest_and_deepest_nets(plain_deep, res_deep,
                                                                         expected):
    rows = _rows({(False, 20): [90.0, 20.0], (False, 32): [90.0, 99.0],
                  (False, 56): [0.0, plain_deep],
                  (True, 20): [90.0, 10.0], (True, 56): [0.0, res_deep]})
    result = verdicts(rows)
    assert (result["plain_degrades"], result["residual_improves"]) == expected
    expected_line = f"plain-56 ends at {plain_deep:.1f}% training error, plain-20 at 20.0%"
    assert expected_line in result["lines"][0]


def test_read_curves_types_the_columns(finished):
    back = read_curves(finished[0])
    assert [r["residual"] for r in back] == [False] * 4 + [True] * 4
    assert all(isinstance(r["epoch"], int) and isinstance(r["train_error"], float) for r in back)


def _tool():
    spec = importlib.util.spec_from_file_location("cifar10_from_jpeg",
                                                  ROOT / "tools" / "cifar10_from_jpeg.py")
    pytest.importorskip("PIL")  # the tool imports Pillow at the top
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_tool_writes_records_the_product_loader_reads(tmp_path):
    """Each image carries its index in two pixels; after the tool's shuffle, load_cifar10 (the
    product's parser, untouched) must give every image back with its own label."""
    tool = _tool()
    n = 60000
    index = np.arange(n)
    images = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = index // 256, index % 256
    labels = (index % 10).astype(np.uint8)
    train = index < 50000
    tool.write_binary_folder(images, labels, train, tmp_path)
    x_train, y_train, x_test, y_test = load_cifar10(tmp_path, download=False)
    for x, y, expected in ((x_train, y_train, index[train]), (x_test, y_test, index[~train])):
        seen = x[:, 0, 0, 0].astype(np.int64) * 256 + x[:, 0, 0, 1]
        np.testing.assert_array_equal(np.sort(seen), expected)
        np.testing.assert_array_equal(y, seen % 10)
        assert not np.array_equal(seen, expected)  # shuffled, as the official release is


JPEG_COPY = ROOT.parent / "shared" / "data" / "cifar10-jpeg.npz"


@pytest.mark.skipif(not JPEG_COPY.is_file(), reason="the JPEG copy of CIFAR-10 is not here")
def test_dev_tool_decodes_the_jpeg_copy():
    tool = _tool()
    images, labels, train = tool.decode(JPEG_COPY, limit=20)
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == train.shape == (20,) and train.dtype == bool
    assert 20 < images.mean() < 235 and images.std() > 10  # real pictures, not blank
