"""Module: the base class of every layer and network, shaped like torch.nn.Module.

A Module owns Parameters (trainable), buffers (plain arrays such as batch norm's running statistics)
and child Modules, each registered by assigning an attribute. Calling a module runs its `forward`
inside `autograd.scope(<its path>)`, so every op it creates knows which layer made it: error
messages, anomaly mode and minires.inspect all name layers as `layer1.0.conv2`.
"""
from collections import OrderedDict

import numpy as np

from .. import autograd, backend
from ..autograd import RemovableHandle, Tensor
from .parameter import Parameter


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_local_name", "")
        self.training = True
        self._forward_pre_hooks = []
        self._forward_hooks = []
        self._backward_hooks = []

    # --- registration ----------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning attributes ({name})")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value  # as torch: a registered buffer stays one (and in state)
            return
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, (Parameter, Module)):
            self.__dict__.pop(name, None)  # else an earlier plain value (None) would shadow it
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            object.__setattr__(value, "_local_name", name)
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            items = self.__dict__.get(registry, {})
            if name in items:
                return items[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """A state array that is saved in state_dict and moved by .to(), but not trained."""
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    # --- running ---------------------------------------------------------------------------------
    def forward(self, *inputs):
        raise TypeError(f"{type(self).__name__} must define forward()")

    def __call__(self, *inputs):
        parent = autograd.current_scope()
        path = f"{parent}.{self._local_name}" if parent and self._local_name else self._local_name
        for hook in self._forward_pre_hooks:
            hook(self, inputs)
        if self._backward_hooks:
            inputs = self._watch_inputs(inputs)
        with autograd.scope(path):
            output = self.forward(*inputs)
        for hook in self._forward_hooks:
            replaced = hook(self, inputs, output)
            if replaced is not None:
                output = replaced
        if self._backward_hooks and isinstance(output, Tensor) and output.requires_grad:
            self._watch_output(output, inputs)
        return output

    # --- hooks -----------------------------------------------------------------------------------
    def register_forward_pre_hook(self, hook):
        """hook(module, inputs) before forward runs. Returns a handle with .remove()."""
        self._forward_pre_hooks.append(hook)
        return RemovableHandle(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook):
        """hook(module, inputs, output) after forward; a returned value replaces the output."""
        self._forward_hooks.append(hook)
        return RemovableHandle(self._forward_hooks, hook)

    def register_full_backward_hook(self, hook):
        """hook(module, grad_input, grad_output) once the gradients of this module's inputs are known.

        grad_input holds the gradient of each input *through this module only* (as torch's full
        backward hook). Inputs pass through an identity op while hooks exist, so their gradient from
        other consumers (a shortcut, say) is not mixed in. When no input needs a gradient (an image
        into the first conv), the hook still fires, with grad_input (None, ...), as in torch.
        """
        self._backward_hooks.append(hook)
        return RemovableHandle(self._backward_hooks, hook)

    def _watch_inputs(self, inputs):
        from ..ops.shape import identity

        return tuple(identity(x) if isinstance(x, Tensor) and x.requires_grad else x
                     for x in inputs)

    def _watch_output(self, output, inputs):
        grads = {}
        watched = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]

        def on_output(grad):
            grads["output"] = grad
            if not watched:  # no input needs a gradient (an image into conv1): fire now, as torch
                for hook in self._backward_hooks:
                    hook(self, (None,) * len(inputs), (grad,))

        def on_input(index):
            def record(grad):
                grads[index] = grad
                if all(i in grads for i in range(len(watched))):
                    grad_input = tuple(grads[i] for i in range(len(watched)))
                    for hook in self._backward_hooks:
                        hook(self, grad_input, (grads["output"],))
            return record

        output.register_hook(on_output)
        for i, x in enumerate(watched):
            x.register_hook(on_input(i))

    # --- traversal -------------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(path, module) for this module and every descendant, depth first."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix=""):
        for path, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                yield (f"{path}.{name}" if path else name), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        for path, module in self.named_modules():
            for name, b in module._buffers.items():
                yield (f"{path}.{name}" if path else name), b

    def num_parameters(self, trainable_only=True):
        return sum(int(p.size) for p in self.parameters() if p.requires_grad or not trainable_only)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def apply(self, fn):
        """Call fn(module) on every module (children first), as torch's Module.apply."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes and devices -----------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        """Move every parameter, gradient and buffer to `device` in place; returns self."""
        backend.check_device(device)
        for m in self.modules():
            for p in m._parameters.values():
                p.data = backend.to_device(p.data, device)
                if p.grad is not None:
                    p.grad = Tensor(backend.to_device(p.grad.data, device))
            for name, b in m._buffers.items():
                m._buffers[name] = backend.to_device(b, device)
        return self

    def astype(self, dtype):
        """Cast every parameter, gradient and floating buffer to `dtype` in place (float64 for
        gradient checks and Jacobians); returns self."""
        for m in self.modules():
            for p in m._parameters.values():
                p.data = p.data.astype(dtype)
                if p.grad is not None:
                    p.grad = Tensor(p.grad.data.astype(dtype))
            for name, b in m._buffers.items():
                if b.dtype.kind == "f":
                    m._buffers[name] = b.astype(dtype)
        return self

    @property
    def device(self):
        first = next(self.parameters(), None)
        return backend.default_device() if first is None else first.device

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self):
        """Ordered {dotted name: NumPy array copy} of every parameter and buffer (torch's names)."""
        state = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = backend.to_numpy(p.data).copy()
        for name, b in self.named_buffers():
            state[name] = backend.to_numpy(b).copy()
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays from `state` into this module's parameters and buffers.

        strict: every key must match both ways; the error lists the missing and unexpected keys.
        Shapes must always match. Values keep this module's dtype and device.
        """
        targets = self._state_targets()
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing[:10]}"
                           f"{' ...' if len(missing) > 10 else ''}, unexpected keys "
                           f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        for key, (module, name, is_param) in targets.items():
            if key in state:
                self._load_one(key, module, name, is_param, state[key])
        return missing, unexpected

    def _state_targets(self):
        targets = OrderedDict()
        for path, module in self.named_modules():
            for registry, is_param in ((module._parameters, True), (module._buffers, False)):
                for name in registry:
                    targets[f"{path}.{name}" if path else name] = (module, name, is_param)
        return targets

    @staticmethod
    def _load_one(key, module, name, is_param, value):
        current = module._parameters[name].data if is_param else module._buffers[name]
        value = np.asarray(backend.to_numpy(value))
        if value.shape != tuple(current.shape):
            raise ValueError(f"load_state_dict: {key} has shape {value.shape} in the state but "
                             f"{tuple(current.shape)} in the model")
        array = backend.to_device(value.astype(current.dtype), backend.device_of(current))
        if is_param:
            module._parameters[name].data = array
        else:
            module._buffers[name] = array

    # --- display ---------------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")
