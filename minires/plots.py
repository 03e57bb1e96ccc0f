"""The training run's figure: the learning curve that `minires.train` draws after every epoch.

(The other figures live beside what they draw: minires/inspect/plots.py for the gradient
recordings, minires/degradation/plots.py for Figure 6.) This module imports nothing of minires
but the atomic write, so the training code can import it without a loop.
"""
import warnings

from .checkpoint import atomic_write


def plot_learning_curve(history, path):
    """Train/test error (%) and train loss against epoch, side by side, as a PNG (atomically).

    `history`: the Trainer's rows ({epoch, train_loss, train_error, test_error, ...}).
    matplotlib (the `plot` extra) is imported here only; without it the figure is skipped with a
    warning. The figure is drawn on an Agg canvas, so no display and no pyplot state is involved.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        warnings.warn(f"matplotlib is not installed, so {path} is not drawn: "
                      "pip install 'minires[plot]'")
        return None
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    error, loss = fig.subplots(1, 2)
    error.plot(epochs, [row["train_error"] for row in history], ".-", label="train")
    error.plot(epochs, [row["test_error"] for row in history], ".-", label="test")
    error.set(xlabel="epoch", ylabel="error (%)", title="error")
    error.legend()
    loss.plot(epochs, [row["train_loss"] for row in history], ".-", label="train")
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    for ax in (error, loss):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path
