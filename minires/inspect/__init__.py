"""What minires exists to show: the "+1" of every residual add, and gradient norms layer by layer.

Everything here observes through hooks and read-only autograd observers; recording never changes a
number (a test checks the gradients are bit-identical with and without it).
"""
from ..anomaly import detect_anomaly
from .experiment import compare, one_batch, record_gradients, summary_lines, write_csv
from .flops import FlopCount, count_flops
from .jacobian import jacobian
from .plots import (plot_gradients_bn_vs_no_bn, plot_layer_gradients, plot_layer_responses,
                    plot_residual_split, save_figure)
from .recorder import Recorder, record, shortcut_kind

__all__ = ["record", "Recorder", "jacobian", "detect_anomaly", "compare", "one_batch",
           "record_gradients", "summary_lines", "write_csv", "plot_layer_gradients",
           "plot_gradients_bn_vs_no_bn", "save_figure", "plot_residual_split",
           "plot_layer_responses", "shortcut_kind", "count_flops", "FlopCount"]
