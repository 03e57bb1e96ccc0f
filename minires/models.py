"""The networks of the two papers: the CIFAR-10 6n+2 family (plain or residual, original or
pre-activation, shortcut A/B/C) and torchvision's ImageNet ResNet-18..152.

Bringing PyTorch weights in needs no torch here: in torch, save the state dict as .npz
    np.savez("w.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
then `load_torch_npz(minires_model, "w.npz")`. Key names are torchvision's.
"""
import numpy as np

from . import nn
from .nn import init
from .nn.blocks import BasicBlock, Bottleneck, PlainBlock, PreActBlock, norm_layer

CIFAR_STAGE_CHANNELS = (16, 32, 64)


def _initialise(model, scheme):
    """'he': Kaiming normal fan_out for convs, BN weight 1 and bias 0 (torchvision's recipe);
    'torch': leave PyTorch's default uniform init that the layers were built with."""
    if scheme == "torch":
        return model
    if scheme != "he":
        raise ValueError(f"init must be 'he' or 'torch', got {scheme!r}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                init.constant_(m.bias, 0.0)
        elif isinstance(m, nn.BatchNorm2d):
            init.constant_(m.weight, 1.0)
            init.constant_(m.bias, 0.0)
    return model


def cifar_block_count(depth, bottleneck=False):
    """n blocks per stage: depth = 6n + 2 (basic) or 9n + 2 (bottleneck)."""
    per_block = 9 if bottleneck else 6
    if depth < per_block + 2 or (depth - 2) % per_block:
        family = "9n+2 (e.g. 164)" if bottleneck else "6n+2 (8, 14, 20, 32, 44, 56, 110, 1202, ...)"
        raise ValueError(f"cifar_resnet: depth {depth} is not of the form {family}")
    return (depth - 2) // per_block


class CifarResNet(nn.Module):
    """conv3x3(16) -> 3 stages of n blocks (16, 32, 64 channels; stride 2 at stages 2, 3) ->
    global average pool -> fc. Plain nets use the same layers with no shortcut."""

    def __init__(self, block, n, num_classes=10, shortcut="A", batch_norm=True, width=16):
        super().__init__()
        preact = block is PreActBlock
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=not batch_norm)
        self.bn1 = nn.Identity() if preact else norm_layer(width, batch_norm)
        self.relu = nn.ReLU()
        in_channels = width
        for stage, channels in enumerate((width, 2 * width, 4 * width), start=1):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 1 and i == 0 else 1
                blocks.append(block(in_channels, channels, stride, shortcut, batch_norm))
                in_channels = channels * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.final_bn = norm_layer(in_channels, batch_norm) if preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)
        self.preact = preact

    def forward(self, x):
        out = self.conv1(x)
        out = out if self.preact else self.relu(self.bn1(out))
        out = self.layer3(self.layer2(self.layer1(out)))
        if self.preact:
            out = self.relu(self.final_bn(out))
        return self.fc(self.flatten(self.avgpool(out)))

    def blocks(self):
        """Every block in order, with its path: [('layer1.0', block), ...]."""
        return [(f"layer{s}.{i}", b) for s in (1, 2, 3)
                for i, b in enumerate(getattr(self, f"layer{s}"))]


def cifar_resnet(depth, residual=True, preact=False, shortcut="A", num_classes=10,
                 batch_norm=True, bottleneck=False, init="he", width=16):
    """A CIFAR-10 network of the paper's 6n+2 family (9n+2 with bottleneck blocks).

    residual=False builds the plain net of the same depth: the same convs, BNs and fc, no shortcut
    (with option A the parameter count is the same). batch_norm=False replaces every BN with
    Identity and gives the convs biases. init: 'he' (Kaiming fan_out, as torchvision) or 'torch'
    (PyTorch's default uniform). width: the first stage's channels (the paper's 16; the stages
    have width, 2*width, 4*width), narrower for quick CPU experiments.
    """
    n = cifar_block_count(depth, bottleneck)
    if preact and not residual:
        raise ValueError("cifar_resnet: a pre-activation net is residual by definition")
    if bottleneck and (preact or not residual):
        raise ValueError("cifar_resnet: bottleneck blocks come only residual and post-activation "
                         "(bottleneck=True with preact=True or residual=False is not built)")
    if bottleneck:
        block = Bottleneck
    elif preact:
        block = PreActBlock
    else:
        block = BasicBlock if residual else PlainBlock
    model = CifarResNet(block, n, num_classes, shortcut, batch_norm, width)
    return _initialise(model, init)


class ResNet(nn.Module):
    """torchvision's ImageNet ResNet: 7x7/2 conv, 3x3/2 max pool, 4 stages (64..512), fc."""

    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for stage, (channels, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 1 and i == 0 else 1
                blocks.append(block(in_channels, channels, stride, "B"))
                in_channels = channels * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = stage(out)
        return self.fc(self.flatten(self.avgpool(out)))

    def blocks(self):
        return [(f"layer{s}.{i}", b) for s in (1, 2, 3, 4)
                for i, b in enumerate(getattr(self, f"layer{s}"))]


def _imagenet(block, layers, num_classes):
    return _initialise(ResNet(block, layers, num_classes), "he")


def resnet18(num_classes=1000):
    return _imagenet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet34(num_classes=1000):
    return _imagenet(BasicBlock, (3, 4, 6, 3), num_classes)


def resnet50(num_classes=1000):
    return _imagenet(Bottleneck, (3, 4, 6, 3), num_classes)


def resnet101(num_classes=1000):
    return _imagenet(Bottleneck, (3, 4, 23, 3), num_classes)


def resnet152(num_classes=1000):
    return _imagenet(Bottleneck, (3, 8, 36, 3), num_classes)


def get_model(name, num_classes=10):
    """A model by name: 'resnet20', 'plain56', 'preact110', 'resnet18', ... (for the CLI)."""
    name = name.lower()
    imagenet = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
                "resnet101": resnet101, "resnet152": resnet152}
    if name in imagenet:
        return imagenet[name](num_classes)
    for prefix, kwargs in (("resnet", {}), ("plain", {"residual": False}),
                           ("preact", {"preact": True})):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return cifar_resnet(int(name[len(prefix):]), num_classes=num_classes, **kwargs)
    raise ValueError(f"unknown model {name!r}: use resnet20/32/44/56/110/1202, plain20..., "
                     f"preact20..., or resnet18/34/50/101/152")


def load_torch_npz(model, path, strict=True):
    """Load a PyTorch state dict saved as .npz (no pickle, no torch import) into `model`."""
    with np.load(path, allow_pickle=False) as archive:
        state = {key: archive[key] for key in archive.files}
    return model.load_state_dict(state, strict=strict)
