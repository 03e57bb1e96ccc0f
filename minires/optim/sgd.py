"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay."""
from .. import backend
from .optimizer import Optimizer, _check


class SGD(Optimizer):
    """SGD exactly as torch.optim.SGD, per parameter with gradient g (mu = momentum):

        g <- g + weight_decay * p;  b <- g (first step) else mu * b + (1 - dampening) * g;
        p <- p - lr * (g + mu * b if nesterov else b)          (b and momentum only when mu > 0)
    """

    buffer_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 fused=False):
        """fused=True: each group's parameters become views of one flat buffer and a step is a
        handful of array operations on it, bit for bit the unfused result (optim/_flat.py)."""
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov), fused)

    def _check_group(self, group):
        super()._check_group(group)
        _check(group["momentum"] >= 0,
               f"SGD: invalid momentum {group['momentum']}: it must be >= 0")
        _check(group["weight_decay"] >= 0,
               f"SGD: invalid weight_decay {group['weight_decay']}: it must be >= 0")
        _check(not group["nesterov"] or (group["momentum"] > 0 and group["dampening"] == 0),
               f"SGD: nesterov=True needs momentum > 0 and dampening == 0 "
               f"(got momentum={group['momentum']}, dampening={group['dampening']})")

    def _update(self, p, grad, group, state):
        """p.data -= lr * direction, in place; the first step's buffer is a copy of g."""
        momentum = group["momentum"]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                # a copy, and an array even for 0-d p (NumPy 0-d arithmetic gives scalars)
                buf = state["momentum_buffer"] = backend.xp(p.data).array(grad)
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad
