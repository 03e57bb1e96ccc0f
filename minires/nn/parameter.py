"""Parameter: a Tensor that a Module registers as trainable."""
from ..autograd import Tensor


class Parameter(Tensor):
    """A leaf Tensor with requires_grad=True that Module.parameters() finds."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad)

    def __repr__(self):
        return "Parameter(" + super().__repr__() + ")"
