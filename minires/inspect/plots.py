"""Figures of the recorded numbers (matplotlib, imported only when a figure is drawn).

Figures are drawn with pyplot, so a notebook shows them inline (the backend is MPLBACKEND's or
Jupyter's; nothing here forces one); they are always saved as PNG, and closed unless an inline
backend will display them.
"""
NET_COLOURS = {"plain": "tab:red", "residual": "tab:blue"}
ZIGZAG_NOTE = ("Filled dots: the input of each block (its first conv's input; in a ResNet, where "
               "the shortcut and branch gradients have just been added). Open dots: the middle of "
               "each block (its second conv's input, inside the branch). The two alternate, hence "
               "the zigzag. Dotted lines: stage boundaries (channels double, resolution halves).")


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi=100):
    """Save `fig` as a PNG at `path` and return the path. Under a notebook's inline backend the
    figure stays open, so Jupyter draws it under the cell; anywhere else it is closed (a script
    draws no window and keeps no figure in memory)."""
    plt = _pyplot()
    fig.savefig(path, dpi=dpi)
    if "inline" not in plt.get_backend():
        plt.close(fig)
    return path


def _series(rows, key):
    points = [(i, r[key]) for i, r in enumerate(rows) if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _draw_layer_gradients(ax, results, depth):
    """One panel: ||dL/d(layer input)|| per layer of plain-`depth` and ResNet-`depth`, block inputs
    filled and mid-block inputs open, stage boundaries dotted, the fc point labelled."""
    rows = None
    for net, colour in NET_COLOURS.items():
        if (net, depth) not in results:
            continue
        rec = results[(net, depth)]
        rows = rec.layers
        xs, ys = _series(rows, "input_grad_norm")
        ax.semilogy(xs, ys, "-", lw=0.8, color=colour, label=_legend_label(net, depth, rec))
        mid = [rows[i]["layer"].endswith(".conv2") for i in xs]
        ax.semilogy([x for x, m in zip(xs, mid) if not m], [y for y, m in zip(ys, mid) if not m],
                    "o", ms=3.5, color=colour)
        ax.semilogy([x for x, m in zip(xs, mid) if m], [y for y, m in zip(ys, mid) if m],
                    "o", ms=3.5, mfc="white", color=colour)
    if rows is None:
        return
    for stage in (2, 3):
        start = next((i for i, r in enumerate(rows) if r["layer"] == f"layer{stage}.0.conv1"), None)
        if start is not None:
            ax.axvline(start - 0.5, color="grey", ls=":", lw=1)
            ax.annotate(f"stage {stage}", (start - 0.5, 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8, color="grey")
    if rows[-1]["layer"] == "fc":
        for net in NET_COLOURS:
            if (net, depth) in results and results[(net, depth)].layers[-1].get("input_grad_norm"):
                last = results[(net, depth)].layers[-1]
                point = (last["index"], last["input_grad_norm"])
                ax.annotate("fc input\n(pooled features)", point,
                            xytext=(0.97, _label_height(ax, point)), textcoords="axes fraction",
                            ha="right", va="center", fontsize=7,
                            bbox=dict(boxstyle="round", fc="white", ec="none", alpha=0.85),
                            arrowprops=dict(arrowstyle="->", lw=0.6))
                break
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("layer: input side → output side (conv1 = image input, last = fc)")
    ax.set_ylabel("||dL/d(layer input)||")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")  # where it hides the fewest points


def _legend_label(net, depth, rec):
    """'plain-56: first/last block 3715x'; where the gradient left the dtype's range (its curve
    then stops short of the input), that instead: 'plain-1202: overflowed float32 from conv1 to
    layer2.75.conv1'."""
    exits = rec.range_exits()
    if exits:
        kind, layers = exits[0]
        return f"{net}-{depth}: {kind} {rec.dtype} from {layers[0]} to {layers[-1]}"
    return f"{net}-{depth}: first/last block {rec.summary():.4g}x"


def _label_height(ax, point):
    """Where (in axes fraction) a label for `point`, at the panel's right end, stays clear of the
    curves: low when the point is high (the curves climb to it from below: gradients vanishing
    toward the input), high when it is low (they come down to it)."""
    _, height = ax.transAxes.inverted().transform(ax.transData.transform(point))
    return 0.3 if height > 0.5 else 0.75


def plot_layer_gradients(results, path, title="||dL/d(layer input)|| at initialisation"):
    """Per-layer activation-gradient norms, plain vs residual, one panel per depth, log scale."""
    plt = _pyplot()
    depths = sorted({d for _, d in results})
    fig, axes = plt.subplots(1, len(depths), figsize=(5.5 * len(depths), 4.6), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        _draw_layer_gradients(ax, results, depth)
        ax.set_title(f"depth {depth}")
    fig.suptitle(title)
    fig.text(0.5, 0.01, ZIGZAG_NOTE, ha="center", va="bottom", fontsize=7.5, wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)


def plot_gradients_bn_vs_no_bn(runs, path, source="synthetic"):
    """The main job's figure: without BN (left) and with BN (right), one row per depth.

    runs: {batch_norm: compare()'s results}. Without BN (PyTorch's default init) the plain net's
    gradient vanishes toward the input; with BN (He init) it grows toward the input instead. The
    legend gives each net's first/last block ratio, so either story reads off the figure.
    """
    plt = _pyplot()
    settings = [bn for bn in (False, True) if bn in runs]
    depths = sorted({d for results in runs.values() for _, d in results})
    fig, axes = plt.subplots(len(depths), len(settings), squeeze=False,
                             figsize=(6.5 * len(settings), 3.6 * len(depths) + 0.8))
    for column, batch_norm in enumerate(settings):
        for row, depth in enumerate(depths):
            ax = axes[row][column]
            _draw_layer_gradients(ax, runs[batch_norm], depth)
            setting = "with BN, He init" if batch_norm else "without BN, PyTorch default init"
            ax.set_title(f"depth {depth}, {setting}", fontsize=10)
    fig.suptitle(f"||dL/d(layer input)|| at initialisation, one {source} batch, "
                 f"{_dtypes(runs.values())}\n"
                 "a first/last ratio below 1 vanishes toward the input, above 1 grows")
    fig.text(0.5, 0.005, ZIGZAG_NOTE, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.45 / (3.6 * len(depths) + 0.8), 1, 1))
    return save_figure(fig, path)


def _dtypes(results_dicts):
    """'float32' (or 'float32 and float64'): the dtypes the recorders in the dicts ran in."""
    return " and ".join(sorted({rec.dtype for results in results_dicts
                                for rec in results.values()} - {None}))


def plot_residual_split(results, path, title=None):
    """The "+1" per block: norms of the shortcut part, the branch part and their sum at each block's
    input (top), and the shortcut's share of the total (bottom); `title` above them all."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    nets = [(key, rec) for key, rec in results.items() if key[0] != "plain"]
    fig, axes = plt.subplots(2, len(nets), figsize=(5 * len(nets), 6), squeeze=False)
    for column, ((net, depth), rec) in enumerate(nets):
        rows = [b for b in rec.block_stats if "shortcut_grad_norm" in b]
        top, bottom = axes[0][column], axes[1][column]
        for key, label, style in (("shortcut_grad_norm", "through the shortcut", "b.-"),
                                  ("branch_grad_norm", "through the branch F", "r.-"),
                                  ("total_grad_norm", "total dL/dx", "k--")):
            top.semilogy(*_series(rows, key), style, label=label)
        top.set_title(f"{net}-{depth}: the +1 split per block")
        top.set_ylabel("gradient norm")
        top.legend(fontsize=8)
        bottom.plot(*_series(rows, "shortcut_ratio"), "b.-")
        bottom.set_ylim(0, max(1.05, max(_series(rows, "shortcut_ratio")[1], default=1) * 1.05))
        bottom.set_xlabel("block (input side → output side)")
        bottom.set_ylabel("||shortcut part|| / ||total||")
        for ax in (top, bottom):
            ax.grid(True, which="both", alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_layer_responses(results, path, key="bn_output_std",
                         title="std of each conv's BN output (Figure 7)"):
    """Per-layer response std, plain vs residual, one line per net."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for (net, depth), rec in results.items():
        ax.plot(*_series(rec.layers, key), ".-", label=f"{net}-{depth}")
    ax.set_xlabel("layer index")
    ax.set_ylabel(key)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
