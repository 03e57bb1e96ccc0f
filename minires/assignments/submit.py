"""`minires assignment submit NAME --out DIR`: a student's files, gathered for the autograder.

In a student copy the student's code lives in the package (minires/ops/conv.py, ...). The grader
reads a folder with the assignment's files by name at its root (conv.py, ...), each loaded on its
own, so each file is written with its relative imports made absolute (`from ..autograd import
Function` -> `from minires.autograd import Function`), exactly as `minires assignment make` hands
a file out. DIR.zip holds the same files, for an upload. Before writing, each file goes through
the grader's own screen (against the files as they were handed out, which the release keeps in
minires/assignments/handed_out/), and the TODOs still open are counted, so the student hears of a
refusal or an unfinished function now rather than from the autograder.
"""
import json
import zipfile
from pathlib import Path

from .guard import screen_file
from .registry import get
from .workspace import MANIFEST, PACKAGE_DIR, absolute_source, workspace_source

TODO_MARK = 'raise NotImplementedError("TODO:'
HANDED_OUT = "assignments/handed_out"  # package-relative: each blank file as it was released


def submission_files(name, package_dir=PACKAGE_DIR):
    """{file name: text} of assignment `name`'s files, from the package in `package_dir`."""
    return {f: absolute_source(f, package_dir) for f in get(name).files}


def warnings_for(name, files):
    """What the autograder's source screen would name (advice), and the TODOs left, as lines for
    the student."""
    assignment = get(name)
    lines = []
    for filename, text in files.items():
        handed_out = handed_out_source(filename, assignment)
        lines += [f"the autograder's screen would name this (advice, not scored): {why}"
                  for why in screen_file(text, filename, handed_out)]
        left = text.count(TODO_MARK)
        if left:
            lines.append(f"{filename}: {left} function(s) still raise NotImplementedError "
                         "(their parts will score 0)")
    return lines


def handed_out_source(filename, assignment):
    """The file as the student received it: kept by the release, or (in the teacher's complete
    copy) cut from minires as `make` cuts it."""
    kept = PACKAGE_DIR / HANDED_OUT / filename
    return kept.read_text() if kept.is_file() else workspace_source(filename, assignment.targets)


def submit(name, out, package_dir=PACKAGE_DIR):
    """Write out/<file> for each of the assignment's files, and out.zip; returns (paths written,
    warnings for the student)."""
    files = submission_files(name, package_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files_and_manifest = {**files, MANIFEST: json.dumps(
        {"assignment": name, "files": list(files)}, indent=2) + "\n"}
    for filename, text in files_and_manifest.items():
        (out / filename).write_text(text)
    archive = out.parent / f"{out.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for filename in files:
            bundle.writestr(filename, files[filename])
    return [out / f for f in files_and_manifest] + [archive], warnings_for(name, files)
