"""The assignments of the course, by name, in course order.

The dataclasses (Target, Case, Part, Assignment) live in definitions.py and are re-exported here;
the per-assignment modules import definitions.py, never this module, so nothing imports back.
"""
from . import batchnorm, conv, engine, residual
from .definitions import Assignment, Case, Part, Target

__all__ = ["Assignment", "Case", "Part", "Target", "all_assignments", "get"]


def all_assignments():
    """{name: Assignment} in course order."""
    return {a.name: a for a in (engine.ASSIGNMENT, conv.ASSIGNMENT, batchnorm.ASSIGNMENT,
                                residual.ASSIGNMENT)}


def get(name):
    """The assignment called `name`, or a SystemExit that lists the ones there are."""
    assignments = all_assignments()
    if name not in assignments:
        raise SystemExit(f"no assignment {name!r}; there are: {', '.join(assignments)}")
    return assignments[name]
