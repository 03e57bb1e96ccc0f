"""count_flops: MACs by hand for single layers, the published totals for whole ResNets, and the
parameter column summing to the model's count. Run alone with `pytest tests/test_flops.py`."""
import numpy as np
import pytest

from minires import nn
from minires.inspect import count_flops
from minires.models import cifar_resnet, resnet18, resnet50


def test_single_conv_by_hand():
    # 9x9 input, 3x3 kernel, stride 2, padding 1 -> 5x5 output; 8 filters over 3 channels
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True)
    report = count_flops(conv, (1, 3, 9, 9))
    (row,) = report.rows
    per_output = 3 * 3 * 3                       # C_in * kh * kw multiply-adds per output value
    outputs = 8 * 5 * 5                          # OC * OH * OW
    assert row["output_shape"] == (1, 8, 5, 5)
    assert row["macs"] == outputs * per_output + outputs   # + one add per output for the bias
    assert row["params"] == 8 * 27 + 8
    assert report.flops == 2 * report.macs


def test_conv_without_bias_and_linear_by_hand():
    conv = nn.Conv2d(4, 6, (1, 3), padding=0, bias=False)
    assert count_flops(conv, (1, 4, 5, 7)).macs == (6 * 5 * 5) * (4 * 1 * 3)
    linear = nn.Linear(20, 7)
    assert count_flops(linear, (1, 20)).macs == 20 * 7 + 7
    assert count_flops(nn.Linear(20, 7, bias=False), (1, 20)).macs == 20 * 7


def test_macs_are_per_image():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (4, 3, 6, 6)).macs == count_flops(conv, (1, 3, 6, 6)).macs


@pytest.mark.parametrize("build, expected", [(resnet18, 1.814e9), (resnet50, 4.089e9)],
                         ids=["resnet18", "resnet50"])
def test_imagenet_resnets_match_torchvision(build, expected):
    # torchvision's table: 1.81 and 4.09 GFLOPS (multiply-adds) at 224 x 224
    model = build()
    report = count_flops(model, (1, 3, 224, 224))
    assert report.macs == pytest.approx(expected, rel=0.02)
    assert report.params == model.num_parameters()


def cifar_macs_by_hand(n):
    """MACs per 32x32 image of the option-A CIFAR ResNet with n blocks per stage, conv by conv:
    output pixels x output channels x (input channels x 3 x 3) for each 3x3 conv."""
    stem = 32 * 32 * 16 * (3 * 9)
    stage1 = 2 * n * 32 * 32 * 16 * (16 * 9)
    stage2 = 16 * 16 * 32 * (16 * 9) + (2 * n - 1) * 16 * 16 * 32 * (32 * 9)  # stride 2 first
    stage3 = 8 * 8 * 64 * (32 * 9) + (2 * n - 1) * 8 * 8 * 64 * (64 * 9)
    fc = 64 * 10 + 10
    return stem + stage1 + stage2 + stage3 + fc


@pytest.mark.parametrize("depth, macs, params_m", [(20, 41e6, 0.27), (56, 125e6, 0.85)],
                         ids=["resnet20", "resnet56"])
def test_cifar_resnets_by_hand_and_published(depth, macs, params_m):
    model = cifar_resnet(depth)
    report = count_flops(model)
    assert report.macs == cifar_macs_by_hand((depth - 2) // 6)   # 40,551,050 and 125,485,706
    assert report.macs == pytest.approx(macs, rel=0.02)          # the usual ~41 M and ~125 M
    assert report.params == model.num_parameters()
    assert report.params / 1e6 == pytest.approx(params_m, rel=0.02)  # the paper's Table 6
    convs = [r for r in report.rows if r["type"] == "Conv2d"]
    assert len(convs) == depth - 1 and sum(r["type"] == "Linear" for r in report.rows) == 1


def test_float64_model():
    model = cifar_resnet(8).astype(np.float64)  # the input follows the parameters' dtype
    assert count_flops(model).macs == cifar_macs_by_hand(1)


@pytest.mark.parametrize("kwargs", [dict(residual=False), dict(shortcut="A"), dict(shortcut="B"),
                                    dict(shortcut="C"), dict(preact=True),
                                    dict(bottleneck=True, depth=29)],
                         ids=["plain", "A", "B", "C", "preact", "bottleneck"])
def test_params_column_sums_to_num_parameters(kwargs):
    kwargs = {"depth": 20, **kwargs}
    model = cifar_resnet(**kwargs)
    report = count_flops(model)
    assert report.params == model.num_parameters()
    assert all(r["output_shape"] is not None for r in report.rows)  # every layer was reached


def test_shortcut_options_cost_what_the_projections_cost():
    a = count_flops(cifar_resnet(20, shortcut="A"))
    b = count_flops(cifar_resnet(20, shortcut="B"))
    plain = count_flops(cifar_resnet(20, residual=False))
    # option A (zero padding) is free: the same parameters and MACs as the plain net
    assert (a.params, a.macs) == (plain.params, plain.macs)
    # option B adds two 1x1 stride-2 projections (16->32 at 16x16, 32->64 at 8x8) and their BNs
    projections = 16 * 16 * 32 * 16 + 8 * 8 * 64 * 32
    assert b.macs - a.macs == projections
    assert b.params - a.params == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_model_state_and_mode_are_left_alone():
    model = cifar_resnet(8)
    model.train()
    model.layer1.eval()  # a mixed mode is put back as it was
    before = {k: v.copy() for k, v in model.state_dict().items()}
    count_flops(model)
    assert model.training and not model.layer1.training and model.layer2.training
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert not model.conv1._forward_hooks  # hooks removed


def test_runs_on_the_model_device(device):
    model = cifar_resnet(8).to(device)
    assert count_flops(model).macs == count_flops(cifar_resnet(8)).macs


def test_by_type_splits_the_totals():
    totals = count_flops(cifar_resnet(20, shortcut="B")).by_type()
    assert set(totals) == {"Conv2d", "BatchNorm2d", "Linear"}
    assert totals["BatchNorm2d"][1] == 0 and totals["Linear"] == (650, 650)


def test_format_lists_layers_and_total():
    text = count_flops(cifar_resnet(8)).format(max_rows=6)
    assert text.splitlines()[0].split()[:2] == ["layer", "type"]
    assert "..." in text and text.splitlines()[-1].startswith("total")


def test_rejects_a_shape_without_batch():
    with pytest.raises(ValueError, match="batch"):
        count_flops(nn.Linear(3, 2), (3,))
