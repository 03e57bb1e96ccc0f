"""The CuPy stand-in's ledger (tests/cupy_standin.py): each call charged the CUDA work CuPy 14 does
for it, as the module docstring's table says, and the stand-in failing where CuPy fails.

benchmarks/gpu_launches.py adds these charges up over a training step, so each row of the table
that a step uses is pinned here.
"""
import warnings

import numpy as np
import pytest

from minires import backend

import cupy_standin
from cupy_standin import cupy as cp

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not cupy_standin.is_registered(), reason="a real GPU answers")]


def device_array(shape, dtype=np.float32, seed=0):
    return cp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def charged(work):
    """The ledger summary of running `work()`."""
    with cupy_standin.counting() as book:
        work()
    return book.summary()


def counts(summary, *fields):
    return tuple(summary[f] for f in fields)


@pytest.mark.parametrize("work, launches", [
    (lambda a, b: a + b, 1), (lambda a, b: np.exp(a), 1), (lambda a, b: a * 2.0, 1),
    (lambda a, b: cp.maximum(a, 0), 1), (lambda a, b: a.astype(np.float64), 1),
    (lambda a, b: a.astype(np.float32, copy=False), 0), (lambda a, b: a.sum(axis=0), 1),
    (lambda a, b: a.max(), 1), (lambda a, b: a.mean(axis=(0, 1)), 1), (lambda a, b: a.var(), 2),
    (lambda a, b: cp.zeros((4, 4)), 1), (lambda a, b: cp.empty((4, 4)), 0),
    (lambda a, b: a.reshape(-1), 0), (lambda a, b: a.T.reshape(-1), 1),
    (lambda a, b: a[1:, ::2], 0), (lambda a, b: a.copy(), 1),
    (lambda a, b: cp.ascontiguousarray(a.T), 1), (lambda a, b: cp.ascontiguousarray(a), 0),
    (lambda a, b: cp.pad(a, ((1, 1), (0, 0))), 3), (lambda a, b: cp.where(a > 0, a, b), 2),
], ids=["add", "exp", "scalar", "maximum", "astype", "astype-same", "sum", "max", "mean", "var",
        "zeros", "empty", "reshape-view", "reshape-copy", "slice", "copy", "contiguous-copy",
        "contiguous-view", "pad", "where"])
def test_each_call_is_charged_cupys_launches_and_no_sync(work, launches):
    a, b = device_array((6, 8)), device_array((6, 8), seed=1)
    summary = charged(lambda: work(a, b))
    assert counts(summary, "launches", "syncs", "h2d", "d2h") == (launches, 0, 0, 0), summary


def test_in_place_arithmetic_is_one_kernel():
    a, b = device_array((6, 8)), device_array((6, 8), seed=1)

    def work():
        c = a
        c += b
        c *= 0.5
        assert c is a
    assert charged(work)["kernels"] == 2


def test_reading_a_value_is_a_launch_a_copy_back_and_a_blocking_sync():
    a = device_array((6, 8))
    summary = charged(lambda: int(a.max()))
    assert counts(summary, "launches", "d2h", "syncs") == (1, 1, 1)
    for read in (lambda: float(a[0, 0]), lambda: a.sum().item(), lambda: a.get(),
                 lambda: bool(a[0, 0] > 0), lambda: f"{a.mean():.3f}", lambda: cp.asnumpy(a)):
        assert charged(read)["syncs"] == 1


def test_host_to_device_copies_are_counted_not_launched():
    summary = charged(lambda: cp.asarray(np.ones((10, 10), np.float32)))
    assert counts(summary, "launches", "h2d", "h2d_bytes", "syncs") == (0, 1, 400, 0)


def test_a_2d_dot_uses_transpose_flags_and_copies_only_a_strided_operand():
    a, b = device_array((32, 16)), device_array((32, 8), seed=1)
    summary = charged(lambda: a.T @ b)  # F-contiguous a.T: a transpose flag, no copy
    assert counts(summary, "gemms", "copies", "kernels") == (1, 0, 0)
    summary = charged(lambda: cp.dot(a[:, ::2].T, b))  # neither C nor F: copied first
    assert counts(summary, "gemms", "copies") == (1, 1)


def test_a_batched_matmul_copies_operands_that_are_not_c_contiguous():
    """_routines_linalg.pyx: ascontiguousarray on both operands when ndim > 2."""
    cols, rows = device_array((4, 9, 12)), device_array((4, 5, 12), seed=1)
    summary = charged(lambda: rows @ cols.transpose(0, 2, 1))
    assert counts(summary, "copies", "gemms", "launches") == (1, 1, 2)
    assert summary["bytes"] >= 2 * cols.nbytes  # the copy reads and writes the whole operand
    summary = charged(lambda: rows @ device_array((4, 12, 9), seed=2))
    assert counts(summary, "copies", "gemms") == (0, 1)


def test_a_2d_weight_times_3d_columns_takes_the_pointer_array_path():
    """One operand broadcasts over the batch: _mat_ptrs' 3 kernels, then gemmBatched."""
    w, cols = device_array((5, 12)), device_array((4, 12, 9), seed=1)
    summary = charged(lambda: w @ cols)
    assert counts(summary, "kernels", "gemms", "launches") == (3, 1, 4)


def test_concatenate_of_many_small_arrays_copies_pointer_tables_host_to_device():
    parts = [device_array((k + 1,), seed=k) for k in range(59)]
    summary = charged(lambda: cp.concatenate(parts))
    assert counts(summary, "kernels", "h2d") == (1, 3)  # unequal shapes: 3 tables
    same = [device_array((4,), seed=k) for k in range(12)]
    assert counts(charged(lambda: cp.stack(same)), "kernels", "h2d") == (1, 1)
    assert counts(charged(lambda: cp.concatenate(parts[:4])), "kernels", "h2d") == (4, 0)


def test_indexing_gathers_and_a_boolean_mask_syncs():
    a = device_array((6, 8))
    index = cp.asarray(np.array([0, 2, 5]))
    assert counts(charged(lambda: a[index]), "kernels", "syncs", "h2d") == (1, 0, 0)
    assert counts(charged(lambda: a[np.array([0, 2])]), "kernels", "h2d") == (1, 1)
    mask = a > 0
    assert counts(charged(lambda: a[mask]), "kernels", "syncs") == (2, 1)


def test_capture_refuses_host_reads_syncs_and_host_to_device_copies():
    a = device_array((4, 4))
    with cupy_standin.capture():
        b = (a * 2).sum(axis=0)  # device work is fine
        for forbidden in (lambda: int(b[0]), lambda: b.get(), lambda: cp.asarray(np.ones(2)),
                          lambda: backend.synchronize(), lambda: a[np.array([0])],
                          lambda: print(b)):
            with pytest.raises(cupy_standin.CaptureError, match="capture"):
                forbidden()
    assert float(b[0]) == float(a[:, 0].sum() * 2)


# --- failing where CuPy fails ------------------------------------------------------------------

def test_no_floating_point_warnings_as_on_a_gpu():
    a = cp.asarray(np.array([0.0, -1.0, 1e30], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = [cp.log(a), a / 0, a * a, np.sqrt(a), (a * 1e30).astype(np.float16)]
    assert not np.isfinite(values[0].get()).all()


def test_memory_is_held_while_any_view_lives():
    pool = cp.get_default_memory_pool()
    before = pool.used_bytes()
    a = cp.zeros(1000, dtype=np.float64)
    view = a[:10]
    del a
    assert pool.used_bytes() == before + 8000
    del view
    assert pool.used_bytes() == before
    strided = cp.zeros((10, 10))
    copied = strided.T.reshape(-1)  # NumPy returns a view of its own temporary copy
    assert pool.used_bytes() == before + 2 * 800
    del strided, copied


@pytest.mark.parametrize("refused", [
    lambda a: a.__setitem__(Ellipsis, np.ones(3)), lambda a: a.__setitem__(slice(0, 2), [1, 2]),
    lambda a: a + [1.0, 2.0, 3.0], lambda a: cp.add(a, [1.0, 2.0, 3.0]),
    lambda a: cp.maximum([1.0, 2.0, 3.0], a)],
    ids=["assign-host-array", "assign-list", "add-list", "ufunc-list", "module-list"])
def test_host_data_as_an_operand_or_assigned_in_is_refused(refused):
    with pytest.raises(TypeError, match="Unsupported type"):
        refused(cp.zeros(3))


def test_only_cupys_own_names():
    a = cp.zeros(3)
    with pytest.raises(AttributeError, match="stand-in has no cupy.histogram"):
        cp.histogram
    with pytest.raises(TypeError):
        np.histogram(a)  # NumPy's own function on a device array: CuPy does not dispatch it
    assert cp.float32 is np.float32 and cp.newaxis is None  # dtypes and constants are NumPy's


def test_set_limit_takes_a_fraction_of_the_device():
    pool = cp.get_default_memory_pool()
    try:
        pool.set_limit(fraction=0.5)
        assert pool.get_limit() == cupy_standin.DEVICE_BYTES // 2
    finally:
        pool.set_limit(size=0)
