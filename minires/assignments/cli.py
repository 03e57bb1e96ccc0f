"""`minires assignment list | make | grade`: the classroom commands.

    minires assignment list
    minires assignment make conv --out hw1
    minires assignment grade hw1 [--json results.json] [--timeout S] [--seed N] [--part NAME]

`grade` exits 0 with full marks and 1 otherwise; `--json` writes Gradescope's results.json.
"""
import argparse
import json
from pathlib import Path

from .grader import assignment_of, grade, gradescope_results, table
from .registry import all_assignments
from .workspace import make_workspace


def add_arguments(parser):
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the assignments, their parts and points")

    make = actions.add_parser("make", help="write a student workspace (solutions removed)")
    make.add_argument("name", help="assignment name (see `minires assignment list`)")
    make.add_argument("--out", required=True, type=Path, help="directory to write")
    make.add_argument("--force", action="store_true", help="overwrite files already there")
    make.add_argument("--with-solutions", action="store_true", help=argparse.SUPPRESS)

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
                              help="which assignment, when the directory has no assignment.json")


def run(args):
    return {"list": run_list, "make": run_make, "grade": run_grade}[args.action](args)


def run_list(_args):
    for a in all_assignments().values():
        print(f"{a.number}. {a.name:<10} {a.summary} ({a.points} points)")
        print(f"   {'':<10} parts: " + ", ".join(f"{p.name} ({p.points})" for p in a.parts))
    return 0


def run_make(args):
    written = make_workspace(args.name, args.out, args.with_solutions, args.force)
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    print(f"read {args.out / 'README.md'}, then grade yourself: minires assignment grade "
          f"{args.out}")
    return 0


def run_grade(args):
    if not args.directory.is_dir():
        raise SystemExit(f"no directory {args.directory}")
    if args.timeout <= 0:
        raise SystemExit(f"--timeout must be positive, got {args.timeout:g}")
    assignment = assignment_of(args.directory, args.assignment)
    try:
        seed, results = grade(args.directory, assignment.name, args.seed, args.timeout, args.part)
    except KeyError as error:  # an unknown --part
        raise SystemExit(error.args[0]) from None
    print(table(assignment, seed, results))
    if args.json is not None:
        args.json.write_text(json.dumps(gradescope_results(results), indent=2) + "\n")
    return 0 if all(r.score == r.max_score for r in results) else 1
