"""The child side of grading: one part of one student's work, in a fresh interpreter.

    python -E -s -c "...; from minires.assignments.sandbox import main; main(SPEC.json)"

The grader starts this module under `unshare` with the stripped minires first on its path
(stripped.py: no solution anywhere in it) and never trusts what comes back beyond plain arrays.
Before any student code loads, the child, still root in its own namespaces, builds its jail and
makes it its root (isolation.enter_jail), asks the kernel to kill it if the grader dies, imports
what it needs, gives up root for the uid the grader claimed for it, and sets its resource limits.

Then, for each case of the part, it writes `case<i>.npz` (`output:<name>` arrays, and
`input:<name>`: the inputs as the student's code left them), or `case<i>.txt`: why that case
failed (a plain text the grader shows, cleaned and capped, never parses for a score). `error.txt`
says why the student's files did not load; `by_hand.txt` that a backward target called what it
must not (BackwardWatch).
"""
import collections
import ctypes
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

PR_SET_PDEATHSIG = 1
ERROR_FILE = "error.txt"
BY_HAND_FILE = "by_hand.txt"


def case_file(index):
    return f"case{index}.npz"


def case_error_file(index):
    return f"case{index}.txt"


def lent_file(index):
    return f"lent{index}.npz"


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
    import needs: after the switch of user the interpreter's own files may be unreadable."""
    import importlib

    from .guard import STANDARD

    for name in sorted(STANDARD) + ["numpy.random", "numpy.linalg", "numpy.lib.stride_tricks",
                                    "traceback", "linecache", "minires.functional",
                                    "minires.gradcheck", "minires.assignments.registry",
                                    "minires.assignments.checks"]:
        importlib.import_module(name)


def expect_only_stripped_minires():
    """Fail closed: every minires module loaded here must come from the stripped build (the
    folder this very module lies in), none from the grader's complete package."""
    stripped = Path(__file__).resolve().parents[2]
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] == "minires" and path and \
                not Path(path).resolve().is_relative_to(stripped):
            raise RuntimeError(f"{name} was loaded from {path}, outside the stripped minires")


def main(spec_path):
    spec = json.loads(Path(spec_path).read_text())
    die_with_parent()
    out = Path(spec["out"])
    try:
        if spec.get("jail"):
            from .isolation import enter_jail
            enter_jail(spec["jail"], spec["jail_root"])
        os.chdir(out)
        preload()
        expect_only_stripped_minires()
        import numpy as np

        from .registry import get

        assignment = get(spec["assignment"])
        part = assignment.part(spec["part"])
        cases = part.cases(np.random.default_rng([spec["seed"], assignment.parts.index(part)]))
        lent = [_lent(Path(spec["directory"]) / lent_file(i)) for i in range(len(cases))]
        if spec.get("uid") is not None:
            drop_privileges(spec["uid"])
        limit_resources(spec["limits"])
        run(cases, lent, spec["directory"], assignment, part, out)
    except BaseException as error:  # the grader's own bug: say so rather than die silently
        (out / ERROR_FILE).write_text(f"grader error in the sandbox: {type(error).__name__}: "
                                      f"{error}")


def _lent(path):
    import numpy as np

    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def run(cases, lent, directory, assignment, part, out):
    """Each case on the student's code (loaded here, after the limits), its arrays to `out`; a
    case that fails does not stop the next one."""
    import numpy as np

    from .checks import Failure, as_array

    try:
        impl = student_impl(directory, assignment, part)
        watch = None if assignment.autograd_in_backward else BackwardWatch(impl, part)
    except BaseException as error:  # student code may raise anything, SystemExit included
        (out / ERROR_FILE).write_text(describe_error(error, directory))
        return
    for index, case in enumerate(cases):
        try:
            inputs = {name: array.copy() for name, array in case.inputs.items()}
            outputs = case.run(impl, {**inputs, **lent[index]})
            arrays = {f"output:{name}": as_array(name, value) for name, value in outputs.items()}
            arrays.update({f"input:{name}": array for name, array in inputs.items()})
            np.savez(out / case_file(index), **arrays)
        except Failure as failure:
            (out / case_error_file(index)).write_text(str(failure))
        except BaseException as error:
            (out / case_error_file(index)).write_text(describe_error(error, directory))
    if watch is not None and watch.calls:
        (out / BY_HAND_FILE).write_text(watch.verdict())


# --- what `impl` is in the child -----------------------------------------------------------------

def student_impl(directory, assignment, part):
    """The student's files the part needs, and nothing else: the stripped minires around them has
    no answer to lend, so each target runs with the student's own other functions."""
    from .student import load_module

    return SimpleNamespace(**{Path(f).stem: load_module(Path(directory) / f)
                              for f in assignment.files_of(part)})


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


class BackwardWatch:
    """While a backward target of the part runs, count the calls into the student's forward
    methods, minires' autograd and minires.functional: a backward must be the student's own
    derivation, not autograd or finite differences through the forward.

    A profile hook (sys.setprofile) sees every Python call by its code object, so an alias the
    student's code took of a forward at import time is counted too (any function named forward
    in the student's files)."""

    def __init__(self, impl, part):
        self.calls = collections.Counter()
        self.watched = _watched_code(impl)
        self.files = {module.__file__ for module in vars(impl).values()}
        for qualname in part.uses:
            if qualname.endswith("backward"):
                for module in vars(impl).values():
                    self._wrap(module, qualname)

    def _wrap(self, module, qualname):
        owner_name, _, attribute = qualname.rpartition(".")
        owner = getattr(module, owner_name, None) if owner_name else module
        original = None if owner is None else vars(owner).get(attribute)
        if original is None:
            return

        def watched_backward(*args, **kwargs):
            sys.setprofile(self._hook)
            try:
                return original(*args, **kwargs)
            finally:
                sys.setprofile(None)
        setattr(owner, attribute, watched_backward)

    def _hook(self, frame, event, _arg):
        if event != "call":
            return
        code = frame.f_code
        label = self.watched.get(code)
        if label is None and code.co_name == "forward" and code.co_filename in self.files:
            label = "your forward"  # an alias of a forward, or a class's forward replaced
        if label is not None:
            self.calls[label] += 1

    def verdict(self):
        called = ", ".join(f"{label} ({count}x)" for label, count in self.calls.most_common())
        return (f"your backward called {called} while it ran: a backward is graded as written "
                "by hand (its own derivatives, from what forward saved), not through the "
                "forward, autograd or finite differences; this part scores 0")


def _watched_code(impl):
    """{code object: what to call it} for the calls a backward may not make."""
    import inspect

    from .. import autograd, functional
    from ..gradcheck import gradcheck

    watched = {}
    for name, value in vars(functional).items():
        if inspect.isfunction(value):
            watched[value.__code__] = f"minires.functional.{name}"
    for label, function in (("Function.apply", autograd.Function.apply),
                            ("Tensor.backward", autograd.Tensor.backward),
                            ("minires.gradcheck", gradcheck)):
        watched[function.__code__] = f"minires' autograd ({label})"
    for module in vars(impl).values():
        for name, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == module.__name__ \
                    and inspect.isfunction(value.__dict__.get("forward")):
                watched[value.forward.__code__] = f"your {name}.forward"
    return watched


if __name__ == "__main__":
    main(sys.argv[1])
