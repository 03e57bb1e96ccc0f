"""`minires assignment grade`: every part of a workspace in its own sandboxed process, each case
scored, the score decided in the grader's own process.

The trust boundary. Student code never runs in the process that decides the score, nothing it
makes is unpickled there, and the process it runs in holds no answer:

1. Each part runs in a fresh interpreter (`sys.executable -E -s -c BOOT`, never a fork of this
   process) on the stripped minires (stripped.py: every solution removed), in its own
   namespaces and jail, under a uid of its own, with CPU, memory, file-size and process limits
   and a wall-clock timeout (isolation.py). The complete minires, the grader's
   files and the other sandboxes are out of its reach; each target runs with the student's own
   other functions, never a reference.
2. The child writes plain arrays only (`case<i>.npz`). Once it and everything it started are
   dead, the grader reads them as a careful stranger would (`read_regular`: no links, regular
   files only, sizes and member counts bounded before anything is unpacked, `allow_pickle=False`),
   draws the same cases from the same seed, computes the expected values with minires' reference
   itself, and compares.
3. What the child says (an error, its output) reaches the student as plain text: control
   characters stripped, length capped.

The source screen (guard.py) only advises: it names a suspicious line in the part's output and
never refuses a file. A part scores its points times the fraction of its cases that pass; its
output names every case, and for each failure, why.
"""
import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import struct
import sys
import tempfile
import textwrap
import unicodedata
import zipfile
from dataclasses import dataclass, field
from importlib import import_module
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .checks import Failure, compare_case
from .guard import screen_file
from .isolation import (LINUX, bounded_folder, claimed_uid, child_environment,
                        isolation_summary, jail_plan, namespace_prefix, processes_of, reaper,
                        run_isolated)
from .registry import get
from .sandbox import BY_HAND_FILE, ERROR_FILE, case_error_file, case_file, lent_file
from .stripped import stripped_root
from .workspace import PACKAGE_DIR, reference_module_name, workspace_source

OUTPUT_LIMIT = 4000         # characters of a part's output kept (a traceback can be long)
TEXT_LIMIT = 16000          # bytes of a text the child wrote that the grader reads
SOURCE_LIMIT = 2**20        # bytes of a student file the grader copies
RESULT_BYTES = 64 * 2**20   # the most a case's .npz may hold, packed or unpacked
RESULT_MEMBERS = 64         # the most arrays a case's .npz may hold
OUTPUT_BYTES = 256 * 2**20  # the most a part's output folder holds, where the grader is root
# The child's first line: the stripped minires first on its path, nothing from the current folder
# or the environment (-E -s; Python 3.9's spelling of 3.11's -P), and only Python's own import
# machinery (an editable install's finder would find the complete package's modules)
BOOT = ("import sys; sys.path[0] = sys.argv[1]; "
        "sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, '__module__', '')"
        ".startswith('_frozen_importlib')]; "
        "from minires.assignments.sandbox import main; main(sys.argv[2])")
LIMITS = dict(cpu_slack=5, address_space=4 * 2**30, file_size=RESULT_BYTES, open_files=256,
              processes=64)


@dataclass
class PartResult:
    name: str
    score: float
    max_score: int
    verdict: str  # one line for the table: "ok", or why the part failed
    output: str
    cases: list = field(default_factory=list)  # [{"name", "score", "max_score", "passed"}]


def assignment_of(directory, name=None):
    """The Assignment to grade `directory` against: the teacher names it (--assignment, or the
    Gradescope bundle); a hand-in's own assignment.json is never trusted to choose."""
    if name is None:
        raise SystemExit(f"name the assignment to grade {directory} against with --assignment "
                         "(the hand-in's own assignment.json does not choose it)")
    return get(name)


def grade(directory, name, seed=None, timeout=60.0, parts=None):
    """Grade the workspace in `directory` against assignment `name`; returns (seed,
    [PartResult]) for the chosen parts.

    On Linux this process is a child subreaper while it grades (isolation.reaper), and is
    restored after.
    """
    assignment = assignment_of(directory, name)
    seed = secrets.randbits(32) if seed is None else seed
    chosen = [assignment.part(p) for p in parts] if parts else list(assignment.parts)
    sources, problems, advice = read_workspace(Path(directory), assignment)
    stripped = stripped_root()
    with reaper():
        results = [grade_part(assignment, part, sources, seed, timeout, problems, advice,
                              stripped) for part in chosen]
    return seed, results


# --- the hand-in ---------------------------------------------------------------------------------

def read_workspace(directory, assignment):
    """({file: bytes}, {file: why it cannot be graded}, {file: the screen's advice}) for the
    assignment's files: a missing file, a link or a file too large scores 0 for its parts; the
    screen's findings are advice only."""
    sources, problems, advice = {}, {}, {}
    for filename in assignment.files:
        try:
            data = read_regular(directory / filename, SOURCE_LIMIT)
        except Failure as failure:
            problems[filename] = f"refused: {failure}"
            continue
        if data is None:
            problems[filename] = (f"{filename} is missing from your submission (was it renamed "
                                  "or moved into a folder?); its parts score 0")
            continue
        sources[filename] = data
        handed_out = workspace_source(filename, assignment.targets)
        findings = screen_file(data.decode("utf-8-sig", errors="replace"), filename, handed_out)
        if findings:
            advice[filename] = findings
    return sources, problems, advice


def read_regular(path, limit):
    """The bytes of the regular file at `path` (never through a link), None if there is none; a
    Failure if it is a link, not a regular file, or over `limit` bytes.

    O_NONBLOCK: opening a FIFO returns at once (it is then refused), so nothing a sandbox leaves
    behind can make the grader wait."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise Failure(f"{Path(path).name} cannot be opened as a plain file (a link?): "
                      f"{error.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Failure(f"{Path(path).name} is not a regular file")
        if info.st_size > limit:
            raise Failure(f"{Path(path).name} holds {info.st_size} bytes; the grader reads at "
                          f"most {limit}")
        return file.read(limit)


# a terminal escape sequence: CSI (ESC [ ... final letter), OSC (ESC ] ... BEL or ESC \\), or
# ESC and one character; removed whole, so that no '[2J' is left to read as text
ESCAPE_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?")


def plain_text(text, limit=OUTPUT_LIMIT):
    """`text` as plain text: terminal escape sequences, carriage returns and every other control
    or format character (bidirectional overrides) removed, newlines and tabs kept, at most
    `limit` characters."""
    text = ESCAPE_SEQUENCE.sub("", text)
    kept = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    return kept[:limit]


def read_text(path):
    """A text the sandbox wrote, cleaned; '' if there is none or it cannot be read safely."""
    try:
        data = read_regular(path, TEXT_LIMIT)
    except Failure as failure:
        return str(failure)
    return plain_text(data.decode("utf-8", errors="replace")) if data else ""


# --- one part ------------------------------------------------------------------------------------

def grade_part(assignment, part, sources, seed, timeout, problems, advice, stripped):
    """One PartResult: refuse it (a file missing), or run it in a sandbox and score its cases."""
    cases = part.cases(np.random.default_rng([seed, assignment.parts.index(part)]))
    blocking = [problems[f] for f in assignment.files_of(part) if f in problems]
    if blocking:
        outcomes = [(case.name, "\n".join(blocking)) for case in cases]
    else:
        outcomes = run_sandboxed(assignment, part, cases, sources, seed, timeout, stripped)
    notes = [line for f in assignment.files_of(part) for line in advice.get(f, [])]
    return score(part, outcomes, notes)


def score(part, outcomes, notes=()):
    """The PartResult of [(case name, None if it passed else why not)]."""
    each = part.points / len(outcomes)
    passed = sum(why is None for _, why in outcomes)
    total = part.points if passed == len(outcomes) else round(each * passed, 4)
    lines = [f"{passed} of {len(outcomes)} cases pass: {total:g} / {part.points} points "
             f"({each:.4g} per case)"]
    previous = None
    for name, why in outcomes:
        lines.append(f"{'ok  ' if why is None else 'FAIL'}  {name}")
        if why is not None:
            lines.append("      (as above)" if why == previous else textwrap.indent(why, "      "))
            previous = why
    if notes:
        lines += ["", "the grader's source screen (advice only, not scored):", *notes]
    failures = [why for _, why in outcomes if why is not None]
    verdict = (failures[0].splitlines() or ["failed"])[0] if failures else "ok"
    cases = [{"name": name, "score": round(each, 4) if why is None else 0,
              "max_score": round(each, 4), "passed": why is None} for name, why in outcomes]
    return PartResult(part.name, total, part.points, verdict, plain_text("\n".join(lines)),
                      cases)


def run_sandboxed(assignment, part, cases, sources, seed, timeout, stripped):
    """[(case name, None or why it failed)]: the student's files copied into a fresh folder, the
    child run there under a uid of its own, then its arrays compared with the reference's."""
    root = Path(tempfile.mkdtemp(prefix="minires-grade-"))
    try:
        work, out, jail = root / "work", root / "out", root / "jail"
        for folder in (work, out, jail):
            folder.mkdir()
        for filename in assignment.files_of(part):
            (work / filename).write_bytes(sources[filename])
        reference = reference_impl(assignment)
        lent = lend(cases, reference, work)
        with claimed_uid() as uid, bounded_folder(out, OUTPUT_BYTES):
            code = _start(assignment, part, seed, timeout, stripped, root, uid)
            return judge(cases, lent, reference, out, code, timeout, root / "log")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(assignment, part, seed, timeout, stripped, root, uid):
    """Run the child for one part; its exit code, or None when it timed out."""
    work, out = root / "work", root / "out"
    os.chmod(root, 0o711)  # the child (another uid) reaches work/ and out/ by name, lists nothing
    os.chmod(work, 0o755)
    for path in work.iterdir():  # the student's own files; what the grader lent is read as root
        os.chmod(path, 0o600 if path.suffix == ".npz" else 0o644)
    if uid is not None:
        os.chown(out, uid, uid)
    os.chmod(out, 0o700)
    spec = {"assignment": assignment.name, "part": part.name, "seed": seed, "uid": uid,
            "directory": str(work), "out": str(out), "limits": child_limits(timeout, uid)}
    if namespace_prefix():
        spec["jail"] = jail_plan([stripped, work], [out], [PACKAGE_DIR])
        spec["jail_root"] = str(root / "jail")
    (root / "spec.json").write_text(json.dumps(spec))
    os.chmod(root / "spec.json", 0o600)  # read by the child while it is still root
    code, _ = run_isolated([sys.executable, "-E", "-s", "-B", "-c", BOOT, str(stripped),
                            str(root / "spec.json")], cwd=out, log=root / "log", timeout=timeout,
                           env=child_environment(stripped), uid=uid)
    return code


def child_limits(timeout, uid):
    """The rlimits the child sets on itself (sandbox.limit_resources)."""
    limits = {"cpu": int(timeout) + LIMITS["cpu_slack"], "as": LIMITS["address_space"],
              "fsize": LIMITS["file_size"], "nofile": LIMITS["open_files"],
              "nproc": LIMITS["processes"]}
    if uid is None and LINUX:  # RLIMIT_NPROC counts all of the user's processes, the
        limits["nproc"] += len(processes_of(os.getuid()))  # grader's own user's here
    return limits


def lend(cases, reference, work):
    """[{name: array}] per case: what its `lend` computes with the reference, saved for the child
    as work/lent<i>.npz (plain arrays)."""
    lent = []
    for index, case in enumerate(cases):
        arrays = {} if case.lend is None else case.lend(reference, _copies(case.inputs))
        if arrays:
            np.savez(work / lent_file(index), **arrays)
        lent.append(arrays)
    return lent


def _copies(arrays):
    return {name: array.copy() for name, array in arrays.items()}


def judge(cases, lent, reference, out, code, timeout, log):
    """[(case name, None or why it failed)], each case compared on its own."""
    by_hand = read_text(out / BY_HAND_FILE)
    if by_hand:
        return [(case.name, by_hand) for case in cases]
    outcomes = []
    for index, case in enumerate(cases):
        try:
            got = read_arrays(out / case_file(index))
            if got is None:
                raise Failure(read_text(out / case_error_file(index)) or
                              _why_no_result(out, code, timeout, log))
            compare_case(case, got, case.run(reference, {**_copies(case.inputs),
                                                         **lent[index]}))
            outcomes.append((case.name, None))
        except Failure as failure:
            outcomes.append((case.name, plain_text(str(failure), TEXT_LIMIT)))
    return outcomes


def read_arrays(path):
    """{name: array} from a child's .npz (no pickles), None if it wrote none; a Failure if it is
    not a plain-array .npz of reasonable size. The member count and the central directory's size
    are read from the zip's end record before anything is parsed or unpacked."""
    data = read_regular(path, RESULT_BYTES)
    if data is None:
        return None
    try:
        _check_zip_end(data)
        with zipfile.ZipFile(BytesIO(data)) as members:  # declared sizes cap decompression
            unpacked = sum(member.file_size for member in members.infolist())
        if unpacked > RESULT_BYTES:
            raise Failure(f"your code's result holds {unpacked} bytes; the grader reads at most "
                          f"{RESULT_BYTES}")
        with np.load(BytesIO(data), allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except Failure:
        raise
    except Exception as error:  # a truncated or forged file: that part's loss, not the grader's
        raise Failure(f"your code's process wrote a result the grader cannot read as plain "
                      f"arrays ({type(error).__name__}: {plain_text(str(error), 200)})") from None


def _check_zip_end(data):
    """Refuse a zip whose end record declares more than RESULT_MEMBERS members or a central
    directory larger than they need, or that has a zip64 end (never needed for a case)."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if end < 0 or len(data) < end + 22:
        raise Failure("your code's process wrote a result that is not a .npz (zip) file")
    members, directory_size = struct.unpack("<HI", data[end + 10:end + 16])
    zip64 = end >= 20 and data[end - 20:end - 16] == b"PK\x06\x07"
    if zip64 or members > RESULT_MEMBERS or directory_size > RESULT_MEMBERS * 1024:
        count = "more than 65535" if zip64 else members
        raise Failure(f"your code's result holds {count} arrays; the grader reads at most "
                      f"{RESULT_MEMBERS}")


def _why_no_result(out, code, timeout, log):
    error = read_text(out / ERROR_FILE)
    if error:
        return error
    if code is None:
        return f"timed out after {timeout:g} s (an infinite loop?)"
    tail = read_text(log)[-800:].strip()
    return (f"the process running your code died (exit code {code}) before this case finished"
            + (f"; its last output:\n{tail}" if tail else ""))


def reference_impl(assignment):
    """minires' own modules, by workspace file stem: impl.conv is minires.ops.conv."""
    return SimpleNamespace(**{Path(f).stem: import_module(reference_module_name(f))
                              for f in assignment.files})


# --- reporting -----------------------------------------------------------------------------------

def table(assignment, seed, results):
    """The score table, then every failing part's output."""
    width = max(len(r.name) for r in results)
    lines = [f"assignment {assignment.number}: {assignment.name} (seed {seed}; repeat with "
             f"--seed {seed})", ""]
    for r in results:
        verdict = textwrap.shorten(r.verdict, 90, placeholder=" ...")
        lines.append(f"{r.name:<{width}}  {r.score:>5g} / {r.max_score:<2}  {verdict}")
    total, most = sum(r.score for r in results), sum(r.max_score for r in results)
    lines.append(f"{'total':<{width}}  {round(total, 4):>5g} / {most:<2}")
    for r in results:
        if r.score < r.max_score:
            lines += ["", f"--- {r.name}", r.output]
    return "\n".join(lines)


def gradescope_results(results, assignment=None, seed=None, finished=True):
    """Gradescope's results.json: {"score", "tests": [{name, score, max_score, output}], ...};
    with `assignment`, also what was graded: the assignment, each part and its cases' points,
    the seed, the version and the isolation the run had."""
    from .. import __version__

    report = {"score": round(sum(r.score for r in results), 4),
              "tests": [{"name": r.name, "score": r.score, "max_score": r.max_score,
                         "output": r.output} for r in results]}
    if assignment is not None:
        status = "graded" if finished else "grading did not finish: every part scores 0"
        report["output"] = (f"minires {__version__}, assignment {assignment.number} "
                            f"({assignment.name}), seed {seed}: {status}. Isolation: "
                            f"{isolation_summary()}")
        report["extra_data"] = {"assignment": assignment.name, "seed": seed,
                                "minires_version": __version__, "finished": finished,
                                "parts": [r.name for r in results],
                                "cases": {r.name: r.cases for r in results},
                                "isolation": isolation_summary()}
    return report


def write_results(path, report):
    """Write results.json atomically, through a temporary file of a random name in the same
    folder: a reader sees the old file or the new one, never half, and no one can plant the
    temporary name in advance."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(report, indent=2) + "\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
