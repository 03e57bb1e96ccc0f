"""`minires assignment grade`: every part of a workspace in its own process, one score each.

A part runs in a child process (fork on Linux, spawn elsewhere) with a time limit, so student code
that crashes, loops forever or kills its process costs that part only. The child loads the
student's files by path, puts minires' reference in place of the targets the part does not grade,
and runs the part's cases on inputs drawn from (seed, part index): a fresh seed every run unless
one is given. A part scores all its points when every case passes, none otherwise; its output names
each case checked and, for the first failure, why.
"""
import json
import multiprocessing
import os
import secrets
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np

from .checks import Failure
from .registry import get
from .student import load_workspace
from .workspace import MANIFEST

OUTPUT_LIMIT = 4000  # characters of a part's output kept (a traceback can be long)


@dataclass
class PartResult:
    name: str
    score: int
    max_score: int
    verdict: str  # one line for the table: "ok", or why the part failed
    output: str


def assignment_of(directory, name=None):
    """The Assignment for a workspace: `name` if given, else the one its assignment.json names."""
    if name is None:
        manifest = Path(directory) / MANIFEST
        if not manifest.is_file():
            raise SystemExit(f"{directory} has no {MANIFEST}; name the assignment with "
                             "--assignment (or make the workspace with `minires assignment make`)")
        name = json.loads(manifest.read_text())["assignment"]
    return get(name)


def grade(directory, name=None, seed=None, timeout=60.0, parts=None):
    """Grade the workspace in `directory`; returns (seed, [PartResult]) for the chosen parts."""
    assignment = assignment_of(directory, name)
    seed = secrets.randbits(32) if seed is None else seed
    chosen = [assignment.part(p) for p in parts] if parts else list(assignment.parts)
    results = []
    for part in chosen:
        passed, verdict, output = run_in_process(assignment.name, part.name, directory, seed,
                                                 timeout)
        results.append(PartResult(part.name, part.points if passed else 0, part.points, verdict,
                                  output[:OUTPUT_LIMIT]))
    return seed, results


def run_in_process(assignment_name, part_name, directory, seed, timeout):
    """(passed, verdict, output) of one part, run in a child process given `timeout` seconds.

    The child sends each case's name as the case starts, then the result, so a timeout or a
    crash is reported against the case that was running.
    """
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    receiver, sender = context.Pipe(duplex=False)
    sys.stdout.flush()  # else a forked child flushes a copy of what is still buffered
    sys.stderr.flush()
    child = context.Process(target=_child, daemon=True,
                            args=(assignment_name, part_name, str(directory), seed, sender))
    child.start()
    sender.close()  # so the child's exit shows as end-of-file here
    deadline, seen = time.monotonic() + timeout, []
    try:
        while receiver.poll(max(0.0, deadline - time.monotonic())):
            message = receiver.recv()
            if not isinstance(message, str):
                return message
            seen.append(message)
        return _failed(seen, f"timed out after {timeout:g} s (an infinite loop?)")
    except EOFError:
        child.join()
        return _failed(seen, f"the process running your code died (exit code {child.exitcode})")
    finally:
        _stop(child)
        receiver.close()


def _stop(child):
    if child.is_alive():
        child.terminate()
        child.join(1)
    if child.is_alive():
        child.kill()
    child.join()


def _child(assignment_name, part_name, directory, seed, sender):
    """Run one part, sending each case's name and then (passed, verdict, output); never raises."""
    os.environ["MINIRES_DEVICE"] = "cpu"  # grading compares NumPy arrays
    assignment = get(assignment_name)
    part = assignment.part(part_name)
    rng = np.random.default_rng([seed, assignment.parts.index(part)])
    try:
        sender.send(run_part(assignment, part, directory, rng, on_case=sender.send))
    except BaseException as error:  # a result that cannot be sent, or a KeyboardInterrupt
        sender.send(_failed([], f"grader error: {type(error).__name__}: {error}"))
    finally:
        sender.close()


def run_part(assignment, part, directory, rng, on_case=None):
    """(passed, verdict, output) for one part, in this process. The output lists the cases
    checked; a failure ends it with the failing case and why, and the verdict is its first line.
    `on_case(name)` is called as each case starts."""
    seen = []
    try:
        student = load_workspace(directory, assignment.files)
        use_reference_for_the_rest(student, assignment, part)
        for case in part.check(student, rng):  # yields each case's name, then checks it
            seen.append(case)
            if on_case is not None:
                on_case(case)
    except Failure as failure:
        return _failed(seen, str(failure))
    except BaseException as error:  # student code may raise anything, SystemExit included
        return _failed(seen, describe_error(error, directory))
    return True, "ok", "\n".join(f"ok    {case}" for case in seen)


def _failed(seen, message):
    failing = seen[-1] if seen else "loading your files"
    lines = [f"ok    {case}" for case in seen[:-1]] + [f"FAIL  {failing}",
                                                       textwrap.indent(message, "      ")]
    return False, message.splitlines()[0], "\n".join(lines)


def use_reference_for_the_rest(student, assignment, part):
    """Put minires' reference in place of every target function this part does not grade."""
    for target in assignment.targets:
        if target.qualname in part.uses:
            continue
        module = getattr(student, Path(target.file).stem)
        reference = import_module(f"minires.ops.{Path(target.file).stem}")
        owner, ref_owner, attribute = module, reference, target.qualname
        if "." in target.qualname:
            class_name, attribute = target.qualname.split(".")
            owner, ref_owner = getattr(module, class_name), getattr(reference, class_name)
        replacement = ref_owner.__dict__[attribute]
        if not isinstance(replacement, type):  # a class target only replaces a docstring
            setattr(owner, attribute, replacement)


def describe_error(error, directory):
    """The exception and the deepest frame in the student's files (or the deepest at all):
    'IndexError: index 5 is out of bounds ...' then 'at conv.py, line 40, in im2col: <code>'."""
    frames = traceback.extract_tb(error.__traceback__)
    directory = Path(directory).resolve()
    theirs = [f for f in frames if Path(f.filename).resolve().is_relative_to(directory)]
    frame = (theirs or frames or [None])[-1]
    message = "".join(traceback.format_exception_only(type(error), error)).strip()
    if frame is None:
        return message
    return (f"{message}\nat {Path(frame.filename).name}, line {frame.lineno}, in "
            f"{frame.name}: {frame.line}")


def table(assignment, seed, results):
    """The score table, then every failing part's output."""
    width = max(len(r.name) for r in results)
    lines = [f"assignment {assignment.number}: {assignment.name} (seed {seed}; repeat with "
             f"--seed {seed})", ""]
    for r in results:
        verdict = textwrap.shorten(r.verdict, 90, placeholder=" ...")
        lines.append(f"{r.name:<{width}}  {r.score:>2} / {r.max_score:<2}  {verdict}")
    total, most = sum(r.score for r in results), sum(r.max_score for r in results)
    lines.append(f"{'total':<{width}}  {total:>2} / {most:<2}")
    for r in results:
        if r.score < r.max_score:
            lines += ["", f"--- {r.name}", r.output]
    return "\n".join(lines)


def gradescope_results(results):
    """Gradescope's results.json: {"score": total, "tests": [{name, score, max_score, output}]}."""
    return {"score": sum(r.score for r in results),
            "tests": [{"name": r.name, "score": r.score, "max_score": r.max_score,
                       "output": r.output} for r in results]}
