"""`minires assignment release` and `minires assignment gradescope`: what a teacher hands out.

release: a student copy of minires, installable (`pip install -e .`), in which only the assigned
parts are blank. Every target of an assigned assignment has its solution body replaced by
`raise NotImplementedError("TODO: ...")` in the package's own files (minires/ops/conv.py, ...),
between the solution markers (where the student writes, and what `submit` screens against), so
everything else in minires (gradcheck, the layers, the nets, the tutorials) runs the
student's code. An assignment that is not assigned, or whose solution is released
(`--solutions`), keeps minires' code and works. The default assigns every assignment but
engine. The copy holds the package (without minires/fast/, whole fast solutions), pyproject.toml,
a README for students, one page per assignment under assignments/, the tutorials (a note after
the header of those that run a blank part) and tests/test_my_minires.py (the public checks).
No test of this repository is shipped (their planted bugs are near-solutions), and the release
refuses to finish if any file of the copy holds a blank assignment's reference body or a
near-copy of one (leaks.py).

gradescope: the autograder zip Gradescope's specification asks for: `setup.sh` and
`run_autograder` at the root, with the teacher's (complete) minires beside them. Gradescope
unpacks it into /autograder/source, runs setup.sh once, then run_autograder for each submission:
it grades /autograder/submission and writes /autograder/results/results.json.
"""
import importlib.metadata
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

from . import handout
from .leaks import find_leaks
from .registry import all_assignments, get
from .submit import HANDED_OUT
from .workspace import (DEFAULT_HINTS, HINTS, PACKAGE_DIR, absolute_source, source_path,
                        stub_source)

SOLUTION_FOLDERS = ("fast",)  # removed from the student copy: whole solutions, not stubs
# what stands in their place: importing it fails as a missing module does (functional.py then runs
# the readable ops), while keeping an import from reaching another minires installed beside the
# copy (a teacher's editable install would otherwise lend the copy its fast, complete ops)
ABSENT_FOLDER = ('"""Not part of a student copy of minires: the readable ops in minires/ops run '
                 'instead."""\nraise ModuleNotFoundError("minires.{folder} is not part of a '
                 'student copy", name=__name__)\n')
RELEASE_MARK = "RELEASE.md"   # written into the student package: what is blank in it
NOT_ASSIGNED_BY_DEFAULT = ("engine",)
# which assignments' code each tutorial runs (by file name prefix); a tutorial not listed here
# is taken to run every assignment's
TUTORIAL_RUNS = {"01": ("engine",)}


def course(assign=None, solutions=(), hints=None, course_file=None):
    """{"blank": [...], "solutions": [...], "hints": ...}: what a release leaves blank, in course
    order. `course_file` (JSON with any of the keys "assign", "solutions", "hints") gives the
    defaults; arguments that are given win. Unknown names are a SystemExit listing the real ones."""
    settings = read_course_file(course_file) if course_file else {}
    unknown = set(settings) - {"assign", "solutions", "hints"}
    if unknown:
        raise SystemExit(f"{course_file}: unknown keys {sorted(unknown)}; a course file may give "
                         "assign, solutions and hints")
    names = list(all_assignments())
    assign = assign if assign else settings.get(
        "assign", [n for n in names if n not in NOT_ASSIGNED_BY_DEFAULT])
    solutions = list(solutions) or settings.get("solutions", [])
    hints = hints or settings.get("hints", DEFAULT_HINTS)
    if hints not in HINTS:
        raise SystemExit(f"hints must be one of {', '.join(HINTS)}, got {hints!r}")
    for name in [*assign, *solutions]:
        get(name)
    return {"blank": [n for n in names if n in assign and n not in solutions],
            "solutions": [n for n in names if n in solutions], "hints": hints}


def read_course_file(path):
    """The course file's JSON object; a SystemExit naming the file when it cannot be read or is
    not a JSON object."""
    try:
        settings = json.loads(Path(path).read_text())
    except OSError as error:
        raise SystemExit(f"cannot read the course file {path}: {error.strerror}") from None
    except ValueError as error:
        raise SystemExit(f"the course file {path} is not valid JSON: {error}") from None
    if not isinstance(settings, dict):
        raise SystemExit(f"the course file {path} must hold a JSON object such as "
                         '{"assign": ["conv"], "solutions": [], "hints": "shapes"}')
    return settings


def targets_by_file(blank):
    """{package-relative path: [Target]} over the assignments in `blank`."""
    found = {}
    for name in blank:
        for target in get(name).targets:
            found.setdefault(source_path(target.file), []).append(target)
    return found


def release_package(out, blank, hints=DEFAULT_HINTS):
    """Write the student copy of the package into out/minires, the assignments in `blank` stubbed;
    returns the files stubbed."""
    destination = Path(out) / "minires"
    shutil.copytree(PACKAGE_DIR, destination,
                    ignore=shutil.ignore_patterns("__pycache__", *SOLUTION_FOLDERS))
    for folder in SOLUTION_FOLDERS:
        (destination / folder).mkdir()
        (destination / folder / "__init__.py").write_text(ABSENT_FOLDER.format(folder=folder))
    stubbed = []
    for relative, targets in targets_by_file(blank).items():
        path = destination / relative
        path.write_text(stub_source(path.read_text(), targets, relative, keep_markers=True,
                                    hints=hints))
        stubbed.append(relative)
    (destination / RELEASE_MARK).write_text(handout.release_note(blank, stubbed))
    kept = destination / HANDED_OUT
    kept.mkdir()
    for filename in {f for name in blank for f in get(name).files}:
        (kept / filename).write_text(absolute_source(filename, destination))
    return stubbed


def copy_tutorials(source_root, out, blank):
    """tutorials/ beside the package, with a note (after the jupytext header) in each tutorial
    that runs a blank assignment's code."""
    if not (source_root / "tutorials").is_dir():
        return
    shutil.copytree(source_root / "tutorials", out / "tutorials",
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    for path in sorted((out / "tutorials").glob("[0-9]*.py")):
        runs = TUTORIAL_RUNS.get(path.name[:2], tuple(all_assignments()))
        needed = [name for name in blank if name in runs]
        if needed:
            path.write_text(after_header(path.read_text(), handout.tutorial_note(needed)))


def after_header(text, cell):
    """`text` (a jupytext percent script) with `cell` inserted right after its header."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "# ---":
        return cell + "\n" + text
    end = next(i for i in range(1, len(lines)) if lines[i].strip() == "# ---")
    return "".join(lines[:end + 1]) + "\n" + cell + "".join(lines[end + 1:])


def release(out, assign=None, solutions=(), hints=None, course_file=None):
    """The whole student copy in `out`; returns the package files stubbed. Raises RuntimeError
    (leaving `out` for inspection) if a file in it holds a blank assignment's reference body."""
    plan = course(assign, solutions, hints, course_file)
    source_root = PACKAGE_DIR.parent
    if not (source_root / "pyproject.toml").is_file():
        raise SystemExit(f"release copies minires' source checkout (pyproject.toml, tutorials/ "
                         f"beside the package); {source_root} has no pyproject.toml")
    out = Path(out)
    if (out / "minires").exists():
        raise SystemExit(f"{out / 'minires'} already exists; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    stubbed = release_package(out, plan["blank"], plan["hints"])
    copy_tutorials(source_root, out, plan["blank"])
    pyproject = (source_root / "pyproject.toml").read_text()
    files = {"pyproject.toml": pyproject, "README.md": handout.student_readme(plan, pyproject),
             "tests/test_my_minires.py": handout.PUBLIC_TEST,
             "course.json": json.dumps(plan, indent=2) + "\n"}
    for name in plan["blank"]:
        files[f"assignments/{name}.md"] = handout.assignment_page(get(name))
        files.update({f"assignments/{f}": text for f, text in handout.extras(name).items()})
    for relative, text in files.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_text(text)
    leaks = find_leaks(out, plan["blank"])
    if leaks:
        raise RuntimeError("the student copy in {} holds reference solutions: {}".format(
            out, "; ".join(f"{f} ({where}, ratio {ratio})" for f, where, ratio in leaks)))
    return stubbed


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu 22.04 or
# 24.04). minires' dependencies go into a venv of their own: 24.04's pip refuses to install into
# the system's Python (PEP 668). unshare (util-linux) gives each sandbox its own namespaces.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update >/dev/null
apt-get install -y python3 python3-venv python3-pip util-linux >/dev/null
python3 -m venv /autograder/minires-venv
/autograder/minires-venv/bin/pip install --no-cache-dir {requirements}
chmod -R go-rwx /autograder/source  # the complete minires: root's alone
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this, as root, in /autograder, for every submission. It grades
# $ROOT/submission (the student's {files}) with the complete minires in $ROOT/source and writes
# $ROOT/results/results.json. For a dry run elsewhere: MINIRES_AUTOGRADER_ROOT is the folder
# that stands for /autograder, MINIRES_PYTHON a Python with minires' dependencies (setup.sh's
# venv is used where it exists, else python3).
ROOT="${{MINIRES_AUTOGRADER_ROOT:-/autograder}}"
VENV_PYTHON=/autograder/minires-venv/bin/python
if [ -z "${{MINIRES_PYTHON:-}}" ] && [ ! -x "$VENV_PYTHON" ]; then
    echo "run_autograder: no $VENV_PYTHON (setup.sh makes it); grading with python3" >&2
fi
PYTHON="${{MINIRES_PYTHON:-$( [ -x "$VENV_PYTHON" ] && echo "$VENV_PYTHON" || echo python3 )}}"
mkdir -p "$ROOT/results"
# Before Python starts: every part at 0, so a missing dependency, a crash or a timeout never
# leaves an older score in place. The grader replaces it atomically once it has graded.
cat > "$ROOT/results/results.json" <<'MINIRES_UNFINISHED'
{unfinished}
MINIRES_UNFINISHED
chmod -R go-rwx "$ROOT/source"  # the complete minires and these scripts: root's alone
cd "$ROOT/results" || exit 0  # never the submission's folder: nothing of it on the path
PYTHONPATH="$ROOT/source" "$PYTHON" -m minires assignment grade "$ROOT/submission" \\
    --assignment {name} --timeout {timeout:g} --json "$ROOT/results/results.json"
# the score is in results.json; a submission without full marks is not an error here
exit 0
"""


def requirements():
    """minires' own dependencies, as pip arguments."""
    try:
        needed = importlib.metadata.requires("minires") or []
    except importlib.metadata.PackageNotFoundError:
        needed = ["numpy>=1.22", "tqdm>=4.60"]
    return " ".join(f"'{r}'" for r in needed if "extra ==" not in r)


def unfinished_results(assignment):
    """results.json with every part at 0 and why: what run_autograder writes before Python."""
    message = ("grading did not finish (the grader could not start, crashed or ran out of "
               "time): every part scores 0; ask your teacher")
    return json.dumps({"score": 0, "output": message,
                       "tests": [{"name": p.name, "score": 0, "max_score": p.points,
                                  "output": message} for p in assignment.parts]})


def gradescope_bundle(name, zip_path, timeout=60.0):
    """Write Gradescope's autograder zip for assignment `name`; returns the names it holds."""
    assignment = get(name)
    files = {
        "setup.sh": SETUP_SH.format(requirements=requirements()),
        "run_autograder": RUN_AUTOGRADER.format(name=assignment.name, timeout=timeout,
                                                files=", ".join(assignment.files),
                                                unfinished=unfinished_results(assignment)),
    }
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for filename, text in files.items():
            info = zipfile.ZipInfo(filename)
            info.external_attr = (stat.S_IFREG | 0o755) << 16  # executable once unzipped
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, text)
            names.append(filename)
        for path in sorted(PACKAGE_DIR.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            arcname = str(Path("minires") / path.relative_to(PACKAGE_DIR))
            bundle.write(path, arcname)
            names.append(arcname)
    return names


def unpack(zip_path, destination):
    """Unzip keeping the executable bits (as Gradescope does), for tests and for a dry run."""
    with zipfile.ZipFile(zip_path) as bundle:
        for info in bundle.infolist():
            target = Path(destination) / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bundle.read(info))
            mode = info.external_attr >> 16 & 0o777
            if mode:
                os.chmod(target, mode)
