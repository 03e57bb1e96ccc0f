"""The texts of a student copy (release.py writes them): its README, one page per assignment, the
note in a tutorial that runs a blank part, and the tests students run.

Every page is written from the registry (assignments, targets, parts and points), so the copy
always names the functions, files and points the autograder uses.
"""
import re
import textwrap

from .registry import get
from .residual import PLUS_ONE_SPLIT
from .workspace import source_path


def package_path(filename):
    """Where the copy holds a workspace file's code: conv.py -> minires/ops/conv.py."""
    return f"minires/{source_path(filename)}"


def _to_write(assignment):
    """{package path: [qualname]} of the functions the assignment's parts grade."""
    graded = {name for part in assignment.parts for name in part.uses}
    found = {}
    for target in assignment.targets:
        if target.qualname in graded:
            found.setdefault(package_path(target.file), []).append(target.qualname)
    return found


def release_note(blank, stubbed):
    return ("This is a student copy of minires. Blank (TODO) here: "
            + (", ".join(blank) or "nothing") + " (in " + (", ".join(sorted(stubbed)) or "no file")
            + "). minires/fast/ is not included; the readable ops in minires/ops run instead.\n")


def tutorial_note(needed):
    files = sorted({package_path(f) for name in needed for f in get(name).files})
    return ("# %% [markdown]\n"
            f"# **In your copy of minires** this tutorial runs your code for "
            f"{', '.join(needed)} ({', '.join(files)}). Where it does, it stops at the first\n"
            "# `NotImplementedError: TODO` until `minires assignment check NAME` passes for "
            "each.\n\n")


def _assignment_table(blank):
    """The README's table of the assignments left blank, or a line saying there are none."""
    if not blank:
        return "None: every assignment's solution is in this copy, the complete minires to read."
    rows = []
    for a in map(get, blank):
        where = "; ".join(f"`{path}`: " + ", ".join(f"`{q}`" for q in names)
                          for path, names in _to_write(a).items())
        rows.append(f"| {a.number} | [{a.name}](assignments/{a.name}.md) | {where} | {a.points} |")
    return ("| # | assignment | what you write | points |\n|---|---|---|---|\n" + "\n".join(rows)
            + "\n\nEach assignment's page (linked above) says what each function computes, how "
            "it is graded\nand what the points are. The docstring of each TODO says what to "
            "compute and the shapes.")


def student_readme(plan, pyproject=""):
    """The copy's README.md: install, the assignments, the workflow, the rules (`pyproject`, the
    copy's pyproject.toml, says which extras there are to mention)."""
    assignments = _assignment_table(plan["blank"])
    first = plan["blank"][0] if plan["blank"] else "conv"
    files = ", ".join(f"`{f}`" for f in get(first).files)
    notebooks = ""
    if re.search(r"^notebooks\s*=", pyproject, re.MULTILINE):
        notebooks = ('\n    pip install -e ".[notebooks]"       # jupytext and a kernel: the '
                     "tutorials as notebooks")
    released = (f" The solutions of {', '.join(plan['solutions'])} are in: that code is "
                "minires'." if plan["solutions"] else "")
    return f"""# minires: your own copy

minires is a deep-learning framework written from scratch in NumPy, for learning how residual
networks train. In this copy, a few of its functions are yours to write: they raise
`NotImplementedError("TODO: ...")` until you do. Everything else works, and everything runs your
code: `minires.gradcheck`, the layers and networks, the tutorials, and the assignments that come
later all call the functions you write, in the package itself.{released}

## Install

    python -m venv .venv && . .venv/bin/activate    # or your own environment
    pip install -e .                    # numpy, tqdm, and the `minires` command
    pip install -e ".[plot]"            # matplotlib, for the tutorials' figures{notebooks}

`-e` (editable) matters: Python then runs the files you edit, with no reinstall.

## Your assignments

{assignments}

## The workflow

1. **Open the assignment.** Read `assignments/NAME.md`, then the TODOs in the files it names.
   Keep every name and signature: the autograder calls them.
2. **Check your code locally.** `minires assignment check {first}` runs public checks that need no
   answer key: shapes and dtypes, your backward against numerical gradients of your own forward
   (float64), inputs left unchanged, identities any correct answer satisfies, and a few small known
   values. `pytest tests` runs the same checks. While you work, `minires.gradcheck(fn, *tensors)`
   checks any op you like.
3. **Read the feedback.** A failing check prints what was compared and how it differs: the first
   wrong element with your value and the expected one, the worst element of a gradient, or the
   line of your code that raised. Fix the first failure first.
4. **Submit.** `minires assignment submit {first} --out submission` copies your files for that
   assignment ({files}) into `submission/` and `submission.zip`; upload those files (or the zip)
   to the autograder. Only those files count, by name, at the top level.
   The autograder runs hidden cases on fresh random inputs, part by part, and its score is the
   one that counts: the public checks can pass while a hidden corner case fails.
5. **The next assignment.** Its TODOs may already be in this copy (see the table). After a
   deadline your teacher may hand out a new copy with that assignment's solution filled in: move
   your work on the assignments still open into it (copy your edited files over the new copy's),
   or keep working here if your own code passes.

## Rules for your files

Write each backward by hand: a backward that calls your forward, minires' autograd or
`minires.functional` scores 0 for its part. Your code runs in a sandbox that holds no solution
(your other functions are the ones it uses). The autograder reads your source only for advice: a
line that imports minires' other modules, inspects frames or the heap (sys, inspect, gc), or
uses eval, exec, open or `__import__` is named in your feedback and in `submit`'s warnings, but
scores nothing by itself.

## Tutorials

`tutorials/` tells the argument of the ResNet papers in runnable lessons: run one as a script
(`python tutorials/01_vanishing_gradients_in_a_chain.py`; `MINIRES_QUICK=1` for a small version)
or open it as a notebook with jupytext. A tutorial that runs code you have not written yet says
so at its top.
"""


def assignment_page(assignment):
    """assignments/NAME.md: what to write where, the parts and points, check and submit."""
    todo = "\n".join(f"- `{path}`: " + ", ".join(f"`{q}`" for q in names)
                     for path, names in _to_write(assignment).items())
    parts = "\n".join(f"| `{p.name}` | {p.points} | {p.description} |" for p in assignment.parts)
    notes = textwrap.fill(assignment.notes, 99)
    if assignment.name == "residual":  # the workspace's script, in the copy's form
        notes = notes.replace("`python compare_gradients.py` in this folder",
                              "`python assignments/compare_gradients.py`")
    return f"""# Assignment {assignment.number}: {assignment.name}

{assignment.summary[0].upper()}{assignment.summary[1:]}.

## What to write

Replace each `raise NotImplementedError("TODO: ...")` below with your code, between its
`# BEGIN SOLUTION` and `# END SOLUTION` lines (keep those two lines); the docstring above it says
what to compute and the shapes. Keep the names and signatures.

{todo}

## Check, then submit

    minires assignment check {assignment.name}      # public checks, on your own code
    minires assignment submit {assignment.name} --out submission

`submit` writes {', '.join(f'`{f}`' for f in assignment.files)} (your files, imports made
absolute) into `submission/` and `submission.zip`: upload them to the autograder.

## How the autograder grades it

| part | points | what is checked |
|---|---|---|
{parts}

Each part runs in its own process on fresh random inputs and is compared with minires' own
answer; the functions of the other parts are minires' own while it runs, so one mistake costs one
part. A crash, a time-out or a wrong shape costs that part, with the reason; a wrong value is
reported with its index, your value and the expected one; an op that writes into one of its inputs
is told so.

{notes}
"""


COMPARE_GRADIENTS = '''"""Assignment 3, last step: plain vs residual nets on YOUR relu and add.

    python assignments/compare_gradients.py          # depths 20 and 56 (a minute or two)
    python assignments/compare_gradients.py 8 20     # other depths of the 6n+2 family

For each depth, a plain net and a residual net are built from the same seed, one batch goes forward
and backward, and minires.inspect records the gradient norm at every block's input. Every ReLU and
every residual add in these networks is yours: they are minires' own, in your copy.
"""
import sys

import numpy as np

from minires.assignments import block
from minires.inspect import compare, summary_lines


''' + PLUS_ONE_SPLIT + '''def main(depths):
    results, _ = compare(depths, batch_size=8)
    for line in summary_lines(results):
        print(line)
    plus_one_split(block, np.random.default_rng(0))


if __name__ == "__main__":
    main([int(depth) for depth in sys.argv[1:]] or [20, 56])
'''


def extras(name):
    """Files an assignment adds to the copy's assignments/ folder."""
    return {"compare_gradients.py": COMPARE_GRADIENTS} if name == "residual" else {}


PUBLIC_TEST = '''"""The public checks of every assignment in your copy, as tests: `pytest tests`.

The same checks as `minires assignment check NAME`; each fails until your code passes them. The
autograder's hidden cases decide the score.
"""
import json
from pathlib import Path

import pytest

from minires.assignments.public_checks import report, run_checks

COURSE = json.loads((Path(__file__).resolve().parents[1] / "course.json").read_text())


@pytest.mark.parametrize("name", COURSE["blank"])
def test_public_checks(name):
    results = run_checks(name)
    assert all(passed for _, passed, _ in results), report(name, results)
'''
