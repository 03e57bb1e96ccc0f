"""The networks: CIFAR 6n+2 family (plain / residual / pre-activation, shortcut A/B/C) and the
ImageNet ResNet-18..152, checked by exact parameter counts and against PyTorch.

The torch tests build torchvision-equivalent networks here (torchvision is not needed), randomise
every weight *and* every batch-norm statistic (so eval mode is a real test), save the state dict as
.npz, load it into minires with `models.load_torch_npz` (strict) and compare logits, running
statistics and gradients.
"""
import math

import numpy as np
import pytest

from minires import autograd, backend, models, nn
from minires import functional as F
from minires.nn import BasicBlock, Bottleneck, PlainBlock, PreActBlock
from minires.ops.residual import ResidualAdd

from helpers import import_torch, make

CIFAR_COUNTS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962,
                1202: 19_421_274}
IMAGENET_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                   "resnet101": 44_549_160, "resnet152": 60_192_808}


def count_residual_adds(model, x):
    seen = []
    remove = autograd.add_forward_observer(
        lambda fn, inputs, output: seen.append(isinstance(fn, ResidualAdd)))
    try:
        with autograd.no_grad():
            model(x)
    finally:
        remove()
    return sum(seen)


def relative_error(actual, expected):
    """max |actual - expected| / max |expected|."""
    actual = np.asarray(backend.to_numpy(actual), dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


# --- parameter counts -----------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110, 1202])
def test_cifar_resnet_option_a_parameter_counts(depth):
    model = models.cifar_resnet(depth)
    assert model.num_parameters() == CIFAR_COUNTS[depth]
    n = (depth - 2) // 6
    assert [len(getattr(model, f"layer{s}")) for s in (1, 2, 3)] == [n, n, n]
    assert all(type(b) is BasicBlock for _, b in model.blocks())


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_plain_nets_have_the_same_parameters_as_option_a_resnets(depth):
    plain = models.cifar_resnet(depth, residual=False)
    assert plain.num_parameters() == CIFAR_COUNTS[depth]
    assert all(type(b) is PlainBlock for _, b in plain.blocks())
    residual = models.cifar_resnet(depth)
    shapes = {k: v.shape for k, v in residual.state_dict().items()}
    assert {k: v.shape for k, v in plain.state_dict().items()} == shapes  # layer for layer


def test_cifar_shortcut_options_add_projections_where_the_option_says():
    a, b, c = (models.cifar_resnet(20, shortcut=s) for s in "ABC")
    # B: a 1x1 projection + BN at the two stage transitions (16->32, 32->64)
    extra_b = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert b.num_parameters() == CIFAR_COUNTS[20] + extra_b
    # C: a projection in every one of the 9 blocks (3 in stage 1, 2 more in stages 2 and 3)
    extra_c = extra_b + 3 * (16 * 16 + 2 * 16) + 2 * (32 * 32 + 2 * 32) + 2 * (64 * 64 + 2 * 64)
    assert c.num_parameters() == CIFAR_COUNTS[20] + extra_c
    kinds = {s: [type(blk.downsample).__name__ for _, blk in m.blocks()]
             for s, m in zip("ABC", (a, b, c))}
    assert kinds["A"] == ["Identity"] * 3 + ["PadChannels"] + ["Identity"] * 2 + ["PadChannels"] \
        + ["Identity"] * 2
    assert kinds["B"] == [k.replace("PadChannels", "Sequential") for k in kinds["A"]]
    assert kinds["C"] == ["Sequential"] * 9


@pytest.mark.parametrize("name", sorted(IMAGENET_COUNTS))
def test_imagenet_resnet_parameter_counts(name):
    model = getattr(models, name)(num_classes=1000)
    assert model.num_parameters() == IMAGENET_COUNTS[name]
    assert model.fc.out_features == 1000


@pytest.mark.parametrize("depth", [21, 19, 2, 0, 1203])
def test_cifar_resnet_rejects_depths_not_of_the_form_6n_plus_2(depth):
    with pytest.raises(ValueError, match=rf"depth {depth} is not of the form 6n\+2"):
        models.cifar_resnet(depth)


def test_cifar_resnet_rejects_bad_combinations():
    with pytest.raises(ValueError, match="pre-activation"):
        models.cifar_resnet(20, residual=False, preact=True)
    with pytest.raises(ValueError, match="shortcut option"):
        models.cifar_resnet(20, shortcut="D")
    with pytest.raises(ValueError, match="init"):
        models.cifar_resnet(20, init="xavier")
    # bottleneck nets are residual post-activation only: never silently something else
    with pytest.raises(ValueError, match="bottleneck"):
        models.cifar_resnet(29, bottleneck=True, residual=False)
    with pytest.raises(ValueError, match="bottleneck"):
        models.cifar_resnet(29, bottleneck=True, preact=True)
    with pytest.raises(ValueError, match=r"9n\+2"):
        models.cifar_resnet(21, bottleneck=True)


def test_cifar_bottleneck_net_is_9n_plus_2():
    model = models.cifar_resnet(29, bottleneck=True, shortcut="B")
    assert [len(getattr(model, f"layer{s}")) for s in (1, 2, 3)] == [3, 3, 3]
    assert all(type(b) is Bottleneck for _, b in model.blocks())
    assert model.fc.in_features == 256
    x = make(np.random.default_rng(0).standard_normal((2, 3, 8, 8)), backend.default_device(), dtype=np.float32)
    assert model(x).shape == (2, 10)


def test_smallest_cifar_net_and_num_classes():
    model = models.cifar_resnet(8, num_classes=7)
    assert [len(getattr(model, f"layer{s}")) for s in (1, 2, 3)] == [1, 1, 1]
    x = make(np.random.default_rng(0).standard_normal((2, 3, 16, 16)), backend.default_device(), dtype=np.float32)
    assert model(x).shape == (2, 7)


def test_he_init_uses_kaiming_fan_out_and_unit_batch_norm():
    np.random.seed(0)
    model = models.cifar_resnet(20)
    w = model.layer3[1].conv2.weight.numpy()  # (64, 64, 3, 3)
    assert abs(w.std() / math.sqrt(2 / (64 * 9)) - 1) < 0.05
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            np.testing.assert_array_equal(m.weight.numpy(), 1)
            np.testing.assert_array_equal(m.bias.numpy(), 0)
    torch_init = models.cifar_resnet(20, init="torch")
    w = torch_init.layer3[1].conv2.weight.numpy()
    assert np.abs(w).max() <= 1 / math.sqrt(64 * 9)


def test_no_batch_norm_variant_gives_convs_biases():
    model = models.cifar_resnet(20, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(c.bias is not None for c in convs)


# --- the residual add: one per residual block -----------------------------------------------------

@pytest.mark.parametrize("build, x_shape, adds", [
    (lambda: models.cifar_resnet(20), (2, 3, 16, 16), 9),
    (lambda: models.cifar_resnet(20, shortcut="C"), (2, 3, 16, 16), 9),
    (lambda: models.cifar_resnet(20, residual=False), (2, 3, 16, 16), 0),
    (lambda: models.cifar_resnet(56, residual=False), (2, 3, 8, 8), 0),
    (lambda: models.cifar_resnet(20, preact=True), (2, 3, 16, 16), 9),
    (lambda: models.resnet18(), (1, 3, 32, 32), 8),
    (lambda: models.resnet50(), (1, 3, 32, 32), 16),
])
def test_one_residual_add_per_residual_block_and_none_in_plain_nets(build, x_shape, adds):
    model = build().eval()
    x = make(np.random.default_rng(1).standard_normal(x_shape), backend.default_device(), dtype=np.float32)
    assert count_residual_adds(model, x) == adds
    residual_blocks = [b for b in model.modules() if getattr(b, "residual", False)]
    assert len(residual_blocks) == adds


# --- get_model ------------------------------------------------------------------------------------

def test_get_model_by_name():
    m = models.get_model("resnet20")
    assert isinstance(m, models.CifarResNet) and m.num_parameters() == CIFAR_COUNTS[20]
    assert all(type(b) is BasicBlock for _, b in m.blocks())
    assert isinstance(m.layer2[0].downsample, nn.PadChannels)  # option A by default
    m = models.get_model("plain56")
    assert len(m.blocks()) == 27 and all(type(b) is PlainBlock for _, b in m.blocks())
    assert m.num_parameters() == CIFAR_COUNTS[56]
    m = models.get_model("PreAct20")
    assert all(type(b) is PreActBlock for _, b in m.blocks())
    m = models.get_model("resnet18")
    assert isinstance(m, models.ResNet) and m.fc.out_features == 10
    assert type(m.layer1[0]) is BasicBlock
    assert models.get_model("resnet18", num_classes=1000).num_parameters() == 11_689_512
    m = models.get_model("resnet50", num_classes=100)
    assert type(m.layer1[0]) is Bottleneck and m.fc.out_features == 100


@pytest.mark.parametrize("name", ["vgg16", "resnet", "preact", "resnet18x", ""])
def test_get_model_unknown_name_raises(name):
    with pytest.raises(ValueError, match="unknown model"):
        models.get_model(name)


def test_get_model_bad_cifar_depth_raises():
    with pytest.raises(ValueError, match="6n"):
        models.get_model("resnet21")


# --- PyTorch oracle -------------------------------------------------------------------------------

_ZOO = {}


def torch_zoo():
    """torchvision-equivalent ResNets and the CIFAR family, written in torch (built once)."""
    torch = import_torch()
    if _ZOO:
        return _ZOO
    tnn, TF = torch.nn, torch.nn.functional

    def conv3x3(inp, out, stride=1):
        return tnn.Conv2d(inp, out, 3, stride=stride, padding=1, bias=False)

    def conv1x1(inp, out, stride=1):
        return tnn.Conv2d(inp, out, 1, stride=stride, bias=False)

    class PadA(tnn.Module):
        """Option A: x[:, :, ::s, ::s], then zero channels half before and half after."""

        def __init__(self, out_channels, stride):
            super().__init__()
            self.out_channels, self.stride = out_channels, stride

        def forward(self, x):
            extra = self.out_channels - x.shape[1]
            return TF.pad(x[:, :, ::self.stride, ::self.stride],
                          (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def shortcut(option, inp, out, stride):
        changes = stride != 1 or inp != out
        if option == "C" or (option == "B" and changes):
            return tnn.Sequential(conv1x1(inp, out, stride), tnn.BatchNorm2d(out))
        return PadA(out, stride) if changes else None

    class TBasicBlock(tnn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None, residual=True):
            super().__init__()
            self.conv1 = conv3x3(inplanes, planes, stride)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU()
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = downsample
            self.residual = residual

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            if self.residual:
                out = out + (x if self.downsample is None else self.downsample(x))
            return self.relu(out)

    class TBottleneck(tnn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = conv1x1(inplanes, planes)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes, stride)  # v1.5: stride on the 3x3
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = conv1x1(planes, planes * 4)
            self.bn3 = tnn.BatchNorm2d(planes * 4)
            self.relu = tnn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class TPreActBlock(tnn.Module):
        """y = x + conv2(relu(bn2(conv1(relu(bn1(x)))))); a projection takes relu(bn1(x))."""

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.bn1 = tnn.BatchNorm2d(inplanes)
            self.conv1 = conv3x3(inplanes, planes, stride)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv2 = conv3x3(planes, planes)
            self.relu = tnn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            pre = self.relu(self.bn1(x))
            if self.downsample is None:
                short = x
            elif isinstance(self.downsample, tnn.Sequential):
                short = self.downsample(pre)
            else:
                short = self.downsample(x)
            return self.conv2(self.relu(self.bn2(self.conv1(pre)))) + short

    class TResNet(tnn.Module):
        """torchvision.models.resnet.ResNet, trimmed to what the comparison needs."""

        def __init__(self, block, layers, num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = tnn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.relu = tnn.ReLU()
            self.maxpool = tnn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, 64, layers[0])
            self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
            self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
            self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(512 * block.expansion, num_classes)

        def _make_layer(self, block, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = tnn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                            tnn.BatchNorm2d(planes * block.expansion))
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return tnn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class TCifarResNet(tnn.Module):
        """conv3x3(16) [bn relu] -> 3 stages (16, 32, 64) -> [final bn relu] -> pool -> fc."""

        def __init__(self, n, shortcut_option="A", residual=True, preact=False, num_classes=10):
            super().__init__()
            self.preact = preact
            self.conv1 = conv3x3(3, 16)
            if not preact:
                self.bn1 = tnn.BatchNorm2d(16)
            self.relu = tnn.ReLU()
            inp = 16
            for stage, planes in enumerate((16, 32, 64), start=1):
                blocks = []
                for i in range(n):
                    stride = 2 if stage > 1 and i == 0 else 1
                    down = shortcut(shortcut_option, inp, planes, stride) if residual else None
                    if preact:
                        blocks.append(TPreActBlock(inp, planes, stride, down))
                    else:
                        blocks.append(TBasicBlock(inp, planes, stride, down, residual))
                    inp = planes
                setattr(self, f"layer{stage}", tnn.Sequential(*blocks))
            if preact:
                self.final_bn = tnn.BatchNorm2d(64)
            self.fc = tnn.Linear(64, num_classes)

        def forward(self, x):
            out = self.conv1(x)
            if not self.preact:
                out = self.relu(self.bn1(out))
            out = self.layer3(self.layer2(self.layer1(out)))
            if self.preact:
                out = self.relu(self.final_bn(out))
            return self.fc(out.mean(dim=(2, 3)))

    def randomise(model, seed):
        """Random weights, BN affine parameters and BN running statistics (eval is then a test)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, tnn.Conv2d):
                    m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()), generator=g)
                elif isinstance(m, tnn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.normal_(0.0, 0.2, generator=g)
                    m.running_mean.normal_(0.0, 0.2, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
                    m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
                elif isinstance(m, tnn.Linear):
                    m.weight.normal_(0.0, 1.0 / math.sqrt(m.in_features), generator=g)
                    m.bias.normal_(0.0, 0.1, generator=g)
        return model

    _ZOO.update(torch=torch, TResNet=TResNet, TBasicBlock=TBasicBlock, TBottleneck=TBottleneck,
                TCifarResNet=TCifarResNet, randomise=randomise)
    return _ZOO


def torch_imagenet(name, seed):
    z = torch_zoo()
    block, layers = {"resnet18": (z["TBasicBlock"], (2, 2, 2, 2)),
                     "resnet50": (z["TBottleneck"], (3, 4, 6, 3))}[name]
    return z["randomise"](z["TResNet"](block, layers), seed)


def torch_cifar(depth, seed, **kwargs):
    z = torch_zoo()
    return z["randomise"](z["TCifarResNet"]((depth - 2) // 6, **kwargs), seed)


def export_npz(tmodel, path):
    """As a user would, in torch: np.savez(path, **{k: v.numpy() for k, v in state_dict})."""
    np.savez(path, **{k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    return path


def cast_model(model, dtype):
    """Cast every float parameter and buffer of a minires model (for float64 comparisons)."""
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    for m in model.modules():
        for name, b in list(m.named_buffers()):
            if "." not in name and b.dtype.kind == "f":
                m.register_buffer(name, b.astype(dtype))
    return model


def minires_from_torch(model, tmodel, tmp_path, device):
    missing, unexpected = models.load_torch_npz(model, export_npz(tmodel, tmp_path / "w.npz"))
    assert missing == [] and unexpected == []
    return model.to(device)


def assert_state_matches(model, tmodel, rtol):
    ours = model.state_dict()
    theirs = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        if value.dtype.kind == "i":
            assert int(ours[key]) == int(value), key
        else:
            assert relative_error(ours[key], value) < rtol, key


@pytest.mark.torch
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_resnet_eval_logits_match_torch(name, tmp_path, device):
    torch = torch_zoo()["torch"]
    tmodel = torch_imagenet(name, seed=1).eval()
    model = minires_from_torch(getattr(models, name)(), tmodel, tmp_path, device).eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    with autograd.no_grad():
        logits = model(make(x, device))
    assert np.abs(expected).max() > 1e-2 and np.abs(expected[0] - expected[1]).max() > 1e-3
    assert relative_error(logits.numpy(), expected) < 1e-4
    assert_state_matches(model, tmodel, rtol=1e-6)  # eval leaves the running statistics alone


@pytest.mark.torch
def test_resnet18_train_mode_logits_and_running_stats_match_torch(tmp_path, device):
    torch = torch_zoo()["torch"]
    tmodel = torch_imagenet("resnet18", seed=3).train()
    model = minires_from_torch(models.resnet18(), tmodel, tmp_path, device).train()
    x = np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    with autograd.no_grad():
        logits = model(make(x, device))
    assert relative_error(logits.numpy(), expected) < 1e-4
    # batch statistics were used and the running ones moved the same way (num_batches_tracked + 1)
    assert_state_matches(model, tmodel, rtol=1e-4)


CIFAR_CONFIGS = {
    "resnet20-A": dict(depth=20, shortcut="A"),
    "plain20": dict(depth=20, residual=False),
    "preact20-A": dict(depth=20, preact=True, shortcut="A"),
    "preact14-B": dict(depth=14, preact=True, shortcut="B"),
    "resnet14-B": dict(depth=14, shortcut="B"),
    "resnet14-C": dict(depth=14, shortcut="C"),
}


def cifar_pair(config, seed, tmp_path, device):
    kwargs = dict(CIFAR_CONFIGS[config])
    depth = kwargs.pop("depth")
    tkwargs = {("shortcut_option" if k == "shortcut" else k): v for k, v in kwargs.items()}
    tmodel = torch_cifar(depth, seed, **tkwargs)
    model = models.cifar_resnet(depth, **kwargs)
    assert model.num_parameters() == sum(p.numel() for p in tmodel.parameters())
    return model, tmodel


@pytest.mark.torch
@pytest.mark.parametrize("config", sorted(CIFAR_CONFIGS))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cifar_net_logits_match_torch(config, mode, tmp_path, device):
    torch = torch_zoo()["torch"]
    model, tmodel = cifar_pair(config, 5, tmp_path, device)
    tmodel.train(mode == "train")
    model = minires_from_torch(model, tmodel, tmp_path, device).train(mode == "train")
    x = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    with autograd.no_grad():
        logits = model(make(x, device))
    assert np.abs(expected[0] - expected[1]).max() > 1e-3
    assert relative_error(logits.numpy(), expected) < 1e-4
    assert_state_matches(model, tmodel, rtol=1e-4)


@pytest.mark.torch
def test_load_torch_npz_is_strict_about_the_architecture(tmp_path):
    """Option-B weights do not fit an option-A net: the error names the projection keys."""
    tmodel = torch_cifar(14, 7, shortcut_option="B")
    path = export_npz(tmodel, tmp_path / "b.npz")
    with pytest.raises(KeyError, match=r"layer2\.0\.downsample\.0\.weight"):
        models.load_torch_npz(models.cifar_resnet(14, shortcut="A"), path)
    missing, unexpected = models.load_torch_npz(models.cifar_resnet(14, shortcut="A"), path,
                                                strict=False)
    assert missing == [] and "layer3.0.downsample.1.running_var" in unexpected
    assert len(unexpected) == 2 * (1 + 5)  # two projections: conv weight + 5 BN entries each


@pytest.mark.torch
@pytest.mark.parametrize("config", ["resnet20-A", "preact14-B"])
def test_cifar_net_parameter_gradients_match_torch_float64(config, tmp_path, device):
    """Train mode, cross-entropy, float64 on both sides: every parameter's gradient and the
    input's gradient."""
    torch = torch_zoo()["torch"]
    model, tmodel = cifar_pair(config, 8, tmp_path, device)
    tmodel = tmodel.double().train()
    model = minires_from_torch(cast_model(model, np.float64), tmodel, tmp_path, device).train()
    assert all(p.dtype == np.float64 for p in model.parameters())
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3, 16, 16))
    labels = rng.integers(0, 10, size=4)

    xt = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tmodel(xt), torch.from_numpy(labels))
    tloss.backward()
    xm = make(x, device, requires_grad=True)
    loss = F.cross_entropy(model(xm), make(labels, device))
    loss.backward()

    assert abs(loss.item() - tloss.item()) < 1e-10 * max(1.0, abs(tloss.item()))
    theirs = {name: p.grad.numpy() for name, p in tmodel.named_parameters()}
    ours = dict(model.named_parameters())
    assert sorted(ours) == sorted(theirs)
    assert all(p.grad is not None for p in ours.values())
    # A BN bias whose output only reaches train-mode BNs (through identity shortcuts) has an exact
    # zero gradient (BN removes any per-channel shift): there both sides are round-off, so the
    # error is measured against the largest gradient of the network for such parameters.
    largest = max(np.abs(g).max() for g in theirs.values())
    nonzero = 0
    for name, expected in theirs.items():
        actual = backend.to_numpy(ours[name].grad.data)
        scale = max(np.abs(expected).max(), 1e-6 * largest)
        nonzero += np.abs(expected).max() > 1e-6 * largest
        assert np.abs(actual - expected).max() < 1e-8 * scale, name
    assert nonzero >= len(theirs) - 8  # the comparison is not vacuous
    assert relative_error(xm.grad.numpy(), xt.grad.numpy()) < 1e-8
