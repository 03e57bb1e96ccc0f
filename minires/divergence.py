"""The Trainer's divergence guard, kept on the device: no host sync inside a training step.

Each step, between backward and the update, the guard computes one flag per thing that must be
finite (the loss, every gradient, every float buffer) and, after the update, one per parameter.
If any is not, or an earlier step since the last read was not, the step's update is undone on the
device (`where(ok, new, old)` on every parameter and optimizer state array), so the parameters
stay as they were before the first bad step, whatever later steps compute. The first bad step's
number, loss and flags are kept on the device too. `read()` brings all of it to the host in one
transfer; the Trainer calls it every `sync_every` steps, at the end of an epoch and before any
checkpoint, so a run that went bad stops there, naming the first bad step, and nothing non-finite
is ever saved.

On NumPy the same code runs on 0-d arrays; on a GPU nothing here waits for the device.
"""
from . import backend


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss, gradient, parameter or buffer."""


class DivergenceGuard:
    """Flags on the device for `model`'s steps under `optimizer`; see the module docstring."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        named = list(model.named_parameters())
        self.parameter_names = [name for name, _ in named]
        self.parameters = [p for _, p in named]
        self.buffer_names = [name for name, b in model.named_buffers() if b.dtype.kind == "f"]
        self._healthy = None   # device bool: no bad step since the last read
        self._count = None     # device float: steps since the last read
        self._first_bad = None  # device float vector: (step since read, loss, flags) of the first
        self._saved = None

    def before_update(self, loss):
        """Flags of the loss, the gradients and the buffers; keeps the parameters and the
        optimizer state so that `after_update` can undo the update."""
        xp = backend.xp(loss)
        finite = xp.isfinite(loss)
        no_grad = finite | True  # a True on the device: a parameter without a gradient is fine
        buffers = dict(self.model.named_buffers())
        self._flags = ([finite]
                       + [no_grad if p.grad is None else xp.isfinite(p.grad.data).all()
                          for p in self.parameters]
                       + [xp.isfinite(buffers[name]).all() for name in self.buffer_names])
        self._loss = loss
        self._saved = [(a, a.copy()) for a in _buffers_holding(self._updated_arrays())]

    def after_update(self):
        """Undo the update unless every flag, the parameters' after it included, is good."""
        xp = backend.xp(self._loss)
        flags = xp.stack(self._flags + [xp.isfinite(p.data).all() for p in self.parameters])
        if self._healthy is None:
            self._reset(xp, len(flags))
        self._count = self._count + 1
        ok = flags.all()
        first = self._healthy & ~ok
        record = xp.concatenate([xp.stack([self._count, self._loss.astype(self._count.dtype)]),
                                 flags.astype(self._count.dtype)])
        self._first_bad = xp.where(first, record, self._first_bad)
        self._healthy = self._healthy & ok
        undo = ~self._healthy
        for array, old in self._saved:
            xp.copyto(array, old, where=undo)
        self._saved = self._flags = self._loss = None

    def _updated_arrays(self):
        """Every array an optimizer step may change: the parameters and the state arrays."""
        arrays = [p.data for p in self.parameters]
        for state in self.optimizer.state.values():
            arrays.extend(v for v in state.values() if backend.is_array(v))
        return arrays

    def _reset(self, xp, n_flags):
        self._healthy = xp.asarray(True)
        self._count = xp.asarray(0.0)
        self._first_bad = xp.zeros(2 + n_flags)

    def read(self):
        """None if every step since the last read was good; else, for the first bad one,
        (its index among those steps, from 0; its loss; the first non-finite thing after the
        loss as (kind, name), kind "gradient", "buffer" or "update", or None). Resets the flags."""
        if self._healthy is None:
            return None
        xp = backend.xp(self._first_bad)
        healthy = self._healthy.astype(self._first_bad.dtype)[None]
        values = backend.to_numpy(xp.concatenate([healthy, self._first_bad]))
        self._healthy = None
        if values[0]:
            return None
        index, loss, flags = int(values[1]) - 1, float(values[2]), values[4:]
        things = ([("gradient", n) for n in self.parameter_names]
                  + [("buffer", n) for n in self.buffer_names]
                  + [("update", n) for n in self.parameter_names])
        bad = [thing for thing, flag in zip(things, flags) if not flag]
        return index, loss, bad[0] if bad else None


def _buffers_holding(arrays):
    """The arrays to copy so that all of `arrays` can be put back: a group of views that fills
    one buffer (a fused optimizer's flat parameters, or its flat momentum) is that buffer, one
    copy instead of one per parameter; every other array is itself."""
    groups = {}
    for array in arrays:
        base = array.base if backend.is_array(array.base) else None
        owner = array if base is None else base
        groups.setdefault(id(owner), (owner, []))[1].append(array)
    chosen = []
    for owner, members in groups.values():
        fills_it = sum(m.nbytes for m in members) >= owner.nbytes
        chosen.extend([owner] if fills_it else members)
    return chosen
