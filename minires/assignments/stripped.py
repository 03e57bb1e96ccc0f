"""The minires that student code runs on while it is graded: every solution removed.

The sandboxed child imports this copy, never the grader's: every target of every assignment is a
TODO stub (workspace.stub_source, as in the student release) and minires/fast/ (whole fast
solutions) is left out, so no import, attribute walk or file read inside the sandbox finds an
answer. It is built once per package source and cached: the folder's name holds a hash of every
.py file of the package, so an edited reference makes a new build and an unchanged one is reused
by every part, every submission and every concurrent grader; other versions' builds are removed
a day after they were last used.
"""
import hashlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from .registry import all_assignments
from .workspace import PACKAGE_DIR, source_path, stub_source

LEFT_OUT = ("fast",)  # complete fast solutions: not stubbed, not copied
CACHE_ENV = "MINIRES_STRIPPED_CACHE"  # where builds are kept (default: the temp folder)
STALE_AFTER = 24 * 3600  # seconds after which another version's build is removed


def package_files(package=PACKAGE_DIR):
    """The package's .py files, package-relative, sorted (no caches)."""
    return sorted(p.relative_to(package) for p in package.rglob("*.py")
                  if "__pycache__" not in p.parts)


def source_hash(package=PACKAGE_DIR):
    """sha256 over every file's relative path and bytes: the key of a build."""
    digest = hashlib.sha256()
    for relative in package_files(package):
        digest.update(str(relative).encode() + b"\0" + (package / relative).read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def targets_by_file():
    """{package-relative path: [Target]} over every assignment."""
    found = {}
    for assignment in all_assignments().values():
        for target in assignment.targets:
            found.setdefault(source_path(target.file), []).append(target)
    return found


def build(destination, package=PACKAGE_DIR):
    """Write the stripped package into destination/minires; returns the files stubbed."""
    target = Path(destination) / "minires"
    for relative in package_files(package):
        if relative.parts[0] in LEFT_OUT:
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / relative, target / relative)
    stubbed = []
    for relative, targets in targets_by_file().items():
        path = target / relative
        path.write_text(stub_source(path.read_text(), targets, relative, keep_markers=False))
        stubbed.append(relative)
    return stubbed


def _cache_root():
    """A folder of this user's own, not writable by anyone else (refuses one that is)."""
    root = Path(os.environ.get(CACHE_ENV) or
                Path(tempfile.gettempdir()) / f"minires-stripped-{os.geteuid()}")
    root.mkdir(mode=0o755, exist_ok=True)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise RuntimeError(f"{root} is not a folder of the grader's own that only it may write; "
                           f"remove it or set {CACHE_ENV}")
    os.chmod(root, 0o755)  # the sandbox's user reads the build, never writes it
    return root


def stripped_root(package=PACKAGE_DIR):
    """The folder to put on the sandbox's path (it holds minires/), built if not cached yet.

    Built in a fresh folder, then renamed into place: a concurrent grader sees a whole build or
    none, and the first rename wins."""
    root = _cache_root()
    final = root / source_hash(package)
    if final.is_dir():
        os.utime(final)  # in use: not stale for another day
        return final
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        build(building, package)
        for path in [building, *building.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.rename(building, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    _prune(root, keep=final)
    return final


def _prune(root, keep, age=STALE_AFTER):
    """Remove the builds of other package versions last used more than `age` seconds ago (a
    grader still running an older version keeps its build)."""
    for build in root.iterdir():
        if build != keep and time.time() - build.lstat().st_mtime > age:
            shutil.rmtree(build, ignore_errors=True)
