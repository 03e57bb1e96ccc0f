"""The CuPy stand-in (tests/cupy_standin.py) keeps the differences from NumPy that device bugs
hide in.

These run on the stand-in only: on a GPU machine the cuda device is CuPy itself, and the same
device tests run on it.
"""
import numpy as np
import pytest

import minires
from minires import backend
from minires import functional as F

import cupy_standin
from cupy_standin import cupy as cp

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not cupy_standin.is_registered(), reason="a real GPU answers")]


def test_it_is_the_cuda_device_and_not_a_numpy_array():
    a = backend.to_device(np.arange(3.0), "cuda")
    assert backend.device_of(a) == "cuda" and backend.xp(a) is cp
    assert not isinstance(a, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    np.testing.assert_array_equal(a.get(), [0.0, 1.0, 2.0])


@pytest.mark.parametrize("mix", [
    lambda a, h: a + h, lambda a, h: h + a, lambda a, h: a * h, lambda a, h: h < a,
    lambda a, h: np.add(h, a), lambda a, h: cp.maximum(a, h), lambda a, h: np.concatenate([a, h]),
    lambda a, h: cp.zeros_like(h), lambda a, h: a.dot(h)],
    ids=["add", "radd", "mul", "compare", "ufunc", "module", "array_function", "like", "method"])
def test_mixing_with_a_numpy_array_raises_on_either_side(mix):
    a, host = cp.asarray(np.ones(3)), np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        mix(a, host)


def test_minires_names_the_op_and_the_devices_when_tensors_mix():
    with pytest.raises(ValueError,
                       match=r"matmul: .*input 0 \(2, 3\) on cuda, input 1 \(3, 2\) on cpu"):
        F.matmul(minires.tensor(np.ones((2, 3)), device="cuda"),
                 minires.tensor(np.ones((3, 2)), device="cpu"))


def test_moving_copies_both_ways():
    host = np.arange(4.0)
    device = backend.to_device(host, "cuda")
    host[0] = 99.0
    assert float(device[0]) == 0.0
    back = backend.to_numpy(device)
    device[1] = -1.0
    assert isinstance(back, np.ndarray) and back[1] == 1.0
    assert backend.to_device(device, "cuda") is device  # nothing moves, nothing is copied


def test_reductions_and_scalar_indexing_give_0d_device_arrays():
    a = cp.asarray(np.array([[1.0, 2.0], [3.0, 4.0]]))
    for value in (a.sum(), a.max(), a[0, 1], cp.linalg.norm(a)):
        assert isinstance(value, cp.ndarray) and value.ndim == 0
    assert float(a.sum()) == 10.0 and a.sum().item() == 10.0 and f"{a.mean():.2f}" == "2.50"


def test_an_out_of_range_index_array_wraps_around_as_in_cupy():
    a = cp.asarray(np.arange(3.0))
    np.testing.assert_array_equal(a[np.array([0, 4])].get(), [0.0, 1.0])
    with pytest.raises(IndexError):
        a[3]  # a plain integer still raises, as in CuPy


def test_scatter_add_accumulates_repeated_indices_through_backend():
    target = cp.zeros(3)
    backend.scatter_add(target, np.array([0, 0, 2]), cp.asarray(np.array([1.0, 2.0, 5.0])))
    np.testing.assert_array_equal(target.get(), [3.0, 0.0, 5.0])


def test_random_synchronize_and_device_count():
    minires.manual_seed(3)
    first = cp.random.standard_normal((4,), dtype=np.float32)
    minires.manual_seed(3)
    second = cp.random.standard_normal((4,), dtype=np.float32)
    assert first.dtype == np.float32 and np.array_equal(first.get(), second.get())
    backend.synchronize()
    backend.synchronize(first)
    assert cp.cuda.runtime.getDeviceCount() == 1 and backend.gpu_available()


def test_memory_pool_counts_live_arrays_and_fails_past_its_limit():
    pool = cp.get_default_memory_pool()
    before = pool.used_bytes()
    a = cp.zeros(1000, dtype=np.float64)
    assert pool.used_bytes() == before + 8000
    del a
    assert pool.used_bytes() == before
    pool.set_limit(size=before + 4000)
    try:
        with pytest.raises(cp.cuda.memory.OutOfMemoryError,
                           match=r"Out of memory allocating 8,000 bytes .*limit set to"):
            cp.zeros(1000, dtype=np.float64)
    finally:
        pool.set_limit(size=0)


def test_custom_kernels_are_a_clear_attribute_error():
    with pytest.raises(AttributeError, match="real GPU"):
        cp.ElementwiseKernel
