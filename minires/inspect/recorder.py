"""Record, without changing a number, what the gradient does inside a network.

`record(model)` is a context manager. While it is open, one forward and backward are observed
through module hooks, tensor hooks and autograd's read-only observers:

- per layer (every Conv2d and Linear): the norm of dL/d(input activation), which is what vanishes
  or explodes; the norm of dL/dW; the mean and std of the layer's output and of the batch norm that
  follows it (Figure 7 of He et al. 2015: std of each conv's BN output, before the ReLU);
- per block: the norm of dL/d(block input), for plain and residual blocks alike;
- per residual add, the "+1" split. With g = dL/dy arriving at y = shortcut(x) + F(x):
      dL/dx = shortcut part + branch part,  shortcut part = g for an identity shortcut,
      Ws^T g (through its BN) for a projection, the un-padded, un-strided g for option A;
      branch part = (dF/dx)^T g.
  The split is taken where the two paths part (the shortcut's input: x itself, or relu(bn1(x)) in
  a pre-activation block with a projection).

It reads autograd only through its public observer contract (minires.autograd: the op, its input
tensors, its output and gradients) and tells ops apart by class: the ResidualAdd of each block, and
the ops that ran inside the block's shortcut module (seen between that module's forward hooks).
"""
import math
import warnings

import numpy as np

from .. import autograd, backend
from ..nn import BasicBlock, BatchNorm2d, Conv2d, Identity, Linear, PadChannels, PreActBlock
from ..ops.residual import ResidualAdd

BLOCK_TYPES = (BasicBlock, PreActBlock)


def _norm(array):
    return float(backend.xp(array).linalg.norm(array.ravel().astype("float64")))


def _cosine(a, b):
    xp = backend.xp(a)
    a, b = a.ravel().astype("float64"), b.ravel().astype("float64")
    denominator = float(xp.linalg.norm(a) * xp.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else float("nan")


def shortcut_kind(block):
    """'identity', 'A' (zero-pad), 'projection', or 'none' for a plain block."""
    if not getattr(block, "residual", False):
        return "none"
    if isinstance(block.downsample, Identity):
        return "identity"
    return "A" if isinstance(block.downsample, PadChannels) else "projection"


class _BlockRecord:
    """What one block saw in one forward/backward."""

    def __init__(self, path, block):
        self.path, self.block = path, block
        self.input = None        # the block's input tensor x
        self.split_point = None  # the tensor both paths read (x, or relu(bn1(x)) for pre-act+proj)
        self.add = None          # the ResidualAdd Function of this block
        self.stats = {"block": path, "kind": type(block).__name__,
                      "shortcut": shortcut_kind(block)}
        self.parts = {"shortcut": [], "branch": []}
        self.arrays = {}


class Recorder:
    """Collects per-layer and per-block gradient statistics; use via `record(model)`."""

    def __init__(self, model, keep_arrays=False):
        self.model, self.keep_arrays = model, keep_arrays
        self.dtype = None  # the recorded pass's dtype (its first conv's output), as a string
        self.layers, self.blocks, self.block_stats = [], [], []
        self._gradients_expected = self._gradients_seen = 0  # hooks put on tensors, hooks fired
        self._layer_rows, self._handles, self._removers = {}, [], []
        self._last_conv = None
        self._running_block = None     # the block whose forward is running, if any
        self._running_shortcut = None  # the block whose shortcut module is running, if any
        self._by_add, self._by_split_point = {}, {}
        self._shortcut_ops = set()     # every Function that ran inside a shortcut module

    # --- setup -----------------------------------------------------------------------------------
    def __enter__(self):
        for path, module in self.model.named_modules():
            if isinstance(module, (Conv2d, Linear)):
                self._watch_layer(path, module)
            elif isinstance(module, BatchNorm2d):
                self._handles.append(module.register_forward_hook(self._on_batch_norm))
            elif isinstance(module, BLOCK_TYPES):
                self._watch_block(path, module)
        self._removers.append(autograd.add_forward_observer(self._on_forward))
        self._removers.append(autograd.add_backward_observer(self._on_backward))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:  # module hooks, and the hooks put on this pass's tensors
            handle.remove()
        for remove in self._removers:
            remove()
        self._handles.clear()   # (they hold bound methods of self: a cycle)
        self._removers.clear()
        if self._gradients_expected and not self._gradients_seen and exc[0] is None:
            warnings.warn("record: no gradient reached the model inside the `with` block, so only "
                          "forward statistics were recorded; call loss.backward() inside it",
                          RuntimeWarning, stacklevel=2)
        self._finish()
        self._let_go_of_the_graph()
        return False

    def _hook_gradient(self, tensor, on_gradient):
        """Call on_gradient(dL/d tensor) when the backward reaches `tensor`; counted, so that the
        end of the `with` can tell a backward that never came."""
        def hook(grad):
            self._gradients_seen += 1
            on_gradient(grad)
        self._gradients_expected += autograd.is_grad_enabled()  # under no_grad, none will come
        self._handles.append(tensor.register_hook(hook))

    def _watch_layer(self, path, module):
        row = {"layer": path, "type": type(module).__name__, "index": len(self._layer_rows)}
        self._layer_rows[path] = (row, module)

        def on_forward(_module, inputs, output):
            x = inputs[0]
            self.dtype = self.dtype or str(output.data.dtype)
            row["output_mean"] = float(output.data.mean(dtype="float64"))
            row["output_std"] = float(output.data.std(dtype="float64"))
            self._last_conv = (output, row)
            if x.requires_grad:
                self._hook_gradient(
                    x, lambda g: row.__setitem__("input_grad_norm", _norm(g.data)))
        self._handles.append(module.register_forward_hook(on_forward))

    def _on_batch_norm(self, _module, inputs, output):
        """Figure 7's quantity: the BN output right after a conv, before any ReLU."""
        if self._last_conv is not None and inputs[0] is self._last_conv[0]:
            row = self._last_conv[1]
            row["bn_output_mean"] = float(output.data.mean(dtype="float64"))
            row["bn_output_std"] = float(output.data.std(dtype="float64"))

    def _watch_block(self, path, block):
        record = _BlockRecord(path, block)
        self.blocks.append(record)

        def on_block_input(_module, inputs):
            self._running_block, self._running_shortcut = record, None
            record.input = inputs[0]
            if inputs[0].requires_grad:
                self._hook_gradient(inputs[0], lambda g: self._on_block_input_grad(record, g))

        def on_block_output(_module, _inputs, output):
            self._running_block = None
            if self.keep_arrays:
                record.arrays["output"] = output.data
            if output.requires_grad:
                self._hook_gradient(output, lambda g: self._on_block_output_grad(record, g))

        self._handles.append(block.register_forward_pre_hook(on_block_input))
        self._handles.append(block.register_forward_hook(on_block_output))
        if record.stats["shortcut"] != "none":
            def on_shortcut_input(_module, inputs):
                self._running_shortcut = record
                record.split_point = inputs[0]
                record.stats["split_at"] = "input" if inputs[0] is record.input else "pre-activation"
                self._by_split_point[id(inputs[0])] = record

            def on_shortcut_output(*_):
                self._running_shortcut = None
            self._handles.append(block.downsample.register_forward_pre_hook(on_shortcut_input))
            self._handles.append(block.downsample.register_forward_hook(on_shortcut_output))

    # --- observers -------------------------------------------------------------------------------
    def _on_forward(self, fn, _inputs, _output):
        if self._running_shortcut is not None:
            self._shortcut_ops.add(fn)
        elif self._running_block is not None and isinstance(fn, ResidualAdd):
            self._running_block.add = fn
            self._by_add[fn] = self._running_block

    def _on_block_input_grad(self, record, grad):
        record.stats["input_grad_norm"] = _norm(grad.data)
        if self.keep_arrays:
            record.arrays["input_grad"] = grad.data

    def _on_block_output_grad(self, record, grad):
        record.stats["output_grad_norm"] = _norm(grad.data)
        if self.keep_arrays:
            record.arrays["output_grad"] = grad.data

    def _on_backward(self, fn, inputs, grad_output, grad_inputs):
        record = self._by_add.get(fn)
        if record is not None:
            record.arrays["add_grad"] = grad_output
        for i, x in enumerate(inputs):
            record = self._by_split_point.get(id(x))
            if record is not None and x is record.split_point and grad_inputs[i] is not None:
                self._classify(record, fn, i, grad_inputs[i])

    def _classify(self, record, fn, index, grad):
        """A gradient reaching the split point came through the shortcut or through the branch."""
        on_shortcut = (fn is record.add and index == 0) or fn in self._shortcut_ops
        record.parts["shortcut" if on_shortcut else "branch"].append(grad)

    # --- results ---------------------------------------------------------------------------------
    def _finish(self):
        for path, (row, module) in self._layer_rows.items():
            if module.weight.grad is not None:
                row["weight_grad_norm"] = _norm(module.weight.grad.data)
            self.layers.append(row)
        self.layers.sort(key=lambda r: r["index"])
        for record in self.blocks:
            if record.add is not None and "add_grad" in record.arrays:
                self._split_stats(record)
        self.block_stats = [r.stats for r in self.blocks]

    def _let_go_of_the_graph(self):
        """Keep the numbers, drop every tensor and Function of the recorded pass. They held the
        whole graph with its saved arrays: held by a Recorder, that memory outlived the pass, and
        through the hooks' references back to the Recorder it waited for the garbage collector."""
        self._last_conv = None
        self._by_add.clear()
        self._by_split_point.clear()
        self._shortcut_ops.clear()
        for record in self.blocks:
            record.input = record.split_point = record.add = None
            record.parts = {"shortcut": [], "branch": []}
            if not self.keep_arrays:
                record.arrays.clear()  # add_grad, kept only to compute the split

    def _split_stats(self, record):
        g = record.arrays["add_grad"]
        shortcut = _sum(record.parts["shortcut"])
        branch = _sum(record.parts["branch"])
        total = shortcut + branch
        stats = record.stats
        stats["add_grad_norm"] = _norm(g)
        stats["shortcut_grad_norm"] = _norm(shortcut)
        stats["branch_grad_norm"] = _norm(branch)
        stats["total_grad_norm"] = _norm(total)
        stats["shortcut_ratio"] = stats["shortcut_grad_norm"] / max(stats["total_grad_norm"], 1e-300)
        stats["cosine"] = _cosine(shortcut, branch)
        stats["shortcut_is_g"] = bool(shortcut.shape == g.shape and
                                      backend.xp(g).array_equal(shortcut, g))
        if self.keep_arrays:
            record.arrays.update(shortcut=shortcut, branch=branch, total=total)

    def arrays(self, block_path):
        """The kept arrays (keep_arrays=True) of one block: add_grad (g), shortcut, branch, total,
        input_grad, output (the block's output value) and output_grad."""
        for record in self.blocks:
            if record.path == block_path:
                if not self.keep_arrays:
                    raise KeyError("record: arrays are kept only with record(model, "
                                   "keep_arrays=True)")
                return record.arrays
        paths = ", ".join(record.path for record in self.blocks) or "none"
        raise KeyError(f"record: no residual block at {block_path!r}; the blocks are: {paths}")

    def out_of_range_layers(self):
        """{"overflowed": layers, "underflowed": layers}, each input side first: the layers whose
        input gradient left the dtype's range. Overflowed: NaN or Inf (past 3.4e38 in float32, as a
        plain net's gradient with BN at depth 1202). Underflowed: a norm under the dtype's smallest
        normal number (1.2e-38 in float32), so every value is 0 or subnormal, its digits lost (a
        plain net's without BN at depth 110)."""
        norms = [(row["layer"], row["input_grad_norm"]) for row in self.layers
                 if row.get("input_grad_norm") is not None]
        tiny = float(np.finfo(self.dtype).tiny) if self.dtype else 0.0
        return {"overflowed": [layer for layer, norm in norms if not math.isfinite(norm)],
                "underflowed": [layer for layer, norm in norms if norm < tiny]}

    def range_exits(self):
        """[(kind, layers)] for each way ("overflowed", "underflowed") the gradient left the
        dtype's range somewhere: out_of_range_layers() without the empty kinds."""
        return [(kind, layers) for kind, layers in self.out_of_range_layers().items() if layers]

    def summary(self):
        """Ratio of dL/dx norms at the first block's input and the last block's input."""
        norms = [b.get("input_grad_norm") for b in self.block_stats]
        if len(norms) < 2 or None in (norms[0], norms[-1]):
            return float("nan")
        return norms[0] / norms[-1]


def _sum(parts):
    if not parts:
        raise RuntimeError("record: no gradient reached a residual block's split point")
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def record(model, keep_arrays=False):
    """Context manager: `with record(model) as rec: loss.backward()`; then rec.layers,
    rec.block_stats, rec.summary(). keep_arrays keeps each block's gradient arrays for checks.
    The backward belongs inside the `with`: at its end the hooks come off and the Recorder lets go
    of the pass's tensors, so holding many Recorders (one per depth) holds numbers, not graphs."""
    return Recorder(model, keep_arrays)
