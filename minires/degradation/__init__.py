"""Figure 6 of He et al. (2015) as an experiment: plain and residual CIFAR nets of several depths,
trained with the paper's recipe, their training and test error per epoch side by side.

    from minires.degradation import run_degradation, read_curves, verdicts
    rows = run_degradation("runs/degradation-laptop", preset="laptop", data="cifar10")

`minires degradation` (minires/commands/degradation.py) is the same thing as a command.
"""
from .experiment import (CURVE_COLUMNS, PRESETS, Preset, final_errors, is_finished, load_run_data,
                         load_trained, net_name,
                         read_curves, run_degradation, verdicts, write_figure)
from .plots import plot_degradation

__all__ = ["CURVE_COLUMNS", "PRESETS", "Preset", "final_errors", "is_finished", "load_run_data",
           "load_trained",
           "net_name",
           "plot_degradation", "read_curves", "run_degradation", "verdicts", "write_figure"]
