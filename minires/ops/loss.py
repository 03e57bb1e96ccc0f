"""log_softmax and cross_entropy (mean over the batch, integer class labels)."""
from .. import backend
from ..autograd import Function, Tensor
from ._checks import require_float, require_ndim, shapes


def _log_softmax(x, axis):
    """x - logsumexp(x), with the max subtracted first so exp never overflows."""
    xp = backend.xp(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    """y = x - log sum_j e^{x_j};  dx = gy - softmax(x) * sum_j gy_j"""
    name = "log_softmax"

    def __init__(self, axis=1):
        self.axis = axis

    def check(self, x):
        require_float(self.name, x=x)
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"log_softmax: axis {self.axis} is out of range for x: {tuple(x.shape)}")

    def forward(self, x):
        self.y = _log_softmax(x, self.axis)
        return self.y

    def backward(self, gy):
        xp = backend.xp(gy)
        return gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


class CrossEntropy(Function):
    """L = -(1/N) sum_n log softmax(logits_n)[label_n];  dlogits = (softmax - onehot) / N * gL"""
    name = "cross_entropy"
    differentiable_inputs = (0,)

    def check(self, logits, labels):
        require_float(self.name, logits=logits)
        require_ndim(self.name, "logits", logits, 2, labels=labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: labels must be integer class indices, got "
                            f"{labels.dtype} ({shapes(logits=logits, labels=labels)})")
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"cross_entropy: labels must have shape ({logits.shape[0]},) "
                             f"({shapes(logits=logits, labels=labels)})")
        if logits.shape[0] == 0:
            raise ValueError(f"cross_entropy: the batch is empty, and the mean of no losses is "
                             f"undefined ({shapes(logits=logits, labels=labels)})")
        low, high = _label_range(labels)
        if low < 0 or high >= logits.shape[1]:
            raise ValueError(f"cross_entropy: labels must lie in [0, {logits.shape[1]}), got "
                             f"{low}..{high} ({shapes(logits=logits, labels=labels)})")

    def forward(self, logits, labels):
        xp = backend.xp(logits)
        self.log_probs, self.labels = _log_softmax(logits, axis=1), labels
        rows = xp.arange(len(labels))
        return -self.log_probs[rows, labels].mean()

    def backward(self, gy):
        xp = backend.xp(gy)
        n = len(self.labels)
        grad = xp.exp(self.log_probs)
        grad[xp.arange(n), self.labels] -= 1
        return grad * (gy / n), None


def _label_range(labels):
    """(min, max) of the labels, read on the host: labels moved to the GPU by backend.to_device
    (the DataLoader, minires.tensor) carry the range they had there, so a training step reads
    nothing back from the device; only labels computed on the device cost a read (two syncs)."""
    known = backend.host_range(labels)
    return known if known is not None else (int(labels.min()), int(labels.max()))


def log_softmax(x, axis=1):
    return LogSoftmax(axis).apply(x)


def cross_entropy(logits, labels):
    """Mean cross-entropy of logits (N, K) against integer labels (N,)."""
    if not isinstance(labels, Tensor):  # through to_device, so the range is known on the host
        host = labels if backend.is_array(labels) else backend.to_numpy(labels)
        labels = Tensor(backend.to_device(host, backend.device_of(logits.data)))
    return CrossEntropy().apply(logits, labels)
