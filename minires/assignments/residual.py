"""Assignment 3, residual: ReLU, the residual add, the option-A shortcut's backward, and a
BasicBlock's backward by hand, with the "+1" split it makes.

ReLU's derivative at exactly 0 is taken as 0, as in PyTorch; the inputs contain exact zeros, so a
mask written `x >= 0` fails. relu(-inf) is 0, so a forward written `x * (x > 0)` (-inf * 0 = NaN)
fails the case with infinities, as does a backward written `gy * (x > 0)` where an infinite gy
meets x <= 0. basic_block_backward runs a BasicBlock whose ReLUs and residual add are instances of
the student's ReLU and ResidualAdd (the convolutions and batch norms lent by the grader as fixed
values and matrices: the sandbox's minires has no solution to run) and compares its output and
gradients with the reference block's, bit-close. Then the student writes the block's whole backward
by hand (block.py: op by op, in reverse, over the ops the forward kept), which must give every
gradient and the split dL/dx = shortcut part + branch part. The workspace ends with
compare_gradients.py: plain versus residual networks on the student's own ops, and the split from
the student's code.
"""
import numpy as np

from . import block as reference_block
from .checks import Failure, leaf, named_gradients
from .definitions import Assignment, Case, Part, Target

SHAPES = ((2, 3, 4, 4), (5, 6))
BIT_CLOSE = dict(rtol=1e-10, atol=1e-12)


def _with_zeros(rng, shape):
    """Standard normal values, about a quarter of them exactly 0."""
    x = rng.standard_normal(shape)
    x[rng.random(shape) < 0.25] = 0.0
    return x


def _away_from_zero(rng, shape):
    """|x| >= 0.1 everywhere: central differences are meaningless at ReLU's kink."""
    x = rng.standard_normal(shape)
    return x + 0.1 * np.sign(x)


def relu_forward_cases(rng):
    def case(label, x):
        return Case(label, {"x": x}, lambda impl, a: {"y": impl.activation.ReLU().apply(a["x"])})
    with_infinities = _with_zeros(rng, SHAPES[0])
    with_infinities.flat[:2] = -np.inf, np.inf
    return [case(f"x of shape {shape} with exact zeros", _with_zeros(rng, shape))
            for shape in SHAPES] + [case("x with -inf and inf (relu(-inf) = 0)", with_infinities)]


def _relu_backward(impl, a):
    op = impl.activation.ReLU()
    op.apply(leaf(a["x"]))
    return named_gradients(("x",), op.backward(a["gy"]))


def relu_backward_cases(rng):
    cases = []
    for shape in SHAPES:
        for label, x in ((f"x of shape {shape} away from 0", _away_from_zero(rng, shape)),
                         (f"x of shape {shape} with exact zeros (relu'(0) = 0)",
                          _with_zeros(rng, shape))):
            cases.append(Case(f"{label}, random upstream gradient",
                              {"x": x, "gy": rng.standard_normal(shape)}, _relu_backward))
    x, gy = _with_zeros(rng, SHAPES[0]), rng.standard_normal(SHAPES[0])
    x.flat[:4], gy.flat[:4] = (-1.0, 0.0, 2.0, -3.0), (np.inf, -np.inf, np.inf, -np.inf)
    cases.append(Case("upstream gradient with inf and -inf (dx = 0 where x <= 0, not inf * 0)",
                      {"x": x, "gy": gy}, _relu_backward))
    return cases


def residual_add_forward_cases(rng):
    def case(shape):
        inputs = {"shortcut": rng.standard_normal(shape), "branch": rng.standard_normal(shape)}
        return Case(f"shortcut and branch of shape {shape}", inputs, lambda impl, a: {
            "y": impl.residual.ResidualAdd().apply(a["shortcut"], a["branch"])})
    return [case(shape) for shape in SHAPES]


def _residual_add_backward(impl, a):
    op = impl.residual.ResidualAdd()
    op.apply(leaf(a["shortcut"]), leaf(a["branch"]))
    return named_gradients(("shortcut", "branch"), op.backward(a["gy"]))


def residual_add_backward_cases(rng):
    return [Case(f"shortcut and branch of shape {shape}, random upstream gradient",
                 {name: rng.standard_normal(shape) for name in ("shortcut", "branch", "gy")},
                 _residual_add_backward) for shape in SHAPES]


BLOCK_INPUT = (2, 4, 6, 6)
BLOCKS = (
    ("BasicBlock(4, 4): identity shortcut", dict(in_channels=4, channels=4)),
    ("BasicBlock(4, 8, stride=2, shortcut='A'): subsampled, zero-padded shortcut",
     dict(in_channels=4, channels=8, stride=2, shortcut="A")),
)
PARAMS = ("w1", "gamma1", "beta1", "w2", "gamma2", "beta2")


def backward_matrix(backward, out_shape):
    """The matrix of a linear backward (g -> one array or a tuple): column k is backward(e_k),
    flattened and joined, so backward(g) = matrix @ g.ravel(), split."""
    size = int(np.prod(out_shape))
    columns = []
    for k in range(size):
        unit = np.zeros(size)
        unit[k] = 1.0
        grads = backward(unit.reshape(out_shape))
        grads = grads if isinstance(grads, tuple) else (grads,)
        columns.append(np.concatenate([np.ravel(g) for g in grads]))
    return np.stack(columns, axis=1)


class LentOp:
    """One op of the reference block, lent as the matrix of its backward: backward(g) is the
    matrix times g, split into the op's input gradients. The child gets the chain rule's steps
    as plain numbers, never the code that made them (the sandbox's minires has no solution)."""

    def __init__(self, name, matrix, out_shape, in_shapes):
        self.name, self.matrix = name, matrix
        self.out_shape, self.in_shapes = tuple(out_shape), [tuple(s) for s in in_shapes]

    def backward(self, gy):
        gy = np.asarray(gy, dtype=np.float64)
        if gy.shape != self.out_shape:
            raise ValueError(f"ops[{self.name!r}].backward: got a gradient of shape {gy.shape}, "
                             f"expected {self.out_shape} (the shape of that op's output)")
        flat = self.matrix @ gy.ravel()
        sizes = np.cumsum([int(np.prod(s)) for s in self.in_shapes])[:-1]
        grads = tuple(p.reshape(s) for p, s in zip(np.split(flat, sizes), self.in_shapes))
        return grads[0] if len(grads) == 1 else grads


def _op_inputs(a, out_shape):
    """{op name: its inputs' shapes} in block_forward, from the case's arrays."""
    h = tuple(out_shape)
    return {"conv1": (a["x"].shape, a["w1"].shape), "bn1": (h, a["gamma1"].shape,
                                                            a["beta1"].shape),
            "relu1": (h,), "conv2": (h, a["w2"].shape),
            "bn2": (h, a["gamma2"].shape, a["beta2"].shape), "shortcut": (a["x"].shape,),
            "add": (h, h), "relu2": (h,)}


def lent_ops(a):
    """block_forward's ops as LentOps, from the lent matrices (None for an identity shortcut)."""
    shapes = _op_inputs(a, a["gy"].shape)
    return {name: LentOp(name, a[f"lent {name}"], a["gy"].shape, shapes[name])
            if f"lent {name}" in a else None for name in shapes}


def lend_block(stride):
    """lend(reference, inputs): the reference block_forward run in the grader, each op's backward
    as a matrix, and the values the ops the student does not write give forward."""
    def lend(reference, a):
        _, ops = reference.block.block_forward(a["x"], {k: a[k] for k in PARAMS}, stride)
        lent = {f"lent {name}": backward_matrix(op.backward, a["gy"].shape)
                for name, op in ops.items() if op is not None}
        lent["lent bn1 output"] = ops["relu1"]._inputs[0].data
        lent["lent shortcut output"], lent["lent bn2 output"] = (
            t.data for t in ops["add"]._inputs)
        return lent
    return lend


def _block_inputs(rng, config):
    stride, channels = config.get("stride", 1), config["channels"]
    size = BLOCK_INPUT[2] // stride
    return {"x": rng.standard_normal(BLOCK_INPUT),
            **reference_block.random_params(rng, config["in_channels"], channels),
            "gy": rng.standard_normal((BLOCK_INPUT[0], channels, size, size))}


def basic_block_on_students_ops(impl, a):
    """A BasicBlock's forward and backward where both ReLUs and the residual add are instances of
    the student's ReLU and ResidualAdd (their forward and backward), and the convolutions, the
    batch norms and the option-A shortcut are the reference's, lent as fixed values and matrices.
    The input relu1 received is returned too: the lent bn2 output presumes the reference's."""
    ops = lent_ops(a)
    relu1, add, relu2 = impl.activation.ReLU(), impl.residual.ResidualAdd(), \
        impl.activation.ReLU()
    r1 = relu1.apply(leaf(a["lent bn1 output"])).data
    y = relu2.apply(leaf(add.apply(leaf(a["lent shortcut output"]),
                                   leaf(a["lent bn2 output"])).data)).data
    g_shortcut, g_branch = add.backward(relu2.backward(a["gy"]))
    g_branch, dgamma2, dbeta2 = ops["bn2"].backward(g_branch)
    g_branch, dw2 = ops["conv2"].backward(g_branch)
    g_branch, dgamma1, dbeta1 = ops["bn1"].backward(relu1.backward(g_branch))
    dx_branch, dw1 = ops["conv1"].backward(g_branch)
    shortcut = ops["shortcut"]
    dx_shortcut = g_shortcut if shortcut is None else shortcut.backward(g_shortcut)
    return {"relu1 output": r1, "y": y, "dx": dx_shortcut + dx_branch, "dw1": dw1,
            "dgamma1": dgamma1, "dbeta1": dbeta1, "dw2": dw2, "dgamma2": dgamma2,
            "dbeta2": dbeta2}


def basic_block_backward_cases(rng):
    return [Case(f"{label}, training mode, random upstream gradient", _block_inputs(rng, config),
                 basic_block_on_students_ops, BIT_CLOSE,
                 lend=lend_block(config.get("stride", 1))) for label, config in BLOCKS]


PAD_SETTINGS = (((2, 3, 4, 4), 5, 1, "3 -> 5 channels, stride 1"),
                ((2, 4, 6, 6), 8, 2, "4 -> 8 channels, stride 2 (the CIFAR ResNets' option A)"),
                ((1, 2, 5, 5), 6, 2, "2 -> 6 channels, stride 2, odd height and width"))


def pad_channels_backward_cases(rng):
    def case(shape, out_channels, stride, label):
        n, _, h, w = shape
        gy_shape = (n, out_channels, -(-h // stride), -(-w // stride))
        inputs = {"x": rng.standard_normal(shape), "gy": rng.standard_normal(gy_shape)}

        def run(impl, a):
            op = impl.residual.PadChannels(out_channels, stride)
            op.apply(leaf(a["x"]))
            return named_gradients(("x",), op.backward(a["gy"]))
        return Case(f"{label}, random upstream gradient", inputs, run)
    return [case(*setting) for setting in PAD_SETTINGS]


SPLIT = ("dx_shortcut", "dx_branch")


def _block_cases(rng, wanted):
    """Cases for block.block_backward: the reference block_forward's ops, lent as matrices, the
    student's block_backward walks them back; `wanted(name)` picks the gradients compared."""
    def run(impl, a):
        grads = impl.block.block_backward(a["gy"], lent_ops(a))
        if not isinstance(grads, dict):
            raise Failure(f"block_backward returned {type(grads).__name__}, expected a dict")
        return {name: value for name, value in grads.items() if wanted(name)}
    return [Case(f"{label}, random upstream gradient", _block_inputs(rng, config), run,
                 BIT_CLOSE, lend=lend_block(config.get("stride", 1)))
            for label, config in BLOCKS]


def block_backward_by_hand_cases(rng):
    return _block_cases(rng, lambda name: name not in SPLIT)


def plus_one_split_cases(rng):
    return _block_cases(rng, lambda name: name in SPLIT)


RELU_FORWARD_DOC = """
TODO: y = max(x, 0), elementwise.

x: any shape. Returns y with x's shape and dtype; relu(-inf) = 0 and relu(inf) = inf (a product
with the 0/1 mask, x * [x > 0], gives -inf * 0 = NaN at x = -inf). Save on self what backward
needs.
"""

RELU_BACKWARD_DOC = """
TODO: dx = gy where x > 0, and 0 where x <= 0, elementwise, given gy = dL/dy (x's shape).

The derivative at exactly x = 0 is taken as 0, as in PyTorch. Returns dx (one array, gy's shape
and dtype). dx must be 0 wherever x <= 0, even where gy is inf or -inf: select between gy and 0
with the mask [x > 0] kept from forward; do not multiply by it (gy * [x > 0] gives inf * 0 = NaN
where an infinite gy meets x <= 0).
"""

ADD_FORWARD_DOC = """
TODO: y = shortcut + branch.

shortcut, branch: the same shape (check() has made sure). Returns y of that shape, in a new
array (the inputs stay as they were).
"""

ADD_BACKWARD_DOC = """
TODO: the gradients with respect to both inputs, given gy = dL/dy.

Returns (dshortcut, dbranch), each of gy's shape.

Math: y = shortcut + branch, so dy/dshortcut = dy/dbranch = 1 (elementwise). This is the "+1"
of a residual block: through an identity shortcut, dL/dx = dL/dy (1 + dF/dx).
"""

PAD_BACKWARD_DOC = """
TODO: dx for the option-A shortcut y = pad_channels(x), given gy = dL/dy.

Forward: y[:, before + c, i, j] = x[:, c, s*i, s*j] for the C channels of x (s = stride,
before = self.before zero channels in front), and y is 0 in every other channel.
self.x_shape and self.before were saved by forward. Returns dx of x's shape (gy's dtype).

Shapes: gy: (N, C_out, ceil(H / s), ceil(W / s)); dx starts as zeros of x's shape, and only
the pixels the forward copied (every s-th row and column) receive anything.

Math: dL/dx[:, c, s*i, s*j] = gy[:, before + c, i, j], and dL/dx = 0 at every pixel the stride
skipped: the padded channels and the skipped pixels send no gradient back.
"""

BLOCK_BACKWARD_DOC = """
TODO: every gradient of the block, op by op in reverse, given gy = dL/dy.

y = relu2(add(shortcut(x), F(x))),  F = bn2(conv2(relu1(bn1(conv1(x))))). ops holds each op as
block_forward ran it ("conv1", "bn1", "relu1", "conv2", "bn2", "shortcut" (None: identity),
"add", "relu2"); op.backward(g) gives its input gradient(s) (conv: (dx, dw); batch norm:
(dx, dgamma, dbeta); add: (dshortcut, dbranch)).
Returns {"dx", "dx_shortcut", "dx_branch", "dw1", "dgamma1", "dbeta1", "dw2", "dgamma2",
"dbeta2"}: dx_shortcut and dx_branch are the parts of dx that come back through the shortcut and
through the branch F, and dx is their sum.

Shapes: every gradient has the shape of what it is the gradient of; gy and the add's gradients
have y's shape, dx_shortcut and dx_branch x's.

Math: the chain rule, from the output back:

    g = relu2'(gy);  (g_s, g_b) = add'(g) = (g, g)
    branch: g_b through bn2, conv2, relu1, bn1, conv1 -> dx_branch = (dF/dx)^T g
    shortcut: dx_shortcut = g_s (identity), or pad_channels' backward of g_s (option A)
    dx = dx_shortcut + dx_branch          (identity: dL/dx = g (1 + dF/dx), the "+1")
"""

# the +1 split printed by both scripts (the workspace's and the student copy's), from the
# student's block_backward
PLUS_ONE_SPLIT = '''def plus_one_split(block, rng):
    """The split of dL/dx at one block at initialisation, from YOUR block_backward."""
    for channels, stride, label in ((16, 1, "identity shortcut"), (32, 2, "option-A shortcut")):
        x = rng.standard_normal((8, 16, 16, 16))
        y, ops = block.block_forward(x, block.random_params(rng, 16, channels), stride)
        grads = block.block_backward(rng.standard_normal(y.shape), ops)
        norms = {name: float(np.linalg.norm(grads[name])) for name in
                 ("dx", "dx_shortcut", "dx_branch")}
        print(f"{label}: |dx| = {norms['dx']:.3g} = |shortcut part| {norms['dx_shortcut']:.3g}"
              f" (+) |branch part| {norms['dx_branch']:.3g}")


'''

SCRIPT = '''"""Assignment 3, last step: plain vs residual networks on YOUR relu and residual add.

    python compare_gradients.py          # depths 20 and 56 (a minute or two on a laptop CPU)
    python compare_gradients.py 8 20     # other depths of the 6n+2 family

For each depth, a plain net and a residual net are built from the same seed, one batch goes forward
and backward, and minires.inspect records the gradient norm at every block's input. The ratio
first/last says how the gradient changed on its way back from the last block to the first.
Every ReLU and every residual add in these networks is yours: the script puts your functions into
minires.functional, which every minires layer calls.
"""
import sys
from pathlib import Path

import numpy as np

from minires.assignments.student import load_workspace, student_ops
from minires.inspect import compare, summary_lines

HERE = Path(__file__).resolve().parent


''' + PLUS_ONE_SPLIT + '''def main(depths):
    mine = load_workspace(HERE, ["activation.py", "residual.py", "block.py"])
    with student_ops(relu=mine.activation.relu, residual_add=mine.residual.residual_add):
        results, _ = compare(depths, batch_size=8)
    for line in summary_lines(results):
        print(line)
    plus_one_split(mine.block, np.random.default_rng(0))


if __name__ == "__main__":
    main([int(depth) for depth in sys.argv[1:]] or [20, 56])
'''

ASSIGNMENT = Assignment(
    number=3,
    name="residual",
    summary="ReLU, the residual add, the option-A shortcut's backward, and a BasicBlock's "
            "backward by hand with its \"+1\" split",
    files=("activation.py", "residual.py", "block.py"),
    targets=(
        Target("activation.py", "ReLU.forward", RELU_FORWARD_DOC),
        Target("activation.py", "ReLU.backward", RELU_BACKWARD_DOC),
        Target("residual.py", "ResidualAdd.forward", ADD_FORWARD_DOC),
        Target("residual.py", "ResidualAdd.backward", ADD_BACKWARD_DOC),
        Target("residual.py", "PadChannels.backward", PAD_BACKWARD_DOC),
        Target("block.py", "block_backward", BLOCK_BACKWARD_DOC),
    ),
    parts=(
        Part("relu_forward", 1, "ReLU.forward against the reference, with exact zeros",
             relu_forward_cases, ("ReLU.forward",)),
        Part("relu_backward", 2, "ReLU.backward against the reference (relu'(0) = 0)",
             relu_backward_cases, ("ReLU.forward", "ReLU.backward")),
        Part("residual_add_forward", 1, "ResidualAdd.forward against the reference",
             residual_add_forward_cases, ("ResidualAdd.forward",)),
        Part("residual_add_backward", 1, "ResidualAdd.backward against the reference",
             residual_add_backward_cases, ("ResidualAdd.forward", "ResidualAdd.backward")),
        Part("pad_channels_backward", 3, "PadChannels.backward (option A) against the reference: "
             "strided pixels and padded channels send nothing back", pad_channels_backward_cases,
             ("PadChannels.backward",)),
        Part("basic_block_backward", 2, "a BasicBlock whose ReLUs and residual add are your "
             "ReLU and ResidualAdd (conv and batch norm lent by the grader): output and every "
             "gradient bit-close to the reference block's",
             basic_block_backward_cases, ("ReLU.forward", "ReLU.backward", "ResidualAdd.forward",
                                          "ResidualAdd.backward")),
        Part("block_backward_by_hand", 6, "block_backward: dx and every parameter's gradient of "
             "a BasicBlock, op by op, bit-close to the reference", block_backward_by_hand_cases,
             ("block_backward",)),
        Part("plus_one_split", 4, "block_backward's split: dx_shortcut and dx_branch, for an "
             "identity and an option-A shortcut", plus_one_split_cases, ("block_backward",)),
    ),
    notes="When every part passes, run `python compare_gradients.py` in this folder: it builds "
          "plain and residual networks of depths 20 and 56 on *your* ReLU and residual add and "
          "prints, for each, the ratio of the gradient norm at the first block's input to the "
          "one at the last block's input, then the split of dL/dx at one block from *your* "
          "block_backward. Compare plain with residual at each depth, and explain the "
          "difference with the \"+1\" that your ResidualAdd.backward passes back and your "
          "dx_shortcut carries.",
    extras={"compare_gradients.py": SCRIPT},
)
