"""Fused optimizer steps: the parameters of a group as views of one flat buffer.

Unfused, a step runs a few array operations per parameter: on a GPU each is one kernel launch
(about 10 us from Python), so a ResNet-20's 59 parameter tensors cost some 250 launches per step.
Fused, the parameters of a group that share a device and a dtype live in ONE flat buffer (each
`p.data` becomes a view of it), their gradients in a second, persistent one, and the
optimizer's own `_update` runs once, on the flat arrays: the same operations, element for element,
so the result is the unfused one bit for bit, in about ten launches.

Gradients without a gather. Each parameter has a slot in the flat gradient buffer. An op that
computes a parameter's gradient itself (the GPU conv2d and batch_norm of minires/fast/gpu.py)
claims the slot at its forward (`claim_grad_slot`) and, at its backward, writes the gradient
straight into it (`grad_slot_view`) when the parameter has no gradient yet; `.grad` is then that
view, and the step finds it in place. Other gradients are copied into their slots, one copy each:
no concatenate, whose pointer tables CuPy copies host-to-device at every call. A slot is used once
per claim, so a weight shared by two ops, or gradients accumulated over two backward passes, come
out right (the second gradient is a fresh array, summed by the engine as usual). The gradient
buffer is reused every step: a `.grad` kept from an earlier step changes with it.

The flat state (momentum buffers, Adam's moments) is handed out per parameter as views, so
`optimizer.state`, `state_dict` and `load_state_dict` look exactly as unfused. A step falls back
to the per-parameter update, which is always correct, for a bucket where some parameter has no
gradient or the parameters' states differ (Adam's step counts after a skipped parameter); the
flat state is rebuilt from the per-parameter one once they agree again. A parameter whose `.data`
was replaced (`model.load_state_dict`, `.to()`) is noticed at the next step, and the buffer is
built again around the new arrays.
"""
import weakref

from .. import backend
from ..autograd import increment_version

# id(a parameter's .data view) -> its GradSlot; the buckets hold the slots, so a bucket that is
# rebuilt or dropped with its optimizer takes its entries with it
_slots = weakref.WeakValueDictionary()


class FlatBucket:
    """Parameters of one device and dtype, each `p.data` rebound to a view of `self.data`."""

    def __init__(self, params):
        self.params = list(params)
        self.shapes = [p.data.shape for p in self.params]
        self.slices, start = [], 0
        for p in self.params:
            self.slices.append(slice(start, start + p.data.size))
            start += p.data.size
        self.data = self.gather([p.data for p in self.params])   # (total,)
        for p, view in zip(self.params, self.views(self.data)):
            p.data = view
        self.data_views = [p.data for p in self.params]
        self.state, self.handed_out = None, None  # flat state, and the per-parameter dicts given
        self.grad = backend.xp(self.data).zeros_like(self.data)  # the persistent gradient buffer
        self.grad_views = self.views(self.grad)
        self.slots = [GradSlot(p, data, view)
                      for p, data, view in zip(self.params, self.data_views, self.grad_views)]
        for slot in self.slots:
            _slots[id(slot.data)] = slot

    def gather(self, arrays):
        """One flat array of `arrays` (shaped like the parameters): for the parameters' own
        gradients the persistent buffer, with those not already in their slots copied in;
        otherwise (optimizer state) one concatenate."""
        if all(p.grad is not None and a is p.grad.data for p, a in zip(self.params, arrays)):
            for a, view in zip(arrays, self.grad_views):
                if a is not view:
                    view[...] = a
            return self.grad
        return backend.xp(arrays[0]).concatenate([a.ravel() for a in arrays])

    def views(self, flat):
        """Per-parameter views of a flat array."""
        return [flat[s].reshape(shape) for s, shape in zip(self.slices, self.shapes)]

    def is_current(self):
        """True while every parameter still holds the bucket's view as its `.data`."""
        return all(p.data is v for p, v in zip(self.params, self.data_views))

    def as_parameter(self):
        """The flat buffer as the `p` an optimizer's `_update(p, grad, group, state)` takes."""
        return FlatParameter(self)


class FlatParameter:
    """A bucket's flat buffer as one parameter. `_update` writes it in place (`p.data -= ...`),
    which counts an in-place change of every parameter in the bucket, as the update of each
    would: a graph that saved a parameter before the step then raises at its backward."""

    def __init__(self, bucket):
        self.bucket = bucket

    @property
    def data(self):
        return self.bucket.data

    @data.setter
    def data(self, array):
        if array is not self.bucket.data:
            raise ValueError("a fused update must change the flat buffer in place")
        for p in self.bucket.params:
            increment_version(p)


class GradSlot:
    """A parameter's place in its bucket's gradient buffer, lent to one op at a time."""

    def __init__(self, param, data, view):
        self.param, self.data, self.view = param, data, view
        self.owner = None  # weakref to the op that claimed it

    def is_free(self):
        return self.owner is None or self.owner() is None


def claim_grad_slot(array, op):
    """At `op`'s forward: the gradient slot of the parameter whose `.data` is `array`, claimed
    for `op`; None when `array` is no fused parameter's data or another live op holds the slot."""
    slot = _slots.get(id(array))
    if slot is None or slot.data is not array or slot.param.data is not array or not slot.is_free():
        return None
    slot.owner = weakref.ref(op)
    return slot


def grad_slot_view(slot, op):
    """At `op`'s backward: the view to write the parameter's gradient into, or None (no slot,
    or the parameter already has a gradient that this one will be added to). Frees the slot."""
    if slot is None or slot.is_free() or slot.owner() is not op:
        return None
    slot.owner = None
    return slot.view if slot.param.grad is None and slot.param.data is slot.data else None


def buckets_of(params):
    """FlatBuckets of `params`, one per (device, dtype) in order of first appearance."""
    groups = {}
    for p in params:
        groups.setdefault((backend.device_of(p.data), p.data.dtype.str), []).append(p)
    return [FlatBucket(ps) for ps in groups.values()]


def flat_state(bucket, states):
    """The flat state of a bucket from its parameters' state dicts, or None if they differ.

    {} on a first step (no parameter has state yet); the bucket's own flat state while the
    per-parameter dicts are the views it handed out; else gathered from the per-parameter
    arrays when all parameters have the same names and the same scalars.
    """
    if not any(states):
        return {}
    if bucket.handed_out is not None and all(
            s is given and _unchanged(s, snapshot)
            for s, (given, snapshot) in zip(states, bucket.handed_out)):
        return bucket.state
    names = set(states[0])
    if any(set(s) != names for s in states):
        return None
    flat = {}
    for name in names:
        values = [s[name] for s in states]
        if backend.is_array(values[0]):
            flat[name] = bucket.gather(values)
        elif all(v == values[0] for v in values):
            flat[name] = values[0]
        else:
            return None
    return flat


def publish(bucket, state, arrays_before):
    """After a flat update: the per-parameter state dicts (views into the flat `state`), in order.

    While the flat arrays are the ones handed out before, only the scalars (Adam's step) are
    written into the same dicts: no new views at every step.
    """
    if state is bucket.state and all(state.get(k) is v for k, v in arrays_before.items()):
        scalars = {k: v for k, v in state.items() if not backend.is_array(v)}
        for given, snapshot in bucket.handed_out:
            given.update(scalars)
            snapshot.update(scalars)
        return [given for given, _ in bucket.handed_out]
    return hand_out(bucket, state)


def hand_out(bucket, state):
    """Per-parameter state dicts of views into the flat `state`; returns them, in order."""
    views = {name: bucket.views(v) for name, v in state.items() if backend.is_array(v)}
    given = [{name: views[name][i] if name in views else value for name, value in state.items()}
             for i in range(len(bucket.params))]
    bucket.state, bucket.handed_out = state, [(d, dict(d)) for d in given]
    return given


def _unchanged(state, snapshot):
    """The dict holds what was handed out: the same view objects, equal scalars."""
    if set(state) != set(snapshot):
        return False
    return all(state[k] is v if backend.is_array(v) else state[k] == v
               for k, v in snapshot.items())
