"""Figure 6 in the paper's style: plain nets left, ResNets right; thin dashed lines the training
error, bold lines the test error, one colour per depth, error (%) against iterations."""
import math

from ..inspect.plots import save_figure


def plot_degradation(rows, path, title="", steps_per_epoch=None):
    """Draw the curves of `rows` (curves.csv's rows) into `path` (PNG); returns the Figure.

    The x axis is the epoch, or iterations when `steps_per_epoch` is given. Drawn with pyplot and
    saved by `save_figure`, so a notebook shows it inline and a script leaves no figure open.
    """
    import matplotlib.pyplot as plt

    depths = sorted({int(r["depth"]) for r in rows})
    colours = dict(zip(depths, plt.get_cmap("viridis_r")(
        [0.15 + 0.75 * i / max(1, len(depths) - 1) for i in range(len(depths))])))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    top = 0
    for ax, residual in zip(axes, (False, True)):
        for depth in depths:
            curve = sorted((r for r in rows if bool(int(r["residual"])) == residual
                            and int(r["depth"]) == depth), key=lambda r: int(r["epoch"]))
            if not curve:
                continue
            xs = [int(r["epoch"]) * (steps_per_epoch or 1) for r in curve]
            name = f"{'ResNet' if residual else 'plain'}-{depth}"
            ax.plot(xs, [r["train_error"] for r in curve], "--", lw=1, color=colours[depth])
            ax.plot(xs, [r["test_error"] for r in curve], "-", lw=2.2, color=colours[depth],
                    label=name)
            top = max(top, max(max(r["train_error"], r["test_error"]) for r in curve))
        ax.set_title("plain networks" if not residual else "residual networks (ResNets)")
        ax.set_xlabel("iterations" if steps_per_epoch else "epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(title="dashed: training error\nbold: test error", fontsize=9, title_fontsize=8)
    axes[0].set_ylabel("error (%)")
    axes[0].set_ylim(0, min(100, 5 * math.ceil(top * 1.05 / 5)) or 100)
    fig.suptitle(f"Figure 6: training and test error of plain nets and ResNets\n{title}")
    fig.tight_layout()
    save_figure(fig, path)
    return fig
