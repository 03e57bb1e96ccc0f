"""`minires assignment release` and `minires assignment gradescope`: what a teacher hands out.

release: a student copy of the minires package with every solution body of every assignment
replaced by `raise NotImplementedError` (the markers stay, so `minires assignment make` still
works in the copy), `minires/fast/` removed where present (complete fast solutions), and every test
and tutorial marked as needing the solutions. Students cannot reach what is not there.

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

from .registry import all_assignments, get
from .workspace import PACKAGE_DIR, source_path, stub_source

SOLUTION_FOLDERS = ("fast",)  # removed from the student copy: whole solutions, not stubs
RELEASE_MARK = "RELEASE.md"   # written into the student package: what was removed
TEST_SKIP = ('import pytest\n\npytestmark = pytest.mark.skip(reason="needs minires\' reference '
             'solutions, removed from this student release")\n')
TUTORIAL_NOTE = ("# NEEDS THE SOLUTIONS: this tutorial runs minires' reference ops, which this "
                 "student release leaves for you to write.\n")


def targets_by_file(keep=()):
    """{package-relative path: [Target]} over every assignment not named in `keep`."""
    found = {}
    for assignment in all_assignments().values():
        if assignment.name in keep:
            continue
        for target in assignment.targets:
            found.setdefault(source_path(target.file), []).append(target)
    return found


def release_package(out, keep=()):
    """Write the student copy of the package into out/minires, the solutions of the assignments
    in `keep` left in (a later release, once their deadline has passed); returns the files
    stubbed."""
    out = Path(out)
    destination = out / "minires"
    if destination.exists():
        raise SystemExit(f"{destination} already exists; choose an empty --out")
    shutil.copytree(PACKAGE_DIR, destination,
                    ignore=shutil.ignore_patterns("__pycache__", *SOLUTION_FOLDERS))
    stubbed = []
    for relative, targets in targets_by_file(keep).items():
        path = destination / relative
        path.write_text(stub_source(path.read_text(), targets, relative, keep_markers=True))
        stubbed.append(relative)
    (destination / RELEASE_MARK).write_text(
        "This is a student release of minires: every solution body of the assignments ("
        + ", ".join(sorted(stubbed)) + ") is a TODO, and minires/fast/ is not included.\n")
    return stubbed


def mark_needing_solutions(source_root, out):
    """Copy tests/ and tutorials/ (beside the package, when there), each file marked."""
    for folder, mark in (("tests", _mark_test), ("tutorials", _mark_tutorial)):
        if not (source_root / folder).is_dir():
            continue
        shutil.copytree(source_root / folder, out / folder,
                        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        for path in (out / folder).rglob("*.py"):
            path.write_text(mark(path.name, path.read_text()))


def _mark_test(name, text):
    if not name.startswith("test_"):
        return text
    return TEST_SKIP + text


def _mark_tutorial(name, text):
    return TUTORIAL_NOTE + text


def release(out, keep=()):
    """The whole student release in `out`: package, marked tests and tutorials."""
    for name in keep:
        get(name)  # a clear error for an unknown name
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stubbed = release_package(out, keep)
    mark_needing_solutions(PACKAGE_DIR.parent, out)
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
# $ROOT/results/results.json. MINIRES_AUTOGRADER_ROOT and MINIRES_PYTHON exist for testing.
ROOT="${{MINIRES_AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{MINIRES_PYTHON:-/autograder/minires-venv/bin/python}}"
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
        needed = ["numpy>=1.22", "tqdm>=4.60", "threadpoolctl>=3.1"]
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
