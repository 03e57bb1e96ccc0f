"""Adam: per-parameter step sizes from running moments of the gradient."""
from .. import backend
from .optimizer import Optimizer, _check


class Adam(Optimizer):
    """Adam exactly as torch.optim.Adam (L2 weight decay added to the gradient), step t = 1, 2, ...:

        g <- g + wd * p;  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    buffer_names = ("exp_avg", "exp_avg_sq")
    scalar_names = ("step",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 fused=False):
        """fused=True: one flat update per group, as SGD's (optim/_flat.py)."""
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay), fused)

    def _check_group(self, group):
        super()._check_group(group)
        _check(group["eps"] >= 0, f"Adam: invalid eps {group['eps']}: it must be >= 0")
        _check(len(group["betas"]) == 2, f"Adam: betas must be a pair, got {group['betas']}")
        for i, beta in enumerate(group["betas"]):
            _check(0 <= beta < 1, f"Adam: invalid betas[{i}] = {beta}: it must be in [0, 1)")
        _check(group["weight_decay"] >= 0,
               f"Adam: invalid weight_decay {group['weight_decay']}: it must be >= 0")

    def _update(self, p, grad, group, state):
        """p.data -= step_size * m / denom, in place; m, v start at zero and t at 0."""
        beta1, beta2 = group["betas"]
        xp = backend.xp(p.data)
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        state["step"] += 1
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        m += (1 - beta1) * (grad - m)  # torch's lerp: m + (1-b1)(g - m) = b1 m + (1-b1) g
        v *= beta2
        v += (1 - beta2) * grad * grad
        step_size = group["lr"] / (1 - beta1 ** t)
        denom = xp.sqrt(v) / (1 - beta2 ** t) ** 0.5 + group["eps"]
        p.data -= step_size * (m / denom)
