"""`minires assignment list | make | grade | release | gradescope | check | submit`: the classroom
commands.

    minires assignment list
    minires assignment release --out student-minires [--assign conv batchnorm] [--solutions conv]
                               [--hints full|shapes|none] [--course course.json]
    minires assignment make conv --out hw1
    minires assignment grade hw1 --assignment conv [--json results.json] [--timeout S]
                                 [--seed N] [--part NAME]
    minires assignment gradescope conv --out conv-autograder.zip
    minires assignment check conv [--workspace hw1]   # public checks, no reference needed
    minires assignment submit conv --out submission   # a student copy's files, for the autograder

`grade` exits 0 with full marks and 1 otherwise. `--json` writes Gradescope's results.json: once
before any student code runs (every part 0, "grading did not finish"), then, atomically, the
scores, so the file never goes missing and never shows marks the grader did not give.
"""
import argparse
import json
import secrets
from pathlib import Path

from .grader import (PartResult, assignment_of, grade, gradescope_results, table,
                     write_results)
from .isolation import isolation_summary
from .registry import all_assignments
from .public_checks import report, run_checks
from .release import RELEASE_MARK, gradescope_bundle, release
from .submit import submit
from .workspace import DEFAULT_HINTS, HINTS, MANIFEST, PACKAGE_DIR, make_workspace


def add_arguments(parser):
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the assignments, their parts and points")

    make = actions.add_parser("make", help="write a student workspace (solutions removed)")
    make.add_argument("name", help="assignment name (see `minires assignment list`)")
    make.add_argument("--out", required=True, type=Path, help="directory to write")
    make.add_argument("--force", action="store_true", help="overwrite files already there")
    make.add_argument("--with-solutions", action="store_true", help=argparse.SUPPRESS)
    make.add_argument("--hints", choices=HINTS, default=DEFAULT_HINTS,
                      help="how much math the stubs give (default %(default)s)")

    grade_parser = actions.add_parser("grade", help="grade a workspace, part by part")
    grade_parser.add_argument("directory", type=Path, help="the student's workspace")
    grade_parser.add_argument("--json", type=Path, metavar="RESULTS_JSON",
                              help="also write Gradescope's results.json here")
    grade_parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                              help="seconds each part may run (default 60)")
    grade_parser.add_argument("--seed", type=int, help="repeat a run (default: a fresh seed)")
    grade_parser.add_argument("--part", action="append", metavar="NAME",
                              help="grade only this part (repeatable)")
    grade_parser.add_argument("--assignment", metavar="NAME",
                              help="the assignment to grade against (required: the hand-in's "
                                   "own assignment.json never chooses it)")

    release_parser = actions.add_parser(
        "release", help="the student copy of minires: a working package, the assigned parts blank")
    release_parser.add_argument("--out", required=True, type=Path, help="directory to write")
    release_parser.add_argument("--assign", nargs="+", metavar="NAME",
                                help="the assignments left blank for students (default: every "
                                     "assignment but engine)")
    release_parser.add_argument("--solutions", nargs="+", default=[], metavar="NAME",
                                help="assignments whose solutions are released: their code stays "
                                     "in, even if assigned (after their deadline)")
    release_parser.add_argument("--hints", choices=HINTS,
                                help="how much math the stubs give: full (the formulas line by "
                                     "line), shapes (what to compute and each step's shapes), "
                                     f"none (what to compute, shapes in and out); default "
                                     f"{DEFAULT_HINTS}")
    release_parser.add_argument("--course", type=Path, metavar="JSON",
                                help='a course file: {"assign": [...], "solutions": [...], '
                                     '"hints": "..."}; the options above override it')

    check = actions.add_parser("check", help="public checks of your code (no reference needed)")
    check.add_argument("name", help="assignment name")
    check.add_argument("--workspace", type=Path, metavar="DIR",
                       help="check a workspace folder's files instead of this minires' own")

    submit_parser = actions.add_parser(
        "submit", help="gather your files for the autograder (a student copy)")
    submit_parser.add_argument("name", help="assignment name")
    submit_parser.add_argument("--out", required=True, type=Path,
                               help="folder to write (and DIR.zip beside it)")

    bundle = actions.add_parser("gradescope", help="Gradescope's autograder zip for one assignment")
    bundle.add_argument("name", help="assignment name")
    bundle.add_argument("--out", required=True, type=Path, help="the .zip to write")
    bundle.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="seconds each part may run (default 60)")


def run(args):
    return {"list": run_list, "make": run_make, "grade": run_grade, "release": run_release,
            "gradescope": run_gradescope, "check": run_check,
            "submit": run_submit}[args.action](args)


def run_list(_args):
    blank = blank_in_this_copy()
    for a in all_assignments().values():
        status = "" if blank is None else ("  [yours to write]" if a.name in blank else
                                           "  [working code in this copy]")
        print(f"{a.number}. {a.name:<10} {a.summary} ({a.points} points){status}")
        print(f"   {'':<10} parts: " + ", ".join(f"{p.name} ({p.points})" for p in a.parts))
    return 0


def blank_in_this_copy():
    """The assignments a student copy leaves blank (its course.json, beside the package), or
    None in the teacher's complete minires."""
    if not (PACKAGE_DIR / RELEASE_MARK).exists():
        return None
    try:
        return set(json.loads((PACKAGE_DIR.parent / "course.json").read_text())["blank"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_make(args):
    if (PACKAGE_DIR / RELEASE_MARK).exists():
        raise SystemExit(f"in your copy of minires the assignment is in the package itself: read "
                         f"assignments/{args.name}.md, write the TODOs it names, then run "
                         f"`minires assignment check {args.name}`")
    written = make_workspace(args.name, args.out, args.with_solutions, args.force, args.hints)
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    print(f"read {args.out / 'README.md'}; check with: minires assignment check {args.name} "
          f"--workspace {args.out}; grade with: minires assignment grade {args.out} "
          f"--assignment {args.name}")
    return 0


def run_grade(args):
    if not args.directory.is_dir():
        raise SystemExit(f"no directory {args.directory}")
    if args.timeout <= 0:
        raise SystemExit(f"--timeout must be positive, got {args.timeout:g}")
    if (PACKAGE_DIR / RELEASE_MARK).exists():
        raise SystemExit("this is a student release of minires: it has no reference solutions "
                         "to grade against. Submit your files to your course's autograder.")
    if args.assignment is None:
        raise SystemExit(f"name the assignment to grade {args.directory} against with "
                         "--assignment NAME; a hand-in's own assignment.json never chooses it"
                         + _named_by(args.directory))
    assignment = assignment_of(args.directory, args.assignment)
    try:
        chosen = [assignment.part(p) for p in args.part] if args.part else assignment.parts
    except KeyError as error:  # an unknown --part
        raise SystemExit(error.args[0]) from None
    seed = secrets.randbits(32) if args.seed is None else args.seed
    print(f"isolation: {isolation_summary()}", flush=True)  # first: what protects this run
    if args.json is not None:  # what the file says if grading never finishes
        unfinished = [PartResult(p.name, 0, p.points, "grading did not finish",
                                 "grading did not finish") for p in chosen]
        _write_json(args.json, gradescope_results(unfinished, assignment, seed, False))
    seed, results = grade(args.directory, assignment.name, seed, args.timeout, args.part)
    print(table(assignment, seed, results), flush=True)
    if args.json is not None:
        _write_json(args.json, gradescope_results(results, assignment, seed))
    return 0 if all(r.score == r.max_score for r in results) else 1


def _write_json(path, report):
    """write_results, with an unwritable path as one line (the first write comes before grading)."""
    try:
        write_results(path, report)
    except OSError as err:
        raise SystemExit(f"minires assignment: cannot write {err.filename or path}: "
                         f"{err.strerror or err}") from None


def _named_by(directory):
    """' (this one's says conv)': what the hand-in's assignment.json names, as a hint only."""
    try:
        name = json.loads((directory / MANIFEST).read_text())["assignment"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" (this one's says {name})" if isinstance(name, str) and name.isidentifier() else ""


def run_release(args):
    stubbed = release(args.out, args.assign, args.solutions, args.hints, args.course)
    print(f"wrote the student copy to {args.out}: TODOs in {', '.join(stubbed) or 'no file'}; "
          f"see {args.out / 'README.md'} and {args.out / 'course.json'}")
    return 0


def run_check(args):
    results = run_checks(args.name, args.workspace)
    print(report(args.name, results))
    return 0 if all(passed for _, passed, _ in results) else 1


def run_submit(args):
    written, warnings = submit(args.name, args.out)
    print(f"wrote {', '.join(str(p) for p in written)}")
    for line in warnings:
        print(f"warning: {line}")
    print("upload the .py files (or the .zip) to your course's autograder")
    return 0


def run_gradescope(args):
    if args.timeout <= 0:
        raise SystemExit(f"--timeout must be positive, got {args.timeout:g}")
    names = gradescope_bundle(args.name, args.out, args.timeout)
    print(f"wrote {args.out} ({len(names)} files: setup.sh, run_autograder, minires/); upload it "
          "as the assignment's autograder on Gradescope")
    return 0
