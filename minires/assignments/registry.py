"""What an assignment is: the op files it hands out, the targets it stubs, the parts it grades.

A `Target` names a function or class in one of minires' op files (minires/ops/<file>). In the
student's copy its docstring is replaced by `doc` (shapes and math), and, for a function, the lines
between `# BEGIN SOLUTION` and `# END SOLUTION` become `raise NotImplementedError("TODO: ...")`.

A `Part` is graded on its own: `check(student, rng)` is a generator that yields the name of each
case before checking it, so a failure or a crash is reported against that case; it raises
`checks.Failure` on a wrong answer. While a part runs, every function target that is not in its
`uses` is replaced by minires' reference, so one mistake costs one part (a backward still runs the
student's forward, which saves what it needs).
"""
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Target:
    file: str      # op file under minires/ops, e.g. "conv.py"
    qualname: str  # "im2col", "Conv2d.forward", or a class ("Conv2d") for its docstring only
    doc: str       # the docstring the student sees: shapes and math


@dataclass(frozen=True)
class Part:
    name: str
    points: int
    description: str
    check: Callable  # check(student, rng) -> generator of case names
    uses: tuple      # qualnames of the student's code this part runs


@dataclass(frozen=True)
class Assignment:
    number: int
    name: str
    summary: str
    files: tuple     # op files copied into the workspace
    targets: tuple
    parts: tuple
    notes: str = ""  # extra README text (markdown)
    extras: dict = field(default_factory=dict)  # more workspace files: name -> text

    @property
    def points(self):
        return sum(p.points for p in self.parts)

    def part(self, name):
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"assignment {self.name} has no part {name!r}; its parts are "
                       f"{', '.join(p.name for p in self.parts)}")


def all_assignments():
    """{name: Assignment} in course order (imported here, so the registry has no import cycle)."""
    from . import batchnorm, conv, residual

    return {a.name: a for a in (conv.ASSIGNMENT, batchnorm.ASSIGNMENT, residual.ASSIGNMENT)}


def get(name):
    """The assignment called `name`, or a SystemExit that lists the ones there are."""
    assignments = all_assignments()
    if name not in assignments:
        raise SystemExit(f"no assignment {name!r}; there are: {', '.join(assignments)}")
    return assignments[name]
