"""`minires assignment grade`: every part of a workspace in its own sandboxed process, one score
each, decided in the grader's own process.

The trust boundary. Student code never runs in the process that decides the score, and nothing it
makes is unpickled there:

1. Before anything runs, each student file is screened (guard.py): a file that imports minires'
   reference modules or the grader, or introspects frames, is refused with a message, and the
   parts that need it score 0. A missing file scores 0 for its parts; it is never filled in.
2. Each part runs in a fresh interpreter (`sys.executable -P -m minires.assignments.sandbox`, never
   a fork of this process, so threads here cannot hang it) in a new session, under CPU, memory,
   file-size and process limits, isolated as isolation.py describes, with a wall-clock timeout.
3. The child writes plain arrays only (`case<i>.npz`); once it and everything it started are
   dead, the grader loads them with `allow_pickle=False`, draws the same cases from the same seed,
   computes the expected values with minires' reference itself, and compares.

A part scores all its points when every case passes, none otherwise; its output names each case
checked and, for the first failure, why.
"""
import json
import sys
import os
import secrets
import shutil
import tempfile
import textwrap
import traceback
import zipfile
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .checks import Failure, compare_case
from .guard import screen_file
from .isolation import isolation_summary, reaper, run_isolated, sandbox_uid
from .registry import get
from .sandbox import ERROR_FILE, case_file
from .student import load_module
from .workspace import MANIFEST, reference_module_name, workspace_source

OUTPUT_LIMIT = 4000         # characters of a part's output kept (a traceback can be long)
RESULT_BYTES = 64 * 2**20   # the most a case's .npz may hold, unpacked, for the grader to read it
LIMITS = dict(cpu_slack=5, address_space=4 * 2**30, file_size=RESULT_BYTES, open_files=256,
              processes=64)


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
    """Grade the workspace in `directory`; returns (seed, [PartResult]) for the chosen parts.

    On Linux this process is a child subreaper while it grades (isolation.reaper), and is
    restored after.
    """
    assignment = assignment_of(directory, name)
    seed = secrets.randbits(32) if seed is None else seed
    chosen = [assignment.part(p) for p in parts] if parts else list(assignment.parts)
    problems = screen_workspace(Path(directory), assignment)
    with reaper():
        results = [grade_part(assignment, part, Path(directory), seed, timeout, problems)
                   for part in chosen]
    return seed, results


def screen_workspace(directory, assignment):
    """{file: why it cannot be graded} for the assignment's missing or refused files."""
    problems = {}
    for filename in assignment.files:
        path = directory / filename
        if path.is_symlink():  # it could point at anything the grader may read
            problems[filename] = f"refused: {filename} is a link; submit the file itself"
            continue
        if not path.is_file():
            problems[filename] = (f"{filename} is missing from your submission (was it renamed "
                                  "or moved into a folder?); its parts score 0")
            continue
        handed_out = workspace_source(filename, assignment.targets)
        refusals = screen_file(path.read_text(errors="replace"), filename, handed_out)
        if refusals:
            problems[filename] = "refused: " + "\n".join(refusals)
    return problems


def grade_part(assignment, part, directory, seed, timeout, problems):
    """One PartResult: refuse it, or run it in a sandbox and compare what came back."""
    blocking = [problems[f] for f in assignment.files_of(part) if f in problems]
    if blocking:
        passed, verdict, output = _failed([], "\n".join(blocking))
    else:
        passed, verdict, output = run_sandboxed(assignment, part, directory, seed, timeout)
    return PartResult(part.name, part.points if passed else 0, part.points, verdict,
                      output[:OUTPUT_LIMIT])


def run_sandboxed(assignment, part, directory, seed, timeout):
    """(passed, verdict, output) of one part: the student's files copied into a fresh directory,
    the child run there, then its arrays compared with the reference's, case by case."""
    root = Path(tempfile.mkdtemp(prefix="minires-grade-"))
    try:
        work, out = root / "work", root / "out"
        work.mkdir()
        out.mkdir()
        for filename in assignment.files_of(part):
            shutil.copyfile(directory / filename, work / filename)
        uid = sandbox_uid()
        if uid is not None:  # the child, as nobody, reads work/ and writes out/ only
            os.chmod(root, 0o711)
            os.chmod(work, 0o755)
            for path in work.iterdir():
                os.chmod(path, 0o644)
            os.chown(out, uid, uid)
        spec = root / "spec.json"
        spec.write_text(json.dumps({
            "assignment": assignment.name, "part": part.name, "seed": seed, "uid": uid,
            "directory": str(work), "out": str(out), "limits": child_limits(timeout)}))
        os.chmod(spec, 0o644)
        code, _ = run_isolated([sys.executable, "-P", "-m", "minires.assignments.sandbox",
                                str(spec)], cwd=out, log=root / "log", timeout=timeout)
        return judge(assignment, part, seed, out, code, timeout, root / "log")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def child_limits(timeout):
    """The rlimits the child sets on itself (sandbox.limit_resources)."""
    limits = {"cpu": int(timeout) + LIMITS["cpu_slack"], "as": LIMITS["address_space"],
              "fsize": LIMITS["file_size"], "nofile": LIMITS["open_files"]}
    if sandbox_uid() is not None:  # RLIMIT_NPROC counts a user's processes: only ours to count
        limits["nproc"] = LIMITS["processes"]
    return limits


def judge(assignment, part, seed, out, code, timeout, log):
    """Compare each case's arrays with the reference; the first failure ends the part."""
    cases = part.cases(np.random.default_rng([seed, assignment.parts.index(part)]))
    reference = reference_impl(assignment)
    seen = []
    for index, case in enumerate(cases):
        seen.append(case.name)
        try:
            got = read_arrays(out / case_file(index))
            if got is None:
                return _failed(seen, _why_no_result(out, code, timeout, log))
            inputs = {name: array.copy() for name, array in case.inputs.items()}
            compare_case(case, got, case.run(reference, inputs))
        except Failure as failure:
            return _failed(seen, str(failure))
    return True, "ok", "\n".join(f"ok    {name}" for name in seen)


def read_arrays(path):
    """{name: array} from a child's .npz (no pickles), None if it wrote none; a Failure if it is
    not a plain-array .npz of reasonable size."""
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as members:  # declared sizes cap what decompression yields
            unpacked = sum(member.file_size for member in members.infolist())
        if max(unpacked, path.stat().st_size) > RESULT_BYTES:
            raise Failure(f"your code's result holds {unpacked} bytes; the grader reads at most "
                          f"{RESULT_BYTES}")
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except Failure:
        raise
    except Exception as error:  # a truncated or forged file: that part's loss, not the grader's
        raise Failure(f"your code's process wrote a result the grader cannot read as plain "
                      f"arrays ({type(error).__name__}: {error})") from None


def _why_no_result(out, code, timeout, log):
    error = _read_text(out / ERROR_FILE)
    if error:
        return error
    if code is None:
        return f"timed out after {timeout:g} s (an infinite loop?)"
    tail = _read_text(log)[-800:].strip()
    return (f"the process running your code died (exit code {code}) before this case finished"
            + (f"; its last output:\n{tail}" if tail else ""))


def _read_text(path, limit=OUTPUT_LIMIT * 4):
    try:
        with open(path, "rb") as file:
            return file.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _failed(seen, message):
    failing = seen[-1] if seen else "loading your files"
    lines = [f"ok    {case}" for case in seen[:-1]] + [f"FAIL  {failing}",
                                                       textwrap.indent(message, "      ")]
    return False, message.splitlines()[0] if message else "failed", "\n".join(lines)


# --- what `impl` is on each side -----------------------------------------------------------------

def reference_impl(assignment):
    """minires' own modules, by workspace file stem: impl.conv is minires.ops.conv."""
    return SimpleNamespace(**{Path(f).stem: import_module(reference_module_name(f))
                              for f in assignment.files})


def student_impl(directory, assignment, part):
    """In the sandbox: the student's files the part needs, the reference for what it does not
    grade, and this process's copy of every graded reference made unusable first (so that even
    an import the screen missed finds no answer)."""
    files = assignment.files_of(part)
    hide_graded_references(assignment, part)
    impl = SimpleNamespace(**{Path(f).stem: load_module(Path(directory) / f) for f in files})
    for filename in assignment.files:
        if filename not in files:  # a part that needs no student code from this file
            setattr(impl, Path(filename).stem, import_module(reference_module_name(filename)))
    use_reference_for_the_rest(impl, assignment, part)
    return impl


def use_reference_for_the_rest(impl, assignment, part):
    """Put minires' reference in place of every target function this part does not grade."""
    for target in assignment.targets:
        if target.qualname in part.uses or target.file not in assignment.files_of(part):
            continue
        module = getattr(impl, Path(target.file).stem)
        reference = import_module(reference_module_name(target.file))
        owner, ref_owner, attribute = _owners(module, reference, target.qualname)
        replacement = ref_owner.__dict__[attribute]
        if not isinstance(replacement, type):  # a class target only replaces a docstring
            setattr(owner, attribute, replacement)


def hide_graded_references(assignment, part):
    """Replace, in this (sandboxed) process only, each reference function the part grades with
    one that raises: reaching it through minires (Tensor.relu, functional) finds no answer.

    The fast ops (minires/fast) are whole answers too: subclasses of the reference ops that
    override the graded methods. Their overrides are hidden as well, and this process runs the
    references everywhere."""
    from .. import functional

    functional.load_fast_ops()  # imported at first use otherwise: after the hiding, unhidden
    functional.use_reference_ops()
    for target in assignment.targets:
        if target.qualname not in part.uses:
            continue
        reference = import_module(reference_module_name(target.file))
        _, owner, attribute = _owners(reference, reference, target.qualname)
        original = owner.__dict__[attribute]
        if isinstance(original, type):
            continue

        def hidden(*_args, _name=target.qualname, **_kwargs):
            raise RuntimeError(f"minires' reference {_name} is not available while your "
                               f"{_name} is graded")
        for holder in [owner, *_subclasses_overriding(owner, attribute)]:
            setattr(holder, attribute, hidden)
        for name, value in list(vars(functional).items()):
            if value is original:
                setattr(functional, name, hidden)


def _subclasses_overriding(owner, attribute):
    """Every class below `owner` (a class, or a module for a plain function: none) that defines
    `attribute` itself: the fast ops' versions of a reference method."""
    if not isinstance(owner, type):
        return []
    below = owner.__subclasses__()
    found = [cls for cls in below if attribute in cls.__dict__]
    return found + [cls for sub in below for cls in _subclasses_overriding(sub, attribute)]


def _owners(module, reference, qualname):
    """(student owner, reference owner, attribute) of a qualname: 'f' or 'Class.method'."""
    if "." not in qualname:
        return module, reference, qualname
    class_name, attribute = qualname.split(".")
    return getattr(module, class_name), getattr(reference, class_name), attribute


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


# --- reporting -----------------------------------------------------------------------------------

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


def gradescope_results(results, assignment=None, seed=None, finished=True):
    """Gradescope's results.json: {"score", "tests": [{name, score, max_score, output}], ...};
    with `assignment`, also what was graded: the assignment, each part, the seed, the version."""
    from .. import __version__

    report = {"score": sum(r.score for r in results),
              "tests": [{"name": r.name, "score": r.score, "max_score": r.max_score,
                         "output": r.output} for r in results]}
    if assignment is not None:
        status = "graded" if finished else "grading did not finish: every part scores 0"
        report["output"] = (f"minires {__version__}, assignment {assignment.number} "
                            f"({assignment.name}), seed {seed}: {status}")
        report["extra_data"] = {"assignment": assignment.name, "seed": seed,
                                "minires_version": __version__, "finished": finished,
                                "parts": [r.name for r in results],
                                "isolation": isolation_summary()}
    return report


def write_results(path, report):
    """Write results.json atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(temporary, path)
