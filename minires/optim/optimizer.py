"""Optimizer: parameter groups, per-parameter state, zero_grad, step and a flat state_dict.

Shaped like ``torch.optim.Optimizer`` so that what a student writes here transfers:

    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss.backward(); opt.step(); opt.zero_grad()

Gradients accumulate in ``p.grad`` across backward calls (as in PyTorch): call ``zero_grad`` once
per step. ``step`` changes each parameter's array **in place** (``p.data -= ...``), so the array
object a Parameter holds never changes and views of it stay valid (with ``fused=True`` each
``p.data`` is rebound once, at the first step, to a view of a flat buffer: optim/_flat.py).
Parameters whose ``.grad`` is None are skipped and get no state.

``state_dict`` is flat, ``{str: numpy array or Python scalar}``, so it goes into an ``.npz`` with
``allow_pickle=False``. Parameters are named by their position in the groups (0, 1, ...):

    "param_groups.0.params" -> array([0, 1, 2])      "param_groups.0.lr" -> 0.1
    "state.1.momentum_buffer" -> array(...)           "state.1.step" -> 3
"""
from abc import ABC, abstractmethod

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from . import _flat


class Optimizer(ABC):
    """Base class: subclasses set `buffer_names`/`scalar_names` and define `_update`."""

    buffer_names = ()  # per-parameter state arrays, shaped like the parameter
    scalar_names = ()  # per-parameter state Python numbers (e.g. Adam's step count)

    def __init__(self, params, defaults, fused=False):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}  # Parameter -> {name: array or number}
        self.fused = bool(fused)  # one flat update per group and dtype (optim/_flat.py)
        self._buckets = {}        # group index -> (ids of its params, [FlatBucket])
        for group in _as_groups(params, self._name):
            self.add_param_group(group)

    def __repr__(self):
        groups = "; ".join(
            f"group {i}: {len(g['params'])} params, "
            + ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
            for i, g in enumerate(self.param_groups))
        return f"{type(self).__name__}({groups})"

    def add_param_group(self, group):
        """Add {"params": [...], hyperparameter: value, ...}; missing ones come from defaults."""
        group = dict(group)
        group["params"] = _param_list(group.get("params"), self._name)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError(f"{self._name}: a parameter appears in more than one parameter group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        self.param_groups.append(group)

    @property
    def _name(self):
        return type(self).__name__

    def _check_group(self, group):
        """Raise a ValueError naming a bad hyperparameter; subclasses add their own checks."""
        _check(group["lr"] >= 0,
               f"{self._name}: invalid learning rate {group['lr']}: it must be >= 0")

    def zero_grad(self):
        """Set every parameter's .grad to None (the next backward starts from nothing)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        """Update, in place and without recording a graph, every parameter that has a gradient."""
        with no_grad():
            for index, group in enumerate(self.param_groups):
                rest = self._fused_step(index, group) if self.fused else group["params"]
                for p in rest:
                    if p.grad is not None:
                        grad = self._grad_array(p)
                        self._update(p, grad, group, self.state.setdefault(p, {}))

    def _fused_step(self, index, group):
        """fused=True: one `_update` on the flat buffers of each bucket of the group (see
        optim/_flat.py); returns the parameters left to the per-parameter update."""
        ids = [id(p) for p in group["params"]]
        known = self._buckets.get(index)
        if known is None or known[0] != ids or not all(b.is_current() for b in known[1]):
            known = self._buckets[index] = (ids, _flat.buckets_of(group["params"]))
        rest = []
        for bucket in known[1]:
            states = [self.state.get(p, {}) for p in bucket.params]
            has_grads = all(p.grad is not None for p in bucket.params)
            state = _flat.flat_state(bucket, states) if has_grads else None
            if state is None:
                rest.extend(bucket.params)
                continue
            grad = bucket.gather([self._grad_array(p) for p in bucket.params])
            arrays_before = {k: v for k, v in state.items() if backend.is_array(v)}
            self._update(bucket.as_parameter(), grad, group, state)
            for p, given in zip(bucket.params, _flat.publish(bucket, state, arrays_before)):
                self.state[p] = given
        return rest

    def _grad_array(self, p):
        """p.grad as an array, after checking that it matches the parameter's shape and device."""
        grad = p.grad.data
        if grad.shape != p.data.shape:
            raise ValueError(f"{self._name}.step: a parameter of shape {p.data.shape} has a grad "
                             f"of shape {grad.shape}")
        if backend.device_of(grad) != backend.device_of(p.data):
            raise ValueError(f"{self._name}.step: a parameter {p.data.shape} is on "
                             f"{backend.device_of(p.data)} but its grad is on "
                             f"{backend.device_of(grad)}")
        return grad

    @abstractmethod
    def _update(self, p, grad, group, state):
        """Change p.data in place from its gradient, its group's settings and its state."""

    # --- state_dict: flat {str: numpy array or Python scalar} ----------------------------------
    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """A flat snapshot {str: numpy array or Python scalar} (np.savez-able, no pickle)."""
        index = {id(p): i for i, p in enumerate(self._params())}
        flat = {}
        for i, group in enumerate(self.param_groups):
            flat[f"param_groups.{i}.params"] = np.array([index[id(p)] for p in group["params"]],
                                                        dtype=np.int64)
            for key, value in group.items():
                if key != "params":
                    flat[f"param_groups.{i}.{key}"] = to_flat(value)
        for i, p in enumerate(self._params()):
            for name, value in self.state.get(p, {}).items():
                flat[f"state.{i}.{name}"] = to_flat(value)
        return flat

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state from `state_dict` (as saved, or read from an .npz).

        Everything is checked before anything changes: keys, group layout, state names, shapes.
        """
        groups, state = self._split_keys(state_dict)
        new_groups = [self._loaded_group(i, groups[i]) for i in range(len(self.param_groups))]
        new_state = {p: self._loaded_state(i, p, state.pop(i)) for i, p in enumerate(self._params())
                     if i in state}
        if state:
            raise ValueError(f"{self._name}.load_state_dict: state for parameter(s) "
                             f"{sorted(state)}, but this optimizer has {len(self._params())}")
        for group, new in zip(self.param_groups, new_groups):
            group.update(new)
        self.state = new_state

    def _split_keys(self, state_dict):
        """{"param_groups.i.key": v, "state.k.name": v} -> ({i: {key: v}}, {k: {name: v}})."""
        groups, state = {}, {}
        for key, value in state_dict.items():
            parts = key.split(".")
            if (len(parts) != 3 or parts[0] not in ("param_groups", "state")
                    or not parts[1].isdigit()):
                raise ValueError(f"{self._name}.load_state_dict: unexpected key {key!r} (keys look "
                                 f"like 'param_groups.0.lr' or 'state.3.momentum_buffer')")
            table = groups if parts[0] == "param_groups" else state
            table.setdefault(int(parts[1]), {})[parts[2]] = value
        if sorted(groups) != list(range(len(self.param_groups))):
            raise ValueError(f"{self._name}.load_state_dict: the state has parameter groups "
                             f"{sorted(groups)}, this optimizer has {len(self.param_groups)}")
        return groups, state

    def _loaded_group(self, i, saved):
        """Group i's hyperparameters from `saved`, checked against the current group."""
        group = self.param_groups[i]
        start = sum(len(g["params"]) for g in self.param_groups[:i])
        expected = np.arange(start, start + len(group["params"]))
        indices = np.asarray(saved.get("params", []))
        if indices.shape != expected.shape or not np.array_equal(indices, expected):
            raise ValueError(f"{self._name}.load_state_dict: group {i} holds parameters "
                             f"{indices.tolist()} in the state, {expected.tolist()} here")
        missing = sorted(set(group) - set(saved))
        if missing:
            raise ValueError(f"{self._name}.load_state_dict: group {i} lacks {missing}")
        new = {key: from_flat(value, group.get(key)) for key, value in saved.items()
               if key != "params"}
        self._check_group({**group, **new})
        return new

    def _loaded_state(self, i, p, saved):
        """Parameter i's state from `saved`: buffers checked and moved to p's device and dtype."""
        names = set(self.buffer_names) | set(self.scalar_names)
        if set(saved) != names:
            raise ValueError(f"{self._name}.load_state_dict: parameter {i} has state "
                             f"{sorted(saved)}, expected {sorted(names)}")
        state = {}
        for name, value in saved.items():
            if name in self.scalar_names:
                state[name] = from_flat(value)
                continue
            if np.shape(value) != p.data.shape:
                raise ValueError(f"{self._name}.load_state_dict: state.{i}.{name} has shape "
                                 f"{np.shape(value)}, parameter {i} has {p.data.shape}")
            state[name] = backend.to_device(np.asarray(value), backend.device_of(p.data)).astype(
                p.data.dtype)  # astype copies: the optimizer never shares the caller's array
        return state


def to_flat(value):
    """A state_dict value: arrays -> NumPy copies, tuples/lists -> NumPy arrays, numbers as is."""
    if backend.is_array(value):
        return np.array(backend.to_numpy(value))
    if isinstance(value, (tuple, list)):
        return np.asarray(value)
    return value


def from_flat(value, like=None):
    """Undo `to_flat` (also after an .npz): a tuple if `like` is one, 0-d arrays to scalars."""
    if isinstance(like, (tuple, list)):
        return type(like)(np.asarray(value).tolist())
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return value


def _check(condition, message):
    if not condition:
        raise ValueError(message)


def _as_groups(params, name):
    """Parameters, or {"params": ..., hyperparameter: ...} dicts -> a list of group dicts."""
    if isinstance(params, (Tensor, dict)):
        raise TypeError(f"{name}: params must be an iterable of Parameters or of dicts, got a "
                        f"{type(params).__name__} (wrap it in a list)")
    params = list(params)
    if not params:
        raise ValueError(f"{name}: got an empty parameter list")
    if all(isinstance(p, dict) for p in params):
        return params
    return [{"params": params}]


def _param_list(params, name):
    """The "params" entry of a group as a non-empty list of Tensors."""
    params = [params] if isinstance(params, Tensor) else list(params or [])
    if not params:
        raise ValueError(f"{name}: a parameter group has no parameters")
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}: parameters must be Tensors (Parameters), got "
                            f"{type(p).__name__}")
    return params
