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
# # 01 · Vanishing gradients in a chain
#
# Why are deep networks hard to train? Backpropagation multiplies one derivative per layer. If the
# factors are mostly below 1 the product shrinks geometrically with depth (the gradient
# *vanishes*); if they are mostly above 1 it grows (it *explodes*). The way out is to keep every
# factor close to 1.
#
# This tutorial shows the argument on the smallest network there is: a chain of scalar neurons with
# a sigmoid, as in the notes on He et al. (2015), *Deep Residual Learning*. minires' autograd
# computes every gradient, and we check the result against the product written out by hand. Then
# we add the identity shortcut and watch every factor gain a "+1".
#
# Run it as a script (`python tutorials/01_vanishing_gradients_in_a_chain.py`) or open it as a
# notebook with jupytext. `MINIRES_QUICK=1` makes it smaller, and `MINIRES_FIGURES` says where the
# figures go.

# %%
import os
import pathlib

import matplotlib.pyplot as plt
import numpy as np

import minires
from minires import functional as F
from minires.inspect import save_figure

QUICK = os.environ.get("MINIRES_QUICK") == "1"
FIGURES = pathlib.Path(os.environ.get("MINIRES_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

MAX_DEPTH = 30 if QUICK else 50  # the longest chain we build
CHAINS = 16 if QUICK else 64     # independent random chains, run side by side
np.set_printoptions(precision=4, suppress=False)

# %% [markdown]
# ## 1. The plain chain
#
# One neuron per layer, $L$ layers, input $a_0$:
#
# $$z_k = w_k a_{k-1} + b_k, \qquad a_k = \sigma(z_k), \qquad C = a_L .$$
#
# (The loss $C = a_L$ keeps $\partial C / \partial a_L = 1$; any other loss multiplies every
# gradient below by the same number $\partial C / \partial a_L$.) The chain rule gives one factor
# per layer:
#
# $$\frac{\partial C}{\partial a_1} = \prod_{k=2}^{L} \frac{\partial a_k}{\partial a_{k-1}}
#   = \prod_{k=2}^{L} \sigma'(z_k)\, w_k, \qquad
#   \delta_1 = \frac{\partial C}{\partial z_1} = \sigma'(z_1) \frac{\partial C}{\partial a_1},
#   \qquad \frac{\partial C}{\partial w_1} = \delta_1 a_0 .$$
#
# We draw the weights and biases from $N(0, 1)$ and build the chain out of minires tensors. Each
# tensor holds `CHAINS` numbers, one per independent random chain: every op is elementwise, so the
# chains never mix, and one backward pass gives the gradient of all of them. We work in float64
# so that tiny gradients are not rounded to zero.

# %%
rng = np.random.default_rng(0)
W = rng.standard_normal((MAX_DEPTH, CHAINS))  # w_k of layer k+1, one column per chain
B = rng.standard_normal((MAX_DEPTH, CHAINS))
A0 = rng.standard_normal(CHAINS)


def run_chain(depth, residual):
    """Build a chain of `depth` layers from the first `depth` rows of W and B, then backpropagate
    C = a_L (summed over the independent chains). Returns the tensors, with gradients filled in."""
    a = minires.tensor(A0)  # float64, because A0 is a float64 NumPy array
    ws, zs, acts = [], [], []
    for k in range(depth):
        w = minires.tensor(W[k], requires_grad=True)
        b = minires.tensor(B[k], requires_grad=True)
        z = w * a + b
        s = F.sigmoid(z)
        a = a + s if residual else s  # the residual chain adds the layer's input back
        z.retain_grad()  # keep delta_k = dC/dz_k, an intermediate gradient
        a.retain_grad()  # keep dC/da_k
        ws.append(w), zs.append(z), acts.append(a)
    a.sum().backward()
    return {"w": ws, "z": zs, "a": acts}


def sigmoid_prime(z):
    s = 1 / (1 + np.exp(-z))
    return s * (1 - s)


# %% [markdown]
# A plain chain of 5 layers, for the first of the random chains. Every factor $\sigma'(z_k) w_k$ is
# printed with the product of factors 2..5 (the hand-written chain rule) next to the gradient
# minires' backward found for $a_1$.

# %%
short = run_chain(5, residual=False)
z = np.array([t.numpy()[0] for t in short["z"]])
w = W[:5, 0]
factors = sigmoid_prime(z) * w
print("z_k            ", z)
print("sigma'(z_k)    ", sigmoid_prime(z))
print("w_k            ", w)
print("sigma'(z_k) w_k", factors)
by_hand = np.prod(factors[1:])
by_autograd = short["a"][0].grad.numpy()[0]
print(f"dC/da_1 by hand     {by_hand:.10e}")
print(f"dC/da_1 by minires  {by_autograd:.10e}")
assert np.isclose(by_hand, by_autograd, rtol=1e-12, atol=0)

# %% [markdown]
# The derivative of the sigmoid is $\sigma'(z) = \sigma(z)(1 - \sigma(z)) \le 1/4$, with the maximum
# at $z = 0$. So each factor is at most $|w_k|/4$ in size: unless the weights are larger than 4,
# every layer shrinks the gradient, and the chain multiplies these shrinkages together.
#
# Now a chain of `MAX_DEPTH` layers. We check the whole product for every chain, and also
# $\delta_1$ and $\partial C/\partial w_1 = \delta_1 a_0$: the gradient that would update the first
# layer's weight. It is the weight gradients that training uses, and they carry the same product.

# %%
def hand_product(run, depth, residual):
    """dC/da_1 = prod_{k=2}^{L} da_k/da_{k-1}, from the recorded z_k (all chains at once)."""
    z = np.stack([t.numpy() for t in run["z"]])           # (depth, CHAINS)
    local = sigmoid_prime(z) * W[:depth]                  # sigma'(z_k) w_k
    factors = 1 + local if residual else local            # the residual chain adds the 1
    return np.prod(factors[1:], axis=0), factors


long_plain = run_chain(MAX_DEPTH, residual=False)
expected, plain_factors = hand_product(long_plain, MAX_DEPTH, residual=False)
grad_a1 = long_plain["a"][0].grad.numpy()
delta1 = long_plain["z"][0].grad.numpy()
grad_w1 = long_plain["w"][0].grad.numpy()
assert np.allclose(grad_a1, expected, rtol=1e-10, atol=0)
assert np.allclose(delta1, sigmoid_prime(long_plain["z"][0].numpy()) * grad_a1, rtol=1e-10, atol=0)
assert np.allclose(grad_w1, delta1 * A0, rtol=1e-10, atol=0)

sp = sigmoid_prime(np.stack([t.numpy() for t in long_plain["z"]]))
assert sp.max() <= 0.25
typical = np.exp(np.mean(np.log(np.abs(plain_factors[1:]))))
print(f"plain chain, {MAX_DEPTH} layers, {CHAINS} random chains")
print(f"  largest sigma'(z) seen          {sp.max():.4f}  (never above 1/4)")
print(f"  typical |factor| per layer      {typical:.4f}  (geometric mean of |sigma'(z_k) w_k|)")
print(f"  median |dC/da_1|                {np.median(np.abs(grad_a1)):.3e}")
print(f"  median |dC/dw_1|                {np.median(np.abs(grad_w1)):.3e}")
print(f"  largest |dC/da_1| of all chains {np.abs(grad_a1).max():.3e}")
assert typical < 1

# %% [markdown]
# The printed typical factor is below 1, so after $L$ layers the gradient is roughly that factor
# to the power $L$: the first layer barely learns anything. (In float32, minires' default, numbers
# below about $10^{-45}$ round to exactly zero.)
#
# ## 2. The residual chain
#
# Now let every layer add its input back, as the notes on the paper do:
#
# $$a_k = a_{k-1} + \sigma(w_k a_{k-1} + b_k) \quad\Longrightarrow\quad
#   \frac{\partial a_k}{\partial a_{k-1}} = 1 + \sigma'(z_k)\, w_k .$$
#
# The "1" is the identity shortcut. Each factor is now $1 + (\text{something of size at most }
# |w_k|/4)$: close to 1 instead of close to 0. The same hand check, on the same weights:

# %%
long_res = run_chain(MAX_DEPTH, residual=True)
expected_res, res_factors = hand_product(long_res, MAX_DEPTH, residual=True)
grad_a1_res = long_res["a"][0].grad.numpy()
assert np.allclose(grad_a1_res, expected_res, rtol=1e-10, atol=0)
print("first chain, layers 2..6:")
print("  sigma'(z_k) w_k     ", res_factors[1:6, 0] - 1)
print("  1 + sigma'(z_k) w_k ", res_factors[1:6, 0])
typical_res = np.exp(np.mean(np.log(np.abs(res_factors[1:]))))
print(f"residual chain, {MAX_DEPTH} layers")
print(f"  typical |factor| per layer      {typical_res:.4f}")
print(f"  median |dC/da_1|                {np.median(np.abs(grad_a1_res)):.3e}")
print(f"  smallest |dC/da_1| of all chains {np.abs(grad_a1_res).min():.3e}")
print(f"  median |dC/dw_1|                {np.median(np.abs(long_res['w'][0].grad.numpy())):.3e}")
branch_size = np.abs(res_factors[1:] - 1)  # |sigma'(z_k) w_k|, the branch's share of each factor
early, late = branch_size[:10].mean(), branch_size[-10:].mean()
acts = np.stack([t.numpy() for t in long_res["a"]])
print(f"  mean |sigma'(z_k) w_k|, first 10 layers {early:.4f}, last 10 layers {late:.4f}")
print(f"  median a_k after layer 1: {np.median(acts[0]):.2f}, after layer {MAX_DEPTH}: "
      f"{np.median(acts[-1]):.2f}")
assert late < early and np.median(acts[-1]) > np.median(acts[0]) + 1

# %% [markdown]
# One more thing the printout shows: in the residual chain each layer adds $\sigma(\cdot) \in
# (0, 1)$ to the signal, so $a_k$ grows with $k$, $|z_k|$ grows with it, the sigmoid saturates and
# $\sigma'(z_k) w_k$ becomes small in the later layers (compare the two printed means). Those
# factors approach exactly 1: the gradient passes through untouched, but those layers' own branches
# contribute less and less. The shortcut guarantees that the gradient *reaches* the early layers;
# it does not make every branch useful.

# %% [markdown]
# ## 3. Gradient at the first layer against depth
#
# Build chains of every depth from 1 to `MAX_DEPTH` (each one the first $L$ layers of the same
# random draws) and record $|\partial C / \partial a_1|$. Thin lines are single chains, thick lines
# the median over the chains.

# %%
depths = np.arange(1, MAX_DEPTH + 1)
curves = {}
for residual in (False, True):
    curves[residual] = np.stack([np.abs(run_chain(L, residual)["a"][0].grad.numpy())
                                 for L in depths])  # (depths, CHAINS)

fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
k = np.arange(2, MAX_DEPTH + 1)
left.plot(k, np.abs(plain_factors[1:, 0]), "r.-", label=r"plain: $|\sigma'(z_k) w_k|$")
left.plot(k, np.abs(res_factors[1:, 0]), "b.-", label=r"residual: $|1 + \sigma'(z_k) w_k|$")
left.axhline(1, color="k", lw=0.8)
left.set_xlabel("layer k")
left.set_ylabel(r"$|\partial a_k / \partial a_{k-1}|$")
left.set_title("one factor per layer (first chain)")
left.legend()
for residual, colour, name in ((False, "tab:red", "plain"), (True, "tab:blue", "residual")):
    right.semilogy(depths, curves[residual], color=colour, alpha=0.12, lw=0.8)
    right.semilogy(depths, np.median(curves[residual], axis=1), color=colour, lw=2.5,
                   label=f"{name} chain (median)")
right.set_xlabel("depth L of the chain")
right.set_ylabel(r"$|\partial C / \partial a_1|$")
right.set_title("gradient reaching the first layer")
right.grid(True, which="both", alpha=0.3)
right.legend()
fig.tight_layout()
path = FIGURES / "01_chain_gradient_vs_depth.png"
save_figure(fig, path)  # shown inline in a notebook, closed in a script
print("saved", path)

plain_median = np.median(curves[False], axis=1)
res_median = np.median(curves[True], axis=1)
for L in sorted({1, 5, 10, 20, MAX_DEPTH} & set(depths)):
    print(f"depth {L:3d}: median |dC/da_1|  plain {plain_median[L - 1]:.3e}   "
          f"residual {res_median[L - 1]:.3e}")

# The story told above, checked: the plain chain's gradient shrinks geometrically with depth, the
# residual chain's does not.
assert plain_median[-1] < 1e-6 * plain_median[0]
assert plain_median[-1] < plain_median[MAX_DEPTH // 2 - 1] < plain_median[0]
assert curves[True][-1].min() > 1e-2 and res_median[-1] > 0.1
assert res_median[-1] > 1e4 * plain_median[-1]

# %% [markdown]
# The thick red line falls as a straight line on the log scale (a geometric decay, the typical
# factor printed above to the power $L$), while the blue one stays near 1 for every depth: the
# "+1" keeps each factor close to 1, so the product neither vanishes nor blows up.
#
# This is the whole argument in its simplest form. A real layer is a matrix, not a number, and real
# networks use ReLU and batch normalization, so "the factor" becomes a Jacobian matrix whose size
# depends on the initialisation and on BN. Tutorial 02 looks at the "+1" inside one residual block
# of a convolutional network, and tutorial 03 measures the gradient norms layer by layer in
# CIFAR-sized plain and residual networks, with and without batch normalization.
