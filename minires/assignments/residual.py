"""Assignment 3, residual: ReLU and the residual add, then a whole BasicBlock running on them.

ReLU's derivative at exactly 0 is taken as 0, as in PyTorch; the inputs contain exact zeros, so a
mask written `x >= 0` fails. The last part builds a BasicBlock whose every ReLU and residual add is
the student's (patched into minires.functional) and compares its gradients with the reference
block's, bit-close. The workspace ends with compare_gradients.py: plain versus residual networks
on the student's own ops.
"""
import numpy as np

from ..nn import BasicBlock
from ..ops import activation, residual
from .checks import Failure, expect_close, expect_gradcheck, expect_gradients, leaf
from .registry import Assignment, Part, Target
from .student import student_ops

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


def check_relu_forward(student, rng):
    for shape in SHAPES:
        yield f"x of shape {shape} with exact zeros"
        x = _with_zeros(rng, shape)
        expected = activation.ReLU().apply(x)
        expect_close("y", student.activation.ReLU().apply(x), expected)


def check_relu_backward(student, rng):
    for shape in SHAPES:
        for label, x in ((f"x of shape {shape} away from 0", _away_from_zero(rng, shape)),
                         (f"x of shape {shape} with exact zeros (relu'(0) = 0)",
                          _with_zeros(rng, shape))):
            yield f"{label}, random upstream gradient"
            gy = rng.standard_normal(shape)
            expected_op = activation.ReLU()
            expected_op.apply(leaf(x))
            expected = expected_op.backward(gy.copy())
            op = student.activation.ReLU()
            op.apply(leaf(x))
            expect_gradients(("x",), op.backward(gy.copy()), expected)
            if not (x == 0).any():
                expect_gradcheck(lambda t: student.activation.ReLU().apply(t), leaf(x),
                                 seed=int(rng.integers(2**31)))


def check_residual_add_forward(student, rng):
    for shape in SHAPES:
        yield f"shortcut and branch of shape {shape}"
        inputs = rng.standard_normal(shape), rng.standard_normal(shape)
        expected = residual.ResidualAdd().apply(*inputs)
        expect_close("y", student.residual.ResidualAdd().apply(*inputs), expected)


def check_residual_add_backward(student, rng):
    for shape in SHAPES:
        yield f"shortcut and branch of shape {shape}, random upstream gradient"
        inputs = rng.standard_normal(shape), rng.standard_normal(shape)
        gy = rng.standard_normal(shape)
        expected_op = residual.ResidualAdd()
        expected_op.apply(*map(leaf, inputs))
        expected = expected_op.backward(gy.copy())
        op = student.residual.ResidualAdd()
        op.apply(*map(leaf, inputs))
        expect_gradients(("shortcut", "branch"), op.backward(gy.copy()), expected)
        expect_gradcheck(lambda a, b: student.residual.ResidualAdd().apply(a, b),
                         *map(leaf, inputs), seed=int(rng.integers(2**31)))


BLOCK_INPUT = (2, 4, 6, 6)
BLOCKS = (
    ("BasicBlock(4, 4): identity shortcut", dict(in_channels=4, channels=4)),
    ("BasicBlock(4, 8, stride=2, shortcut='A'): subsampled, zero-padded shortcut",
     dict(in_channels=4, channels=8, stride=2, shortcut="A")),
)


def _float64_block(config, seed):
    """A seeded BasicBlock on the CPU, in training mode, with float64 parameters."""
    np.random.seed(seed)  # minires.nn.init draws from NumPy; backend.seed would wake CuPy too
    block = BasicBlock(**config).to("cpu").train()
    for p in block.parameters():
        p.data = p.data.astype(np.float64)
    return block


def _block_results(block, x, gy):
    """The block's output y, then dx and d<parameter> for upstream gy (None where none came)."""
    block.zero_grad()
    x = leaf(x)
    y = block(x)
    y.backward(gy)
    return {"y": y, "dx": x.grad, **{f"d{name}": p.grad for name, p in block.named_parameters()}}


def check_basic_block_backward(student, rng):
    mine = dict(relu=student.activation.relu, residual_add=student.residual.residual_add)
    for label, config in BLOCKS:
        yield f"{label}, training mode, random upstream gradient"
        block = _float64_block(config, int(rng.integers(2**31)))
        size = BLOCK_INPUT[2] // config.get("stride", 1)
        x = rng.standard_normal(BLOCK_INPUT)
        gy = rng.standard_normal((BLOCK_INPUT[0], config["channels"], size, size))
        expected = _block_results(block, x, gy)
        with student_ops(**mine):
            got = _block_results(block, x, gy)
        for name, value in expected.items():
            if got[name] is None:
                raise Failure(f"{name}: no gradient got there through your ops")
            expect_close(name, got[name], value, **BIT_CLOSE)


RELU_FORWARD_DOC = """
TODO: y = max(x, 0), elementwise.

x: any shape. Returns y with x's shape and dtype. Save on self what backward needs.
"""

RELU_BACKWARD_DOC = """
TODO: dx = gy * [x > 0], elementwise, given gy = dL/dy (x's shape).

The derivative at exactly x = 0 is taken as 0, as in PyTorch. Returns dx (one array).
"""

ADD_FORWARD_DOC = """
TODO: y = shortcut + branch.

shortcut, branch: the same shape (check() has made sure). Returns y of that shape.
"""

ADD_BACKWARD_DOC = """
TODO: the gradients with respect to both inputs, given gy = dL/dy.

y = shortcut + branch, so dy/dshortcut = dy/dbranch = 1 (elementwise). This is the "+1" of a
residual block: through an identity shortcut, dL/dx = dL/dy (1 + dF/dx).
Returns (dshortcut, dbranch), each of gy's shape.
"""

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

from minires.assignments.student import load_workspace, student_ops
from minires.inspect import compare, summary_lines

HERE = Path(__file__).resolve().parent


def main(depths):
    mine = load_workspace(HERE, ["activation.py", "residual.py"])
    with student_ops(relu=mine.activation.relu, residual_add=mine.residual.residual_add):
        results, _ = compare(depths, batch_size=8)
    for line in summary_lines(results):
        print(line)


if __name__ == "__main__":
    main([int(depth) for depth in sys.argv[1:]] or [20, 56])
'''

ASSIGNMENT = Assignment(
    number=3,
    name="residual",
    summary="ReLU, the residual add, and a BasicBlock's backward running on them",
    files=("activation.py", "residual.py"),
    targets=(
        Target("activation.py", "ReLU.forward", RELU_FORWARD_DOC),
        Target("activation.py", "ReLU.backward", RELU_BACKWARD_DOC),
        Target("residual.py", "ResidualAdd.forward", ADD_FORWARD_DOC),
        Target("residual.py", "ResidualAdd.backward", ADD_BACKWARD_DOC),
    ),
    parts=(
        Part("relu_forward", 1, "ReLU.forward against the reference, with exact zeros",
             check_relu_forward, ("ReLU.forward",)),
        Part("relu_backward", 2, "ReLU.backward against the reference (relu'(0) = 0) and "
             "numerical gradients", check_relu_backward, ("ReLU.forward", "ReLU.backward")),
        Part("residual_add_forward", 1, "ResidualAdd.forward against the reference",
             check_residual_add_forward, ("ResidualAdd.forward",)),
        Part("residual_add_backward", 2, "ResidualAdd.backward against the reference and "
             "numerical gradients", check_residual_add_backward,
             ("ResidualAdd.forward", "ResidualAdd.backward")),
        Part("basic_block_backward", 4, "a BasicBlock built on your ReLU and residual add: "
             "output and every gradient bit-close to the reference block's",
             check_basic_block_backward, ("ReLU.forward", "ReLU.backward", "ResidualAdd.forward",
                                          "ResidualAdd.backward")),
    ),
    notes="When every part passes, run `python compare_gradients.py` in this folder: it builds "
          "plain and residual networks of depths 20 and 56 on *your* ReLU and residual add and "
          "prints, for each, the ratio of the gradient norm at the first block's input to the "
          "one at the last block's input. Compare plain with residual at each depth, and explain "
          "the difference with the \"+1\" that your ResidualAdd.backward passes back.",
    extras={"compare_gradients.py": SCRIPT},
)
