"""The child side of grading: one part of one student's work, in a fresh interpreter.

    python -P -m minires.assignments.sandbox SPEC.json

The grader starts this module in a new session (and, where Linux allows, a new PID namespace) and
never trusts what comes back beyond plain arrays. Before any student code loads, the child itself
sets its resource limits (CPU seconds, address space, file size, open files, and, when it runs as
its own user, processes), asks the kernel to kill it if the grader dies, and, when the grader runs
as root (as on Gradescope), gives up root for an unprivileged user (`nobody`), so that it can
neither signal the grader nor write where the grader writes.

Then, for each case of the part, it writes `case<i>.npz` (`output:<name>` arrays, and
`input:<name>`: the inputs as the student's code left them) into the output directory; the first
case without a file is the one that failed. A crash or a wrong answer ends it with `error.txt`, a
text the grader shows as it is (never parses for a score).
"""
import ctypes
import json
import os
import resource
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
ERROR_FILE = "error.txt"


def case_file(index):
    return f"case{index}.npz"


def limit_resources(limits):
    """setrlimit in this process (inherited by anything it starts); the grader's own limits stay."""
    for name, value in limits.items():
        kind = getattr(resource, f"RLIMIT_{name.upper()}")
        soft, hard = (value, value + 2) if name == "cpu" else (value, value)
        resource.setrlimit(kind, (soft, hard))


def die_with_parent():
    """Linux: SIGKILL this process when the process that started it dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)


def drop_privileges(uid):
    """Root only: become `uid` (its own group, no supplementary groups) for good."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def preload():
    """Import, while this process may still read them, every module a part or an allowed student
    import needs: after the switch to `nobody` the interpreter's own files may be unreadable."""
    import importlib

    from .guard import STANDARD

    for name in sorted(STANDARD) + ["numpy.random", "numpy.linalg", "numpy.lib.stride_tricks",
                                    "traceback", "linecache", "minires.nn",
                                    "minires.assignments.grader"]:
        importlib.import_module(name)
    from .. import functional

    functional.load_fast_ops()  # imported at their first use otherwise: the grader hides them


def main(spec_path):
    spec = json.loads(Path(spec_path).read_text())
    die_with_parent()
    out = Path(spec["out"])
    try:
        preload()
        import numpy as np

        from .registry import get

        assignment = get(spec["assignment"])
        part = assignment.part(spec["part"])
        cases = part.cases(np.random.default_rng([spec["seed"], assignment.parts.index(part)]))
        if spec.get("uid") is not None:
            drop_privileges(spec["uid"])
        limit_resources(spec["limits"])
        run(cases, spec["directory"], assignment, part, out)
    except BaseException as error:  # the grader's own bug: say so rather than die silently
        (out / ERROR_FILE).write_text(f"grader error in the sandbox: {type(error).__name__}: "
                                      f"{error}")


def run(cases, directory, assignment, part, out):
    """Each case on the student's code (loaded here, after the limits), its arrays to `out`."""
    import numpy as np

    from .checks import Failure, as_array
    from .grader import describe_error, student_impl

    try:
        impl = student_impl(directory, assignment, part)
        for index, case in enumerate(cases):
            inputs = {name: array.copy() for name, array in case.inputs.items()}
            outputs = case.run(impl, inputs)
            arrays = {f"output:{name}": as_array(name, value) for name, value in outputs.items()}
            arrays.update({f"input:{name}": array for name, array in inputs.items()})
            np.savez(out / case_file(index), **arrays)
    except Failure as failure:
        (out / ERROR_FILE).write_text(str(failure))
    except BaseException as error:  # student code may raise anything, SystemExit included
        (out / ERROR_FILE).write_text(describe_error(error, directory))


if __name__ == "__main__":
    main(sys.argv[1])
