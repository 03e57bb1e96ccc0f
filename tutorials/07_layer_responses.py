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
# # 07 · Layer responses: are residual functions close to zero? (Figure 7)
#
# He et al. (2015, §3.1) motivate residual learning with a hypothesis: if the best function for a
# few layers is close to the identity, it is easier to learn a small correction $F(x)$ on top of
# $x$ than to learn the identity from scratch with a stack of nonlinear layers. Their Figure 7
# (§4.2) tests it. For every 3x3 convolution of trained CIFAR-10 nets they take the **output of the
# batch norm that follows it, before the ReLU (and before the residual add)**, and plot its
# standard deviation layer by layer, once in the network's order and once sorted by size. They
# find that
#
# 1. ResNets have generally **smaller responses** than their plain counterparts, which supports
#    the idea that residual functions are generally closer to zero than non-residual ones;
# 2. the **deeper** the ResNet, the smaller the responses: with more layers, each one modifies
#    the signal less.
#
# Here we measure the same quantity with `minires.inspect.record`, which observes every conv and
# the batch norm right after it through forward hooks, without changing a number.
#
# **Which nets.** Figure 7 is about *trained* nets, so this tutorial measures the nets of tutorial
# 04's run, read from the same place: your own finished run in `runs/degradation-laptop` (the
# README's `minires degradation --preset laptop --data cifar10 --out runs/degradation-laptop`) if
# there is one, otherwise the run shipped with the tutorials in `tutorials/data/degradation-laptop/`
# (plain and residual nets of depth 8 and 20 at half width, trained for 8 epochs on 5000 CIFAR-10
# images, with the first 32 of that run's training and of its test images; its README says how
# it was made). Set `TRAIN = True` below (or `MINIRES_TRAIN=1`) to train the nets here first, as
# tutorial 04 does; `MINIRES_PRESET` picks the preset then (`laptop-56`: depths 20 and 56; `gpu`:
# the paper's full run). `MINIRES_QUICK=1` (the tests) reads the shipped run; with `MINIRES_TRAIN=1`
# too it trains the `quick` preset's tiny nets on synthetic data instead, a smoke test.

# %%
import json
import os
import pathlib
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

import minires
from minires import backend, nn
from minires.data import DataLoader
from minires.degradation import PRESETS, is_finished, load_run_data, load_trained, run_degradation
from minires.inspect import record, save_figure
from minires.models import cifar_resnet

QUICK = os.environ.get("MINIRES_QUICK") == "1"
TRAIN = os.environ.get("MINIRES_TRAIN") == "1"  # or True here: train the nets in this tutorial
FIGURES = pathlib.Path(os.environ.get("MINIRES_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
PRESET = "laptop" if QUICK else os.environ.get("MINIRES_PRESET", "laptop")
RUN = pathlib.Path(os.environ.get("MINIRES_RUNS", "runs")) / f"degradation-{PRESET}"  # as in 04
if QUICK and TRAIN:  # the tests' smoke run of the training code
    PRESET, RUN = "quick", FIGURES / "07_run"
DEVICE = backend.default_device()
SEED = 0


def shipped_run():
    """tutorials/data/degradation-laptop, found beside this script, or from the working folder
    (Jupyter runs a notebook in its own folder; a script may run from the repository root)."""
    here = [pathlib.Path(__file__).resolve().parent] if "__file__" in globals() else []
    for folder in here + [pathlib.Path.cwd(), pathlib.Path.cwd() / "tutorials"]:
        if (folder / "data" / "degradation-laptop" / "curves.csv").is_file():
            return folder / "data" / "degradation-laptop"
    raise FileNotFoundError("tutorials/data/degradation-laptop is missing: run this tutorial "
                            "from the repository or from tutorials/")


def run_to_read():
    """The trained run, the user's own finished run, or else the shipped `laptop` one."""
    if TRAIN or (not QUICK and is_finished(RUN)):
        return RUN
    if not QUICK and (RUN / "config.json").is_file():
        print(f"{RUN} holds an unfinished run: TRAIN = True (or MINIRES_TRAIN=1) resumes it")
    if PRESET == "laptop":
        return shipped_run()
    raise SystemExit(f"no finished {PRESET} run in {RUN}: set TRAIN = True (or MINIRES_TRAIN=1), "
                     f"or run `minires degradation --preset {PRESET} --out {RUN}`")


def run_images(source):
    """(x_train, y_train, x_test, y_test) of the run: the shipped subset, or the run's own data."""
    if (source / "images.npz").is_file():
        with np.load(source / "images.npz", allow_pickle=False) as images:
            return tuple(images[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    return load_run_data(source)


start = time.perf_counter()
if TRAIN:
    run_degradation(RUN, preset=PRESET, device=DEVICE, progress=not QUICK)
    plt.close("all")  # its Figure 6 plot is tutorial 04's; none is shown here
SOURCE = run_to_read()
CONFIG = json.loads((SOURCE / "config.json").read_text())
DEPTHS, WIDTH = tuple(CONFIG["depths"]), CONFIG["width"]
x_train, y_train, x_test, y_test = run_images(SOURCE)
print(f"preset {PRESET}: {PRESETS[PRESET].about}; device {DEVICE}")
print(f"nets from {SOURCE}, {len(x_test)} test images; ready in "
      f"{time.perf_counter() - start:.1f} s")

# %% [markdown]
# ## What `record` measures, and a control at initialisation
#
# `record(model)` is a context manager: while it is open, every `Conv2d` and `Linear` gets a row in
# `rec.layers`, and when a `BatchNorm2d` runs directly on a conv's output, that row gets
# `bn_output_std`, the standard deviation (over the batch, the channels and the pixels) of the
# batch norm's output: Figure 7's quantity. A forward pass is enough; no backward is needed.
#
# First a control. At initialisation batch norm's scale $\gamma$ is 1 and its shift $\beta$ is 0,
# and in training mode it normalises each channel with the batch's own statistics, so every
# response has standard deviation 1 *by construction*, plain or residual. Whatever differences
# we find after training were learned.

# %%
def responses(model, x, train_mode=False):
    """Figure 7's numbers: std of the BN output after every 3x3 conv, in the network's order.
    Returns (layer names, stds)."""
    modules = dict(model.named_modules())
    model.train(train_mode)
    with minires.no_grad(), record(model) as rec:
        model(x)
    rows = [row for row in rec.layers if isinstance(modules[row["layer"]], nn.Conv2d)
            and modules[row["layer"]].kernel_size == (3, 3) and "bn_output_std" in row]
    return [row["layer"] for row in rows], np.array([row["bn_output_std"] for row in rows])


def net_name(residual, depth):
    return f"{'ResNet' if residual else 'plain'}-{depth}"


probe = DataLoader(x_test, y_test, 256, shuffle=False, device=DEVICE)  # the first 256 (or all 32)
x_probe, _ = next(iter(probe))
x_probe = minires.tensor(x_probe)

for residual in (False, True):
    minires.manual_seed(SEED)
    fresh = cifar_resnet(DEPTHS[0], residual=residual, width=WIDTH).to(DEVICE)
    _, stds = responses(fresh, x_probe, train_mode=True)  # a throwaway net, as initialised
    print(f"{net_name(residual, DEPTHS[0])} at init, train mode: "
          f"{len(stds)} 3x3 convs, response std min {stds.min():.4f}, max {stds.max():.4f}")
    assert len(stds) == DEPTHS[0] - 1  # every 3x3 conv: all layers but the fc
    assert np.all(np.abs(stds - 1) < 0.01)

# %% [markdown]
# ## The trained nets
#
# Tutorial 04's nets, as their checkpoints hold them: the paper's recipe (SGD with momentum 0.9,
# weight decay $10^{-4}$, learning rate 0.1 divided by 10 at 50% and 75% of the run, option-A
# shortcuts, so the plain and residual nets have the same parameters and the same initial
# weights).

# %%
models = {(residual, depth): load_trained(SOURCE, residual, depth).to(DEVICE)
          for depth in DEPTHS for residual in (False, True)}
print("loaded", ", ".join(net_name(r, d) for r, d in models))

# %% [markdown]
# ## Responses after training
#
# Now the measurement of Figure 7: each trained net in **eval mode** (batch norm uses its running
# statistics and its learned $\gamma$, $\beta$, as at test time) runs forward on the same batch of
# test images, and we read the std of every 3x3 conv's batch-norm output. In a residual net that
# output is the end of a residual branch (before the add) or the middle of one (before its ReLU):
# the size of what each layer contributes.
#
# One precaution. The running statistics are moving averages of the statistics of recent
# training batches. After a short run with small batches they do not match what the final
# weights produce on a large batch: they lag behind weights that moved until recently, and the
# variance of a batch of a few dozen images slightly underestimates the variance over the whole
# set, an error that compounds from layer to layer. Eval-mode responses then grow with depth and
# mostly measure that mismatch (compare the two columns printed below). The paper measured fully
# trained nets, at the end of a schedule whose last learning rate is 100 times smaller and with
# batches of 128, where the averages have settled. To get similar footing from a short run we
# *refresh* the statistics: one forward pass over 512 training images (the 32 shipped ones, when
# reading the shipped run) in training mode, with batch norm's momentum set to 1, so the running
# mean and variance become exactly those of the final weights on that batch; no weight changes.
# We print the responses before and after, and plot the refreshed ones.

# %%
def refresh_batch_norm_statistics(model, images):
    """Set every BN's running mean/var to the statistics of `images` under the current weights."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0  # running = (1 - momentum) * running + momentum * batch statistic
    model.train()
    with minires.no_grad():
        model(images)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


refresh_x, _ = next(iter(DataLoader(x_train, y_train, 512, shuffle=True, seed=SEED + 1,
                                    device=DEVICE)))
refresh_x = minires.tensor(refresh_x)
as_trained, measured, names = {}, {}, {}
for key, model in models.items():
    as_trained[key] = responses(model, x_probe)[1]
    refresh_batch_norm_statistics(model, refresh_x)
    names[key], measured[key] = responses(model, x_probe)

print(f"{'net':<12}{'layers':>7}{'mean as trained':>17}   refreshed: {'mean':>6}{'median':>8}"
      f"{'min':>7}{'max':>7}")
for key, stds in measured.items():
    residual, depth = key
    name = net_name(residual, depth)
    print(f"{name:<12}{len(stds):>7}{as_trained[key].mean():>17.4g}{'':>14}{stds.mean():>6.4g}"
          f"{np.median(stds):>8.4g}{stds.min():>7.4g}{stds.max():>7.4g}")
for stds in measured.values():
    assert np.all(np.isfinite(stds)) and np.all(stds > 0)

# %%
fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7))
palette = {False: ["tab:red", "tab:orange", "tab:brown"], True: ["tab:blue", "tab:green",
                                                                    "tab:purple"]}
for (residual, depth), stds in measured.items():
    label = net_name(residual, depth)
    style = dict(ls="-" if residual else "--", marker=".",
                 color=palette[residual][DEPTHS.index(depth)], label=label)
    top.plot(np.arange(1, len(stds) + 1), stds, **style)
    bottom.plot(np.arange(1, len(stds) + 1), np.sort(stds)[::-1], **style)
top.set_xlabel("layer index (original)")
bottom.set_xlabel("layer index (sorted by magnitude)")
for ax in (top, bottom):
    ax.set_ylabel("std")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are counted, not measured
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
fig.suptitle(f"Std of each 3x3 conv's BN output (before ReLU / add), eval mode, refreshed BN "
             f"statistics\n{PRESET} preset's nets, {len(x_probe)} test images"
             f"{' (quick preset: briefly trained)' if PRESET == 'quick' else ''}")
fig.tight_layout()
path = FIGURES / "07_layer_responses.png"
save_figure(fig, path)  # shown inline in a notebook, closed in a script
print("saved", path)

# %% [markdown]
# ## What this run shows
#
# The paper's two observations, checked on this run's numbers (computed verdicts, not prose
# written in advance):

# %%
for depth in DEPTHS:
    plain, res = measured[(False, depth)], measured[(True, depth)]
    smaller = res.mean() < plain.mean()
    share = float(np.mean(res < plain))
    verdict = ("SMALLER" if smaller and share > 0.5 else
               "smaller on average only (MIXED layer by layer)" if smaller else "NOT smaller")
    print(f"depth {depth}: ResNet responses are {verdict} than plain ({res.mean():.3f} vs "
          f"{plain.mean():.3f} on average); smaller in {100 * share:.0f}% of the layers")
    # the last conv of each block: in a ResNet, its BN output is F(x), what the block adds to x
    ends = np.array([n.endswith(".conv2") for n in names[(True, depth)]])
    inside = np.array([n.endswith(".conv1") for n in names[(True, depth)]])  # not the stem conv1
    print(f"depth {depth}: at the end of each block (conv2's BN, before the add/ReLU): ResNet "
          f"{res[ends].mean():.3f} vs plain {plain[ends].mean():.3f}; inside the blocks "
          f"(conv1's BN): ResNet {res[inside].mean():.3f} vs plain {plain[inside].mean():.3f}")
    gammas = {r: np.mean([float(np.abs(backend.to_numpy(m.weight.data)).mean())
                          for n, m in models[(r, depth)].named_modules() if n.endswith(".bn2")])
              for r in (False, True)}
    print(f"depth {depth}: mean |gamma| of those block-end batch norms: ResNet {gammas[True]:.3f}, "
          f"plain {gammas[False]:.3f} (1 at initialisation)")
for shallow, deep in zip(DEPTHS, DEPTHS[1:]):
    a, b = measured[(True, shallow)].mean(), measured[(True, deep)].mean()
    print(f"ResNet-{deep} vs ResNet-{shallow}: mean response {b:.3f} vs {a:.3f}, "
          f"{'smaller' if b < a else 'NOT smaller'} for the deeper net")
if PRESET == "quick":
    print("\n(the quick preset: a few dozen steps; weight decay and the learned batch-norm scales "
          "have had little time to act, so read these as a smoke test, not as Figure 7)")
if PRESET == "laptop":  # what the prose below quotes from the shipped run
    deep = DEPTHS[-1]
    ends = np.array([n.endswith(".conv2") for n in names[(True, deep)]])
    assert measured[(True, deep)].mean() < measured[(False, deep)].mean()
    assert measured[(True, deep)][ends].mean() < measured[(False, deep)][ends].mean() - 0.05
    assert measured[(True, deep)].mean() < measured[(True, DEPTHS[0])].mean()  # deeper: smaller

# %% [markdown]
# How to read it. At initialisation every response was 1 (the control above); whatever differs
# now was learned. With refreshed statistics, a batch norm's output std is set mostly by its
# learned scales $\gamma$ (and the spread of its shifts $\beta$), which the loss moves and weight
# decay pulls toward 0 unless the loss needs them. The block-end lines above separate the two
# kinds of 3x3 layer of a block: the second conv's batch norm produces $F(x)$, what the block adds
# to its input, and the first conv's sits inside the branch, before its ReLU.
#
# A plausible mechanism for the paper's observation: in a residual net, a branch whose output is
# not needed can shrink, since the shortcut keeps the signal going; in a plain net every layer
# *is* the signal path and has to keep it alive. That is the paper's reading: "residual
# functions might be generally closer to zero than the non-residual functions".
#
# **Measured** on the shipped `laptop` nets (trained 2026-12-07, seed 0; 320 steps on 5000
# CIFAR-10 images, half width; tutorial 04). Read from the shipped folder, the probe is its 32
# test images and the refresh its 32 training images: at depth 20 the ResNet's responses are
# smaller than the plain net's in 84% of the 3x3 layers (mean 1.008 against 1.067), and the
# difference sits where the paper's reading puts it, at the end of each residual branch: the conv2
# batch norms that produce $F(x)$ give 0.944 in ResNet-20 against 1.057 in plain-20, and their
# learned scales $|\gamma|$ average 0.894 against 0.991. In the figure that is ResNet-20's zigzag:
# the block-end layers dip while the plain net's do not. Inside the branches (conv1) the two are
# close (1.056 and 1.071). The deeper ResNet also has the smaller responses (1.008 against
# ResNet-8's 1.077), the paper's second observation. At depth 8 the first observation does not
# show clearly: ResNet-8's mean is lower (1.077 against 1.098) but it is smaller in only 43% of
# the layers, and larger inside the branches, which is why the verdict above says MIXED.
#
# All of these sit a few percent above 1, plain and residual alike: a refresh on only 32 images
# has the small-batch bias described above. The same nets read from a full run folder (your own
# `runs/degradation-laptop`, where the probe is 256 test images and the refresh 512 training
# images) gave, on the same date: mean 0.962 against 1.013 at depth 20 (smaller in 79% of the
# layers), block ends 0.908 against 1.011, inside the branches 1.003 against 1.011, and ResNet-8
# 1.003. The verdicts are the same either way; they also held on the four other disjoint sets of
# 32 test and 32 training images that we tried, and on five sets of 48. The effect is small,
# about 5% on average and 10% at the block ends, after a short run from responses that all
# started at exactly 1; the paper's nets, trained 200 times longer, show it larger. One seed: the
# size is not a measured range.
#
# On the `laptop-56` nets (an earlier run, 2026-12-01, with 256 probe and 512 refresh images; same
# run length, depths 20 and 56) the first observation holds and the
# second does not: ResNet-56's responses are smaller than plain-56's in every layer (mean 0.987
# against 3.421), but plain-56 never got going (it ended near chance, tutorial 04) and its
# responses grew up to 30, so that comparison says more about a failed net than about residual
# functions; and ResNet-56's responses are *not* smaller than ResNet-20's (0.987 against 0.961)
# after 320 steps.
#
# The `quick` preset (`MINIRES_QUICK=1` with `MINIRES_TRAIN=1`: a few dozen steps on synthetic
# data) is a smoke test: its scales have had little time to move away from 1 (the |gamma| line
# says how far they got), and its verdicts are small effects either way. The paper's Figure 7 is
# measured after the full CIFAR-10 schedule (64k iterations); train the `gpu` preset (tutorial 04)
# and run
#
#     MINIRES_PRESET=gpu MINIRES_DEVICE=cuda python tutorials/07_layer_responses.py
#
# on a GPU to measure it on the same footing.
