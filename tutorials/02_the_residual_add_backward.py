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
# # 02 · The residual add's backward: where the "+1" lives
#
# A residual block computes $y = x + F(x)$: a shortcut that carries $x$ unchanged, plus a branch
# $F$ of a few layers. By the chain rule
#
# $$\frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}\left(1 + \frac{\partial F}{\partial x}\right)
#   = \underbrace{g}_{\text{shortcut}} + \underbrace{\left(\tfrac{\partial F}{\partial x}\right)^{\!\top} g}_{\text{branch}},
#   \qquad g = \frac{\partial L}{\partial y}.$$
#
# The "1" of tutorial 01 is the shortcut handing the gradient back untouched. In minires that "1"
# is a piece of code you can read: the op `residual_add(shortcut, branch)`, whose backward is
# `return gy, gy`. This tutorial
#
# 1. runs that backward on its own,
# 2. splits the gradient of one `BasicBlock` into its two parts by hand,
# 3. lets `minires.inspect.record` do the same split for every block of a CIFAR ResNet,
# 4. computes the full Jacobian of $y = x + F(x)$ for a tiny block and checks
#    $J = I + \partial F/\partial x$.

# %%
import os
import pathlib

import matplotlib.pyplot as plt
import numpy as np

import minires
from minires import functional as F
from minires import backend, inspect, models, nn
from minires.inspect import save_figure

QUICK = os.environ.get("MINIRES_QUICK") == "1"
FIGURES = pathlib.Path(os.environ.get("MINIRES_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

DEPTH = 8 if QUICK else 20        # the CIFAR ResNet of step 3 (6n+2 layers)
BATCH = 8 if QUICK else 32
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. `residual_add` on its own
#
# Two leaf tensors, the add, and a random upstream gradient $g$ (random, so that a backward that
# returned something else could not pass by luck). Both inputs receive exactly $g$.

# %%
rng = np.random.default_rng(0)
shortcut = minires.tensor(rng.standard_normal((2, 3)), requires_grad=True)
branch = minires.tensor(rng.standard_normal((2, 3)), requires_grad=True)
y = F.residual_add(shortcut, branch)
g = rng.standard_normal((2, 3))
y.backward(g)
print("g              \n", g)
print("shortcut.grad  \n", shortcut.grad.numpy())
print("branch.grad    \n", branch.grad.numpy())
assert np.array_equal(shortcut.grad.numpy(), g) and np.array_equal(branch.grad.numpy(), g)

# %% [markdown]
# ## 2. The split inside one BasicBlock, by hand
#
# `nn.BasicBlock(4, 4)` is the block of the 2015 paper with an identity shortcut:
# $y = \mathrm{relu}(x + F(x))$ with
# $F = \mathrm{bn_2}(\mathrm{conv_2}(\mathrm{relu}(\mathrm{bn_1}(\mathrm{conv_1}(x)))))$.
# We push a random upstream gradient $r = \partial L / \partial\,\mathrm{out}$ through it and then
# rebuild $\partial L/\partial x$ from its parts:
#
# * $g$, the gradient at the add, is $r$ masked by the ReLU that follows the add;
# * the shortcut part is $g$ itself;
# * the branch part is $(\partial F/\partial x)^\top g$: one backward through `block.branch` alone.

# %%
minires.manual_seed(0)
block = nn.BasicBlock(4, 4)
print(block)
x = minires.tensor(rng.standard_normal((2, 4, 6, 6)), dtype="float32", requires_grad=True)
out = block(x)
r = rng.standard_normal(out.shape).astype(np.float32)
out.backward(r)

g_add = r * (out.numpy() > 0)              # relu's backward: keep r where the output is positive
x_branch = minires.tensor(x.numpy(), requires_grad=True)
block.branch(x_branch).backward(g_add)      # (dF/dx)^T g
shortcut_part, branch_part = g_add, x_branch.grad.numpy()


def norm(a):
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64).ravel()))


print(f"||g|| at the add          {norm(g_add):.4f}")
print(f"||shortcut part|| (= g)   {norm(shortcut_part):.4f}")
print(f"||branch part||           {norm(branch_part):.4f}")
print(f"||shortcut + branch||     {norm(shortcut_part + branch_part):.4f}")
print(f"||dL/dx|| from backward   {norm(x.grad.numpy()):.4f}")
assert np.allclose(shortcut_part + branch_part, x.grad.numpy(), rtol=1e-5, atol=1e-6)

# %% [markdown]
# The two parts add up to the gradient minires' backward computed for $x$. Note that the norm of a
# sum is not the sum of the norms:
# $\|s + b\|^2 = \|s\|^2 + \|b\|^2 + 2\cos\theta\,\|s\|\,\|b\|$, where $\theta$ is the angle
# between the two parts.
#
# ## 3. The split in every block: `minires.inspect.record`
#
# Doing this by hand for every block is tedious; `record(model)` does it while one forward and
# backward run, without changing a single number (it only watches through hooks). With
# `keep_arrays=True` it also keeps the arrays: `add_grad` ($g$), `shortcut`, `branch`, `total`,
# `input_grad` and `output_grad`.
#
# The CIFAR ResNet uses option-A shortcuts (He et al. 2015) where a stage begins: the shortcut
# subsamples $x$ with stride 2 and pads the missing channels with zeros. There the shortcut part is
# $g$ with the padded channels dropped and the skipped pixels left at zero, so it is no longer
# $g$ itself. Everywhere else the shortcut is the identity and its part *is* $g$.

# %%
x_batch, y_batch, source = inspect.one_batch(BATCH, data="synthetic", seed=0)
x_batch = minires.tensor(x_batch.data, requires_grad=True)
minires.manual_seed(0)
model = models.cifar_resnet(DEPTH).train()
with inspect.record(model, keep_arrays=True) as rec:
    loss = F.cross_entropy(model(x_batch), y_batch)
    loss.backward()
print(f"ResNet-{DEPTH}, one batch of {BATCH} {source} images, loss {loss.item():.4f}\n")
header = (f"{'block':9} {'shortcut':9} {'||g||':>9} {'shortcut':>9} {'branch':>9} {'sum':>9} "
          f"{'||dL/dx||':>9} {'cosine':>7}  shortcut is g")
print(header)
for b in rec.block_stats:
    norms = [b[k] for k in ("add_grad_norm", "shortcut_grad_norm", "branch_grad_norm",
                            "total_grad_norm", "input_grad_norm")]
    print(f"{b['block']:9} {b['shortcut']:9} " + " ".join(f"{v:9.4f}" for v in norms)
          + f" {b['cosine']:7.3f}  {b['shortcut_is_g']}")

for b in rec.block_stats:
    arrays = {k: backend.to_numpy(v) for k, v in rec.arrays(b["block"]).items()}
    # the parts add up to the block's input gradient that backward computed
    assert np.allclose(arrays["shortcut"] + arrays["branch"], arrays["input_grad"],
                       rtol=1e-5, atol=1e-7)
    assert np.isclose(b["total_grad_norm"] ** 2,
                      b["shortcut_grad_norm"] ** 2 + b["branch_grad_norm"] ** 2
                      + 2 * b["cosine"] * b["shortcut_grad_norm"] * b["branch_grad_norm"],
                      rtol=1e-4)
    if b["shortcut"] == "identity":
        assert b["shortcut_is_g"] and np.array_equal(arrays["shortcut"], arrays["add_grad"])
        assert b["input_grad_norm"] >= b["add_grad_norm"]
    else:  # option A keeps only some channels and pixels of g
        assert not b["shortcut_is_g"] and b["shortcut_grad_norm"] < b["add_grad_norm"]
    assert abs(b["cosine"]) < 0.5  # nearly orthogonal parts at initialisation (see below)
identity = [b for b in rec.block_stats if b["shortcut"] == "identity"]
assert identity, "this ResNet should have identity-shortcut blocks"

path = inspect.plot_residual_split({("residual", DEPTH): rec}, FIGURES / "02_residual_split.png")
print("\nsaved", path)

# %% [markdown]
# In every identity block the printed `shortcut is g` is `True`: the recorder checked that the
# shortcut part is *equal*, element for element, to the gradient at the add. That is the "1", and
# no weight stands in its way. The branch part adds to it. In the option-A blocks the shortcut part
# is smaller than $g$, because the padded channels carry no gradient back to $x$.
#
# The printed cosines between the two parts are close to 0: at initialisation the shortcut part
# and the branch part point in nearly unrelated directions of a space with thousands of
# dimensions, so their norms add almost like the sides of a right triangle, and
# $\|\partial L/\partial x\| \ge \|g\|$ in every identity block.
#
# The figure shows the same numbers per block: the norms of the two parts and of their sum (top),
# and the shortcut's share $\|\text{shortcut}\| / \|\text{total}\|$ (bottom).
#
# ## 4. The Jacobian of $y = x + F(x)$
#
# For a tiny block (2 channels, a $3 \times 3$ image, so $x$ has 18 numbers) we can build the whole
# $18 \times 18$ Jacobian, one backward per output element, with `inspect.jacobian`. We use float64
# and evaluation mode: in evaluation mode BN uses its running statistics, so $F$ acts on each
# sample on its own and the Jacobian of one sample is well defined. (This block was never trained,
# so its running statistics are still mean 0 and variance 1, and each BN is nearly the identity.) We take $y$ *before* the ReLU
# that follows the add; tutorial 06 is about that ReLU.
# `Module.astype(np.float64)` casts the parameters and the BN running statistics.

# %%
minires.manual_seed(0)
tiny = nn.BasicBlock(2, 2, shortcut="A").astype(np.float64).eval()
x_tiny = minires.tensor(np.random.default_rng(1).standard_normal((1, 2, 3, 3)))  # float64
assert all(p.dtype == np.float64 for p in tiny.parameters())
J = inspect.jacobian(lambda t: F.residual_add(t, tiny.branch(t)), x_tiny)
J_branch = inspect.jacobian(tiny.branch, x_tiny)
print("J has shape", J.shape)
print("max |J - I - dF/dx| =", np.abs(J - np.eye(J.shape[0]) - J_branch).max())
assert np.allclose(J - np.eye(J.shape[0]), J_branch, rtol=0, atol=1e-12)

sv_full = np.linalg.svd(J, compute_uv=False)
sv_branch = np.linalg.svd(J_branch, compute_uv=False)
print("singular values of J = I + dF/dx:", sv_full)
print("singular values of dF/dx alone: ", sv_branch)
print(f"J:     from {sv_full.min():.3f} to {sv_full.max():.3f}")
print(f"dF/dx: from {sv_branch.min():.3f} to {sv_branch.max():.3f}, "
      f"{int((sv_branch < 1e-10).sum())} of {sv_branch.size} are zero")

fig, ax = plt.subplots(figsize=(7, 4))
index = np.arange(1, sv_full.size + 1)
ax.plot(index, sv_full, "bo-", label=r"$J = I + \partial F/\partial x$ (residual block)")
ax.plot(index, sv_branch, "rs-", label=r"$\partial F/\partial x$ alone (the branch)")
ax.axhline(1, color="k", lw=0.8)
ax.set_xlabel("singular value index (largest first)")
ax.set_ylabel("singular value")
ax.set_title("tiny BasicBlock (2 channels, 3x3 image, eval mode): Jacobian before the last ReLU",
             fontsize=10)
ax.set_xticks(index)
ax.legend()
ax.grid(True, alpha=0.3)
fig.tight_layout()
path = FIGURES / "02_jacobian_singular_values.png"
save_figure(fig, path)  # shown inline in a notebook, closed in a script
print("saved", path)

# Weyl's inequality: every singular value of I + A lies within ||A|| (A's largest one) of 1.
assert np.all(np.abs(sv_full - 1) <= sv_branch.max() + 1e-12)
# What the prose below says of this block: J is far from singular, the branch alone is not.
assert sv_branch.max() < 1 and sv_full.min() > 1 - sv_branch.max() - 1e-12
assert sv_branch.min() < 1e-6 < sv_full.min()

# %% [markdown]
# The printed singular values of $J$ sit around 1, while those of the branch alone start below 1
# and some are exactly zero (the ReLU inside the branch switches units off, and a layer that
# loses a direction loses it for good). Weyl's inequality says how close to 1 the residual block
# stays: every singular value of $I + A$ lies within $\sigma_{\max}(A)$ of 1. So as long as the
# branch's Jacobian is smaller than 1, no direction of the gradient can vanish in this block, and
# none can grow by more than a factor $1 + \sigma_{\max}(A)$.
#
# A plain network multiplies branch-like Jacobians, one per block; a residual network multiplies
# factors of the form $I + A$. That is tutorial 01's scalar argument in matrix form. How large
# $A$ really is in a deep network depends on the initialisation and on batch normalization:
# tutorial 03 measures it.
