# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Shortcut options A, B, C and the bottleneck block: what they cost
#
# A residual block adds its input to its output, $y = F(x) + x$, and that only works when $x$ and
# $F(x)$ have the same shape. At the first block of a stage they do not: the branch halves the
# height and width (stride 2) and doubles the channels. He et al. (2015, §3.3 and Table 3) tried
# three ways to make the shortcut fit:
#
# * **A**: *zero-padding*. Subsample $x$ with stride 2 and append zero channels. No parameters, no
#   multiplications; the shortcut stays an identity on the channels that exist.
# * **B**: *projection where the shape changes*. A 1x1 convolution (with batch norm) $W_s x$ in
#   those few blocks, identity everywhere else.
# * **C**: *projection everywhere*. Every shortcut becomes a 1x1 convolution.
#
# On ImageNet the paper found B slightly better than A (the zero-padded channels learn no
# residual) and C marginally better than B (more parameters), and concluded that projections are
# "not essential for addressing the degradation problem". This tutorial does not train anything:
# it **counts** what each choice costs, from the models themselves, with
# `minires.inspect.count_flops`. Then it does the same for the *bottleneck* block that lets
# ResNet-50/101/152 be deep without being expensive.
#
# Counting convention: `count_flops` reports **multiply-accumulates (MACs) per image**. The paper
# counts the same thing and calls it "FLOPs" (ResNet-50: $3.8 \times 10^9$); a hardware FLOP
# count is about twice that, since each MAC is a multiply and an add.

# %%
import os
import pathlib
import time

import matplotlib.pyplot as plt
import numpy as np

import minires
from minires import functional as F
from minires.inspect import count_flops, save_figure
from minires.models import (cifar_block_count, cifar_resnet, resnet18, resnet34, resnet50,
                            resnet101, resnet152)
from minires.nn import BasicBlock, Bottleneck

QUICK = os.environ.get("MINIRES_QUICK") == "1"
FIGURES = pathlib.Path(os.environ.get("MINIRES_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

CIFAR_DEPTHS = (20, 56, 110)
START = time.perf_counter()


def save(fig, name):
    """Write a figure into FIGURES as a PNG, and say where."""
    fig.tight_layout()
    path = FIGURES / name
    save_figure(fig, path)  # shown inline in a notebook, closed in a script
    print("saved", path)


# %% [markdown]
# ## Option A on a tiny tensor
#
# `functional.pad_channels(x, out_channels, stride)` is the option-A shortcut as an op. Take one
# image with 2 channels of 4x4 pixels and ask for 4 channels at stride 2: it keeps every second
# pixel in each direction (4x4 becomes 2x2) and adds zero channels, half before and half after
# the original ones. Its backward returns the gradient of the original channels to the pixels that
# were kept, and zero to the ones the stride skipped.

# %%
x = minires.tensor(np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4), requires_grad=True)
y = F.pad_channels(x, 4, stride=2)
print("x", x.shape, "-> y", y.shape)
for c in range(2):
    print(f"x channel {c}:\n{x.numpy()[0, c]}")
for c in range(4):
    print(f"y channel {c}:\n{y.numpy()[0, c]}")
y.backward(np.ones(y.shape, dtype=np.float32))
print("dL/dx for dL/dy = 1 everywhere, channel 0:\n", x.grad.numpy()[0, 0])

assert y.shape == (1, 4, 2, 2)
assert np.all(y.numpy()[0, 0] == 0) and np.all(y.numpy()[0, 3] == 0)       # the padded channels
assert np.array_equal(y.numpy()[0, 1], x.numpy()[0, 0, ::2, ::2])           # the kept pixels
assert x.grad.numpy().sum() == 2 * 2 * 2                                    # 8 pixels were kept

# %% [markdown]
# ## A, B and C on the CIFAR-10 ResNets
#
# The CIFAR family has $6n + 2$ layers: a 3x3 conv, three stages of $n$ basic blocks (16, 32 and
# 64 channels) and a linear layer. Only two blocks change shape (the first of stages 2 and 3), so
# option B adds just two 1x1 projections. Option C adds one to *every* block. We build each depth
# four ways: plain (no shortcut at all), and residual with A, B and C, and count parameters and
# MACs per 32x32 image.

# %%
OPTIONS = {"plain": dict(residual=False), "A": dict(shortcut="A"), "B": dict(shortcut="B"),
           "C": dict(shortcut="C")}
cifar = {}
for depth in CIFAR_DEPTHS:
    for option, kwargs in OPTIONS.items():
        cifar[(depth, option)] = count_flops(cifar_resnet(depth, **kwargs))

print(f"{'net':<14}{'params':>12}{'MACs':>14}{'params vs A':>14}{'MACs vs A':>12}")
for depth in CIFAR_DEPTHS:
    base = cifar[(depth, "A")]
    for option in OPTIONS:
        r = cifar[(depth, option)]
        name = f"plain-{depth}" if option == "plain" else f"ResNet-{depth} {option}"
        extra_params, extra_macs = r.params / base.params - 1, r.macs / base.macs - 1
        print(f"{name:<14}{r.params:>12,}{r.macs / 1e6:>12.2f} M"
              f"{100 * extra_params:>+13.1f}%{100 * extra_macs:>+11.1f}%")

print("\nResNet-20, option A, layer by layer (first and last rows):")
print(cifar[(20, "A")].format(max_rows=10))

# %% [markdown]
# What the table shows, and the code checks:
#
# * **Option A costs nothing**: the residual net has exactly the parameters and MACs of the plain
#   net of the same depth. This is what makes the paper's plain-vs-residual comparison fair: the
#   only difference is the identity shortcut.
# * **Option B** adds two 1x1 convs (and their batch norms): about 1% more parameters for
#   ResNet-20 and a fraction of a percent of the MACs; the share shrinks as the net deepens.
# * **Option C** adds a 1x1 conv to every block: several percent more parameters and MACs here,
#   growing with depth. In the paper's ImageNet Table 3 it bought a few tenths of a percent of
#   error, which is why the deeper models use B (or A) instead.
# * The paper's own parameter counts are reproduced (Table 6, option A): ResNet-20 0.27 M,
#   ResNet-56 0.85 M, ResNet-110 1.7 M.

# %%
PAPER_PARAMS_M = {20: 0.27, 56: 0.85, 110: 1.7}  # He et al. 2015, Table 6
for depth in CIFAR_DEPTHS:
    plain, a, b, c = (cifar[(depth, o)] for o in OPTIONS)
    assert (a.params, a.macs) == (plain.params, plain.macs)
    assert a.params < b.params < c.params and a.macs < b.macs < c.macs
    projection_macs = 16 * 16 * 32 * 16 + 8 * 8 * 64 * 32  # B's two 1x1 stride-2 projections
    assert b.macs - a.macs == projection_macs
    assert abs(a.params / 1e6 / PAPER_PARAMS_M[depth] - 1) < 0.02  # the paper's rounding

# %% [markdown]
# The bar chart puts the three columns side by side: parameters, MACs, and (where the differences
# are visible) the extra parameters of B and C relative to A.

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
width = 0.2
positions = np.arange(len(CIFAR_DEPTHS))
colours = {"plain": "tab:gray", "A": "tab:blue", "B": "tab:orange", "C": "tab:red"}
for k, option in enumerate(OPTIONS):
    params = [cifar[(d, option)].params / 1e6 for d in CIFAR_DEPTHS]
    macs = [cifar[(d, option)].macs / 1e6 for d in CIFAR_DEPTHS]
    extra = [100 * (cifar[(d, option)].params / cifar[(d, "A")].params - 1) for d in CIFAR_DEPTHS]
    offset = (k - 1.5) * width
    axes[0].bar(positions + offset, params, width, label=option, color=colours[option])
    axes[1].bar(positions + offset, macs, width, label=option, color=colours[option])
    axes[2].bar(positions + offset, extra, width, label=option, color=colours[option])
for ax, ylabel in zip(axes, ("parameters (millions)", "MACs per 32x32 image (millions)",
                             "extra parameters vs option A (%)")):
    ax.set_xticks(positions, [f"{d} layers" for d in CIFAR_DEPTHS])
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="shortcut")
fig.suptitle("CIFAR-10 ResNets: what each shortcut option costs (plain = no shortcut)")
save(fig, "05_shortcut_options.png")

# %% [markdown]
# ## The bottleneck block
#
# A basic block is two 3x3 convs. Making a network deeper *and* wider with basic blocks gets
# expensive fast: a 3x3 conv from $C$ to $C$ channels costs $9C^2$ MACs per pixel, so at 256
# channels one basic block costs 16 times what it costs at 64.
#
# The bottleneck block (Figure 5, right) does the 3x3 work at a quarter of the width:
#
# $$256 \xrightarrow{1\times 1} 64 \xrightarrow{3\times 3} 64 \xrightarrow{1\times 1} 256$$
#
# The 1x1 convs reduce and then restore the channels; the 3x3 conv in the middle, where the
# spatial mixing happens, works on 64 channels only. The paper says this block, on 256-channel
# inputs, has about the same cost as a basic block on 64 channels. Let us count, for blocks
# running on a 56x56 feature map (stage 1 of ImageNet ResNet), what each costs:

# %%
blocks = {
    "basic, 64-d   (3x3 64, 3x3 64)": (BasicBlock(64, 64), 64),
    "basic, 256-d  (3x3 256, 3x3 256)": (BasicBlock(256, 256), 256),
    "bottleneck, 256-d (1x1 64, 3x3 64, 1x1 256), identity shortcut": (Bottleneck(256, 64), 256),
    "bottleneck, 256-d, projection shortcut (option C)": (Bottleneck(256, 64, shortcut="C"), 256),
}
block_counts = {}
for name, (block, channels) in blocks.items():
    block_counts[name] = count_flops(block, (1, channels, 56, 56))
    r = block_counts[name]
    print(f"{name:<64}{r.params:>11,} params{r.macs / 1e6:>9.1f} M MACs")

basic64, basic256, bottleneck, bottleneck_c = block_counts.values()
print(f"\nMACs, bottleneck 256-d / basic 64-d: {bottleneck.macs / basic64.macs:.2f}; "
      f"basic 256-d / bottleneck 256-d: {basic256.macs / bottleneck.macs:.1f}")
print(f"bottleneck with projection / with identity shortcut: "
      f"{bottleneck_c.macs / bottleneck.macs:.2f} x the MACs, "
      f"{bottleneck_c.params / bottleneck.params:.2f} x the parameters")
assert 0.8 < bottleneck.macs / basic64.macs < 1.2        # "similar time complexity"
assert basic256.macs > 15 * bottleneck.macs              # the 256-d basic block is far dearer
assert 1.8 < bottleneck_c.macs / bottleneck.macs < 2.1   # a projection here doubles the cost

# %% [markdown]
# The bottleneck on 256 channels costs about what the basic block on 64 channels costs, and a
# small fraction of a basic block on 256 channels (the ratios printed above). The last line is the
# paper's argument
# for identity shortcuts in bottleneck nets: the shortcut connects the two *wide* (256-d) ends, so
# a projection there is a 256x256 1x1 conv that by itself costs as much as the whole block, and
# the block's time and size **double**. Parameter-free identity shortcuts are what keep deep
# bottleneck nets affordable.
#
# ## Basic vs bottleneck in whole networks
#
# On CIFAR-10, `cifar_resnet(depth, bottleneck=True)` builds the bottleneck family: 3 layers per
# block, so depth $= 9n + 2$ (29, 56, 110, 164: `cifar_block_count` checks the form), with 16, 32,
# 64 bottleneck widths and 4x wider outputs (64, 128, 256 channels). ResNet-164 is the bottleneck
# net of the pre-activation paper (He et al. 2016, 1.7 M parameters). Compare nets of equal depth:

# %%
print(f"{'CIFAR net':<24}{'blocks/stage':>13}{'params':>12}{'MACs':>13}")
cifar_pairs = {}
for depth, bottleneck_blocks in ((56, False), (56, True), (110, False), (110, True), (164, True)):
    kind = "bottleneck" if bottleneck_blocks else "basic"
    n = cifar_block_count(depth, bottleneck=bottleneck_blocks)
    r = count_flops(cifar_resnet(depth, shortcut="B", bottleneck=bottleneck_blocks))
    cifar_pairs[(depth, kind)] = r
    print(f"{f'ResNet-{depth} {kind}':<24}{n:>13}{r.params:>12,}{r.macs / 1e6:>11.1f} M")

for depth in (56, 110):
    basic, bottle = cifar_pairs[(depth, "basic")], cifar_pairs[(depth, "bottleneck")]
    assert bottle.params < basic.params and bottle.macs < basic.macs
r164, r110 = cifar_pairs[(164, "bottleneck")], cifar_pairs[(110, "basic")]
assert r164.params < r110.params and r164.macs < r110.macs
assert abs(r164.params / 1e6 / 1.7 - 1) < 0.02  # He et al. 2016: 1.7 M

# %% [markdown]
# At equal depth the bottleneck net has fewer blocks (each block is 3 layers instead of 2) and
# costs less, even though its outputs are 4x wider; ResNet-164 has the parameters and about the
# cost of the basic ResNet-110 with 54 more layers.
#
# ## ImageNet: ResNet-18 to 152
#
# The ImageNet models (torchvision's layout, option B) use basic blocks up to 34 layers and
# bottlenecks from 50 on. Counted at 224x224, next to the paper's Table 1 "FLOPs" (multiply-adds).
# In the three blocks that halve the resolution, the paper's ResNet-50/101/152 put the stride on
# the first 1x1 conv; torchvision's (and minires') put it on the 3x3 conv ("ResNet v1.5"). The
# first 1x1 conv then runs on the input's resolution, 4 times as many pixels: in each of those
# three blocks it costs $56^2 \cdot 256 \cdot 128 = 28^2 \cdot 512 \cdot 256 = 14^2 \cdot 1024
# \cdot 512 \approx 103$ M MACs instead of a quarter of that, about 0.23 billion more in all. That
# is why we count a few percent more than the paper for the bottleneck nets.

# %%
PAPER_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
BUILDERS = {18: resnet18, 34: resnet34, 50: resnet50, 101: resnet101, 152: resnet152}
IMAGENET_DEPTHS = (18, 34, 50) if QUICK else (18, 34, 50, 101, 152)
imagenet = {}
print(f"{'net':<12}{'block':<12}{'params':>14}{'MACs (G)':>10}{'paper':>8}")
for depth in IMAGENET_DEPTHS:
    model = BUILDERS[depth]()
    imagenet[depth] = count_flops(model, (1, 3, 224, 224))
    del model
    r = imagenet[depth]
    kind = "basic" if depth < 50 else "bottleneck"
    print(f"ResNet-{depth:<5}{kind:<12}{r.params:>14,}{r.macs / 1e9:>10.2f}"
          f"{PAPER_GMACS[depth]:>8.1f}")
if QUICK:
    print("(quick mode: ResNet-101 and -152 skipped; run without MINIRES_QUICK=1 for all five)")

for depth, r in imagenet.items():
    assert abs(r.macs / 1e9 - PAPER_GMACS[depth]) / PAPER_GMACS[depth] < 0.1
print(f"ResNet-50 vs ResNet-34: {imagenet[50].macs / imagenet[34].macs - 1:+.0%} MACs, "
      f"{imagenet[50].params / imagenet[34].params - 1:+.0%} parameters")
assert imagenet[50].macs < 1.2 * imagenet[34].macs

# %% [markdown]
# ResNet-34 (basic blocks) and ResNet-50 (bottlenecks) cost about the same: ResNet-50 swaps each
# two-layer basic block for a three-layer bottleneck and gets 16 more layers for the extra MACs
# printed above (by the paper's counts, 3.8 vs 3.6 billion: +6%). Its parameters go up more, from
# the wide 1x1 convs and projections and the 2048-d input of the fc layer. Even at 152 layers
# the paper's ResNet (11.3 billion multiply-adds) costs less than VGG-16 (15.3 billion).

# %%
depths = list(imagenet)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
colours = ["tab:blue" if d < 50 else "tab:green" for d in depths]
labels = [f"ResNet-{d}" for d in depths]
axes[0].bar(labels, [imagenet[d].params / 1e6 for d in depths], color=colours)
axes[0].set_ylabel("parameters (millions)")
axes[1].bar(labels, [imagenet[d].macs / 1e9 for d in depths], color=colours, label="counted here")
axes[1].plot(labels, [PAPER_GMACS[d] for d in depths], "k_", markersize=30, mew=2,
             label='paper, Table 1 ("FLOPs")')
axes[1].set_ylabel("multiply-accumulates per 224x224 image (billions)")
axes[1].legend()
for ax in axes:
    ax.grid(True, axis="y", alpha=0.3)
fig.suptitle("ImageNet ResNets: basic blocks (blue) vs bottleneck blocks (green)")
save(fig, "05_imagenet_cost.png")
print(f"tutorial 05 done in {time.perf_counter() - START:.1f} s")

# %% [markdown]
# ## Summary
#
# * Option A (zero padding) is free, so a plain net and a residual net of the same depth differ
#   only by the shortcut: the fair comparison of tutorial 04.
# * Option B adds projections only where the shape changes: a small, shrinking share of the cost.
#   Option C puts one in every block: more parameters and work for a marginal gain.
# * A bottleneck block does its 3x3 work at a quarter of the width. With identity shortcuts a
#   256-d bottleneck costs what a 64-d basic block costs; with a projection shortcut it would cost
#   twice as much. That is what makes 50-, 101- and 152-layer nets affordable.
