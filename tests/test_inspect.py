"""minires.inspect: the "+1" split, per-layer statistics, Jacobians, anomaly mode, and the numbers
the paper's argument rests on (plain vs residual gradient norms at initialisation)."""
import threading
import warnings
import weakref

import numpy as np
import pytest

import minires
from minires import autograd, backend, inspect, models
from minires import functional as F
from minires.ops.arithmetic import Mul

from helpers import make


def _batch(device, n=8, seed=0):
    x, y, _ = inspect.one_batch(n, "synthetic", seed, device)
    return minires.tensor(x.data, requires_grad=True, device=device), y


def _recorded(model, x, y, keep_arrays=True):
    with inspect.record(model, keep_arrays=keep_arrays) as rec:
        F.cross_entropy(model(x), y).backward()
    return rec


def _model(device, depth=8, seed=0, **kwargs):
    minires.manual_seed(seed)
    return models.cifar_resnet(depth, **kwargs).to(device)


def _grads(model):
    return {name: backend.to_numpy(p.grad.data) for name, p in model.named_parameters()}


@pytest.mark.parametrize("kwargs", [{}, {"preact": True}, {"shortcut": "C"}])
def test_recording_changes_no_number(device, kwargs):
    x, y = _batch(device)
    plain_run = _model(device, **kwargs)
    F.cross_entropy(plain_run(x), y).backward()
    expected, expected_x = _grads(plain_run), backend.to_numpy(x.grad.data)
    x.zero_grad()
    recorded_run = _model(device, **kwargs)
    _recorded(recorded_run, x, y)
    got = _grads(recorded_run)
    assert got.keys() == expected.keys()
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name
    assert np.array_equal(backend.to_numpy(x.grad.data), expected_x)


def test_identity_shortcut_passes_g_exactly_and_parts_sum_to_input_gradient(device):
    x, y = _batch(device)
    rec = _recorded(_model(device, depth=14), x, y)
    identity_blocks = [b for b in rec.block_stats if b["shortcut"] == "identity"]
    assert len(identity_blocks) == 4  # 6 blocks, two of which (layer2.0, layer3.0) change shape
    for stats in rec.block_stats:
        arrays = rec.arrays(stats["block"])
        xp = backend.xp(arrays["add_grad"])
        assert xp.array_equal(arrays["shortcut"] + arrays["branch"], arrays["input_grad"])
        assert stats["shortcut_is_g"] == (stats["shortcut"] == "identity")
        if stats["shortcut"] == "identity":
            assert xp.array_equal(arrays["shortcut"], arrays["add_grad"])  # equality, not closeness
            assert stats["shortcut_grad_norm"] == stats["add_grad_norm"]
        assert 0 < stats["shortcut_ratio"] < 1
        assert -1 <= stats["cosine"] <= 1


def test_option_a_shortcut_part_is_g_unpadded_and_unstrided(device):
    x, y = _batch(device)
    rec = _recorded(_model(device), x, y)
    arrays = rec.arrays("layer2.0")  # 16 -> 32 channels, stride 2
    g = backend.to_numpy(arrays["add_grad"])
    expected = np.zeros(backend.to_numpy(arrays["shortcut"]).shape, dtype=g.dtype)
    expected[:, :, ::2, ::2] = g[:, 8:24]
    assert np.array_equal(backend.to_numpy(arrays["shortcut"]), expected)


def test_projection_shortcut_part_is_its_vector_jacobian_product(device):
    x, y = _batch(device)
    model = _model(device, shortcut="C")
    block_inputs = {}
    block = model.layer1[0]
    block.register_forward_pre_hook(lambda m, inputs: block_inputs.setdefault("x", inputs[0]))
    rec = _recorded(model, x, y)
    arrays = rec.arrays("layer1.0")
    assert not rec.block_stats[0]["shortcut_is_g"]
    # Ws^T g through the projection conv and its BN, computed on its own from the same input
    x0 = minires.tensor(block_inputs["x"].data, requires_grad=True, device=device)
    block.downsample(x0).backward(arrays["add_grad"])
    np.testing.assert_allclose(backend.to_numpy(x0.grad.data),
                               backend.to_numpy(arrays["shortcut"]), rtol=1e-4, atol=1e-7)


def test_relu_after_the_add_masks_the_gradient_but_preact_does_not(device):
    x, y = _batch(device)
    original = _recorded(_model(device, depth=14), x, y)
    arrays = original.arrays("layer1.1")
    mask = backend.to_numpy(arrays["output"]) > 0  # the ReLU that follows the add
    g = backend.to_numpy(arrays["add_grad"])
    assert np.array_equal(g, backend.to_numpy(arrays["output_grad"]) * mask)
    assert original.block_stats[1]["add_grad_norm"] < original.block_stats[1]["output_grad_norm"]
    preact = _recorded(_model(device, depth=14, preact=True), x, y)
    pre = preact.arrays("layer1.1")
    assert backend.xp(pre["add_grad"]).array_equal(pre["add_grad"], pre["output_grad"])


def test_preact_projection_splits_at_the_preactivated_input(device):
    x, y = _batch(device)
    rec = _recorded(_model(device, preact=True, shortcut="B"), x, y)
    split = {b["block"]: b["split_at"] for b in rec.block_stats}
    assert split["layer1.0"] == "input"
    assert split["layer2.0"] == "pre-activation"


def test_layer_table_has_every_conv_and_linear(device):
    x, y = _batch(device)
    model = _model(device)
    rec = _recorded(model, x, y, keep_arrays=False)
    layers = (minires.nn.Conv2d, minires.nn.Linear)
    convs = [n for n, m in model.named_modules() if isinstance(m, layers)]
    assert [r["layer"] for r in rec.layers] == convs
    for row in rec.layers:
        assert row["input_grad_norm"] > 0 and row["weight_grad_norm"] > 0
        assert np.isfinite(row["output_std"])
    bn_rows = [r for r in rec.layers if "bn_output_std" in r]
    assert len(bn_rows) == len(convs) - 1  # every conv is followed by a BN; the fc is not
    for row in bn_rows:  # a BN output in training mode has std ~1 (gamma = 1 at init)
        assert abs(row["bn_output_std"] - 1) < 1e-2


def test_plain_net_has_block_norms_but_no_split(device):
    x, y = _batch(device)
    rec = _recorded(_model(device, residual=False), x, y, keep_arrays=False)
    assert all(b["shortcut"] == "none" for b in rec.block_stats)
    assert all("shortcut_grad_norm" not in b for b in rec.block_stats)
    assert all(b["input_grad_norm"] > 0 for b in rec.block_stats)


def test_a_recorder_keeps_the_numbers_and_lets_the_graph_go(device, no_stray_frees):
    """Once the `with` ends, no op of the recorded pass (each holding its saved arrays) is alive,
    with the garbage collector off: the Recorder keeps numbers, not the graph. Deleting the
    Recorder then frees it and the model at once, with no reference cycle left for the collector."""
    ops = []
    remove = autograd.add_forward_observer(lambda fn, _inputs, _output: ops.append(weakref.ref(fn)))
    try:
        x, y = _batch(device)
        model = _model(device, depth=14)
        with inspect.record(model, keep_arrays=True) as rec:
            F.cross_entropy(model(x), y).backward()
    finally:
        remove()
    assert len(ops) > 50 and all(op() is None for op in ops)
    assert rec.arrays("layer1.0")["shortcut"] is not None and rec.summary() > 0
    recorder, net = weakref.ref(rec), weakref.ref(model)
    del rec, model
    assert recorder() is None and net() is None


def test_a_recorder_hears_nothing_after_its_with_block(device):
    """The hooks it put on the pass's tensors go with the others: a later backward through the
    same input leaves the recorded numbers as they were."""
    x, y = _batch(device)
    model = _model(device)
    rec = _recorded(model, x, y, keep_arrays=False)
    numbers = [dict(row) for row in rec.layers] + [dict(stats) for stats in rec.block_stats]
    F.cross_entropy(model(x * 3.0), y).backward()
    assert [dict(row) for row in rec.layers] + [dict(stats) for stats in rec.block_stats] == numbers


def test_a_backward_outside_the_with_block_is_told_not_silently_missing(device):
    x, y = _batch(device)
    model = _model(device)
    with pytest.warns(RuntimeWarning, match=r"no gradient reached the model inside the `with` "
                                            r"block.*call loss.backward\(\) inside it"):
        with inspect.record(model) as rec:
            loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert all("input_grad_norm" not in row for row in rec.layers)


def test_a_forward_only_record_under_no_grad_warns_nothing(device):
    """Forward statistics alone (tutorial 7's layer responses) are a use, not a mistake."""
    x, _ = _batch(device)
    model = _model(device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with minires.no_grad(), inspect.record(model) as rec:
            model(x)
    assert all("output_std" in row for row in rec.layers)


def test_asking_for_arrays_that_were_not_kept_or_do_not_exist_says_what_there_is(device):
    x, y = _batch(device)
    model = _model(device)
    with pytest.raises(KeyError, match=r"keep_arrays=True"):
        _recorded(model, x, y, keep_arrays=False).arrays("layer1.0")
    with pytest.raises(KeyError, match=r"no residual block at 'layer1'; the blocks are: "
                                       r"layer1.0, layer2.0, layer3.0"):
        _recorded(model, x, y).arrays("layer1")


def test_jacobian_of_residual_block_is_identity_plus_branch_jacobian(device):
    minires.manual_seed(0)
    block = minires.nn.BasicBlock(2, 2, shortcut="A").to(device).astype(np.float64).eval()
    x = make(np.random.default_rng(0).standard_normal((1, 2, 3, 3)), device)
    full = inspect.jacobian(lambda t: F.residual_add(t, block.branch(t)), x)
    branch = inspect.jacobian(block.branch, x)
    np.testing.assert_allclose(full, np.eye(18) + branch, atol=1e-12)
    linear = np.random.default_rng(1).standard_normal((4, 18))
    w = make(linear, device)
    np.testing.assert_allclose(inspect.jacobian(lambda t: F.matmul(w, t.reshape(18, 1)), x),
                               linear, atol=1e-12)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # the inf is the point
def test_detect_anomaly_names_op_and_layer_in_forward_and_backward(device):
    model = minires.nn.Sequential(minires.nn.Linear(3, 2)).to(device)
    x = make(np.ones((1, 3), dtype=np.float32), device)
    model[0].weight.data[...] = float("nan")
    with pytest.raises(FloatingPointError, match=r"linear in layer '0'"):
        with minires.detect_anomaly():
            model(x)
    z = make(np.array([0.0, 1.0]), device, requires_grad=True)
    y = F.pow(z, 0.5).sum()
    with pytest.raises(FloatingPointError, match=r"backward of pow"):
        with minires.detect_anomaly():
            y.backward()
    z.zero_grad()
    F.pow(z + 1.0, 0.5).sum().backward()  # no error outside anomaly mode or when finite
    assert np.isfinite(z.grad.numpy()).all()


def test_anomaly_mode_is_per_thread():
    """Another thread's log(-1), while this thread is in anomaly mode, raises neither there nor
    here; this thread's own log(-1) does."""
    assert inspect.detect_anomaly is minires.detect_anomaly
    entered, other_done, errors = threading.Event(), threading.Event(), []

    def other_thread():
        entered.wait(30)
        try:
            with np.errstate(invalid="ignore"):
                F.log(minires.tensor([-1.0], device="cpu"))
        except Exception as error:  # noqa: BLE001 - the test reports whatever was raised
            errors.append(error)
        other_done.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with minires.detect_anomaly():
        entered.set()
        assert other_done.wait(30)
        with pytest.raises(FloatingPointError, match="forward of log"), \
                np.errstate(invalid="ignore"):
            F.log(minires.tensor([-1.0], device="cpu"))
    worker.join()
    assert errors == []


def test_observers_get_the_op_its_input_tensors_its_output_and_the_gradients(device):
    """The public contract inspect and anomaly mode are built on (minires.autograd)."""
    seen = []
    removers = [
        autograd.add_forward_observer(lambda op, inputs, output: seen.append((op, inputs, output))),
        autograd.add_backward_observer(lambda op, inputs, grad_output, grad_inputs: seen.append(
            (op, inputs, grad_output, grad_inputs)))]
    try:
        a = make(np.array([1.0, 2.0]), device, requires_grad=True)
        b = make(np.array([3.0, 4.0]), device)
        y = F.mul(a, b)
        y.backward(np.array([1.0, 10.0]))
    finally:
        for remove in removers:
            remove()
    (op, inputs, output), (op_again, inputs_again, grad_output, grad_inputs) = seen
    assert isinstance(op, Mul) and op_again is op and op.name == "mul"
    assert inputs[0] is a and inputs[1] is b and inputs_again == inputs and output is y
    np.testing.assert_array_equal(backend.to_numpy(grad_output), [1.0, 10.0])
    assert len(grad_inputs) == 2  # one per input (None where an op skips an unneeded one)
    np.testing.assert_array_equal(backend.to_numpy(grad_inputs[0]), [3.0, 40.0])


def _ratios(depth, batch_norm, seeds):
    out = {"plain": [], "residual": []}
    for seed in seeds:
        x, y, _ = inspect.one_batch(32, "synthetic", seed)
        for net, residual in (("plain", False), ("residual", True)):
            rec = inspect.record_gradients(depth, residual, x, y, batch_norm, seed)
            out[net].append(rec.summary())
    return {net: float(np.median(v)) for net, v in out.items()}


@pytest.mark.slow
def test_with_bn_plain_gradients_grow_toward_the_input_and_residual_far_less():
    """||dL/dx| at block-1 input / at last block input, He init, batch 32, median of 3 seeds.

    Measured here: plain-20 ~20, ResNet-20 ~9, plain-56 ~4e3..8e3, ResNet-56 ~33..45.
    """
    r20, r56 = _ratios(20, True, (0, 1, 2)), _ratios(56, True, (0, 1, 2))
    assert 3 < r20["plain"] < 100 and 1.5 < r20["residual"] < 40
    assert r20["plain"] > 1.5 * r20["residual"]
    assert 1e3 < r56["plain"] < 1e5
    assert 10 < r56["residual"] < 300
    assert r56["plain"] > 30 * r56["residual"]


@pytest.mark.slow
def test_without_bn_plain_gradients_vanish_and_residual_do_not():
    """PyTorch's default conv init, no BN: plain nets' input gradients vanish by many orders."""
    r20, r56 = _ratios(20, False, (0,)), _ratios(56, False, (0,))
    assert r20["plain"] < 1e-4
    assert r56["plain"] < 1e-15
    assert 0.05 < r20["residual"] < 20 and 0.05 < r56["residual"] < 20
