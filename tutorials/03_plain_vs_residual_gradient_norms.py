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
# # 03 · Plain vs residual networks: gradient norms layer by layer
#
# Tutorial 01 showed the argument on a chain of scalars: a product of per-layer factors vanishes or
# explodes unless each factor stays close to 1, and the identity shortcut turns every factor
# into "1 + something". Here we measure what actually happens in the CIFAR-10 networks of He et
# al. (2015): the $6n+2$ family (20, 56, 110 layers), built once as a *plain* net and once as a
# *residual* net with the same convolutions, the same batch norms and the same initial weights.
#
# For each net, one batch goes forward and backward at initialisation (training mode) and
# `minires.inspect` records, for every convolution and the final linear layer, the norm of the
# gradient with respect to that layer's input, $\|\partial L/\partial x\|$. We do it twice:
#
# 1. **without batch normalization**, with PyTorch's default initialisation, as deep nets were
#    before BN;
# 2. **with batch normalization** and He initialisation, the setting of the paper.
#
# The two settings tell different stories, and we let the numbers say which.

# %%
import os
import pathlib

import numpy as np

from minires import inspect

QUICK = os.environ.get("MINIRES_QUICK") == "1"
FIGURES = pathlib.Path(os.environ.get("MINIRES_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

DEPTHS = (20, 56) if QUICK else (20, 56, 110)
BATCH = 8 if QUICK else 32
SEED = 0

# %% [markdown]
# `inspect.compare(depths, batch_norm)` builds, for every depth, the plain and the residual net
# from the same seed and records one forward and backward pass on the same batch (synthetic
# CIFAR-shaped images, so nothing is downloaded; the `minires gradients --data cifar10` command runs
# the same experiment on real images). It returns `{(net, depth): Recorder}`.
#
# Each recorder's `summary()` is one number:
#
# $$\text{ratio} = \frac{\|\partial L / \partial x\| \text{ at the input of the first block}}
#                       {\|\partial L / \partial x\| \text{ at the input of the last block}} .$$
#
# A ratio far below 1 means the gradient vanishes on its way back to the early layers; far above
# 1 means it grows (explodes) on the way.

# %%
def report(results, setting):
    print(f"{setting}: batch of {BATCH}")
    for line in inspect.summary_lines(results):
        print("  " + line)
    for (net, depth), rec in results.items():
        first, last = rec.layers[0], rec.layers[-1]
        print(f"  {net:>8}-{depth:<4} ||dL/dx|| at the {first['layer']} input "
              f"{first['input_grad_norm']:.3e}, at the {last['layer']} input "
              f"{last['input_grad_norm']:.3e}")


def ratios(results):
    return {key: rec.summary() for key, rec in results.items()}


no_bn, source = inspect.compare(DEPTHS, batch_norm=False, batch_size=BATCH, seed=SEED,
                                data="synthetic")
report(no_bn, "without BN, PyTorch default init")
path = inspect.plot_layer_gradients(
    no_bn, FIGURES / "03_layer_gradients_no_bn.png",
    f"||dL/d(layer input)|| at initialisation, no BN, PyTorch default init ({source} batch)")
print("saved", path)

# %% [markdown]
# ## Without batch normalization: the plain nets' gradients vanish
#
# The printed ratios of the plain nets are tiny, and shrink further with every extra block: each
# plain layer multiplies the gradient by a factor below 1, and these factors compound exactly as in
# the scalar chain. The first layers of a deep plain net receive practically no gradient. If a
# ratio prints as 0 (plain-110 here), the gradient fell below the smallest normal float32 number,
# 1.2e-38, and was rounded to zero or near it: the summary then says "underflowed float32" and
# names the layers, and their curve leaves the bottom of the log-scale plot. float64 reaches down
# to 2.2e-308, so the same net recorded with `dtype="float64"` has a ratio to compare.
#
# The size of the factor can be estimated. PyTorch's default weights are uniform on
# $\pm 1/\sqrt{\text{fan}}$, with variance $1/(3\,\text{fan})$, so a convolution scales the
# squared norm of the gradient passing back through it by about
# $\text{fan} \cdot 1/(3\,\text{fan}) = 1/3$, and the ReLU before it passes back only about half
# of the entries: about $1/6$ per layer, a factor $1/\sqrt 6 \approx 0.41$ on the norm. Between the
# first and the last block's input lie $2(\text{blocks} - 1)$ convolutions. (The estimate ignores
# the two stride-2 layers.)

# %%
x, y, _ = inspect.one_batch(BATCH, "synthetic", SEED)
for depth in DEPTHS:
    rec = no_bn[("plain", depth)]
    convs = 2 * (len(rec.block_stats) - 1)
    estimate = (1 / np.sqrt(6)) ** convs
    if rec.out_of_range_layers()["underflowed"]:  # float32 ran out: record it again in float64
        rec = inspect.record_gradients(depth, False, x, y, batch_norm=False, seed=SEED,
                                       dtype="float64")
    print(f"plain-{depth:<4} {convs:3d} convs: estimate (1/sqrt 6)^{convs} = {estimate:.2e}, "
          f"measured ratio {rec.summary():.2e} ({rec.dtype})")
    assert 0.01 < rec.summary() / estimate < 100

# %% [markdown]
# The estimate and the measurement printed above agree to within a small factor, over many orders
# of magnitude.
#
# The residual nets' ratios stay of order one at every depth: each block passes its gradient back
# through the identity, and the branch only adds to it. In the figure (log scale) the red curves
# fall steeply from right (output) to left (input), and the blue curves stay level.

# %%
r = ratios(no_bn)
for depth in DEPTHS:
    plain, residual = r[("plain", depth)], r[("residual", depth)]
    assert plain < 1e-3, f"plain-{depth} without BN should vanish toward the input, ratio {plain}"
    assert 0.05 < residual < 20, f"ResNet-{depth} without BN should stay level, ratio {residual}"
    assert residual > 1e3 * plain
for shallow, deep in zip(DEPTHS, DEPTHS[1:]):
    assert r[("plain", deep)] < r[("plain", shallow)]  # deeper plain nets vanish further

# %% [markdown]
# ## With batch normalization: the plain nets' gradients *grow* toward the input
#
# Batch normalization rescales every layer's output to unit variance, so the forward signal can no
# longer die out. One might guess, as some popular explanations of ResNet do, that the gradient
# still slowly vanishes in a deep BN network. Measured here, it does the opposite.

# %%
with_bn, source = inspect.compare(DEPTHS, batch_norm=True, batch_size=BATCH, seed=SEED,
                                  data="synthetic")
report(with_bn, "with BN, He init")
path = inspect.plot_layer_gradients(
    with_bn, FIGURES / "03_layer_gradients_bn.png",
    f"||dL/d(layer input)|| at initialisation, with BN, He init ({source} batch)")
print("saved", path)

r_bn = ratios(with_bn)
print("\nplain ratio / residual ratio:")
for depth in DEPTHS:
    print(f"  depth {depth:4d}: {r_bn[('plain', depth)] / r_bn[('residual', depth)]:10.3g}")


def per_block_factor(results, key):
    """The ratio spread evenly over the blocks: ratio ** (1 / (blocks - 1))."""
    return results[key].summary() ** (1 / (len(results[key].block_stats) - 1))


print("typical factor per block (geometric mean), plain vs residual:")
for depth in DEPTHS:
    print(f"  depth {depth:4d}: plain {per_block_factor(with_bn, ('plain', depth)):.3f}, "
          f"residual {per_block_factor(with_bn, ('residual', depth)):.3f}")

# %% [markdown]
# Every printed ratio is above 1: with BN the gradient at the first block is *larger* than at the
# last one. In the plain nets it grows fast with depth, since each block multiplies it by a factor
# above 1 and the factors compound (batch normalization at initialisation is known to cause this
# gradient explosion in deep plain networks; see Yang et al., *A Mean Field Theory of Batch
# Normalization*, 2019). The residual nets' ratios grow far more slowly with depth, and the gap
# between plain and residual widens as the nets get deeper. Spread evenly over the blocks, the
# printed typical factor per block tells the same story: the plain nets' factor stays well above
# 1 at every depth, so their ratio grows exponentially with depth, while the residual nets' factor
# is smaller, and comes closer to 1 the deeper the net.
#
# So the 2015 paper is right that its BN plain nets do not suffer from *vanishing* gradients, and
# the "+1" still matters: it keeps each block's factor closer to 1 in both settings, whichever way
# the plain factors lean. (Why a deeper plain net reaches a higher training error, the *degradation
# problem*, is tutorial 04. The paper argues that vanishing gradients are not the cause, and these
# measurements agree that with BN the gradient does not vanish.)

# %%
for depth in DEPTHS:
    plain, residual = r_bn[("plain", depth)], r_bn[("residual", depth)]
    assert plain > 3, f"plain-{depth} with BN should grow toward the input, ratio {plain}"
    assert residual > 1, f"ResNet-{depth} with BN: ratio {residual}"
    assert plain > 1.5 * residual, f"depth {depth}: plain {plain} vs residual {residual}"
    assert per_block_factor(with_bn, ("residual", depth)) < per_block_factor(with_bn,
                                                                             ("plain", depth))
    assert per_block_factor(with_bn, ("plain", depth)) > 1.2
for shallow, deep in zip(DEPTHS, DEPTHS[1:]):
    assert r_bn[("plain", deep)] > 3 * r_bn[("plain", shallow)]
    assert (per_block_factor(with_bn, ("residual", deep))
            < per_block_factor(with_bn, ("residual", shallow)))
    gap_shallow = r_bn[("plain", shallow)] / r_bn[("residual", shallow)]
    gap_deep = r_bn[("plain", deep)] / r_bn[("residual", deep)]
    assert gap_deep > gap_shallow

# %% [markdown]
# ## The "+1" split, block by block
#
# Where does the residual net's gradient come from? At every block the recorder splits
# $\partial L/\partial x$ into the part that came back through the shortcut (the gradient at the
# add, handed back unchanged by an identity shortcut) and the part that came back through the
# branch $F$ (tutorial 02). The figures show both parts per block and the shortcut's share
# $\|\text{shortcut part}\| / \|\partial L/\partial x\|$.

# %%
for results, name, setting in ((no_bn, "no_bn", "without BN"), (with_bn, "bn", "with BN")):
    path = inspect.plot_residual_split(results, FIGURES / f"03_residual_split_{name}.png")
    print("saved", path)
    for (net, depth), rec in results.items():
        if net != "residual":
            continue
        shares = np.array([b["shortcut_ratio"] for b in rec.block_stats])
        third = max(1, len(shares) // 3)
        print(f"  {setting:10} ResNet-{depth:<4} shortcut share per block: first third "
              f"{shares[:third].mean():.2f}, last third {shares[-third:].mean():.2f}, "
              f"min {shares.min():.2f}, max {shares.max():.2f}")

for depth in DEPTHS:
    bn_shares = np.array([b["shortcut_ratio"] for b in with_bn[("residual", depth)].block_stats])
    no_bn_shares = np.array([b["shortcut_ratio"] for b in no_bn[("residual", depth)].block_stats])
    third = max(1, len(bn_shares) // 3)
    assert no_bn_shares.min() > 0.8                         # no BN: the branch adds little
    assert bn_shares[-third:].mean() > bn_shares[:third].mean()  # BN: the shortcut's share grows
    assert no_bn_shares.mean() > bn_shares.mean()

# %% [markdown]
# Without BN, PyTorch's default weights make each branch small, and the shortcut carries almost
# all of the gradient in every block (shares close to 1): the network behaves nearly like the
# identity, which is why its gradient neither vanishes nor grows.
#
# With BN, each branch ends in a batch norm that rescales it to unit variance, so the branch is
# *not* small. The shortcut's share is lowest in the first blocks and grows toward the output:
# each block adds its branch to the signal, the signal's variance grows along the net, and a
# unit-variance branch becomes a smaller correction to it. The branches' contributions add a
# little to the gradient at every block, which is why the residual ratio is above 1, but each
# block's factor stays "1 + a modest term", not a factor that compounds like the plain net's.
