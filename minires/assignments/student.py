"""A student's files, loaded by path, and minires running with the student's ops plugged in."""
import contextlib
import importlib.util
from pathlib import Path
from types import SimpleNamespace

from .. import functional


def load_module(path):
    """Import one student file under a private name, leaving sys.path and sys.modules alone: a
    student's conv.py can never shadow (or be shadowed by) minires' own modules."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (was it renamed or deleted?)")
    spec = importlib.util.spec_from_file_location(f"minires_student_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_workspace(directory, files):
    """The student's op files as a namespace of modules: files ("conv.py",) -> student.conv."""
    return SimpleNamespace(**{Path(f).stem: load_module(Path(directory) / f) for f in files})


@contextlib.contextmanager
def student_ops(**functions):
    """Within the block, minires.functional.<name> is the student's function (every layer,
    block and model calls the ops through minires.functional), e.g.
    `with student_ops(relu=student.activation.relu): model(x)`."""
    missing = [name for name in functions if not hasattr(functional, name)]
    if missing:
        raise AttributeError(f"minires.functional has no {', '.join(missing)}")
    saved = {name: getattr(functional, name) for name in functions}
    for name, fn in functions.items():
        setattr(functional, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(functional, name, fn)
