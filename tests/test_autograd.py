"""The Tensor API and the autograd engine: dtypes, broadcasting operators, no_grad, hooks, gradient
accumulation (PyTorch's rules: leaves accumulate, zero_grad clears, retain_grad keeps an
intermediate), freed graphs, devices, and a graph deeper than Python's recursion limit."""
import sys

import numpy as np
import pytest

import minires
import minires.functional as F
from minires import backend
from helpers import make


# --- the Tensor API -------------------------------------------------------------------------------

def test_tensor_dtype_defaults(device):
    assert minires.tensor([1.0, 2.5], device=device).dtype == np.float32  # Python floats
    assert minires.tensor(1.5, device=device).dtype == np.float32
    assert minires.tensor([1, 2, 3], device=device).dtype == np.int64     # Python ints
    assert minires.tensor(np.arange(3.0), device=device).dtype == np.float64  # NumPy: kept
    assert minires.tensor(np.arange(3, dtype=np.int32), device=device).dtype == np.int32
    assert minires.tensor([1, 2], dtype=np.float32, device=device).dtype == np.float32
    assert minires.tensor(np.arange(3.0), dtype="float32", device=device).dtype == np.float32


def test_tensor_attributes(device):
    values = np.arange(6.0).reshape(2, 3)
    t = make(values, device, requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2
    assert t.dtype == np.float64
    assert t.device == device
    assert backend.device_of(t.data) == device
    assert t.requires_grad and t.is_leaf and t.grad is None
    assert isinstance(t.numpy(), np.ndarray)
    np.testing.assert_array_equal(t.numpy(), values)
    on_cpu = t.to("cpu")
    assert on_cpu.device == "cpu" and isinstance(on_cpu.data, np.ndarray)
    np.testing.assert_array_equal(on_cpu.numpy(), values)
    assert make(np.float64(2.5), device).item() == 2.5


def test_grad_is_a_tensor_on_the_same_device(device):
    x = make(np.array([1.0, -2.0, 3.0]), device, requires_grad=True)
    (x * x).sum().backward()
    assert isinstance(x.grad, minires.Tensor)
    assert x.grad.device == device and x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -4.0, 6.0])


def test_default_device_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MINIRES_DEVICE", "cpu")
    assert backend.default_device() == "cpu"
    assert minires.tensor([1.0]).device == "cpu"
    monkeypatch.setenv("MINIRES_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backend.default_device()


# --- operators ------------------------------------------------------------------------------------

def test_broadcasting_operators_and_their_gradients(device):
    a = make(np.arange(3.0).reshape(3, 1), device, requires_grad=True)
    b = make(np.arange(8.0).reshape(2, 1, 4), device, requires_grad=True)
    y = a + b
    assert y.shape == (2, 3, 4)
    expected = np.arange(3.0).reshape(3, 1) + np.arange(8.0).reshape(2, 1, 4)
    np.testing.assert_array_equal(y.numpy(), expected)
    y.sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (2, 1, 4)
    np.testing.assert_array_equal(a.grad.numpy(), np.full((3, 1), 8.0))  # 2 * 4 copies of each
    np.testing.assert_array_equal(b.grad.numpy(), np.full((2, 1, 4), 3.0))


@pytest.mark.parametrize("expression, expected", [
    (lambda t: t + 1.5, lambda v: v + 1.5),
    (lambda t: 1.5 + t, lambda v: 1.5 + v),
    (lambda t: t - 2, lambda v: v - 2),
    (lambda t: 2 - t, lambda v: 2 - v),
    (lambda t: t * 3.0, lambda v: v * 3.0),
    (lambda t: 3.0 * t, lambda v: 3.0 * v),
    (lambda t: t / 4.0, lambda v: v / 4.0),
    (lambda t: 4.0 / t, lambda v: 4.0 / v),
    (lambda t: t ** 2, lambda v: v ** 2),
    (lambda t: -t, lambda v: -v),
    (lambda t: np.float64(2.0) * t, lambda v: 2.0 * v),  # NumPy scalars take the tensor's dtype
], ids=["add", "radd", "sub", "rsub", "mul", "rmul", "div", "rdiv", "pow", "neg", "np-scalar"])
def test_python_scalars_keep_float32(device, expression, expected):
    values = np.array([[0.5, 1.0, 2.0], [-1.0, 3.0, 4.0]], dtype=np.float32)
    result = expression(make(values, device))
    assert result.dtype == np.float32
    np.testing.assert_allclose(result.numpy(), expected(values), rtol=1e-6)


def test_array_on_the_left_calls_the_reflected_operator(device):
    xp = backend.module_for(device)
    t = make(np.array([1.0, 2.0], dtype=np.float32), device, requires_grad=True)
    y = xp.asarray([3.0, 4.0], dtype=np.float32) * t
    assert isinstance(y, minires.Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [3.0, 4.0])


@pytest.mark.parametrize("op", [
    lambda x: F.max(x, axis=1), lambda x: F.mean(x, axis=0), lambda x: F.sum(x),
    lambda x: F.relu(x), lambda x: F.sigmoid(x), lambda x: F.tanh(x), lambda x: x ** 2,
    lambda x: F.log_softmax(x), lambda x: F.cross_entropy(x, np.array([0, 2])),
    lambda x: F.getitem(x, (np.array([0, 0]), slice(None))), lambda x: F.pad(x, ((1, 0), (0, 2))),
], ids=["max", "mean", "sum", "relu", "sigmoid", "tanh", "pow", "log_softmax", "cross_entropy",
        "getitem", "pad"])
def test_float32_stays_float32_through_backward(device, op):
    x = make(np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=np.float32), device,
             requires_grad=True)
    y = op(x)
    assert y.dtype == np.float32
    y.backward(make(np.ones(y.shape, dtype=np.float32), device))
    assert x.grad.dtype == np.float32, f"gradient came back as {x.grad.dtype}"


# --- no_grad --------------------------------------------------------------------------------------

def test_no_grad_records_no_graph(device):
    x = make(np.ones(3), device, requires_grad=True)
    with minires.no_grad():
        y = x * 2 + 1
    assert not y.requires_grad and y.creator is None
    np.testing.assert_array_equal(y.numpy(), [3.0, 3.0, 3.0])
    z = x * 2  # recording resumes after the block
    assert z.requires_grad and z.creator is not None


def test_no_grad_restores_recording_after_an_exception(device):
    x = make(np.ones(2), device, requires_grad=True)
    with pytest.raises(ZeroDivisionError):
        with minires.no_grad():
            1 / 0
    assert (x * 2).requires_grad


# --- hooks ----------------------------------------------------------------------------------------

def test_hook_sees_the_gradient(device):
    x = make(np.array([1.0, 2.0, 3.0]), device, requires_grad=True)
    y = x * 3.0
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    (y * y).sum().backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * np.array([3.0, 6.0, 9.0]))  # d(y^2)/dy = 2y


def test_hook_can_replace_the_gradient_and_be_removed(device):
    x = make(np.array([1.0, 2.0]), device, requires_grad=True)

    def loss():
        y = x * 3.0
        handle = y.register_hook(lambda g: g * 0 + 1)  # pretend dL/dy = 1
        return (y * y).sum(), handle

    value, handle = loss()
    value.backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])  # 1 * dy/dx, not 2y * 3
    x.zero_grad()
    y = x * 3.0
    handle = y.register_hook(lambda g: g * 0 + 1)
    handle.remove()
    handle.remove()  # a second remove is harmless
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [18.0, 36.0])  # 2y * 3: the hook is gone


def test_leaf_hook_sees_the_summed_gradient(device):
    x = make(np.array([1.0, 2.0]), device, requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().copy()))
    (x * 2 + x * 5).sum().backward()
    assert len(seen) == 1  # once, with both paths added
    np.testing.assert_allclose(seen[0], [7.0, 7.0])


# --- accumulation ---------------------------------------------------------------------------------

def test_leaves_accumulate_across_backward_calls_and_zero_grad_clears(device):
    x = make(np.array([1.0, -2.0]), device, requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -4.0])
    (x * x).sum().backward()  # a fresh graph: the leaf adds up, as in PyTorch
    np.testing.assert_allclose(x.grad.numpy(), [4.0, -8.0])
    x.zero_grad()
    assert x.grad is None
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -4.0])


def test_diamond_graph_accumulates(device):
    x = make(np.array([1.5, -0.5]), device, requires_grad=True)
    a = x * 2.0          # x -> a -> (b, c) -> d: a is used twice
    b = a * a
    c = a * 3.0
    d = (b + c + x).sum()
    d.backward()
    # d = 4x^2 + 6x + x  ->  dd/dx = 8x + 7
    np.testing.assert_allclose(x.grad.numpy(), 8 * np.array([1.5, -0.5]) + 7)


def test_retain_grad_keeps_an_intermediate_gradient(device):
    x = make(np.array([1.0, 2.0]), device, requires_grad=True)
    h = (x * 2.0).retain_grad()
    g = h * h
    g.sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * np.array([2.0, 4.0]))
    assert g.grad is None  # not retained
    np.testing.assert_allclose(x.grad.numpy(), 8 * np.array([1.0, 2.0]))


# --- errors ---------------------------------------------------------------------------------------

def test_backward_through_a_freed_graph_names_the_op(device):
    x = make(np.array([1.0, 2.0]), device, requires_grad=True)
    y = F.tanh(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="sum") as info:
        y.backward()
    assert "retain_graph=True" in str(info.value)


def test_retain_graph_allows_a_second_backward(device):
    x = make(np.array([1.0, 2.0]), device, requires_grad=True)
    y = (x * x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 3 * np.array([1.0, 4.0]))


def test_backward_of_a_non_scalar_needs_a_gradient(device):
    x = make(np.ones((2, 3)), device, requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"single-element.*\(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(make(np.ones((3, 2)), device))
    y.backward(make(np.full((2, 3), 0.5), device))
    np.testing.assert_allclose(x.grad.numpy(), np.ones((2, 3)))


def test_backward_takes_a_numpy_gradient_on_any_device(device):
    x = make(np.array([1.0, 2.0], dtype=np.float32), device, requires_grad=True)
    y = x * 3.0
    y.backward(np.array([1.0, -1.0]))  # float64 NumPy, even for a float32 tensor on the GPU
    assert x.grad.device == device and x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [3.0, -3.0])


def test_backward_without_a_graph_is_an_error(device):
    with pytest.raises(RuntimeError, match="does not require grad"):
        make(np.ones(1), device).backward()


@pytest.mark.cuda  # a real GPU, or the CuPy stand-in
def test_mixing_devices_names_the_op_and_both_devices():
    a = make(np.ones((2, 3)), "cpu")
    b = make(np.ones((2, 3)), "cuda")
    with pytest.raises(ValueError) as info:
        F.mul(a, b)
    message = str(info.value)
    for part in ("mul", "cpu", "cuda", "(2, 3)"):
        assert part in message, message


@pytest.mark.cuda  # a real GPU, or the CuPy stand-in
@pytest.mark.parametrize("source, target", [("cpu", "cuda"), ("cuda", "cpu")])
def test_to_is_differentiable(source, target):
    values = np.array([1.0, -2.0, 3.0])
    x = make(values, source, requires_grad=True)
    y = F.to(x, target)
    assert y.device == target
    (y * y).sum().backward()
    assert x.grad.device == source
    np.testing.assert_allclose(x.grad.numpy(), 2 * values)
    report = minires.gradcheck(lambda t: F.to(t, target) * 3.0, make(values, source, True))
    assert report.ok, str(report)


# --- depth ----------------------------------------------------------------------------------------

def test_a_chain_deeper_than_the_recursion_limit(device):
    depth = 5000
    assert depth > sys.getrecursionlimit()
    x = make(np.array(1.0), device, requires_grad=True)
    y = x
    for _ in range(depth):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 1.0001 ** depth, rtol=1e-9)
    del y  # tearing the chain down must not overflow either


# --- in-place changes: the version counter ---------------------------------------------------------

def test_version_counts_in_place_changes_through_minires():
    t = minires.tensor(np.arange(3.0))
    assert t._version == 0
    t.data *= 2                         # the same array back: an in-place change
    t.copy_([5.0, 6.0, 7.0])
    assert t._version == 2
    np.testing.assert_array_equal(t.numpy(), [5.0, 6.0, 7.0])
    t.data = np.zeros(3)                # a new array: the old one, wherever saved, is intact
    assert t._version == 2


@pytest.mark.parametrize("change", ["augmented", "copy_"])
def test_backward_refuses_a_saved_input_changed_in_place(change):
    x = minires.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    w = minires.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    y = (x * w).sum()                   # mul saves x and w for its backward
    if change == "augmented":
        w.data += 1
    else:
        w.copy_(np.zeros(3))
    with pytest.raises(RuntimeError, match=r"input 1 of mul .* modified in place after the forward"
                                           r" \(version 0 then, 1 now\)"):
        y.backward()


def test_an_optimizer_step_before_backward_is_caught():
    """The classic slip: step() between forward and backward changes the saved weights."""
    from minires.nn import Linear
    from minires.optim import SGD
    layer = Linear(3, 2)
    loss = layer(minires.tensor(np.ones((4, 3), np.float32))).sum()
    layer.weight.grad = minires.tensor(np.ones((2, 3), np.float32))
    SGD(layer.parameters(), lr=0.1).step()
    with pytest.raises(RuntimeError, match=r"of linear .* modified in place"):
        loss.backward()


def test_replacing_data_or_changing_after_backward_is_fine():
    x = minires.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    x.data = np.array([10.0, 20.0])     # a new array: the graph still holds the old one
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    x.data -= 1                         # after backward: nothing saved is read again
    assert x._version == 1


@pytest.mark.parametrize("bypass", [
    pytest.param(lambda a: _augment(a.detach(), "mul", 0), id="a.detach().data *= 0"),
    pytest.param(lambda a: _augment(a.reshape(6), "mul", 0), id="a.reshape(6).data *= 0"),
    pytest.param(lambda a: _augment(a[1:4], "add", 100), id="a[1:4].data += 100"),
    pytest.param(lambda a: _augment(a.T, "mul", 0), id="a.T.data *= 0"),
    pytest.param(lambda a: a.flatten(0)[2:].reshape(2, 2).detach().copy_(np.zeros((2, 2))),
                 id="a view of a view of a, copy_"),
])
def test_a_change_through_a_view_is_a_change_of_its_base(device, bypass):
    """PyTorch catches all of these: views share their base's version counter."""
    a = make(np.arange(6.0).reshape(3, 2), device, requires_grad=True)
    b = make(np.full((3, 2), 2.0), device, requires_grad=True)
    y = (a * b).sum()
    bypass(a)
    with pytest.raises(RuntimeError, match=r"input 0 of mul .* modified in place"):
        y.backward()


def _augment(view, op, value):
    """view.data *= value (op "mul") or view.data += value ("add"), as a statement would."""
    if op == "mul":
        view.data *= value
    else:
        view.data += value


def test_a_copy_does_not_share_the_count(device):
    """Ops that copy (advanced indexing, arithmetic) give their output a count of its own."""
    a = make(np.arange(6.0).reshape(3, 2), device, requires_grad=True)
    b = make(np.full((3, 2), 2.0), device)
    y = (a * b).sum()
    picked = a[np.array([0, 2])]                # advanced indexing copies
    picked.data *= 0
    (a + 0).data *= 0
    y.backward()
    np.testing.assert_array_equal(backend.to_numpy(a.grad.data), np.full((3, 2), 2.0))


@pytest.mark.parametrize("fused", [False, True], ids=["per-parameter", "fused"])
def test_every_optimizer_step_counts_a_change_of_each_parameter(fused):
    """The fused SGD writes one flat buffer: it counts a change of every parameter, as the
    per-parameter update does, so a step between forward and backward is caught either way."""
    from minires.nn import Linear
    from minires.optim import SGD
    layer = Linear(3, 2)
    opt = SGD(layer.parameters(), lr=0.1, momentum=0.9, fused=fused)
    for p in layer.parameters():
        p.grad = minires.tensor(np.ones(p.shape, np.float32))
    opt.step()                                  # the fused optimizer builds its buffer here
    before = [p._version for p in layer.parameters()]
    loss = layer(minires.tensor(np.ones((4, 3), np.float32))).sum()
    opt.step()
    assert [p._version for p in layer.parameters()] == [v + 1 for v in before]
    with pytest.raises(RuntimeError, match=r"of linear .* modified in place"):
        loss.backward()
