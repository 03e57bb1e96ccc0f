"""Figures of the recorded numbers (matplotlib, imported only when a figure is drawn)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows, key):
    points = [(i, r[key]) for i, r in enumerate(rows) if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_layer_gradients(results, path, title="||dL/d(layer input)|| at initialisation"):
    """Per-layer activation-gradient norms, plain vs residual, one panel per depth, log scale."""
    plt = _pyplot()
    depths = sorted({d for _, d in results})
    fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 4), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for net, colour in (("plain", "tab:red"), ("residual", "tab:blue")):
            if (net, depth) in results:
                xs, ys = _series(results[(net, depth)].layers, "input_grad_norm")
                ax.semilogy(xs, ys, ".-", color=colour, label=f"{net}-{depth}")
        ax.set_xlabel("layer (input side → output side)")
        ax.set_ylabel("gradient norm")
        ax.set_title(f"depth {depth}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_residual_split(results, path):
    """The "+1" per block: norms of the shortcut part, the branch part and their sum at each block's
    input (top), and the shortcut's share of the total (bottom)."""
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
