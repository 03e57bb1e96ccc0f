"""Bad input to every op gives a ValueError or TypeError (IndexError for getitem) that names the op
and the shapes involved, never an error from deep inside NumPy (Chainer's lesson: "conv2d: x has 4
channels, w expects 3 (x: (8, 4, 32, 32), w: (16, 3, 3, 3))")."""
import numpy as np
import pytest

import minires.functional as F
from helpers import make


def f32(*shape):
    return np.zeros(shape, dtype=np.float32)


def f64(*shape):
    return np.zeros(shape, dtype=np.float64)


def i64(*shape):
    return np.zeros(shape, dtype=np.int64)


# (id, expected error, function of the device, substrings the message must contain)
CASES = [
    # arithmetic
    ("add-broadcast", ValueError, lambda d: F.add(make(f32(2, 3), d), make(f32(4), d)),
     ["add", "(2, 3)", "(4,)"]),
    ("sub-broadcast", ValueError, lambda d: F.sub(make(f32(2, 3, 4), d), make(f32(3, 1, 5), d)),
     ["sub", "(2, 3, 4)", "(3, 1, 5)"]),
    ("mul-broadcast", ValueError, lambda d: make(f32(3, 2), d) * make(f32(3), d),
     ["mul", "(3, 2)", "(3,)"]),
    ("div-broadcast", ValueError, lambda d: make(f32(5,), d) / make(f32(4,), d),
     ["div", "(5,)", "(4,)"]),
    ("add-int", TypeError, lambda d: F.add(make(i64(2, 3), d), make(f32(2, 3), d)),
     ["add", "int64", "(2, 3)"]),
    ("mul-mixed-float", TypeError, lambda d: F.mul(make(f32(2, 3), d), make(f64(2, 3), d)),
     ["mul", "float32", "float64", "(2, 3)"]),
    ("pow-int", TypeError, lambda d: F.pow(make(i64(2, 3), d), 2), ["pow", "int64", "(2, 3)"]),
    ("pow-tensor-exponent", TypeError, lambda d: F.pow(make(f32(2), d), make(f32(2), d)),
     ["pow", "exponent"]),
    ("exp-int", TypeError, lambda d: F.exp(make(i64(4, 5), d)), ["exp", "int64", "(4, 5)"]),
    ("log-int", TypeError, lambda d: F.log(make(i64(4, 5), d)), ["log", "int64", "(4, 5)"]),
    # activations
    ("relu-int", TypeError, lambda d: F.relu(make(i64(4, 5), d)), ["relu", "int64", "(4, 5)"]),
    ("sigmoid-int", TypeError, lambda d: F.sigmoid(make(i64(4, 5), d)), ["sigmoid", "(4, 5)"]),
    ("tanh-int", TypeError, lambda d: F.tanh(make(i64(4, 5), d)), ["tanh", "(4, 5)"]),
    # reductions
    ("sum-axis", ValueError, lambda d: F.sum(make(f32(2, 3), d), axis=2),
     ["sum", "axis 2", "(2, 3)"]),
    ("mean-axis", ValueError, lambda d: F.mean(make(f32(2, 3), d), axis=(0, -3)),
     ["mean", "axis -3", "(2, 3)"]),
    ("max-axis", ValueError, lambda d: F.max(make(f32(2, 3), d), axis=5),
     ["max", "axis 5", "(2, 3)"]),
    ("sum-int", TypeError, lambda d: F.sum(make(i64(2, 3), d)), ["sum", "int64", "(2, 3)"]),
    # shape
    ("reshape", ValueError, lambda d: F.reshape(make(f32(2, 3), d), (4, 2)),
     ["reshape", "(2, 3)", "(4, 2)"]),
    ("reshape-two-free", ValueError, lambda d: F.reshape(make(f32(2, 3), d), (-1, -1)),
     ["reshape", "(2, 3)", "(-1, -1)"]),
    ("reshape-indivisible", ValueError, lambda d: make(f32(2, 3), d).reshape(4, -1),
     ["reshape", "(2, 3)", "(4, -1)"]),
    ("transpose", ValueError, lambda d: F.transpose(make(f32(2, 3), d), (0, 0)),
     ["transpose", "(0, 0)", "(2, 3)"]),
    ("transpose-rank", ValueError, lambda d: F.transpose(make(f32(2, 3), d), (0, 1, 2)),
     ["transpose", "(0, 1, 2)", "(2, 3)"]),
    ("getitem-range", IndexError, lambda d: make(f32(2, 3), d)[:, 3], ["getitem", "(2, 3)"]),
    ("getitem-too-many", IndexError, lambda d: make(f32(2, 3), d)[0, 0, 0], ["getitem", "(2, 3)"]),
    ("getitem-fancy", IndexError, lambda d: make(f32(2, 3), d)[np.array([0, 2])],
     ["getitem", "(2, 3)"]),
    ("pad-count", ValueError, lambda d: F.pad(make(f32(2, 3), d), ((1, 1),)),
     ["pad", "((1, 1),)", "(2, 3)"]),
    ("pad-negative", ValueError, lambda d: F.pad(make(f32(2, 3), d), ((1, 1), (0, -1))),
     ["pad", "(0, -1)", "(2, 3)"]),
    ("pad-not-pairs", TypeError, lambda d: F.pad(make(f32(2, 3), d), 1), ["pad", "(2, 3)"]),
    ("concat-shapes", ValueError,
     lambda d: F.concat([make(f32(2, 3), d), make(f32(2, 4), d)], axis=0),
     ["concat", "(2, 3)", "(2, 4)"]),
    ("concat-rank", ValueError, lambda d: F.concat([make(f32(2, 3), d), make(f32(2, 3, 1), d)]),
     ["concat", "(2, 3)", "(2, 3, 1)"]),
    ("concat-axis", ValueError,
     lambda d: F.concat([make(f32(2, 3), d), make(f32(2, 3), d)], axis=2),
     ["concat", "axis 2", "(2, 3)"]),
    ("concat-mixed-float", TypeError,
     lambda d: F.concat([make(f32(2, 3), d), make(f64(1, 3), d)]), ["concat", "(2, 3)", "(1, 3)"]),
    ("flatten", ValueError, lambda d: F.flatten(make(f32(2, 3), d), 2), ["flatten", "(2, 3)"]),
    # linear algebra
    ("matmul-inner", ValueError, lambda d: F.matmul(make(f32(2, 3), d), make(f32(4, 5), d)),
     ["matmul", "(2, 3)", "(4, 5)"]),
    ("matmul-rank", ValueError, lambda d: F.matmul(make(f32(3), d), make(f32(3, 2), d)),
     ["matmul", "(3,)", "(3, 2)"]),
    ("matmul-batch", ValueError, lambda d: F.matmul(make(f32(2, 3, 4), d), make(f32(5, 4, 2), d)),
     ["matmul", "(2, 3, 4)", "(5, 4, 2)"]),
    ("matmul-int", TypeError, lambda d: F.matmul(make(i64(2, 3), d), make(i64(3, 2), d)),
     ["matmul", "int64", "(2, 3)"]),
    ("linear-features", ValueError, lambda d: F.linear(make(f32(8, 10), d), make(f32(5, 12), d)),
     ["linear", "(8, 10)", "(5, 12)"]),
    ("linear-rank", ValueError, lambda d: F.linear(make(f32(8, 2, 5), d), make(f32(3, 5), d)),
     ["linear", "(8, 2, 5)", "(3, 5)"]),
    ("linear-bias", ValueError,
     lambda d: F.linear(make(f32(8, 5), d), make(f32(3, 5), d), make(f32(5), d)),
     ["linear", "(3, 5)", "(5,)"]),
    ("linear-mixed-float", TypeError, lambda d: F.linear(make(f32(8, 5), d), make(f64(3, 5), d)),
     ["linear", "float32", "float64", "(8, 5)", "(3, 5)"]),
    # convolution and pooling
    ("conv2d-channels", ValueError,
     lambda d: F.conv2d(make(f32(8, 4, 32, 32), d), make(f32(16, 3, 3, 3), d)),
     ["conv2d", "4 channels", "expects 3", "(8, 4, 32, 32)", "(16, 3, 3, 3)"]),
    ("conv2d-rank", ValueError,
     lambda d: F.conv2d(make(f32(4, 32, 32), d), make(f32(16, 4, 3, 3), d)),
     ["conv2d", "(4, 32, 32)", "(16, 4, 3, 3)"]),
    ("conv2d-weight-rank", ValueError,
     lambda d: F.conv2d(make(f32(1, 4, 8, 8), d), make(f32(16, 4, 3), d)),
     ["conv2d", "(1, 4, 8, 8)", "(16, 4, 3)"]),
    ("conv2d-kernel-too-big", ValueError,
     lambda d: F.conv2d(make(f32(2, 3, 4, 4), d), make(f32(8, 3, 5, 5), d), padding=0),
     ["conv2d", "5x5", "(2, 3, 4, 4)"]),
    ("conv2d-bias", ValueError,
     lambda d: F.conv2d(make(f32(2, 3, 8, 8), d), make(f32(8, 3, 3, 3), d), make(f32(3), d)),
     ["conv2d", "(8, 3, 3, 3)", "(3,)"]),
    ("conv2d-stride-0", ValueError,
     lambda d: F.conv2d(make(f32(2, 3, 8, 8), d), make(f32(8, 3, 3, 3), d), stride=0),
     ["conv2d", "stride (0, 0)"]),
    ("conv2d-bad-stride", TypeError,
     lambda d: F.conv2d(make(f32(2, 3, 8, 8), d), make(f32(8, 3, 3, 3), d), stride=(1, 2, 3)),
     ["conv2d", "stride", "(1, 2, 3)"]),
    ("conv2d-int", TypeError,
     lambda d: F.conv2d(make(i64(2, 3, 8, 8), d), make(f32(8, 3, 3, 3), d)),
     ["conv2d", "int64", "(2, 3, 8, 8)"]),
    ("conv2d-mixed-float", TypeError,
     lambda d: F.conv2d(make(f64(2, 3, 8, 8), d), make(f32(8, 3, 3, 3), d)),
     ["conv2d", "float32", "float64", "(2, 3, 8, 8)", "(8, 3, 3, 3)"]),
    ("max_pool2d-rank", ValueError, lambda d: F.max_pool2d(make(f32(3, 8, 8), d), 2),
     ["max_pool2d", "(3, 8, 8)"]),
    ("max_pool2d-kernel-too-big", ValueError, lambda d: F.max_pool2d(make(f32(1, 3, 2, 2), d), 3),
     ["max_pool2d", "3x3", "(1, 3, 2, 2)"]),
    ("max_pool2d-padding", ValueError,
     lambda d: F.max_pool2d(make(f32(1, 3, 8, 8), d), 2, padding=2),
     ["max_pool2d", "padding (2, 2)", "kernel (2, 2)"]),
    ("avg_pool2d-rank", ValueError, lambda d: F.avg_pool2d(make(f32(8, 8), d), 2),
     ["avg_pool2d", "(8, 8)"]),
    ("avg_pool2d-kernel-too-big", ValueError,
     lambda d: F.avg_pool2d(make(f32(1, 3, 4, 4), d), (5, 1)),
     ["avg_pool2d", "5x1", "(1, 3, 4, 4)"]),
    ("avg_pool2d-int", TypeError, lambda d: F.avg_pool2d(make(i64(1, 3, 4, 4), d), 2),
     ["avg_pool2d", "int64", "(1, 3, 4, 4)"]),
    ("global_avg_pool2d-rank", ValueError, lambda d: F.global_avg_pool2d(make(f32(2, 3), d)),
     ["global_avg_pool2d", "(2, 3)"]),
    # normalisation
    ("batch_norm-gamma", ValueError,
     lambda d: F.batch_norm(make(f32(8, 4, 5, 5), d), make(f32(3), d), make(f32(4), d)),
     ["batch_norm", "4 channels", "gamma", "(8, 4, 5, 5)", "(3,)"]),
    ("batch_norm-beta", ValueError,
     lambda d: F.batch_norm(make(f32(8, 4), d), make(f32(4), d), make(f32(4, 1), d)),
     ["batch_norm", "beta", "(8, 4)", "(4, 1)"]),
    ("batch_norm-running", ValueError,
     lambda d: F.batch_norm(make(f32(8, 4), d), make(f32(4), d), make(f32(4), d),
                            make(f32(5), d), make(f32(4), d), training=False),
     ["batch_norm", "running_mean", "(8, 4)", "(5,)"]),
    ("batch_norm-rank", ValueError,
     lambda d: F.batch_norm(make(f32(8, 4, 5), d), make(f32(4), d), make(f32(4), d)),
     ["batch_norm", "(8, 4, 5)"]),
    ("batch_norm-one-value", ValueError,
     lambda d: F.batch_norm(make(f32(1, 4), d), make(f32(4), d), make(f32(4), d)),
     ["batch_norm", "(1, 4)"]),
    ("batch_norm-eval-no-stats", ValueError,
     lambda d: F.batch_norm(make(f32(8, 4), d), make(f32(4), d), make(f32(4), d), training=False),
     ["batch_norm", "running_mean"]),
    ("batch_norm-int", TypeError,
     lambda d: F.batch_norm(make(i64(8, 4), d), make(f32(4), d), make(f32(4), d)),
     ["batch_norm", "int64", "(8, 4)"]),
    # losses
    ("log_softmax-axis", ValueError, lambda d: F.log_softmax(make(f32(4, 10), d), axis=2),
     ["log_softmax", "axis 2", "(4, 10)"]),
    ("log_softmax-int", TypeError, lambda d: F.log_softmax(make(i64(4, 10), d)),
     ["log_softmax", "(4, 10)"]),
    ("cross_entropy-label-dtype", TypeError,
     lambda d: F.cross_entropy(make(f32(4, 10), d), make(f32(4), d)),
     ["cross_entropy", "integer", "float32", "(4, 10)", "(4,)"]),
    ("cross_entropy-label-float64", TypeError,
     lambda d: F.cross_entropy(make(f32(4, 10), d), make(f64(4), d)),
     ["cross_entropy", "integer", "float64", "(4, 10)", "(4,)"]),
    ("cross_entropy-label-shape", ValueError,
     lambda d: F.cross_entropy(make(f32(4, 10), d), make(i64(4, 1), d)),
     ["cross_entropy", "(4, 10)", "(4, 1)"]),
    ("cross_entropy-label-count", ValueError,
     lambda d: F.cross_entropy(make(f32(4, 10), d), make(i64(5), d)),
     ["cross_entropy", "(4, 10)", "(5,)"]),
    ("cross_entropy-label-range", ValueError,
     lambda d: F.cross_entropy(make(f32(4, 10), d), make(np.array([0, 3, 10, 2]), d)),
     ["cross_entropy", "[0, 10)", "10", "(4, 10)", "(4,)"]),
    ("cross_entropy-label-negative", ValueError,
     lambda d: F.cross_entropy(make(f32(4, 10), d), make(np.array([0, -1, 1, 2]), d)),
     ["cross_entropy", "-1", "(4, 10)"]),
    ("cross_entropy-logits-rank", ValueError,
     lambda d: F.cross_entropy(make(f32(4, 10, 2), d), make(i64(4), d)),
     ["cross_entropy", "(4, 10, 2)"]),
    # residual
    ("residual_add-shapes", ValueError,
     lambda d: F.residual_add(make(f32(8, 16, 32, 32), d), make(f32(8, 32, 16, 16), d)),
     ["residual_add", "(8, 16, 32, 32)", "(8, 32, 16, 16)"]),
    ("residual_add-mixed-float", TypeError,
     lambda d: F.residual_add(make(f32(2, 3), d), make(f64(2, 3), d)),
     ["residual_add", "float32", "float64", "(2, 3)"]),
    ("pad_channels-fewer", ValueError, lambda d: F.pad_channels(make(f32(2, 16, 8, 8), d), 8),
     ["pad_channels", "8", "(2, 16, 8, 8)"]),
    ("pad_channels-rank", ValueError, lambda d: F.pad_channels(make(f32(16, 8, 8), d), 32),
     ["pad_channels", "(16, 8, 8)"]),
]


def test_every_functional_op_has_an_error_case():
    covered = {case_id.split("-")[0] for case_id, *_ in CASES}
    missing = set(F.__all__) - covered - {"neg", "to", "im2col", "col2im"}
    assert not missing, f"ops without an error case: {sorted(missing)}"


@pytest.mark.parametrize("case_id, error, call, parts", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_op_and_the_shapes(device, case_id, error, call, parts):
    with pytest.raises(error) as info:
        call(device)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert message.startswith(case_id.split("-")[0]), message
    for part in parts:
        assert part in message, f"{part!r} is not in the message: {message}"


def test_neg_of_integers_is_fine(device):
    np.testing.assert_array_equal(F.neg(make(np.array([1, -2]), device)).numpy(), [-1, 2])


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        F.to(make(f32(2), "cpu"), "gpu")


@pytest.mark.cuda  # a real GPU, or the CuPy stand-in
@pytest.mark.parametrize("call, parts", [
    (lambda: F.add(make(f32(2, 3), "cpu"), make(f32(2, 3), "cuda")),
     ["add", "cpu", "cuda", "(2, 3)"]),
    (lambda: F.conv2d(make(f32(2, 3, 8, 8), "cuda"), make(f32(4, 3, 3, 3), "cpu")),
     ["conv2d", "input 0 (2, 3, 8, 8) on cuda", "input 1 (4, 3, 3, 3) on cpu"]),
    (lambda: F.batch_norm(make(f32(8, 4), "cuda"), make(f32(4), "cuda"), make(f32(4), "cuda"),
                          make(f32(4), "cpu"), make(f32(4), "cuda"), training=False),
     ["batch_norm", "running_mean", "cpu", "cuda"]),
    (lambda: F.cross_entropy(make(f32(4, 10), "cuda"), make(i64(4), "cpu")),
     ["cross_entropy", "cpu", "cuda", "(4, 10)", "(4,)"]),
], ids=["add", "conv2d", "batch_norm-running", "cross_entropy"])
def test_mixing_devices_names_the_op_and_the_devices(call, parts):
    with pytest.raises(ValueError) as info:
        call()
    for part in parts:
        assert part in str(info.value), str(info.value)
