"""nn.Module machinery, layers, init and residual blocks.

Module: registration, traversal, state_dict with torch's key names, strict loading and its errors,
train/eval, .to(device), forward and backward hooks. Layers: BatchNorm2d against
torch.nn.BatchNorm2d, torch's default init bounds, Kaiming fan_out, the AdaptiveAvgPool2d limit.
Blocks: shortcut options A/B/C (module types, parameter counts) and the one residual_add per block.

Tests marked `torch` compare against PyTorch and skip cleanly without it.
"""
import math

import numpy as np
import pytest

import minires
from minires import autograd, backend, nn
from minires import functional as F
from minires.nn.blocks import make_shortcut

from helpers import import_torch, make


# --- small modules used across the tests ----------------------------------------------------------

class TwoLayer(nn.Module):
    """fc1 -> relu -> fc2, plus a hand-registered Parameter and buffer."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(3, 2, bias=False)
        self.scale = nn.Parameter(np.ones((2,), dtype=np.float32))
        self.register_buffer("steps", np.zeros((), dtype=np.int64))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale


class Shortcut(nn.Module):
    """y = x + inner(x): the input feeds both the hooked child and a shortcut around it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return F.residual_add(x, self.inner(x))


def count_ops(model, x, name="residual_add"):
    """How many ops called `name` one forward of `model` on `x` runs."""
    seen = []
    remove = autograd.add_forward_observer(
        lambda fn, inputs, output: seen.append(fn.name) if fn.name == name else None)
    try:
        model(x)
    finally:
        remove()
    return len(seen)


def param_count(module):
    return sum(int(p.size) for p in module.parameters())


# --- registration and traversal -------------------------------------------------------------------

def test_parameters_are_registered_in_assignment_order_with_dotted_names():
    m = TwoLayer()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "fc1.weight", "fc1.bias", "fc2.weight"]
    params = list(m.parameters())
    assert len(params) == 4
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
    assert params[1] is m.fc1.weight
    assert m.num_parameters() == 2 + 4 * 3 + 3 + 3 * 2
    # the buffer is state, not a parameter
    assert "steps" not in names


def test_parameter_registration_replacement_and_removal():
    m = nn.Module()
    m.w = nn.Parameter(np.zeros((2, 3), dtype=np.float32))
    assert [n for n, _ in m.named_parameters()] == ["w"]
    m.w = nn.Parameter(np.ones((5,), dtype=np.float32))  # re-assigning replaces, never duplicates
    assert [(n, p.shape) for n, p in m.named_parameters()] == [("w", (5,))]
    m.w = np.zeros(3)  # a plain array is an attribute, not a parameter
    assert list(m.named_parameters()) == []
    m.child = nn.Linear(2, 2)
    del m.child
    assert list(m.children()) == [] and list(m.named_parameters()) == []
    plain = nn.Parameter(minires.tensor([1.0, 2.0]))  # from a Tensor: shares its data
    assert plain.requires_grad and plain.is_leaf and plain.shape == (2,)


def test_a_module_or_parameter_replaces_an_earlier_plain_attribute():
    """torch's pattern `self.downsample = None`, then a module later: the module must win."""
    m = nn.Module()
    m.downsample = None
    m.downsample = nn.Identity()
    assert isinstance(m.downsample, nn.Identity)
    m.bias = None
    m.bias = nn.Parameter(np.zeros(2, dtype=np.float32))
    assert isinstance(m.bias, nn.Parameter)
    assert [n for n, _ in m.named_parameters()] == ["bias"]
    m.bias = None  # and back to a plain attribute: no longer a parameter
    assert m.bias is None and list(m.named_parameters()) == []


def test_assigning_to_a_buffer_keeps_it_a_buffer():
    bn = nn.BatchNorm2d(3)
    bn.running_mean = np.full(3, 2.0, dtype=np.float32)
    np.testing.assert_array_equal(bn.state_dict()["running_mean"], np.full(3, 2.0))
    assert "running_mean" in dict(bn.named_buffers())


def test_assigning_before_super_init_raises_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"super\(\)\.__init__\(\)"):
        Broken()


def test_named_modules_and_children():
    m = TwoLayer()
    assert [n for n, _ in m.named_modules()] == ["", "fc1", "act", "fc2"]
    assert list(m.children()) == [m.fc1, m.act, m.fc2]
    assert [n for n, _ in m.named_children()] == ["fc1", "act", "fc2"]
    block = nn.BasicBlock(16, 32, stride=2, shortcut="B")
    names = [n for n, _ in block.named_modules()]
    assert names == ["", "conv1", "bn1", "conv2", "bn2", "relu", "downsample",
                     "downsample.0", "downsample.1"]
    outer = nn.Sequential(block)
    assert [n for n, _ in outer.named_modules()][-2:] == ["0.downsample.0", "0.downsample.1"]


def test_sequential_indexing_len_and_iteration():
    layers = [nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3
    assert seq[0] is layers[0] and seq[2] is layers[2] and seq[-1] is layers[2]
    assert list(seq) == layers
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(IndexError):
        seq[3]
    seq.append(nn.ReLU())
    assert len(seq) == 4 and isinstance(seq[3], nn.ReLU)
    # forward runs the children in order
    x = minires.tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32))
    expected = F.relu(layers[2](layers[1](layers[0](x))))
    np.testing.assert_array_equal(seq(x).numpy(), expected.numpy())


# --- state_dict and load_state_dict ---------------------------------------------------------------

def test_state_dict_has_torch_key_names_parameters_then_buffers():
    block = nn.BasicBlock(16, 32, stride=2, shortcut="B")
    keys = list(block.state_dict())
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = (["conv1.weight"] + [f"bn1.{k}" for k in bn] + ["conv2.weight"]
                + [f"bn2.{k}" for k in bn] + ["downsample.0.weight"]
                + [f"downsample.1.{k}" for k in bn])
    assert sorted(keys) == sorted(expected)
    state = block.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["conv1.weight"].shape == (32, 16, 3, 3)
    assert state["bn1.num_batches_tracked"].dtype == np.int64
    assert state["bn1.num_batches_tracked"].shape == ()


def test_state_dict_returns_copies_not_views():
    m = TwoLayer()
    state = m.state_dict()
    state["fc1.weight"][...] = 123.0
    assert not np.any(backend.to_numpy(m.fc1.weight.data) == 123.0)


def test_load_state_dict_round_trip_copies_every_value():
    src, dst = TwoLayer(), TwoLayer()
    src.fc1.weight.data[...] = 0.5
    src._buffers["steps"] = np.array(7, dtype=np.int64)
    missing, unexpected = dst.load_state_dict(src.state_dict())
    assert missing == [] and unexpected == []
    for key, value in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[key], value, err_msg=key)
    assert int(dst.state_dict()["steps"]) == 7


def test_load_state_dict_keeps_the_modules_dtype():
    m = nn.Linear(3, 2)
    m.load_state_dict({"weight": np.ones((2, 3), dtype=np.float64),
                       "bias": np.zeros(2, dtype=np.float64)})
    assert m.weight.dtype == np.float32 and m.bias.dtype == np.float32
    np.testing.assert_array_equal(m.weight.numpy(), np.ones((2, 3)))


def test_load_state_dict_strict_lists_missing_keys():
    m = TwoLayer()
    state = m.state_dict()
    del state["fc1.bias"], state["fc2.weight"]
    with pytest.raises(KeyError) as info:
        m.load_state_dict(state)
    message = str(info.value)
    assert "missing" in message and "fc1.bias" in message and "fc2.weight" in message


def test_load_state_dict_strict_lists_unexpected_keys():
    m = TwoLayer()
    state = m.state_dict()
    state["fc3.weight"] = np.zeros((2, 2), dtype=np.float32)
    before = m.fc1.weight.numpy().copy()
    state["fc1.weight"] = before + 1
    with pytest.raises(KeyError) as info:
        m.load_state_dict(state)
    assert "unexpected" in str(info.value) and "fc3.weight" in str(info.value)
    # nothing was loaded by the failed strict call
    np.testing.assert_array_equal(m.fc1.weight.numpy(), before)


def test_load_state_dict_shape_mismatch_names_the_key_and_both_shapes():
    m = TwoLayer()
    state = m.state_dict()
    state["fc1.weight"] = np.zeros((3, 5), dtype=np.float32)
    with pytest.raises(ValueError) as info:
        m.load_state_dict(state)
    message = str(info.value)
    assert "fc1.weight" in message and "(3, 5)" in message and "(3, 4)" in message
    with pytest.raises(ValueError, match="fc1.weight"):  # shapes are checked when not strict too
        m.load_state_dict(state, strict=False)


def test_load_state_dict_non_strict_returns_missing_and_unexpected():
    m = TwoLayer()
    state = m.state_dict()
    del state["scale"]
    state["extra.weight"] = np.zeros(1, dtype=np.float32)
    state["fc2.weight"] = np.full((2, 3), 2.0, dtype=np.float32)
    missing, unexpected = m.load_state_dict(state, strict=False)
    assert list(missing) == ["scale"]
    assert list(unexpected) == ["extra.weight"]
    np.testing.assert_array_equal(m.fc2.weight.numpy(), np.full((2, 3), 2.0))  # the rest loads
    np.testing.assert_array_equal(m.scale.numpy(), np.ones(2))  # the missing one is untouched


# --- modes and devices ----------------------------------------------------------------------------

def test_train_and_eval_propagate_to_every_descendant():
    net = nn.Sequential(nn.BasicBlock(4, 8, stride=2, shortcut="B"), nn.Linear(2, 2))
    modules = list(net.modules())
    assert len(modules) == 11 and all(m.training for m in modules)
    assert net.eval() is net
    assert not any(m.training for m in modules)
    net.train()
    assert all(m.training for m in modules)
    net.train(False)
    assert not any(m.training for m in modules)


def test_eval_mode_batch_norm_uses_running_statistics():
    bn = nn.BatchNorm2d(3)
    x = minires.tensor(np.random.default_rng(1).standard_normal((4, 3, 2, 2)).astype(np.float32) + 5)
    y_train = bn(x).numpy()
    np.testing.assert_allclose(y_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    bn.eval()
    before = bn.state_dict()["running_mean"]
    y_eval = bn(x).numpy()
    np.testing.assert_array_equal(bn.state_dict()["running_mean"], before)  # eval: no update
    assert int(bn.num_batches_tracked) == 1
    assert y_eval.mean() > 1  # running mean is only 0.1 of the way to 5


def test_to_device_moves_parameters_gradients_and_buffers(device):
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    m[0].weight.grad = minires.Tensor(np.ones((4, 3, 3, 3), dtype=np.float32))
    values = {k: v.copy() for k, v in m.state_dict().items()}
    assert m.to(device) is m
    assert m.device == device
    assert all(p.device == device for p in m.parameters())
    assert m[0].weight.grad.device == device
    assert all(backend.device_of(b) == device for _, b in m.named_buffers())
    for key, value in m.state_dict().items():
        np.testing.assert_array_equal(value, values[key], err_msg=key)
    x = make(np.random.default_rng(2).standard_normal((2, 3, 5, 5)), device, dtype=np.float32)
    y = m(x)
    assert y.device == device and y.shape == (2, 4, 5, 5)
    with pytest.raises(ValueError, match="unknown device"):
        m.to("tpu")


# --- hooks ----------------------------------------------------------------------------------------

def test_forward_pre_hook_sees_inputs_and_forward_hook_replaces_output():
    m = nn.Linear(3, 2)
    x = minires.tensor(np.ones((1, 3), dtype=np.float32))
    calls = []
    pre = m.register_forward_pre_hook(lambda mod, inputs: calls.append(("pre", mod, inputs[0])))
    post = m.register_forward_hook(lambda mod, inputs, out: out * 0 + 7)
    y = m(x)
    assert calls == [("pre", m, x)]
    np.testing.assert_array_equal(y.numpy(), np.full((1, 2), 7.0))
    seen = []
    observe = m.register_forward_hook(lambda mod, inputs, out: seen.append(out.numpy().copy()))
    m(x)
    np.testing.assert_array_equal(seen[0], np.full((1, 2), 7.0))  # later hooks see the replacement
    pre.remove()
    post.remove()
    observe.remove()
    y = m(x)
    expected = x.numpy() @ m.weight.numpy().T + m.bias.numpy()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)
    assert len(calls) == 2 and len(seen) == 1
    pre.remove()  # removing twice is harmless


def test_full_backward_hook_grad_input_excludes_the_shortcut():
    rng = np.random.default_rng(3)
    inner = nn.Linear(4, 4, bias=False)
    net = Shortcut(inner)
    recorded = []
    handle = inner.register_full_backward_hook(
        lambda mod, grad_input, grad_output: recorded.append((mod, grad_input, grad_output)))
    x = minires.tensor(rng.standard_normal((2, 4)).astype(np.float32), requires_grad=True)
    g = rng.standard_normal((2, 4)).astype(np.float32)
    net(x).backward(backend.to_device(g, x.device))
    assert len(recorded) == 1
    mod, grad_input, grad_output = recorded[0]
    assert mod is inner and len(grad_input) == 1 and len(grad_output) == 1
    w = inner.weight.numpy()
    np.testing.assert_allclose(grad_output[0].numpy(), g, rtol=1e-6)
    np.testing.assert_allclose(grad_input[0].numpy(), g @ w, rtol=1e-5, atol=1e-6)
    # the input's full gradient still has both paths: the hook changed nothing
    np.testing.assert_allclose(x.grad.numpy(), g + g @ w, rtol=1e-5, atol=1e-6)
    handle.remove()
    x.grad = None
    net(x).backward(backend.to_device(g, x.device))
    assert len(recorded) == 1
    np.testing.assert_allclose(x.grad.numpy(), g + g @ w, rtol=1e-5, atol=1e-6)


def test_full_backward_hook_fires_when_the_input_needs_no_grad():
    """As torch: a first layer (image input) still reports grad_output, with grad_input (None,)."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    recorded = []
    conv.register_full_backward_hook(lambda mod, gi, go: recorded.append((gi, go)))
    x = minires.tensor(np.ones((1, 3, 4, 4), dtype=np.float32))
    conv(x).sum().backward()
    assert len(recorded) == 1
    grad_input, grad_output = recorded[0]
    assert grad_input == (None,)
    np.testing.assert_array_equal(grad_output[0].numpy(), np.ones((1, 2, 4, 4)))


@pytest.mark.torch
def test_full_backward_hooks_on_a_basic_block_match_torch():
    """conv1's input also feeds the identity shortcut: grad_input is the conv's share only."""
    torch = import_torch()
    tnn = torch.nn
    rng = np.random.default_rng(4)

    class TorchBlock(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn1 = tnn.BatchNorm2d(8)
            self.conv2 = tnn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn2 = tnn.BatchNorm2d(8)
            self.relu = tnn.ReLU()

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(out + x)

    block = nn.BasicBlock(8, 8, shortcut="A")
    tblock = TorchBlock()
    tblock.load_state_dict({k: torch.from_numpy(v) for k, v in block.state_dict().items()})
    x = rng.standard_normal((2, 8, 5, 5))
    g = rng.standard_normal((2, 8, 5, 5))

    def record(store):
        def hook(mod, grad_input, grad_output):
            store.append([np.asarray(backend.to_numpy(t.data if isinstance(t, minires.Tensor)
                                                      else t.detach().numpy()), dtype=np.float64)
                          for t in (grad_input[0], grad_output[0])])
        return hook

    ours, theirs = [], []
    for mod in (block.conv1, block.bn2, block):
        mod.register_full_backward_hook(record(ours))
    for mod in (tblock.conv1, tblock.bn2, tblock):
        mod.register_full_backward_hook(record(theirs))
    xm = minires.tensor(x.astype(np.float32), requires_grad=True)
    block(xm).backward(backend.to_device(g.astype(np.float32), xm.device))
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    tblock(xt).backward(torch.tensor(g, dtype=torch.float32))
    assert len(ours) == len(theirs) == 3
    for (gi, go), (tgi, tgo) in zip(ours, theirs):
        scale = np.abs(tgi).max()
        np.testing.assert_allclose(go, tgo, rtol=1e-4, atol=1e-5 * np.abs(tgo).max())
        np.testing.assert_allclose(gi, tgi, rtol=1e-4, atol=1e-4 * scale)
    # the whole block's grad_input is the input's full gradient; conv1's is not
    np.testing.assert_allclose(ours[2][0], xm.grad.numpy(), rtol=1e-6)
    assert not np.allclose(ours[0][0], xm.grad.numpy(), atol=1e-3)


# --- layers against torch -------------------------------------------------------------------------

@pytest.mark.torch
def test_batchnorm2d_running_stats_and_eval_output_match_torch(device):
    torch = import_torch()
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm2d(4, momentum=0.1)
    tbn = torch.nn.BatchNorm2d(4, momentum=0.1)
    weight, bias = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    bn.load_state_dict({**bn.state_dict(), "weight": weight, "bias": bias})
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(weight))
        tbn.bias.copy_(torch.tensor(bias))
    bn.to(device)
    for step in range(3):
        x = (rng.standard_normal((3, 4, 5, 5)) * rng.uniform(0.5, 3, (1, 4, 1, 1))
             + rng.standard_normal((1, 4, 1, 1)) * 2)
        y = bn(make(x, device, dtype=np.float32))
        ty = tbn(torch.tensor(x, dtype=torch.float32))
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    state = bn.state_dict()
    for key in ("running_mean", "running_var"):
        np.testing.assert_allclose(state[key], getattr(tbn, key).numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    assert int(state["num_batches_tracked"]) == int(tbn.num_batches_tracked) == 3
    assert not np.allclose(state["running_var"], 1.0)  # it really moved
    bn.eval()
    tbn.eval()
    x = rng.standard_normal((2, 4, 3, 3)) * 2 + 1
    y = bn(make(x, device, dtype=np.float32))
    ty = tbn(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert int(bn.state_dict()["num_batches_tracked"]) == 3  # eval does not count


# --- initialisation -------------------------------------------------------------------------------

@pytest.mark.parametrize("make_layer, fan_in", [
    (lambda: nn.Conv2d(64, 128, 3), 64 * 9),
    (lambda: nn.Conv2d(32, 64, (1, 1)), 32),
    (lambda: nn.Linear(500, 300), 500),
])
def test_conv_and_linear_default_init_is_uniform_within_one_over_sqrt_fan_in(make_layer, fan_in):
    np.random.seed(0)
    layer = make_layer()
    bound = 1 / math.sqrt(fan_in)
    for p in (layer.weight, layer.bias):
        values = p.numpy()
        assert np.abs(values).max() <= bound
        if values.size >= 1000:  # a uniform on [-b, b]: fills the range, std b/sqrt(3)
            assert np.abs(values).max() > 0.99 * bound
            assert abs(values.std() / (bound / math.sqrt(3)) - 1) < 0.05
            assert abs(values.mean()) < 0.05 * bound
    assert layer.bias.numpy().std() > 0.2 * bound  # the bias is initialised too, not zeros


def test_kaiming_normal_fan_out_std():
    np.random.seed(1)
    w = nn.Parameter(np.zeros((256, 128, 3, 3), dtype=np.float32))
    nn.init.kaiming_normal_(w, mode="fan_out")
    values = w.numpy()
    expected = math.sqrt(2.0 / (256 * 9))
    assert abs(values.std() / expected - 1) < 0.02
    assert abs(values.mean()) < 0.02 * expected
    assert w.dtype == np.float32
    nn.init.kaiming_normal_(w, mode="fan_in")
    assert abs(w.numpy().std() / math.sqrt(2.0 / (128 * 9)) - 1) < 0.02
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.kaiming_normal_(nn.Parameter(np.zeros(4, dtype=np.float32)))


def test_adaptive_avg_pool_only_supports_output_size_one():
    with pytest.raises(ValueError, match="output_size=1"):
        nn.AdaptiveAvgPool2d(2)
    pool = nn.AdaptiveAvgPool2d((1, 1))
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    y = pool(minires.tensor(x))
    assert y.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(y.numpy(), x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)


# --- blocks and shortcuts -------------------------------------------------------------------------

def test_shortcut_option_a_zero_pads_with_no_parameters():
    same = make_shortcut("A", 16, 16, 1)
    down = make_shortcut("A", 16, 32, 2)
    assert isinstance(same, nn.Identity) and isinstance(down, nn.PadChannels)
    assert param_count(down) == 0 and list(down.state_dict()) == []
    x = np.random.default_rng(6).standard_normal((2, 16, 6, 6)).astype(np.float32)
    y = down(minires.tensor(x)).numpy()
    assert y.shape == (2, 32, 3, 3)
    np.testing.assert_array_equal(y[:, :8], 0)
    np.testing.assert_array_equal(y[:, 24:], 0)
    np.testing.assert_array_equal(y[:, 8:24], x[:, :, ::2, ::2])


@pytest.mark.parametrize("option, in_c, out_c, stride, projects", [
    ("A", 16, 16, 1, False), ("A", 16, 32, 2, False), ("A", 16, 32, 1, False),
    ("B", 16, 16, 1, False), ("B", 16, 32, 2, True), ("B", 16, 32, 1, True), ("B", 16, 16, 2, True),
    ("C", 16, 16, 1, True), ("C", 16, 32, 2, True),
])
def test_make_shortcut_projects_only_where_the_option_says(option, in_c, out_c, stride, projects):
    s = make_shortcut(option, in_c, out_c, stride)
    if projects:
        assert isinstance(s, nn.Sequential) and len(s) == 2
        conv, bn = s
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        assert conv.kernel_size == (1, 1) and conv.stride == stride and conv.bias is None
        assert param_count(s) == in_c * out_c + 2 * out_c
    else:
        assert isinstance(s, (nn.Identity, nn.PadChannels)) and param_count(s) == 0


def test_make_shortcut_rejects_unknown_option():
    with pytest.raises(ValueError, match="shortcut option"):
        make_shortcut("D", 16, 32, 2)


@pytest.mark.parametrize("option, downsample_type, params", [
    ("A", nn.PadChannels, 16 * 32 * 9 + 32 * 32 * 9 + 4 * 32),
    ("B", nn.Sequential, 16 * 32 * 9 + 32 * 32 * 9 + 4 * 32 + 16 * 32 + 2 * 32),
    ("C", nn.Sequential, 16 * 32 * 9 + 32 * 32 * 9 + 4 * 32 + 16 * 32 + 2 * 32),
])
def test_basic_block_that_changes_shape_per_shortcut_option(option, downsample_type, params):
    block = nn.BasicBlock(16, 32, stride=2, shortcut=option)
    assert type(block.downsample) is downsample_type
    assert block.num_parameters() == params
    x = minires.tensor(np.random.default_rng(7).standard_normal((2, 16, 8, 8)).astype(np.float32))
    assert block(x).shape == (2, 32, 4, 4)


@pytest.mark.parametrize("option, downsample_type, params", [
    ("A", nn.Identity, 2 * 16 * 16 * 9 + 4 * 16),
    ("B", nn.Identity, 2 * 16 * 16 * 9 + 4 * 16),
    ("C", nn.Sequential, 2 * 16 * 16 * 9 + 4 * 16 + 16 * 16 + 2 * 16),
])
def test_basic_block_that_keeps_shape_per_shortcut_option(option, downsample_type, params):
    block = nn.BasicBlock(16, 16, shortcut=option)
    assert type(block.downsample) is downsample_type
    assert block.num_parameters() == params


def test_plain_block_has_no_shortcut_and_no_residual_add():
    block = nn.PlainBlock(16, 32, stride=2)
    assert "downsample" not in dict(block.named_children())
    assert block.num_parameters() == 16 * 32 * 9 + 32 * 32 * 9 + 4 * 32
    x = minires.tensor(np.random.default_rng(8).standard_normal((2, 16, 8, 8)).astype(np.float32))
    assert count_ops(block, x) == 0
    assert block(x).shape == (2, 32, 4, 4)


def test_bottleneck_matches_torchvision_layer1_block():
    block = nn.Bottleneck(64, 64, shortcut="B")  # torchvision resnet50 layer1.0
    assert block.num_parameters() == 75008
    assert block.conv2.stride == 1 and block.conv1.kernel_size == (1, 1)
    assert isinstance(block.downsample, nn.Sequential)
    down = nn.Bottleneck(256, 128, stride=2, shortcut="B")  # layer2.0: stride on the 3x3 (v1.5)
    assert down.conv1.stride == 1 and down.conv2.stride == 2 and down.downsample[0].stride == 2
    same = nn.Bottleneck(256, 64, shortcut="B")
    assert isinstance(same.downsample, nn.Identity)
    x = minires.tensor(np.random.default_rng(9).standard_normal((2, 256, 6, 6)).astype(np.float32))
    assert down(x).shape == (2, 512, 3, 3)


@pytest.mark.parametrize("option, params", [
    ("A", 2 * 16 + 16 * 32 * 9 + 2 * 32 + 32 * 32 * 9),
    ("B", 2 * 16 + 16 * 32 * 9 + 2 * 32 + 32 * 32 * 9 + 16 * 32 + 2 * 32),
])
def test_preact_block_parameters_and_shortcut(option, params):
    block = nn.PreActBlock(16, 32, stride=2, shortcut=option)
    assert block.num_parameters() == params
    assert block.bn1.num_features == 16 and block.bn2.num_features == 32
    assert block.projects == (option == "B")
    x = minires.tensor(np.random.default_rng(10).standard_normal((2, 16, 8, 8)).astype(np.float32))
    assert block(x).shape == (2, 32, 4, 4)


@pytest.mark.parametrize("make_block, x_shape", [
    (lambda: nn.BasicBlock(8, 8, shortcut="A"), (2, 8, 6, 6)),
    (lambda: nn.BasicBlock(8, 16, stride=2, shortcut="A"), (2, 8, 6, 6)),
    (lambda: nn.BasicBlock(8, 16, stride=2, shortcut="C"), (2, 8, 6, 6)),
    (lambda: nn.Bottleneck(16, 4, shortcut="B"), (2, 16, 6, 6)),
    (lambda: nn.PreActBlock(8, 16, stride=2, shortcut="B"), (2, 8, 6, 6)),
])
def test_every_residual_block_joins_with_one_residual_add(make_block, x_shape):
    block = make_block()
    x = minires.tensor(np.random.default_rng(11).standard_normal(x_shape).astype(np.float32))
    assert count_ops(block, x) == 1


def test_residual_add_joins_shortcut_and_branch_exactly():
    """The block output is relu(shortcut(x) + branch(x)), joined by the named op."""
    block = nn.BasicBlock(8, 16, stride=2, shortcut="A")
    x = minires.tensor(np.random.default_rng(12).standard_normal((2, 8, 6, 6)).astype(np.float32))
    joined = []
    remove = autograd.add_forward_observer(
        lambda fn, inputs, out: joined.append([backend.to_numpy(a).copy()
                                               for a in [t.data for t in inputs] + [out.data]])
        if fn.name == "residual_add" else None)
    try:
        y = block(x).numpy()
    finally:
        remove()
    (shortcut, branch, out), = joined
    np.testing.assert_array_equal(shortcut, block.downsample(x).numpy())
    np.testing.assert_allclose(branch, block.branch(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(y, np.maximum(out, 0), rtol=1e-6)
