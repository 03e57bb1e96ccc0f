"""`minires gradients`, the main job: BN and no-BN side by side by default, a batch_norm column in
both CSVs, and a figure that explains itself (stage boundaries, the fc point, the zigzag)."""
import csv
import warnings

import pytest

from minires import cli
from minires.inspect import compare, one_batch, plots, record_gradients, summary_lines


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_default_runs_both_settings_and_writes_the_batch_norm_column(tmp_path, capsys):
    assert cli.main(["gradients", "--depths", "8", "--batch-size", "4", "--data", "synthetic",
                     "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "without BN, PyTorch default init" in printed and "with BN, He init" in printed
    layers, blocks = _rows(tmp_path / "layers.csv"), _rows(tmp_path / "blocks.csv")
    for rows, per_net in ((layers, 8), (blocks, 3)):  # depth 8: 7 convs + fc; 3 blocks
        assert rows[0].keys() >= {"net", "depth", "batch_norm", "dtype"}
        assert {r["dtype"] for r in rows} == {"float32"}
        counts = {}
        for r in rows:
            key = (r["net"], r["batch_norm"])
            counts[key] = counts.get(key, 0) + 1
        assert counts == {(net, bn): per_net for net in ("plain", "residual") for bn in "01"}
    # the two settings really differ: BN rows carry batch-norm output statistics, no-BN rows none
    assert all(r["bn_output_std"] for r in layers
               if r["batch_norm"] == "1" and r["type"] == "Conv2d")
    assert not any(r["bn_output_std"] for r in layers if r["batch_norm"] == "0")
    for name in ("layer_gradients.png", "residual_split_bn.png", "residual_split_no_bn.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name


def test_no_bn_flag_runs_that_setting_only(tmp_path):
    assert cli.main(["gradients", "--depths", "8", "--batch-size", "4", "--data", "synthetic",
                     "--no-bn", "--out", str(tmp_path)]) == 0
    assert {r["batch_norm"] for r in _rows(tmp_path / "layers.csv")} == {"0"}
    assert not (tmp_path / "residual_split_bn.png").exists()


def test_the_figure_labels_stages_fc_and_zigzag(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    runs = {bn: compare((8, 14), batch_norm=bn, batch_size=4, data="synthetic")[0]
            for bn in (False, True)}
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig) or path)
    plots.plot_gradients_bn_vs_no_bn(runs, tmp_path / "g.png")
    fig = drawn[0]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["depth 8, without BN, PyTorch default init",
                      "depth 8, with BN, He init",
                      "depth 14, without BN, PyTorch default init",
                      "depth 14, with BN, He init"]
    for ax in fig.axes:
        labels = {text.get_text() for text in ax.texts}
        assert {"stage 2", "stage 3", "fc input\n(pooled features)"} <= labels, labels
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        depth = ax.get_title().split(",")[0].split()[1]
        assert [t.split(":")[0] for t in legend] == [f"plain-{depth}", f"residual-{depth}"]
        assert all("first/last block" in t for t in legend)
    assert fig._suptitle.get_text().startswith(
        "||dL/d(layer input)|| at initialisation, one synthetic batch, float32\n")
    note = " ".join(t.get_text() for t in fig.texts)
    assert "zigzag" in note and "Filled dots: the input of each block" in note


def test_float64_runs_the_nets_in_float64_with_the_float32_numbers(tmp_path):
    in_float32, _ = compare((8,), batch_size=4, data="synthetic")
    in_float64, _ = compare((8,), batch_size=4, data="synthetic", dtype="float64")
    for key, rec in in_float64.items():
        assert rec.dtype == "float64" and in_float32[key].dtype == "float32"
        for row, row32 in zip(rec.layers, in_float32[key].layers):
            assert row["input_grad_norm"] == pytest.approx(row32["input_grad_norm"], rel=1e-3)
    assert cli.main(["gradients", "--depths", "8", "--batch-size", "4", "--data", "synthetic",
                     "--bn", "--dtype", "float64", "--out", str(tmp_path)]) == 0


@pytest.mark.parametrize("depth, batch_norm, dtype, kind", [
    (164, True, "float16", "overflowed"),   # largest float16 65504: as plain-1202 in float32
    (110, False, "float32", "underflowed"),  # smallest normal float32 1.2e-38: no BN, depth 110
])
def test_a_gradient_out_of_the_dtypes_range_is_named_in_the_summary_and_the_legend(
        depth, batch_norm, dtype, kind):
    """A plain net's gradient outgrows its dtype toward the input (with BN) or shrinks below it
    (without). The summary and the legend say which, and where, instead of a ratio of nan or 0."""
    x, y, _ = one_batch(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # record_gradients says it in words, not in warnings
        rec = record_gradients(depth, False, x, y, batch_norm=batch_norm, dtype=dtype)
    layers = rec.out_of_range_layers()[kind]
    assert rec.dtype == dtype and layers and layers[0] == "conv1"
    assert [r["layer"] for r in rec.layers[:len(layers)]] == layers  # from the input side on
    other = "underflowed" if kind == "overflowed" else "overflowed"
    assert rec.out_of_range_layers()[other] == []
    lines = summary_lines({("plain", depth): rec})
    assert (f"the gradient {kind} {dtype} at {len(layers)} layer inputs, from conv1 to "
            f"{layers[-1]} (float64 has a wider range: dtype='float64', or --dtype float64)"
            ) in lines[1]
    assert plots._legend_label("plain", depth, rec) == \
        f"plain-{depth}: {kind} {dtype} from conv1 to {layers[-1]}"


def test_the_figure_title_fits_with_one_setting(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    runs = {True: compare((8,), batch_norm=True, batch_size=4, data="synthetic")[0]}
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig) or path)
    plots.plot_gradients_bn_vs_no_bn(runs, tmp_path / "g.png")
    fig = drawn[0]
    fig.canvas.draw()
    title = fig._suptitle.get_window_extent()
    assert 0 <= title.x0 and title.x1 <= fig.bbox.width


@pytest.mark.parametrize("arguments, message", [
    (["--depths", "20", "7"], "minires gradients: cifar_resnet: depth 7 is not of the form 6n+2"),
    (["--depths", "8", "--device", "cuda"], "minires gradients: device 'cuda' needs"),
])
def test_a_bad_depth_or_device_is_one_line_before_any_work(tmp_path, without_cuda, arguments,
                                                           message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        cli.main(["gradients", *arguments, "--out", str(out)])
    assert str(stop.value).startswith(message)
    assert not out.exists()


def test_missing_cifar10_is_one_line_and_no_output_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIRES_DATA", str(tmp_path / "no-data-here"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        cli.main(["gradients", "--depths", "8", "--data", "cifar10", "--out", str(out)])
    assert str(stop.value).startswith("minires gradients: CIFAR-10 not found")
    assert not out.exists()


@pytest.mark.parametrize("arguments, message", [
    (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["--bn", "--no-bn"], "argument --no-bn: not allowed with argument --bn"),
])
def test_bad_options_are_refused_by_the_parser(capsys, arguments, message):
    with pytest.raises(SystemExit) as stop:
        cli.main(["gradients", "--depths", "8", *arguments])
    assert stop.value.code == 2 and message in capsys.readouterr().err
