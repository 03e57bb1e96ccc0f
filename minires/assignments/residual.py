"""Assignment 3, residual: ReLU and the residual add, then a whole BasicBlock running on them.

ReLU's derivative at exactly 0 is taken as 0, as in PyTorch; the inputs contain exact zeros, so a
mask written `x >= 0` fails. The last part builds a BasicBlock whose every ReLU and residual add is
the student's (patched into minires.functional) and compares its gradients with the reference
block's, bit-close. The workspace ends with compare_gradients.py: plain versus residual networks
on the student's own ops.
"""
import numpy as np

from ..nn import BasicBlock
from .checks import leaf, named_gradients
from .registry import Assignment, Case, Part, Target
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


def relu_forward_cases(rng):
    def case(shape):
        return Case(f"x of shape {shape} with exact zeros", {"x": _with_zeros(rng, shape)},
                    lambda impl, a: {"y": impl.activation.ReLU().apply(a["x"])})
    return [case(shape) for shape in SHAPES]


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


def basic_block_backward_cases(rng):
    def case(label, config, seed):
        size = BLOCK_INPUT[2] // config.get("stride", 1)
        inputs = {"x": rng.standard_normal(BLOCK_INPUT),
                  "gy": rng.standard_normal((BLOCK_INPUT[0], config["channels"], size, size))}

        def run(impl, a):
            block = _float64_block(config, seed)
            with student_ops(relu=impl.activation.relu, residual_add=impl.residual.residual_add):
                results = _block_results(block, a["x"], a["gy"])
            return {name: value for name, value in results.items() if value is not None}
        return Case(f"{label}, training mode, random upstream gradient", inputs, run, BIT_CLOSE)
    return [case(label, config, int(rng.integers(2**31))) for label, config in BLOCKS]


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
             relu_forward_cases, ("ReLU.forward",)),
        Part("relu_backward", 2, "ReLU.backward against the reference (relu'(0) = 0) and "
             "numerical gradients", relu_backward_cases, ("ReLU.forward", "ReLU.backward")),
        Part("residual_add_forward", 1, "ResidualAdd.forward against the reference",
             residual_add_forward_cases, ("ResidualAdd.forward",)),
        Part("residual_add_backward", 2, "ResidualAdd.backward against the reference and "
             "numerical gradients", residual_add_backward_cases,
             ("ResidualAdd.forward", "ResidualAdd.backward")),
        Part("basic_block_backward", 4, "a BasicBlock built on your ReLU and residual add: "
             "output and every gradient bit-close to the reference block's",
             basic_block_backward_cases, ("ReLU.forward", "ReLU.backward", "ResidualAdd.forward",
                                          "ResidualAdd.backward")),
    ),
    notes="When every part passes, run `python compare_gradients.py` in this folder: it builds "
          "plain and residual networks of depths 20 and 56 on *your* ReLU and residual add and "
          "prints, for each, the ratio of the gradient norm at the first block's input to the "
          "one at the last block's input. Compare plain with residual at each depth, and explain "
          "the difference with the \"+1\" that your ResidualAdd.backward passes back.",
    extras={"compare_gradients.py": SCRIPT},
)
