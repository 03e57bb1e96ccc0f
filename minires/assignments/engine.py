"""Assignment 0, engine: the two ideas inside `Tensor.backward`, on minires' own engine.

Students write the order in which backward visits the graph (a reverse topological order of the
Functions) and the bookkeeping that sums gradients: a tensor used by several Functions receives the
sum of what each sends back, and a leaf's .grad accumulates across backward calls, as in PyTorch.
The graphs are built from small Functions (mul, add, exp) on the student's own Tensor and Function,
with a tensor used twice, an intermediate feeding two Functions, and a constant that takes no
gradient. A topological order is not unique, so the grader checks the student's order against the
graph itself rather than against the reference's order.
"""
import numpy as np

from .checks import Failure
from .definitions import Assignment, Case, Part, Target

SHAPE = (3, 4)


def small_ops(autograd):
    """mul, add and exp as Functions of the engine module `autograd` (the student's or minires')."""
    class Mul(autograd.Function):
        name = "mul"

        def forward(self, a, b):
            self.a, self.b = a, b
            return a * b

        def backward(self, gy):
            return gy * self.b, gy * self.a

    class Add(autograd.Function):
        name = "add"

        def forward(self, a, b):
            return a + b

        def backward(self, gy):
            return gy, gy

    class Exp(autograd.Function):
        name = "exp"

        def forward(self, a):
            self.y = np.exp(a)
            return self.y

        def backward(self, gy):
            return gy * self.y

    return {"mul": Mul, "add": Add, "exp": Exp}


# A graph as (output name, op, input names), in forward order; x, w are leaves taking a gradient,
# c is a constant. `a` feeds two Functions, x is used twice, and the last line is the root.
GRAPHS = (
    ("a chain: exp(x * w) * c", (("a", "mul", ("x", "w")), ("b", "exp", ("a",)),
                                 ("y", "mul", ("b", "c")))),
    ("a diamond: a = x * w feeds exp and add; x used again at the end",
     (("a", "mul", ("x", "w")), ("b", "exp", ("a",)), ("d", "add", ("a", "b")),
      ("y", "mul", ("d", "x")))),
    ("two diamonds in a row, a constant on one side",
     (("a", "mul", ("x", "w")), ("b", "exp", ("a",)), ("d", "add", ("a", "b")),
      ("e", "mul", ("d", "c")), ("f", "exp", ("d",)), ("y", "add", ("e", "f")))),
)


def build(autograd, graph, arrays):
    """The graph on engine `autograd`: ({name: Tensor}, [Function per line of the graph])."""
    ops = small_ops(autograd)
    tensors = {name: autograd.Tensor(arrays[name], requires_grad=name != "c")
               for name in ("x", "w", "c")}
    functions = []
    for name, op, inputs in graph:
        functions.append(ops[op]())
        tensors[name] = functions[-1].apply(*(tensors[i] for i in inputs))
    return tensors, functions


def _arrays(rng):
    return {"x": rng.standard_normal(SHAPE), "w": 0.5 * rng.standard_normal(SHAPE),
            "c": rng.standard_normal(SHAPE), "gy": rng.standard_normal(SHAPE)}


def topological_order_cases(rng):
    def case(label, graph):
        def run(impl, a):
            tensors, functions = build(impl.autograd, graph, a)
            order = impl.autograd._topological_functions(tensors[graph[-1][0]])
            line = {id(fn): index for index, fn in enumerate(functions)}  # the very objects
            return {"order": np.array([line.get(id(fn), -1) for fn in order], dtype=np.int64)}

        def check(got, _expected):
            if "output:order" not in got:
                raise Failure("order: your _topological_functions returned no list")
            expect_reverse_topological(graph, got["output:order"])
        return Case(label, _arrays(rng), run, check=check)
    return [case(label, graph) for label, graph in GRAPHS]


def expect_reverse_topological(graph, order):
    """Every Function of the graph once (by identity: the child maps each returned object to its
    line of the graph, -1 for anything else), and for every edge of the graph, the consumer
    before the Function that made its input."""
    order = [int(tag) for tag in np.asarray(order).ravel()]
    if sorted(order) != list(range(len(graph))):
        names = [graph[t][0] if 0 <= t < len(graph) else "?" for t in order]
        raise Failure(f"order: got the Functions making {names}, expected each of the "
                      f"{len(graph)} Functions ({[line[0] for line in graph]}) exactly once")
    position = {tag: i for i, tag in enumerate(order)}
    made_by = {name: tag for tag, (name, _, _) in enumerate(graph)}
    for tag, (name, op, inputs) in enumerate(graph):
        for source in inputs:
            if source in made_by and position[made_by[source]] < position[tag]:
                raise Failure(f"order: the {op} making {source!r} comes before the {op} making "
                              f"{name!r}, which consumes {source!r}; its gradient would be used "
                              "before it is complete")


def _leaf_gradients(tensors, label):
    """{"dx<label>": array, "dw<label>": array}, copies, leaving out a missing .grad."""
    return {f"d{name}{label}": tensors[name].grad.data.copy() for name in ("x", "w")
            if tensors[name].grad is not None}


KEPT = " of the first backward, kept: a second backward must not add into it in place"


def gradient_accumulation_cases(rng):
    def case(label, graph):
        def run(impl, a):
            tensors, _ = build(impl.autograd, graph, a)
            root = tensors[graph[-1][0]]
            root.backward(a["gy"], retain_graph=True)
            once = _leaf_gradients(tensors, "")
            kept = {f"d{name}{KEPT}": tensors[name].grad.data for name in ("x", "w")
                    if tensors[name].grad is not None}  # the arrays themselves, not copies
            if tensors["c"].grad is not None:
                raise Failure("c: a tensor with requires_grad=False received a gradient")
            root.backward(a["gy"])
            return {**once, **_leaf_gradients(tensors, " after a second backward"), **kept}
        return Case(f"{label}, random upstream gradient, backward twice (leaves accumulate)",
                    _arrays(rng), run)
    return [case(label, graph) for label, graph in GRAPHS]


TOPOLOGICAL_DOC = """
TODO: every Function that `root` depends on, in an order that backward can follow.

The graph is a DAG: a Function f consumes tensors t with t.creator (the Function that made t,
None for a leaf) and its inputs are f._inputs. Return a list of Functions, each exactly once,
such that every Function comes before the Functions that made its inputs (a reverse
topological order): when backward reaches f, every consumer of f's output has already sent its
part of dL/d(output). Start from root.creator.

Shapes: a Function reachable along two paths must still appear once (remember the ones seen,
by id), and deep networks have thousands of Functions in a chain: use an explicit stack, not
recursion.

Math: a depth-first postorder (a Function after every Function that made its inputs), reversed,
is one such order.
"""

RUN_BACKWARD_DOC = """
Propagate grad = dL/d(root) from `root` to every leaf that requires grad.

For each Function f in reverse topological order, gy = dL/d(f's output) is complete, and
f.backward(gy) returns one gradient per input. By the multivariable chain rule, a tensor t
consumed by several Functions f1..fk receives the sum of their parts:

    dL/dt = sum_i  dL/d(out_i) * d(out_i)/dt

TODO (the loop body over f's inputs x and their gradients gx): skip a None gradient and an input
that does not require grad; add gx to the leaf's running sum in `leaves` when x is a leaf, else
to `pending`, the gradient of the Function that made x.

Shapes: `leaves` maps id(x) -> (x, running sum); `pending` maps id(x.creator) -> running sum.
"""

ACCUMULATE_DOC = """
TODO: add `grad` to leaf.grad (a Tensor), or set it when leaf.grad is None.

Leaves accumulate across backward calls, as in PyTorch: two backward passes give the sum of
both gradients until zero_grad() clears them.

Shapes: never add into the existing array in place: the previous .grad may be shared with a
caller; make a new Tensor.
"""

ASSIGNMENT = Assignment(
    number=0,
    name="engine",
    summary="the backward pass itself: topological order and gradient accumulation",
    files=("autograd.py",),
    targets=(
        Target("autograd.py", "_topological_functions", TOPOLOGICAL_DOC),
        Target("autograd.py", "run_backward", RUN_BACKWARD_DOC),
        Target("autograd.py", "_accumulate_leaf", ACCUMULATE_DOC),
    ),
    parts=(
        Part("topological_order", 4, "_topological_functions: every Function once, consumers "
             "before producers (checked against the graph, not one fixed order)",
             topological_order_cases, ("_topological_functions",)),
        Part("gradient_accumulation", 6, "backward's sums: shared tensors and intermediates, "
             "no gradient for a constant, leaves accumulating over two backward calls",
             gradient_accumulation_cases, ("run_backward", "_accumulate_leaf")),
    ),
    notes="Your autograd.py is a whole engine: its Tensor.backward calls your run_backward, which "
          "calls your _topological_functions. The grader builds graphs of small Functions (mul, "
          "add, exp) on your Tensor and Function classes.",
)
