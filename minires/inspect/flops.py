"""How much a network computes: parameters and multiply-accumulates (MACs), layer by layer.

    report = count_flops(cifar_resnet(20))          # one forward on a (1, 3, 32, 32) zero image
    print(report)                                   # a table: layer, type, params, MACs, output
    report.macs, report.params, report.rows         # totals, and one dict per layer

How it counts. One forward runs on zeros, in eval mode and under `no_grad`, with a forward hook on
every layer that owns parameters. The hooks read each layer's output shape and its weight shape:

    Conv2d  MACs = OH * OW * OC * (C_in * kh * kw)      one multiply-add per weight per output pixel
                 + OH * OW * OC if the conv has a bias  (one add per output value)
    Linear  MACs = in_features * out_features  (+ out_features with a bias)

per image: the batch dimension of `input_shape` is divided out. Batch norm, ReLU, the residual add,
the option-A zero padding and the pools count 0 MACs (batch norm is listed, for its parameters;
the others own none and get no row), the convention behind the paper's and torchvision's figures:
they cost one or two operations per activation, against C_in * 9 multiply-adds per output of a
3x3 conv, so a percent or two of a ResNet's work. The model's mode (train/eval) is put back
afterwards, and nothing in it changes (eval-mode batch norm does not touch its running
statistics).

MACs or FLOPs? A multiply-accumulate is two floating-point operations, so FLOPs ~ 2 x MACs. The
ResNet paper (He et al. 2015, Table 1) counts multiply-adds and calls them "FLOPs": ResNet-18
1.8 x 10^9, ResNet-34 3.6, ResNet-50 3.8, ResNet-101 7.6, ResNet-152 11.3 x 10^9 at 224 x 224.
torchvision's model table uses the same convention (1.81 and 4.09 "GFLOPS" for ResNet-18 and -50;
its ResNet-50 is "v1.5", stride on the 3x3 conv, hence 4.09 rather than the paper's 3.8). So
`report.macs` is what the paper calls FLOPs; `report.flops` (= 2 x MACs) is what a hardware FLOP/s
figure counts.
"""
import numpy as np

from ..autograd import no_grad, tensor
from ..nn import Conv2d, Linear


class FlopCount:
    """The result of `count_flops`: `rows` (one dict per layer) and the totals."""

    COLUMNS = ("layer", "type", "params", "macs", "output_shape")

    def __init__(self, rows, input_shape):
        self.rows = rows
        self.input_shape = tuple(input_shape)

    @property
    def macs(self):
        """Multiply-accumulates per image (the paper's "FLOPs")."""
        return sum(row["macs"] for row in self.rows)

    @property
    def flops(self):
        """Floating-point operations per image, 2 x MACs (a multiply and an add each)."""
        return 2 * self.macs

    @property
    def params(self):
        """Parameters of the listed layers; equals model.num_parameters(trainable_only=False)."""
        return sum(row["params"] for row in self.rows)

    def by_type(self):
        """{layer type: (params, MACs)} summed over the rows."""
        totals = {}
        for row in self.rows:
            params, macs = totals.get(row["type"], (0, 0))
            totals[row["type"]] = (params + row["params"], macs + row["macs"])
        return totals

    def format(self, max_rows=None):
        """The table as text; `max_rows` keeps the first and last rows of a long one."""
        rows = self.rows
        if max_rows is not None and len(rows) > max_rows:
            head = max_rows // 2
            rows = rows[:head] + [None] + rows[len(rows) - (max_rows - head):]
        width = max([len("layer")] + [len(r["layer"]) for r in self.rows])
        lines = [f"{'layer':<{width}}  {'type':<11} {'params':>10} {'MACs':>14}  output"]
        for row in rows:
            if row is None:
                lines.append("...")
                continue
            shape = "-" if row["output_shape"] is None else str(row["output_shape"])
            lines.append(f"{row['layer']:<{width}}  {row['type']:<11} {row['params']:>10,} "
                         f"{row['macs']:>14,}  {shape}")
        lines.append(f"{'total':<{width}}  {'':<11} {self.params:>10,} {self.macs:>14,}  "
                     f"({self.macs / 1e6:.2f} M MACs = {self.flops / 1e6:.2f} M FLOPs per image "
                     f"{self.input_shape[1:]})")
        return "\n".join(lines)

    def __str__(self):
        return self.format()

    def __repr__(self):
        return (f"FlopCount(params={self.params:,}, macs={self.macs:,}, "
                f"input_shape={self.input_shape})")


def _layer_macs(module, output_shape, batch):
    """MACs per image of one Conv2d or Linear call, from its weight and output shapes."""
    weight = module.weight.shape
    outputs = int(np.prod(output_shape)) // batch          # output values per image
    if isinstance(module, Conv2d):
        per_output = int(np.prod(weight[1:]))              # C_in * kh * kw, weight (OC, C, kh, kw)
    elif isinstance(module, Linear):
        per_output = int(weight[1])                        # in_features     (weight (out, in))
    else:
        return 0
    bias = outputs if getattr(module, "bias", None) is not None else 0
    return outputs * per_output + bias


def _float_dtype(model):
    """The dtype of the model's parameters (float32, or float64 after .astype), for the input."""
    first = next(model.parameters(), None)
    return np.float32 if first is None else first.data.dtype


def count_flops(model, input_shape=(1, 3, 32, 32)):
    """Parameters and MACs of every layer of `model` for one forward of an `input_shape` input.

    Returns a FlopCount: `.rows` is a list of dicts (layer, type, params, macs, output_shape), one
    per module that owns parameters directly (Conv2d, Linear, BatchNorm2d...), in the order the
    modules are registered; `.macs`, `.flops` (2 x MACs) and `.params` are the totals. MACs are per
    image. A layer the forward never reached keeps macs 0 and output_shape None.
    """
    if len(input_shape) < 2:
        raise ValueError(f"count_flops: input_shape must include the batch, e.g. (1, 3, 32, 32); "
                         f"got {tuple(input_shape)}")
    rows, handles = _watch_layers(model, batch=int(input_shape[0]))
    try:
        _forward_zeros(model, input_shape)
    finally:
        for handle in handles:
            handle.remove()
    return FlopCount(rows, input_shape)


def _watch_layers(model, batch):
    """One row per module owning parameters, and forward hooks that fill in its output and MACs."""
    rows, handles = [], []
    for path, module in model.named_modules():
        if not module._parameters:
            continue
        row = {"layer": path or type(model).__name__, "type": type(module).__name__,
               "params": sum(int(p.size) for p in module._parameters.values() if p is not None),
               "macs": 0, "output_shape": None}
        rows.append(row)

        def on_forward(mod, _inputs, output, row=row):
            row["output_shape"] = tuple(output.shape)
            row["macs"] += _layer_macs(mod, output.shape, batch)
        handles.append(module.register_forward_hook(on_forward))
    return rows, handles


def _forward_zeros(model, input_shape):
    """One eval-mode, no-grad forward of zeros; every module's train/eval mode is put back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        x = tensor(np.zeros(input_shape, dtype=_float_dtype(model)), device=model.device)
        with no_grad():
            model(x)
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)
