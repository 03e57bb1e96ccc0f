"""`minires assignment check NAME`: public checks a student runs on their own minires, no reference.

Each check uses only the student's own code and facts written down in advance:
- shapes and dtypes of what each function returns;
- float64 gradient checks: the student's backward against central differences of the student's
  forward (minires.gradcheck), with a random upstream gradient;
- inputs left unchanged by forward and backward;
- identities that hold for any correct answer (col2im is the adjoint of im2col; batch norm's
  output has mean beta per channel);
- a few small known values, literal numbers in public_data.py (written once, never computed
  from a reference when the checks run).

Passing them is evidence, not a grade: the autograder's hidden cases decide the score. In a student
copy the code checked is the package itself (minires/ops/conv.py, ...); `--workspace DIR` checks
a workspace folder made by `minires assignment make` instead.
"""
import traceback
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

from ..autograd import Tensor
from ..gradcheck import gradcheck
from . import conv as conv_assignment
from .checks import Failure, expect_close
from .engine import GRAPHS, build, expect_reverse_topological
from .public_data import KNOWN
from .registry import get
from .student import load_workspace
from .workspace import reference_module_name


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable  # run(impl): raises Failure (or anything) when the check fails


def implementation(name, workspace=None):
    """impl.<file stem> for assignment `name`: the package's own modules, or a workspace's files."""
    files = get(name).files
    if workspace is not None:
        return load_workspace(workspace, files)
    return SimpleNamespace(**{Path(f).stem: import_module(reference_module_name(f))
                              for f in files})


def run_checks(name, workspace=None):
    """[(check name, passed, message)] for assignment `name`, in order."""
    impl = implementation(name, workspace)
    results = []
    for check in CHECKS[name]():
        try:
            check.run(impl)
            results.append((check.name, True, ""))
        except Failure as failure:
            results.append((check.name, False, str(failure)))
        except Exception as error:  # the student's code crashed: say where
            frame = traceback.extract_tb(error.__traceback__)[-1]
            results.append((check.name, False,
                            f"{type(error).__name__}: {error}\nat {Path(frame.filename).name}, "
                            f"line {frame.lineno}, in {frame.name}: {frame.line}"))
    return results


def report(name, results):
    """The table `minires assignment check` prints."""
    lines = [f"public checks of assignment {name} (the autograder's hidden cases decide the "
             "score)", ""]
    for check, passed, message in results:
        lines.append(f"{'ok  ' if passed else 'FAIL'}  {check}")
        if not passed:
            lines += [f"      {line}" for line in message.splitlines()]
    passed = sum(ok for _, ok, _ in results)
    lines += ["", f"{passed} / {len(results)} checks pass"]
    return "\n".join(lines)


# --- helpers ------------------------------------------------------------------------------------

def known(key):
    """The literal inputs and outputs public_data.py gives for `key`, as float64 arrays."""
    return {name: np.array(value, dtype=np.float64) for name, value in KNOWN[key].items()}


def expect_shape_dtype(what, got, shape, dtype):
    got = got.data if isinstance(got, Tensor) else got
    if not isinstance(got, np.ndarray):
        raise Failure(f"{what}: got {type(got).__name__}, expected an array")
    if got.shape != tuple(shape) or got.dtype != dtype:
        raise Failure(f"{what}: got shape {got.shape} and dtype {got.dtype}, expected "
                      f"{tuple(shape)} and {np.dtype(dtype)}")


def expect_gradients(what, fn, *arrays):
    """minires.gradcheck of fn over float64 leaves made from `arrays`."""
    leaves = [Tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    result = gradcheck(fn, *leaves)
    if not result.ok:
        raise Failure(f"{what}: your backward disagrees with numerical gradients of your "
                      f"forward:\n{result}")


def expect_inputs_unchanged(what, run, *arrays):
    """run(*arrays) (forward and backward) leaves every array as it was."""
    before = [a.copy() for a in arrays]
    run(*arrays)
    for index, (after, saved) in enumerate(zip(arrays, before)):
        if not np.array_equal(after, saved, equal_nan=True):
            raise Failure(f"{what}: input {index} was changed in place; an op must leave its "
                          "inputs as they were")


def numeric_gradient(f, array, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of `array` (in place)."""
    grad = np.zeros_like(array)
    for i in np.ndindex(*array.shape):
        saved = array[i]
        array[i] = saved + eps
        plus = f()
        array[i] = saved - eps
        minus = f()
        array[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def _grads(result):
    return result if isinstance(result, tuple) else (result,)


# --- assignment 0: engine -----------------------------------------------------------------------

def engine_checks():
    def order(label, graph):
        def run(impl):
            rng = np.random.default_rng(0)
            arrays = {k: rng.standard_normal((3, 4)) for k in ("x", "w", "c")}
            root = build(impl.autograd, graph, arrays)[graph[-1][0]]
            order = impl.autograd._topological_functions(root)
            expect_reverse_topological(graph, [getattr(fn, "tag", -1) for fn in order])
        return Check(f"_topological_functions: {label}", run)

    def accumulation(label, graph):
        def run(impl):
            rng = np.random.default_rng(1)
            arrays = {k: rng.standard_normal((3, 4)) for k in ("x", "w", "c")}
            gy = rng.standard_normal((3, 4))
            tensors = build(impl.autograd, graph, arrays)
            tensors[graph[-1][0]].backward(gy, retain_graph=True)
            if tensors["c"].grad is not None:
                raise Failure("c: requires_grad=False, yet it received a gradient")
            for name in ("x", "w"):
                def loss():
                    return float((build(impl.autograd, graph, arrays)[graph[-1][0]].data
                                  * gy).sum())
                expected = numeric_gradient(loss, arrays[name])
                if tensors[name].grad is None:
                    raise Failure(f"d{name}: no gradient arrived at {name}")
                expect_close(f"d{name}", tensors[name].grad.data, expected, 1e-5, 1e-7)
            first = tensors["x"].grad.data.copy()
            tensors[graph[-1][0]].backward(gy)
            expect_close("dx after a second backward (leaves accumulate)",
                         tensors["x"].grad.data, 2 * first)
        return Check(f"backward's sums against numerical gradients: {label}", run)

    return ([order(label, graph) for label, graph in GRAPHS]
            + [accumulation(label, graph) for label, graph in GRAPHS])


# --- assignment 1: conv -------------------------------------------------------------------------

def conv_checks():
    geometries = conv_assignment.GEOMETRIES

    def im2col_shapes(impl):
        for g in geometries:
            for dtype in (np.float64, np.float32):
                x = np.random.default_rng(0).standard_normal(g.x_shape).astype(dtype)
                cols = impl.conv.im2col(x, g.kernel, g.stride, g.padding)
                expect_shape_dtype(f"im2col, {g.label}, {np.dtype(dtype)}", cols,
                                   g.cols_shape(), dtype)

    def known_values(key, call):
        def run(impl):
            data = known(key)
            expect_close(key, call(impl, data), data["expected"])
        return run

    def col2im_adjoint(impl):
        """<im2col(x), c> = <x, col2im(c)> for every x and c: col2im is im2col's adjoint."""
        rng = np.random.default_rng(1)
        for g in geometries:
            x, c = rng.standard_normal(g.x_shape), rng.standard_normal(g.cols_shape())
            dx = impl.conv.col2im(c, g.x_shape, g.stride, g.padding)
            expect_shape_dtype(f"col2im, {g.label}", dx, g.x_shape, np.float64)
            left = float((impl.conv.im2col(x, g.kernel, g.stride, g.padding) * c).sum())
            right = float((x * dx).sum())
            if not np.isclose(left, right, rtol=1e-9, atol=1e-9):
                raise Failure(f"col2im, {g.label}: <im2col(x), c> = {left:.10g} but "
                              f"<x, col2im(c)> = {right:.10g}; col2im must add each entry back "
                              "where im2col took it from")

    def conv_op(g, bias, impl):
        return impl.conv.Conv2d(g.stride, g.padding, has_bias=bias)

    def conv_gradients(impl):
        rng = np.random.default_rng(2)
        for i, g in enumerate(geometries):
            bias = i % 2 == 1
            arrays = [rng.standard_normal(g.x_shape),
                      rng.standard_normal((3, g.x_shape[1], *g.kernel))]
            arrays += [rng.standard_normal(3)] if bias else []
            expect_gradients(f"Conv2d, {g.label}, {'with' if bias else 'no'} bias",
                             lambda x, w, *b: conv_op(g, bias, impl).apply(x, w, *b), *arrays)

    def conv_shapes_and_inputs(impl):
        rng = np.random.default_rng(3)
        g = geometries[2]
        x, w, b = (rng.standard_normal(g.x_shape), rng.standard_normal((3, 2, 3, 3)),
                   rng.standard_normal(3))

        def run(x, w, b):
            op = conv_op(g, True, impl)
            y = op.apply(Tensor(x, requires_grad=True), Tensor(w, requires_grad=True),
                         Tensor(b, requires_grad=True))
            n, oc, oh, ow = g.cols_shape()[0], 3, *g.cols_shape()[4:]
            expect_shape_dtype("Conv2d forward's y", y, (n, oc, oh, ow), np.float64)
            grads = _grads(op.backward(np.ones(y.shape)))
            if len(grads) != 3:
                raise Failure(f"Conv2d.backward returned {len(grads)} gradients, expected 3 "
                              "(dx, dw, db) for an op with a bias")
            for what, grad, like in zip(("dx", "dw", "db"), grads, (x, w, b)):
                expect_shape_dtype(f"Conv2d.backward's {what}", grad, like.shape, np.float64)
        expect_inputs_unchanged("Conv2d forward and backward", run, x, w, b)

    return [
        Check("im2col: shapes and dtypes on four window geometries", im2col_shapes),
        Check("im2col: known values (3x3 input, 2x2 kernel)",
              known_values("im2col 3x3 kernel 2", lambda impl, d: impl.conv.im2col(
                  d["x"], (2, 2), (1, 1), (0, 0)))),
        Check("im2col: known values (padding 1 with pad_value=-inf, stride 2)",
              known_values("im2col padded -inf", lambda impl, d: impl.conv.im2col(
                  d["x"], (2, 2), (2, 2), (1, 1), pad_value=-np.inf))),
        Check("col2im: the adjoint of your im2col, on four window geometries", col2im_adjoint),
        Check("col2im: known values (how many 3x3 windows cover each pixel)",
              known_values("col2im ones 3x3", lambda impl, d: impl.conv.col2im(
                  np.ones((1, 1, 3, 3, 4, 4)), (1, 1, 4, 4), (1, 1), (1, 1)))),
        Check("Conv2d: known values (2 channels in, 2 out, bias)",
              known_values("conv2d small", lambda impl, d: impl.conv.Conv2d(
                  1, 0, has_bias=True).apply(d["x"], d["w"], d["b"]).data)),
        Check("Conv2d: shapes, dtypes, and inputs left unchanged", conv_shapes_and_inputs),
        Check("Conv2d.backward: gradcheck against your forward (float64)", conv_gradients),
    ]


# --- assignment 2: batchnorm --------------------------------------------------------------------

BN_SHAPES = ((6, 3), (3, 2, 2, 3))


def batchnorm_checks():
    def op(impl, training, running=None, momentum=0.1, eps=1e-5):
        mean, var = running if running is not None else (None, None)
        return impl.norm.BatchNorm(mean, var, training, momentum, eps)

    def train_statistics(impl):
        rng = np.random.default_rng(0)
        for shape in BN_SHAPES:
            x = 3 + 2 * rng.standard_normal(shape)
            gamma, beta = 1 + rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
            y = op(impl, True).apply(x, gamma, beta).data
            expect_shape_dtype(f"training forward, x: {shape}", y, shape, np.float64)
            axes = (0,) if len(shape) == 2 else (0, 2, 3)
            expect_close(f"per-channel mean of y, x: {shape} (must be beta)", y.mean(axis=axes),
                         beta)
            var = x.var(axis=axes)
            expect_close(f"per-channel std of y, x: {shape} (must be |gamma| * std / sqrt(var "
                         "+ eps))", y.std(axis=axes), np.abs(gamma) * np.sqrt(var / (var + 1e-5)))

    def known_values(impl):
        d = known("batchnorm small")
        running = (d["running_mean"].copy(), d["running_var"].copy())
        y = op(impl, True, running, momentum=0.3).apply(d["x"], d["gamma"], d["beta"]).data
        expect_close("training y", y, d["y_train"])
        expect_close("running_mean after one training step (momentum 0.3)", running[0],
                     d["running_mean_after"])
        expect_close("running_var after one training step (unbiased, momentum 0.3)",
                     running[1], d["running_var_after"])
        kept = (d["running_mean"].copy(), d["running_var"].copy())
        y = op(impl, False, kept, momentum=0.3).apply(d["x"], d["gamma"], d["beta"]).data
        expect_close("evaluation y (the running statistics, not the batch's)", y, d["y_eval"])
        expect_close("running_mean after evaluation (unchanged)", kept[0], d["running_mean"])

    def gradients(training):
        def run(impl):
            rng = np.random.default_rng(1)
            for shape in BN_SHAPES:
                c = shape[1]
                running = None if training else (rng.standard_normal(c),
                                                 rng.uniform(0.5, 2, c))
                arrays = (3 + 2 * rng.standard_normal(shape), 1 + rng.standard_normal(c),
                          rng.standard_normal(c))
                expect_gradients(f"{'training' if training else 'evaluation'}, x: {shape}",
                                 lambda x, g, b: op(impl, training, running).apply(x, g, b),
                                 *arrays)
        return run

    def inputs_unchanged(impl):
        rng = np.random.default_rng(2)
        shape = BN_SHAPES[1]

        def run(x, gamma, beta):
            bn = op(impl, True)
            y = bn.apply(*(Tensor(a, requires_grad=True) for a in (x, gamma, beta)))
            grads = _grads(bn.backward(rng.standard_normal(shape)))
            for what, grad, like in zip(("dx", "dgamma", "dbeta"), grads, (x, gamma, beta)):
                expect_shape_dtype(f"BatchNorm.backward's {what}", grad, like.shape, np.float64)
            expect_shape_dtype("y", y, shape, np.float64)
        expect_inputs_unchanged("BatchNorm forward and backward", run,
                                rng.standard_normal(shape), np.ones(2), np.zeros(2))

    return [
        Check("training forward: shapes, per-channel mean beta and std |gamma|", train_statistics),
        Check("known values: training y, running statistics, evaluation y", known_values),
        Check("shapes, dtypes, and inputs left unchanged", inputs_unchanged),
        Check("training backward: gradcheck against your forward (float64)", gradients(True)),
        Check("evaluation backward: gradcheck against your forward (float64)", gradients(False)),
    ]


# --- assignment 3: residual ---------------------------------------------------------------------

def residual_checks():
    def away_from_zero(rng, shape):
        x = rng.standard_normal(shape)
        return x + 0.1 * np.sign(x)

    def relu_known(impl):
        d = known("relu")

        def run(x, gy):
            op = impl.activation.ReLU()
            expect_close("relu(x) (relu(-inf) = 0, relu(0) = 0)",
                         op.apply(Tensor(x, requires_grad=True)).data, d["y"])
            expect_close("dx (0 wherever x <= 0, even for an infinite gy)",
                         _grads(op.backward(gy))[0], d["dx"])
        expect_inputs_unchanged("ReLU forward and backward", run, d["x"], d["gy"])

    def relu_dtype(impl):
        x = np.array([[-1.5, 0.0, 2.0]], dtype=np.float32)
        expect_shape_dtype("relu of a float32 array", impl.activation.ReLU().apply(x).data,
                           x.shape, np.float32)

    def relu_gradients(impl):
        x = away_from_zero(np.random.default_rng(0), (2, 3, 4))
        expect_gradients("ReLU (x away from 0)", lambda t: impl.activation.ReLU().apply(t), x)

    def add(impl):
        rng = np.random.default_rng(1)
        a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
        expect_close("residual add's y", impl.residual.ResidualAdd().apply(a, b).data, a + b)
        expect_gradients("ResidualAdd", lambda s, f: impl.residual.ResidualAdd().apply(s, f),
                         a, b)

        def run(a, b):
            op = impl.residual.ResidualAdd()
            op.apply(Tensor(a, requires_grad=True), Tensor(b, requires_grad=True))
            op.backward(np.ones(a.shape))
        expect_inputs_unchanged("ResidualAdd forward and backward", run, a, b)

    def pad_gradients(impl):
        rng = np.random.default_rng(2)
        for shape, channels, stride in (((2, 3, 4, 4), 5, 1), ((2, 4, 6, 6), 8, 2),
                                        ((1, 2, 5, 5), 6, 2)):
            expect_gradients(f"PadChannels({channels}, stride {stride}), x: {shape}",
                             lambda t: impl.residual.PadChannels(channels, stride).apply(t),
                             rng.standard_normal(shape))

    def block_gradients(impl):
        rng = np.random.default_rng(3)
        for in_channels, channels, stride in ((2, 2, 1), (2, 4, 2)):
            check_block(impl.block, rng, in_channels, channels, stride)

    return [
        Check("ReLU: known values, with exact zeros and infinities; inputs left unchanged",
              relu_known),
        Check("ReLU: keeps float32", relu_dtype),
        Check("ReLU.backward: gradcheck against your forward (float64)", relu_gradients),
        Check("ResidualAdd: y, gradcheck, inputs left unchanged", add),
        Check("PadChannels.backward: gradcheck against the forward (float64)", pad_gradients),
        Check("block_backward: every gradient and the split, against numerical gradients",
              block_gradients),
    ]


def check_block(block, rng, in_channels, channels, stride):
    """block_backward's gradients against central differences of block_forward; its split
    against central differences with only the shortcut's (or only the branch's) x moving."""
    label = f"block {in_channels} -> {channels}, stride {stride}"
    x = rng.standard_normal((2, in_channels, 4, 4))
    params = block.random_params(rng, in_channels, channels)
    y, ops = block.block_forward(x, params, stride)
    gy = rng.standard_normal(y.shape)
    grads = block.block_backward(gy, ops)
    if not isinstance(grads, dict):
        raise Failure(f"{label}: block_backward returned {type(grads).__name__}, expected a dict")

    def loss():
        return float((block.block_forward(x, params, stride)[0] * gy).sum())
    for name, array in [("x", x), *params.items()]:
        expect_close(f"{label}: d{name}", grads.get(f"d{name}"), numeric_gradient(loss, array),
                     1e-5, 1e-7)
    x0 = x.copy()
    for part, moving in (("dx_shortcut", "shortcut"), ("dx_branch", "branch")):
        def partial_loss():
            inputs = {"shortcut": x0, "branch": x0, moving: x}
            return float((_block_output(block, inputs["shortcut"], inputs["branch"], params, stride)
                          * gy).sum())
        expect_close(f"{label}: {part}", grads.get(part), numeric_gradient(partial_loss, x),
                     1e-5, 1e-7)


def _block_output(block, x_shortcut, x_branch, params, stride):
    """relu(shortcut(x_shortcut) + F(x_branch)) on the ops block_forward runs: the block with its
    two paths fed separately, so a numerical gradient can follow one path at a time."""
    def batch_norm(h, i):
        op = block.BatchNorm(None, None, True, block.MOMENTUM, block.EPS)
        return block._run(op, h, params[f"gamma{i}"], params[f"beta{i}"])
    h = block._run(block.Conv2d(stride, 1), x_branch, params["w1"])
    h = block._run(block.ReLU(), batch_norm(h, 1))
    branch = batch_norm(block._run(block.Conv2d(1, 1), h, params["w2"]), 2)
    channels = params["w2"].shape[0]
    shortcut = x_shortcut
    if stride != 1 or x_shortcut.shape[1] != channels:
        shortcut = block._run(block.PadChannels(channels, stride), x_shortcut)
    return block._run(block.ReLU(), block._run(block.ResidualAdd(), shortcut, branch))


CHECKS = {"engine": engine_checks, "conv": conv_checks, "batchnorm": batchnorm_checks,
          "residual": residual_checks}
