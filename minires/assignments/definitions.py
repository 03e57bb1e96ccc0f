"""What an assignment is: the op files it hands out, the targets it stubs, the parts it grades.

A `Target` names a function or class in one of minires' op files (minires/ops/<file>). In the
student's copy its docstring is replaced by `doc` (shapes and math), and, for a function, the lines
between `# BEGIN SOLUTION` and `# END SOLUTION` become `raise NotImplementedError("TODO: ...")`.

A `Part` is graded on its own: `cases(rng)` draws its `Case`s. A case is plain arrays in, plain
arrays out: `run(impl, inputs)` calls the op under test through `impl` (a namespace of modules,
`impl.conv`, `impl.norm`, ...) and returns the arrays to compare. The grader draws the same cases
twice from the same seed: in a sandboxed child, where `impl` holds the student's files and nothing
else (the child's minires has no solution in it), and in its own process, where `impl` holds
minires' reference; it compares the two itself. What a case needs from the reference beyond its
random inputs (a block's ops, as fixed linear maps) the grader computes with `lend` and hands to
both sides as plain arrays.

This module imports nothing of the assignments: the per-assignment modules import it, and the
registry imports them (no import loop).
"""
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Target:
    file: str      # a file of minires: "conv.py" (minires/ops/conv.py) or "autograd.py"
    qualname: str  # "im2col", "Conv2d.forward", or a class ("Conv2d") for its docstring only
    doc: str       # the docstring the student sees: shapes and math


@dataclass(frozen=True)
class Case:
    name: str        # what the student reads: "3x3 kernel, stride 1, padding 1"
    inputs: dict     # name -> NumPy array: the same values in the child and in the grader
    run: Callable    # run(impl, inputs) -> {output name: array}; may raise checks.Failure
    tolerance: dict = field(default_factory=dict)  # rtol/atol for checks.expect_close
    mutable: tuple = ()  # inputs the op is meant to change in place (running statistics)
    check: Callable = None  # check(got, expected) in the grader, where no single answer exists
    lend: Callable = None  # lend(reference impl, inputs) -> {name: array}, run in the grader only;
    #                        the arrays join the inputs on both sides (never compared)


@dataclass(frozen=True)
class Part:
    name: str
    points: int
    description: str
    cases: Callable  # cases(rng) -> [Case]
    uses: tuple      # qualnames of the student's code this part runs


@dataclass(frozen=True)
class Assignment:
    number: int
    name: str
    summary: str
    files: tuple     # minires files copied into the workspace
    targets: tuple
    parts: tuple
    notes: str = ""  # extra README text (markdown)
    extras: dict = field(default_factory=dict)  # more workspace files: name -> text
    # A backward target may not call the student's forward, minires' autograd or
    # minires.functional while it runs (the point is to write it by hand); True lifts that.
    autograd_in_backward: bool = False

    @property
    def points(self):
        return sum(p.points for p in self.parts)

    def files_of(self, part):
        """The workspace files `part` runs the student's code from."""
        return tuple(f for f in self.files
                     if any(t.file == f and t.qualname in part.uses for t in self.targets))

    def part(self, name):
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"assignment {self.name} has no part {name!r}; its parts are "
                       f"{', '.join(p.name for p in self.parts)}")
