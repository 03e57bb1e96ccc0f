"""Reverse-mode automatic differentiation: Tensor, Function and the backward pass.

A `Tensor` wraps an array (`.data`, NumPy or CuPy) and remembers the `Function` that made it
(`.creator`). A `Function` computes on raw arrays in `forward` and maps upstream gradients to input
gradients in `backward`; `Function.apply` does the graph bookkeeping, so an op never does.

`Tensor.backward` visits the graph in reverse topological order. A tensor's gradient is complete when
every op that consumed it has run its backward; only then its hooks fire and it moves on to its own
creator. Leaves accumulate into `.grad` across calls, as in PyTorch: call `zero_grad` to clear.
After a backward the graph's saved arrays are freed (unless ``retain_graph=True``); a second
backward through it raises an error instead of giving a silent wrong answer.

In-place changes. Each tensor counts the in-place changes made to its array through minires
(`._version`, as PyTorch's): `t.data -= v` and the other augmented assignments (the optimizers
step this way), and `t.copy_(values)`. `Function.apply` records the version of every input, and
backward raises an error naming the op if one has changed since, instead of differentiating with
the changed values. As in PyTorch, the count belongs to the memory, not to one tensor: a tensor
that shares its base's memory (`detach()`, and the outputs of reshape, transpose, slicing and the
other ops that return a view) shares its base's counter, so `a.detach().data *= 0` or
`a[1:4].data += 1` counts as a change of `a`. Assigning a new array (`t.data = a`) leaves the
saved one intact and counts nothing. Writes that bypass the tensor (`t.data[...] = v`, or through
a NumPy view of it) cannot be seen: use `t.copy_(v)` to change a tensor in place.

Operators. `a + b`, `a @ b`, `a[i]`, `a.sum()` and the rest call the ops of `minires.functional`,
which hands itself to the engine when it is imported (`use_operators`): the engine imports no op,
so the imports point one way, from the ops down to here.
"""
import contextlib
import threading
import weakref

import numpy as np

from . import backend


class Tensor:
    """An array plus what autograd needs: requires_grad, grad, the creator Function and hooks."""

    __array_priority__ = 1000  # so `ndarray * Tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False):
        if not backend.is_array(data):
            data = _as_array(data)
        self._data = data
        self._versions = [0]  # in-place changes of this memory; shared with views (see above)
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.creator = None
        self._hooks = []
        self._retain_grad = False
        self.name = None

    # --- the array, and the count of its in-place changes ------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, array):
        """`t.data = a` replaces the array; `t.data -= v` (the same array back) counts a change."""
        if array is self._data:
            self._versions[0] += 1
        self._data = array

    @property
    def _version(self):
        """How many in-place changes this tensor's memory has had (its views' included)."""
        return self._versions[0]

    def copy_(self, values):
        """Write `values` into this tensor's array, in place (counted: see the module docstring)."""
        self._data[...] = _as_array(values, dtype=self.dtype, device=self.device)
        self._versions[0] += 1
        return self

    # --- array facts -----------------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.creator is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        where = "" if self.device == "cpu" else f", device='{self.device}'"
        return f"tensor({backend.to_numpy(self.data)!r}{where}{grad})"

    def numpy(self):
        """A NumPy copy-free view (CPU) or a host copy (GPU) of the data."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def detach(self):
        """The same data, cut from the graph (an in-place change of it counts as one of self)."""
        detached = Tensor(self.data)
        detached._versions = self._versions
        return detached

    def to(self, device):
        """This tensor on `device` ('cpu' or 'cuda'); differentiable, like torch's .to."""
        return _ops().to(self, device)

    def astype(self, dtype):
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    # --- gradients -------------------------------------------------------------------------------
    def zero_grad(self):
        self.grad = None

    def retain_grad(self):
        """Keep this intermediate tensor's gradient in `.grad` after backward."""
        self._retain_grad = True
        return self

    def register_hook(self, hook):
        """hook(grad: Tensor) -> Tensor or None, called when this tensor's gradient is complete.

        Returning a Tensor replaces the gradient that flows on. Returns a handle with .remove().
        """
        self._hooks.append(hook)
        return RemovableHandle(self._hooks, hook)

    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into every leaf's .grad (grad defaults to 1)."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward: grad can be left out only for a single-element tensor, "
                    f"this one has shape {self.shape}")
            grad = backend.xp(self.data).ones_like(self.data)
        else:
            grad = _as_array(grad, dtype=self.dtype, device=self.device)  # NumPy grad, GPU tensor
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}, tensor has {self.shape}")
        run_backward(self, grad, retain_graph)

    # --- operators (the ops of minires.functional: see "Operators" above) -------------------------
    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().sub(self, other)

    def __rsub__(self, other):
        return _ops().sub(other, self)

    def __mul__(self, other):
        return _ops().mul(self, other)

    def __rmul__(self, other):
        return _ops().mul(other, self)

    def __truediv__(self, other):
        return _ops().div(self, other)

    def __rtruediv__(self, other):
        return _ops().div(other, self)

    def __neg__(self):
        return _ops().neg(self)

    def __pow__(self, exponent):
        return _ops().pow(self, exponent)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __getitem__(self, index):
        return _ops().getitem(self, index)

    def reshape(self, *shape):
        return _ops().reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return _ops().transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    @property
    def T(self):
        return _ops().transpose(self)

    def flatten(self, start_dim=0):
        return _ops().flatten(self, start_dim)

    def sum(self, axis=None, keepdims=False):
        return _ops().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops().mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return _ops().max(self, axis, keepdims)

    def exp(self):
        return _ops().exp(self)

    def log(self):
        return _ops().log(self)

    def relu(self):
        return _ops().relu(self)


class Function:
    """One differentiable op: `forward(*arrays) -> array` and `backward(grad) -> input grads`.

    Subclasses set `name` (used in error messages), may define `check(*arrays)` to validate inputs
    with a clear message, save what `backward` needs on `self`, and return one gradient per input
    (a tuple when there are several; None for an input that needs none: `self.needs_input_grad`
    says which do). Everything an op saves is released after backward.
    """

    name = "op"
    differentiable_inputs = None  # indices of inputs that take gradients; None means all
    may_return_view = False  # True: the output may share input 0's memory (reshape, slicing)

    def check(self, *arrays):
        """Validate input shapes/dtypes; raise ValueError/TypeError naming the op and the shapes."""

    def apply(self, *inputs):
        tensors = [as_tensor(x) for x in inputs]
        arrays = [t.data for t in tensors]
        _check_devices(self.name, arrays)
        self.check(*arrays)  # before the dtype match: "labels must be integer" says more
        _check_float_dtypes(self.name, arrays)
        self.needs_input_grad = tuple(t.requires_grad and self._takes_grad(i)
                                      for i, t in enumerate(tensors))
        try:
            output = self.forward(*arrays)
        except backend.OpOutOfMemoryError:
            raise  # from an op inside this one, which it names already
        except MemoryError as error:  # say which op, layer and shapes, and how many bytes
            raise backend.out_of_memory_error(error, self.name, "forward", current_scope(), {
                f"input {i}": a for i, a in enumerate(arrays)}) from error
        result = Tensor(output)
        if self.may_return_view and backend.may_share_memory(output, arrays[0]):
            result._versions = tensors[0]._versions  # a view: one count for the memory
        if is_grad_enabled() and any(self.needs_input_grad):
            result.requires_grad = True
            result.creator = self
            self._inputs = tensors
            self._input_versions = [t._version for t in tensors]
            self._output = weakref.ref(result)
            self._scope = current_scope()
        for observer in _forward_observers.callbacks:
            observer(self, tuple(tensors), result)
        return result

    def _takes_grad(self, index):
        return self.differentiable_inputs is None or index in self.differentiable_inputs

    def _release(self):
        """Drop saved arrays and settings; only the graph links stay, so reuse is detected."""
        keep = {"_inputs", "_output", "_scope", "_input_versions"}
        for key in [k for k in self.__dict__ if k not in keep]:
            del self.__dict__[key]
        self._freed = True

    def layer(self):
        """The module path the op ran in ('' at top level), for error messages."""
        return getattr(self, "_scope", "")

    def forward(self, *arrays):  # pragma: no cover - every op overrides it
        raise TypeError(f"{type(self).__name__} defines no forward")

    def backward(self, grad):  # pragma: no cover - every op overrides it
        raise TypeError(f"{type(self).__name__} defines no backward")


# --- the backward pass ----------------------------------------------------------------------------

def run_backward(root, grad, retain_graph=False):
    """Propagate `grad` from `root` to every leaf that requires grad."""
    if root.creator is None:  # a leaf: the gradient of itself
        _accumulate_leaf(root, _finish_gradient(root, grad))
        return
    pending = {id(root.creator): grad}  # gradient of each Function's output, summed over consumers
    leaves = {}
    for fn in _topological_functions(root):
        if getattr(fn, "_freed", False):
            raise RuntimeError(
                f"backward: {fn.name} (layer '{fn.layer()}') was already freed by an earlier "
                "backward; call backward(retain_graph=True) the first time to go through it twice")
        grad_output = pending.pop(id(fn), None)
        if grad_output is None:
            continue
        _check_unchanged_inputs(fn)
        output = fn._output()
        if output is not None:
            grad_output = _finish_gradient(output, grad_output)
        try:
            grad_inputs = fn.backward(grad_output)
        except backend.OpOutOfMemoryError:
            raise
        except MemoryError as error:  # say which op, layer and shapes, and how many bytes
            raise backend.out_of_memory_error(error, fn.name, "backward", fn.layer(), {
                "gradient": grad_output, **{f"input {i}": x.data for i, x in enumerate(fn._inputs)}
            }) from error
        grad_inputs = grad_inputs if isinstance(grad_inputs, tuple) else (grad_inputs,)
        for observer in _backward_observers.callbacks:
            observer(fn, tuple(fn._inputs), grad_output, grad_inputs)
        # each input's gradient: summed per leaf (for .grad), or per creator (its grad_output)
        for x, gx in zip(fn._inputs, grad_inputs):
            # BEGIN SOLUTION
            if gx is None or not x.requires_grad:
                continue
            if x.creator is None:
                key = id(x)
                leaves[key] = (x, gx if key not in leaves else leaves[key][1] + gx)
            else:
                key = id(x.creator)
                pending[key] = gx if key not in pending else pending[key] + gx
            # END SOLUTION
        if not retain_graph:
            fn._release()
    for x, g in leaves.values():
        _accumulate_leaf(x, _finish_gradient(x, g))


def _check_unchanged_inputs(fn):
    """Raise if an input of `fn` was changed in place after its forward saved what it needed."""
    for index, (x, saved) in enumerate(zip(fn._inputs, fn._input_versions)):
        if x._version != saved:
            raise RuntimeError(
                f"backward: input {index} of {fn.name} (layer '{fn.layer()}', shape {x.shape}) was "
                f"modified in place after the forward (version {saved} then, {x._version} now), "
                "so its gradient would use the changed values; change a copy instead, or change "
                "it after backward")


def _topological_functions(root):
    """Functions reachable from `root`, each after every Function that consumes its outputs."""
    # BEGIN SOLUTION
    order, visited = [], set()
    stack = [(root.creator, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        for t in getattr(fn, "_inputs", ()):
            if t.creator is not None and id(t.creator) not in visited:
                stack.append((t.creator, False))
    order.reverse()  # postorder reversed: consumers first
    return order
    # END SOLUTION


def _finish_gradient(tensor, grad):
    """Run the tensor's hooks on its complete gradient; keep it if asked. Returns the gradient."""
    for hook in tensor._hooks:
        replaced = hook(Tensor(grad))
        if replaced is not None:
            grad = replaced.data if isinstance(replaced, Tensor) else replaced
    if tensor._retain_grad and tensor.creator is not None:
        _accumulate_leaf(tensor, grad)  # a retained gradient accumulates as a leaf's does
    return grad


def _accumulate_leaf(leaf, grad):
    # BEGIN SOLUTION
    leaf.grad = Tensor(grad if leaf.grad is None else leaf.grad.data + grad)
    # END SOLUTION


# --- making tensors -------------------------------------------------------------------------------

def tensor(data, requires_grad=False, device=None, dtype=None):
    """Make a Tensor from array-like data on `device` (default: env MINIRES_DEVICE or 'cpu').

    Python floats become float32 and ints int64; NumPy/CuPy arrays keep their dtype unless `dtype`
    is given.
    """
    device = backend.check_device(device) if device is not None else backend.default_device()
    return Tensor(_as_array(data, dtype=dtype, device=device), requires_grad=requires_grad)


def as_tensor(value, like=None):
    """A Tensor for an op input: Tensors pass through, scalars take `like`'s dtype and device."""
    if isinstance(value, Tensor):
        return value
    if backend.is_array(value):
        return Tensor(value)
    if like is not None and np.isscalar(value):
        return Tensor(backend.xp(like.data).asarray(value, dtype=like.dtype))
    return Tensor(_as_array(value))


def _as_array(value, dtype=None, device=None):
    """Turn array-likes into a NumPy/CuPy array; Python floats default to float32, ints to int64."""
    if isinstance(value, Tensor):
        array = value.data
    elif backend.is_array(value):
        array = value
    elif isinstance(value, np.generic):  # a NumPy scalar, e.g. from arr.sum(): keep its dtype
        array = np.asarray(value)
    else:
        array = np.asarray(value)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)
    if dtype is not None and array.dtype != np.dtype(dtype):
        array = array.astype(dtype)
    if device is not None:
        array = backend.to_device(array, device)
    return array


_operators = None  # minires.functional, once it has handed itself over (use_operators)


def use_operators(module):
    """Make Tensor's operators (+, @, [], .sum(), .to(), ...) call the ops of `module`.

    minires.functional calls this when it is imported (and `import minires` imports it), so the
    engine never imports the ops, which import the engine."""
    global _operators
    _operators = module


def _ops():
    if _operators is None:
        raise RuntimeError("minires.autograd: no ops for Tensor's operators yet; import minires")
    return _operators


def increment_version(tensor):
    """Count an in-place change of `tensor`'s memory made without `.data` (a fused optimizer
    writing its flat buffer), so that a graph that saved the old values raises at backward."""
    tensor._versions[0] += 1



# --- checks made by Function.apply ----------------------------------------------------------------

def _check_devices(name, arrays):
    devices = [backend.device_of(a) for a in arrays]
    if len(set(devices)) > 1:
        where = ", ".join(f"input {i} {tuple(a.shape)} on {d}"
                          for i, (a, d) in enumerate(zip(arrays, devices)))
        raise ValueError(f"{name}: inputs are on different devices ({where}); move them with .to()")


def _check_float_dtypes(name, arrays):
    floats = {a.dtype for a in arrays if a.dtype.kind == "f"}
    if len(floats) > 1:
        where = ", ".join(f"input {i} {tuple(a.shape)} {a.dtype}" for i, a in enumerate(arrays))
        raise TypeError(f"{name}: inputs have different float dtypes ({where}); cast with .astype()")


# --- grad mode and scopes (per thread) ------------------------------------------------------------

_state = threading.local()


def _get(name, default):
    return getattr(_state, name, default)


def is_grad_enabled():
    return _get("grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Run the block without recording a graph (evaluation, optimizer updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


@contextlib.contextmanager
def scope(name):
    """Tag every op created inside with `name` (nn.Module uses it to name layers in messages)."""
    previous = _get("scope", "")
    _state.scope = name
    try:
        yield
    finally:
        _state.scope = previous


def current_scope():
    return _get("scope", "")


# --- observers: read-only callbacks that minires.inspect and anomaly mode plug into ----------------
#
# The public contract (minires.inspect and minires.anomaly read nothing else of autograd):
#   forward observer   fn(op, inputs, output)                    after every op's forward
#   backward observer  fn(op, inputs, grad_output, grad_inputs)  after every op's backward
# op          the Function: op.name, op.layer() (the module path it ran in), and its class (test
#             it with isinstance against the classes in minires.ops)
# inputs      tuple of the op's input Tensors, in the order the op took them
# output      the output Tensor
# grad_output dL/d(output), an array;  grad_inputs: tuple, grad_inputs[i] = dL/d(inputs[i]), an
#             array, or None where no gradient flows
# Observers only look: they must not change any of these. They are process-wide and run in the
# thread that runs the op; a per-thread mode (anomaly) checks which thread calls it.

class _Observers:
    """Callbacks that threads may add and remove while others call them: every change makes a
    new tuple, so a thread going through the callbacks never sees the set change under it."""

    def __init__(self):
        self.callbacks = ()
        self._lock = threading.Lock()

    def add(self, fn):
        with self._lock:
            self.callbacks += (fn,)
        return lambda: self._remove(fn)

    def _remove(self, fn):
        with self._lock:
            kept = list(self.callbacks)
            kept.remove(fn)
            self.callbacks = tuple(kept)


_forward_observers, _backward_observers = _Observers(), _Observers()


def add_forward_observer(fn):
    """fn(op, inputs, output) after every op's forward (see the contract above). Returns a
    remover: call it to take fn away."""
    return _forward_observers.add(fn)


def add_backward_observer(fn):
    """fn(op, inputs, grad_output, grad_inputs) after every op's backward (see the contract
    above). Returns a remover."""
    return _backward_observers.add(fn)


class RemovableHandle:
    """Returned by register_hook: call .remove() to take the hook away."""

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)
