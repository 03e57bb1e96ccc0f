"""Running out of memory inside an op is a MemoryError that names the op, the phase, the shapes
and the bytes asked for: `except MemoryError` catches it on every path (the reference ops, the
fast CPU ops, CuPy's out-of-memory error in test_cuda_end_to_end.py).

The sizes asked for here are terabytes, so the allocation fails at once and nothing is touched:
the inputs are broadcast views (a stride of 0 along the huge axes) of a single value.
"""
import numpy as np
import pytest

import minires
import minires.functional as F
from minires import backend
from minires.ops import conv as reference_conv

pytestmark = pytest.mark.cpu_only  # NumPy's MemoryError; the GPU's is in test_cuda_end_to_end.py

TIB = 2**40


def huge(shape, requires_grad=False):
    """A float32 tensor of `shape` that takes 4 bytes: one value, broadcast."""
    return minires.tensor(np.broadcast_to(np.float32(1), shape), requires_grad=requires_grad)


def assert_names(message, *parts):
    for part in parts:
        assert part in message, message


def test_forward_out_of_memory_names_the_op_the_shapes_and_the_bytes():
    a, b = huge((1, 2**20)), huge((2**20, 1))
    with pytest.raises(MemoryError) as info:
        a * b                                   # a (2**20, 2**20) float32 result: 4 TiB
    assert isinstance(info.value, backend.OpOutOfMemoryError)
    assert_names(str(info.value), "mul forward", "input 0 (1, 1048576) float32",
                 "input 1 (1048576, 1) float32", f"{4 * TIB:,} bytes", "smaller batch")


@pytest.mark.parametrize("conv2d", [F.conv2d, reference_conv.conv2d], ids=["default", "reference"])
def test_conv2d_out_of_memory_is_a_memory_error_on_either_path(conv2d):
    x, w = huge((2**14, 3, 1024, 1024)), minires.tensor(np.ones((16, 3, 3, 3), np.float32))
    with pytest.raises(MemoryError) as info:
        conv2d(x, w, None, 1, 1)
    assert_names(str(info.value), "conv2d forward", "input 0 (16384, 3, 1024, 1024) float32",
                 "input 1 (16, 3, 3, 3) float32", "bytes (")


def test_backward_out_of_memory_names_the_op_and_the_gradient():
    x = huge((2**20, 2**20), requires_grad=True)
    y = x[:1, :2].sum()                         # getitem's backward makes zeros of x's shape
    with pytest.raises(MemoryError) as info:
        y.backward()
    assert_names(str(info.value), "getitem backward", "gradient (1, 2) float32",
                 "input 0 (1048576, 1048576) float32", f"{4 * TIB:,} bytes")


def test_an_op_inside_an_op_is_named_once():
    """A MemoryError already named by an inner op passes through the outer one unchanged."""
    class Outer(minires.Function):
        name = "outer"

        def forward(self, x):
            return (huge((1, 2**20)) * huge((2**20, 1))).data

    with pytest.raises(MemoryError) as info:
        Outer().apply(minires.tensor(np.ones(2, np.float32)))
    assert str(info.value).startswith("mul forward"), str(info.value)
