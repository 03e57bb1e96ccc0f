"""minires.fast.gpu (the conv2d and batch_norm written for CuPy) against the readable references
in ops/conv.py and ops/norm.py: forward and every gradient, float64 to 1e-12 and float32 to 1e-5,
float64 gradchecks, the same error messages, and what each op keeps for its backward.

The ops are written against the array module, so these tests run them on NumPy; the `device`
fixture runs them on CuPy too where one answers (or the CPU stand-in, once it exists).
"""
import numpy as np
import pytest

import minires
from helpers import make
from minires import backend
from minires.fast import gpu
from minires.ops import conv as reference_conv
from minires.ops import norm as reference_norm

CONV_CASES = [  # (x shape, w shape, stride, padding, bias)
    ((3, 3, 8, 8), (5, 3, 3, 3), 1, 1, True),        # stride 1: dx and dW from the cols of gy
    ((3, 3, 9, 9), (5, 3, 3, 3), 2, 1, False),       # stride 2: cols of x again, col2im
    ((2, 2, 7, 6), (4, 2, 3, 2), (2, 1), (1, 0), True),
    ((2, 4, 6, 6), (6, 4, 1, 1), 2, 0, False),       # option-B projection shortcut
    ((2, 2, 5, 5), (3, 2, 2, 2), 1, 2, True),        # padding > kernel - 1: col2im at stride 1
    ((2, 3, 6, 7), (4, 3, 3, 2), 1, (1, 0), False),  # stride 1, kh != kw: the flipped gcols
    ((2, 4, 5, 5), (3, 4, 1, 1), 1, 0, True),        # 1x1 at stride 1
]


def run_op(fn, arrays, device, dtype, grads_of, upstream_seed=1):
    """fn(*tensors) forward, then backward under a fixed random upstream gradient.

    Returns the output and the gradient of each input (None where none was asked for)."""
    tensors = [None if a is None else make(a, device, requires_grad=i in grads_of, dtype=dtype)
               for i, a in enumerate(arrays)]
    y = fn(*tensors)
    upstream = np.random.default_rng(upstream_seed).standard_normal(y.shape).astype(dtype)
    y.backward(backend.to_device(upstream, device))
    grads = [None if t is None or t.grad is None else t.grad.numpy() for t in tensors]
    return y.numpy(), grads


def assert_pinned(fast, reference, dtype):
    """float64: to 1e-12; float32: to 1e-5 relative to each array's largest value."""
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for what, got, want in zip(("y", "grad 0", "grad 1", "grad 2"),
                               [fast[0], *fast[1]], [reference[0], *reference[1]]):
        assert (got is None) == (want is None), f"{what}: {got is None} vs {want is None}"
        if got is not None:
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


# --- conv2d --------------------------------------------------------------------------------------

def conv_arrays(rng, x_shape, w_shape, bias):
    b = rng.standard_normal(w_shape[0]) if bias else None
    return [rng.standard_normal(x_shape), rng.standard_normal(w_shape), b]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, bias", CONV_CASES)
def test_gpu_conv2d_matches_the_reference(device, rng, dtype, x_shape, w_shape, stride, padding,
                                          bias):
    """The GPU op on `device` against the reference on NumPy (on cuda: the GPU equals NumPy)."""
    arrays = conv_arrays(rng, x_shape, w_shape, bias)
    results = [run_op(lambda x, w, b: conv2d(x, w, b, stride=stride, padding=padding), arrays,
                      on, dtype, grads_of={0, 1, 2})
               for conv2d, on in ((gpu.conv2d, device), (reference_conv.conv2d, "cpu"))]
    assert_pinned(*results, dtype)


@pytest.mark.parametrize("stride", [1, 2])
def test_gpu_conv2d_without_a_gradient_for_x(device, rng, stride):
    """The first layer: x needs no gradient, so dW comes from the cols of x at every stride."""
    arrays = conv_arrays(rng, (3, 3, 8, 8), (4, 3, 3, 3), bias=False)
    results = [run_op(lambda x, w, b: conv2d(x, w, stride=stride, padding=1), arrays, device,
                      np.float64, grads_of={1})
               for conv2d in (gpu.conv2d, reference_conv.conv2d)]
    assert results[0][1][0] is None
    assert_pinned(*results, np.float64)


def test_gpu_conv2d_reads_any_memory_layout(device, rng):
    """A channels-last view (what the CPU fast ops return) gives the same result as NCHW."""
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    view = minires.Tensor(backend.to_device(x_nhwc, device).transpose(0, 3, 1, 2))
    y = gpu.conv2d(view, make(w, device), padding=1)
    np.testing.assert_allclose(y.numpy(), reference_conv.conv2d(make(x, "cpu"), make(w, "cpu"),
                                                                padding=1).numpy(), rtol=1e-12)


@pytest.mark.parametrize("stride, padding, wants_x", [(1, 1, True), (2, 1, True), (1, 1, False)],
                         ids=["stride1", "stride2", "no_x_grad"])
def test_gpu_conv2d_gradcheck(device, rng, stride, padding, wants_x):
    x = make(rng.standard_normal((2, 2, 5, 5)), device, requires_grad=wants_x)
    w = make(rng.standard_normal((3, 2, 3, 3)), device, requires_grad=True)
    b = make(rng.standard_normal(3), device, requires_grad=True)
    report = minires.gradcheck(lambda x, w, b: gpu.conv2d(x, w, b, stride, padding), x, w, b)
    assert report.ok, report


def test_gpu_conv2d_keeps_only_x_and_w(device, rng):
    """No cols are saved (the reference keeps kh*kw copies of x): only x and w, by identity."""
    x = make(rng.standard_normal((2, 3, 8, 8)), device, requires_grad=True)
    w = make(rng.standard_normal((4, 3, 3, 3)), device, requires_grad=True)
    y = gpu.conv2d(x, w, padding=1)
    saved = [v for v in vars(y.creator).values() if backend.is_array(v)]
    assert len(saved) == 2 and saved[0] is x.data and saved[1] is w.data
    y.sum().backward()
    assert not [v for v in vars(y.creator).values() if backend.is_array(v)]  # released


CONV_ERRORS = [  # (x shape, w shape, b shape, stride, padding)
    ((8, 4, 32, 32), (16, 3, 3, 3), None, 1, 0),
    ((4, 32, 32), (16, 4, 3, 3), None, 1, 0),
    ((1, 4, 8, 8), (16, 4, 3), None, 1, 0),
    ((1, 4, 8, 8), (16, 4, 3, 3), (15,), 1, 0),
    ((1, 4, 2, 2), (16, 4, 5, 5), None, 1, 1),
    ((1, 4, 8, 8), (16, 4, 3, 3), None, 0, 1),
    ((1, 4, 8, 8), (16, 4, 3, 3), None, "two", 1),
]


@pytest.mark.parametrize("x_shape, w_shape, b_shape, stride, padding", CONV_ERRORS)
def test_gpu_conv2d_errors_are_the_references(device, x_shape, w_shape, b_shape, stride, padding):
    def call(conv2d):
        b = None if b_shape is None else make(np.zeros(b_shape, np.float32), device)
        with pytest.raises((ValueError, TypeError)) as error:
            conv2d(make(np.zeros(x_shape, np.float32), device),
                   make(np.zeros(w_shape, np.float32), device), b, stride, padding)
        return error.type, str(error.value)

    got, want = call(gpu.conv2d), call(reference_conv.conv2d)
    assert got == want
    assert want[1].startswith("conv2d:")


# --- batch_norm ----------------------------------------------------------------------------------

def bn_call(batch_norm, running, training):
    """batch_norm(x, gamma, beta) with copies of the running statistics (or None)."""
    def call(x, gamma, beta):
        mean, var = (None, None) if running is None else (running[0], running[1])
        return batch_norm(x, gamma, beta, mean, var, training=training, momentum=0.3, eps=1e-5)
    return call


def bn_arrays(rng, shape):
    c = shape[1]
    return [rng.standard_normal(shape) * 2 + 0.5, rng.uniform(0.5, 2, c), rng.standard_normal(c)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (7, 4), (2, 2, 96, 96)],
                         ids=["NCHW", "NC", "sliced"])  # sliced: partial sums over 2 blocks
def test_gpu_batch_norm_matches_the_reference(device, rng, dtype, training, shape):
    """The GPU op on `device` against the reference on NumPy, running statistics included."""
    arrays = bn_arrays(rng, shape)
    start = [rng.standard_normal(shape[1]), rng.uniform(0.5, 2, shape[1])]
    results, running = [], []
    for batch_norm, on in ((gpu.batch_norm, device), (reference_norm.batch_norm, "cpu")):
        stats = [backend.to_device(s.astype(dtype), on) for s in start]
        results.append(run_op(bn_call(batch_norm, stats, training), arrays, on, dtype,
                              grads_of={0, 1, 2}))
        running.append([backend.to_numpy(s) for s in stats])
    assert_pinned(*results, dtype)
    for got, want in zip(*running):  # the running statistics move the same way
        np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("training, shape", [(True, (3, 2, 3, 4)), (True, (6, 3)),
                                             (False, (3, 2, 3, 4))], ids=["train", "NC", "eval"])
def test_gpu_batch_norm_gradcheck(device, rng, training, shape):
    x, gamma, beta = (make(a, device, requires_grad=True) for a in bn_arrays(rng, shape))
    stats = [backend.to_device(rng.standard_normal(shape[1]), device),
             backend.to_device(rng.uniform(0.5, 2, shape[1]), device)]
    running = None if training else stats
    report = minires.gradcheck(bn_call(gpu.batch_norm, running, training), x, gamma, beta)
    assert report.ok, report


def test_gpu_batch_norm_large_offset_float32(device, rng):
    """x = 1e4 + noise in float32: as close to the float64 truth as the reference gets."""
    x = (1e4 + rng.standard_normal((8, 3, 6, 6))).astype(np.float32)
    gamma, beta = np.ones(3), np.zeros(3)
    truth = run_op(bn_call(reference_norm.batch_norm, None, True), [x.astype(np.float64), gamma,
                                                                     beta], "cpu", np.float64, {0})
    errors = []
    for batch_norm in (gpu.batch_norm, reference_norm.batch_norm):
        got = run_op(bn_call(batch_norm, None, True), [x, gamma, beta], device, np.float32, {0})
        errors.append([np.abs(got[0] - truth[0]).max(), np.abs(got[1][0] - truth[1][0]).max()])
    (fast_y, fast_gx), (ref_y, ref_gx) = errors
    assert fast_y <= 2 * ref_y + 1e-5 and fast_gx <= 2 * ref_gx + 1e-5, errors


def test_gpu_batch_norm_constant_channel(device, rng):
    """A channel with one value everywhere: var = 0 exactly, y = beta there, all finite."""
    x = rng.standard_normal((4, 2, 3, 3))
    x[:, 1] = 7.25
    arrays = [x, np.array([1.5, 2.0]), np.array([0.1, -0.3])]
    fast = run_op(bn_call(gpu.batch_norm, None, True), arrays, device, np.float64, {0, 1, 2})
    reference = run_op(bn_call(reference_norm.batch_norm, None, True), arrays, device,
                       np.float64, {0, 1, 2})
    assert_pinned(fast, reference, np.float64)
    np.testing.assert_array_equal(fast[0][:, 1], -0.3)
    assert all(np.isfinite(g).all() for g in fast[1])


def test_gpu_batch_norm_reads_a_channels_first_view(device, rng):
    """x as the (C, N, H, W)-ordered memory of a GEMM output, seen as NCHW: no copy, same y."""
    arrays = bn_arrays(rng, (3, 4, 5, 6))
    channels_first = np.ascontiguousarray(arrays[0].transpose(1, 0, 2, 3))
    leaf = make(channels_first, device, requires_grad=True)
    x = leaf.transpose(1, 0, 2, 3)
    gamma, beta = (make(a, device, requires_grad=True) for a in arrays[1:])
    y = gpu.batch_norm(x, gamma, beta)
    assert y.creator.x is x.data  # read in place, through its strides
    want = run_op(bn_call(reference_norm.batch_norm, None, True), arrays, "cpu", np.float64,
                  {0, 1, 2})
    y.backward(backend.to_device(np.random.default_rng(1).standard_normal(y.shape), device))
    got = [y.numpy(), leaf.grad.numpy().transpose(1, 0, 2, 3), gamma.grad.numpy(),
           beta.grad.numpy()]
    for have, expected in zip(got, [want[0], *want[1]]):
        np.testing.assert_allclose(have, expected, rtol=1e-12, atol=1e-12)


def test_gpu_batch_norm_eval_saves_its_own_running_statistics(device, rng):
    """Issue 25's bypass: an eval forward, then a train-mode forward on the same buffers (they
    change in place), then the eval output's backward must still use the statistics it saw."""
    arrays = bn_arrays(rng, (4, 3, 5, 5))
    start = [rng.standard_normal(3), rng.uniform(0.5, 2, 3)]

    def eval_grad(train_in_between):
        running = [backend.to_device(s.copy(), device) for s in start]
        x, gamma, beta = (make(a, device, requires_grad=True) for a in arrays)
        y = gpu.batch_norm(x, gamma, beta, *running, training=False)
        if train_in_between:
            gpu.batch_norm(make(arrays[0] * 3 + 1, device), gamma, beta, *running, training=True)
        (y * y).sum().backward()
        return [t.grad.numpy() for t in (x, gamma, beta)]

    for changed, unchanged in zip(eval_grad(True), eval_grad(False)):
        np.testing.assert_array_equal(changed, unchanged)


def test_gpu_batch_norm_keeps_no_activation_sized_array_but_x(device, rng):
    """Saved for the backward: x (held by the graph anyway) and per-channel vectors; no x-hat."""
    x, gamma, beta = (make(a, device, requires_grad=True) for a in bn_arrays(rng, (4, 3, 5, 5)))
    y = gpu.batch_norm(x, gamma, beta)
    saved = [v for v in vars(y.creator).values() if backend.is_array(v)]
    big = [v for v in saved if v.size > 4 * 3]  # per-channel: (4, C) mean, var, 1/std, gamma/std
    assert len(big) == 1 and big[0] is x.data
    (y * y).sum().backward()
    assert not [v for v in vars(y.creator).values() if backend.is_array(v)]


BN_ERRORS = [  # (x shape, gamma shape, running shape, training)
    ((4, 3, 5, 5), (2,), None, True),
    ((4, 3, 5), (3,), None, True),
    ((4, 3, 5, 5), (3,), (4,), True),
    ((4, 3, 5, 5), (3,), None, False),
    ((1, 3), (3,), None, True),
]


@pytest.mark.parametrize("x_shape, gamma_shape, running_shape, training", BN_ERRORS)
def test_gpu_batch_norm_errors_are_the_references(device, x_shape, gamma_shape, running_shape,
                                                  training):
    def call(batch_norm):
        running = None if running_shape is None else [make(np.zeros(running_shape), device)] * 2
        with pytest.raises((ValueError, TypeError)) as error:
            bn_call(batch_norm, running, training)(
                make(np.zeros(x_shape), device), make(np.ones(gamma_shape), device),
                make(np.zeros(gamma_shape), device))
        return error.type, str(error.value)

    got, want = call(gpu.batch_norm), call(reference_norm.batch_norm)
    assert got == want
    assert want[1].startswith("batch_norm:")


# --- the switch ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(None, False), ("0", False), ("", False),
                                             ("1", True), ("on", True), ("TRUE", True)])
def test_enabled_reads_the_environment_and_is_off_by_default(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(gpu.ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(gpu.ENV_SWITCH, value)
    assert gpu.enabled() is expected


# --- bytes kept for the backward (benchmarks/saved_bytes.py) -------------------------------------

def load_benchmark(name):
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SavesAView(minires.autograd.Function):
    """y = 2x, keeping a view of x for its backward (counted once: x is its input too)."""

    def forward(self, x):
        self.first_row = x[:1]
        return 2 * x

    def backward(self, gy):
        return 2 * gy


def test_graph_bytes_counts_saved_and_held_arrays_once(rng):
    saved_bytes = load_benchmark("saved_bytes")
    x = make(rng.standard_normal((2, 3, 8, 8)), "cpu", requires_grad=True)
    w = make(rng.standard_normal((4, 3, 3, 3)), "cpu", requires_grad=True)
    x_bytes, cols_bytes = 2 * 3 * 8 * 8 * 8, 2 * 27 * 64 * 8      # float64; cols (N, C*9, H*W)
    for conv2d, saved in ((reference_conv.conv2d, cols_bytes), (gpu.conv2d, x_bytes)):
        y = conv2d(x, w, padding=1)
        got = saved_bytes.graph_bytes(y, exclude=[w.data])
        assert got == {"saved": saved, "held": x_bytes + (saved if saved != x_bytes else 0)}
    y = SavesAView().apply(x)
    assert saved_bytes.graph_bytes(y) == {"saved": x_bytes, "held": x_bytes}
    z = SavesAView().apply(y)   # y is z's input and saved (a view): counted once more, not twice
    assert saved_bytes.graph_bytes(z) == {"saved": 2 * x_bytes, "held": 2 * x_bytes}


# --- benchmarks/train_step.py's GPU variant, run on NumPy ------------------------------------------
def test_train_step_gpufast_variant_runs_the_fast_ops(device, monkeypatch):
    import minires.functional as F
    train_step = load_benchmark("train_step")
    seen, forward = [], gpu.GpuConv2d.forward
    monkeypatch.setattr(gpu.GpuConv2d, "forward",
                        lambda self, *a: seen.append("conv") or forward(self, *a))
    step, sync = train_step.minires_step(8, 2, device, gpu_fast=True)
    before = F.conv2d
    step()
    step()
    sync()
    assert seen and F.conv2d is before                   # swapped in for the step only
    infer, _ = train_step.minires_step(8, 2, device, infer=True, gpu_fast=True)
    count = len(seen)
    infer()
    assert len(seen) > count
    keys = train_step.ratio_keys(["minires", "minires-gpufast", "torch"])
    assert [k[0] for k in keys] == ["ratio_vs_torch", "minires-gpufast_ratio_vs_torch"]
    row = {"torch_memory": {"max_reserved_MB": 400.0}, "minires_memory": {"pool_MB": 1000.0},
           "minires-gpufast_memory": {"pool_MB": 500.0}}
    assert train_step.gpu_memory_ratios(row, ["minires", "minires-gpufast", "torch"]) == {
        "minires_memory_vs_torch": 2.5, "minires-gpufast_memory_vs_torch": 1.25}


def test_a_resnet_trains_the_same_with_the_gpu_fast_ops(device):
    """Two SGD steps of a ResNet-8 in float64, fused SGD and the GPU ops against the references:
    every parameter and running statistic agrees to 1e-10 (the ops composed: option-A
    shortcuts, strided convs, views between ops)."""
    import minires.functional as F
    from minires.models import cifar_resnet
    from minires.optim import SGD
    train_step = load_benchmark("train_step")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 16, 16))
    labels = rng.integers(0, 10, 4)
    results = []
    for conv2d, batch_norm, fused in ((gpu.conv2d, gpu.batch_norm, True),
                                      (reference_conv.conv2d, reference_norm.batch_norm, False)):
        backend.seed(0)
        model = cifar_resnet(8).astype(np.float64).to(device)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                  fused=fused)
        with train_step.functional_ops(conv2d, batch_norm):
            for _ in range(2):
                loss = F.cross_entropy(model(make(x, device)), make(labels, device))
                opt.zero_grad()
                loss.backward()
                opt.step()
        results.append(model.state_dict())  # NumPy copies
    fast, reference = results
    for key, want in reference.items():
        np.testing.assert_allclose(fast[key], want, rtol=1e-10, atol=1e-12, err_msg=key)


def test_functional_sends_cupy_arrays_to_the_gpu_ops_only_when_switched_on(device, monkeypatch, rng):
    """MINIRES_GPU_FAST_OPS=1 sends CuPy data (the stand-in in CI) to minires.fast.gpu; NumPy data
    keeps the CPU fast ops, and with the switch off CuPy data runs the references."""
    import minires.functional as F
    w = make(rng.standard_normal((4, 3, 3, 3)), device)
    gamma, beta = make(np.ones(3), device), make(np.zeros(3), device)
    for switch in ("0", "1"):
        monkeypatch.setenv(gpu.ENV_SWITCH, switch)
        on_gpu_ops = switch == "1" and device == "cuda"
        y = F.conv2d(make(rng.standard_normal((2, 3, 6, 6)), device, requires_grad=True), w)
        z = F.batch_norm(make(rng.standard_normal((2, 3, 6, 6)), device, requires_grad=True),
                         gamma, beta)
        assert isinstance(y.creator, gpu.GpuConv2d) == on_gpu_ops, (device, switch)
        assert isinstance(z.creator, gpu.GpuBatchNorm) == on_gpu_ops, (device, switch)
