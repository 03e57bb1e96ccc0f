"""Checkpoints: one .npz file, written atomically, read back without pickle.

A checkpoint is a set of named sections, each a flat dict of NumPy arrays and scalars::

    save_checkpoint("run/checkpoint.npz", model=model.state_dict(),
                    optimizer=optimizer.state_dict(), meta={"epoch": 3, "step": 1173})
    sections = load_checkpoint("run/checkpoint.npz")
    model.load_state_dict(sections["model"])

In the file every array is stored under ``"<section>/<key>"`` (``"model/conv1.weight"``,
``"meta/epoch"``), next to a format marker, so a checkpoint is readable with plain
``np.load(path)`` too. Only numbers and strings go in (strings as NumPy unicode arrays): no Python
objects, so loading never unpickles anything, and a file from an untrusted source cannot run code.

Writing goes to a temporary file in the same folder, is flushed to disk (fsync), and then renamed
over the target with ``os.replace``: a crash or an error mid-write leaves the previous checkpoint
whole.
"""
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

from . import backend

FORMAT_KEY = "__minires__/format"
FORMAT = "minires-checkpoint-v1"


class CheckpointError(ValueError):
    """The file is not a minires checkpoint, or a value cannot be stored safely."""


def save_checkpoint(path, **sections):
    """Write `sections` (name -> flat dict of arrays/scalars/strings) to `path` atomically.

    GPU arrays are copied to the host. Returns the path.
    """
    path = Path(path)
    arrays = {FORMAT_KEY: np.array(FORMAT)}
    for section, values in sections.items():
        arrays.update(_flatten(section, values))
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_savez(path, arrays)
    return path


def load_checkpoint(path):
    """Read a checkpoint into {section: {key: array}}; 0-d arrays come back as NumPy scalars.

    Raises FileNotFoundError for a missing file and CheckpointError for anything that is not a
    minires checkpoint (another .npz, a pickle, a truncated file, an array of Python objects).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    arrays = _read_npz(path)
    if FORMAT_KEY not in arrays or str(arrays.pop(FORMAT_KEY)) != FORMAT:
        raise CheckpointError(f"{path} is an .npz file but not a minires checkpoint "
                              f"(no {FORMAT_KEY!r} = {FORMAT!r} entry)")
    sections = {}
    for name, value in arrays.items():
        section, key = name.split("/", 1)
        sections.setdefault(section, {})[key] = value[()] if value.ndim == 0 else value
    return sections


def _flatten(section, values):
    """{key: value} -> {"section/key": NumPy array}, refusing what would need pickle."""
    if not section or "/" in section:
        raise CheckpointError(f"section name {section!r} must be non-empty and contain no '/'")
    flat = {}
    for key, value in values.items():
        array = np.asarray(backend.to_numpy(value) if backend.is_array(value) else value)
        if array.dtype.hasobject:
            raise CheckpointError(f"{section}/{key}: {type(value).__name__} values cannot be "
                                  "stored without pickle; store arrays, numbers or strings")
        flat[f"{section}/{key}"] = array
    return flat


def _atomic_savez(path, arrays):
    """np.savez into a new temporary file beside `path`, fsync it, then rename it over `path`.

    The temporary file is opened like any new file ("x": it must not exist), so the checkpoint gets
    the usual permissions (umask), not the owner-only ones of tempfile.mkstemp.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "xb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _read_npz(path):
    """Every array of an .npz file, loaded with allow_pickle=False; CheckpointError otherwise."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path} holds a single array, not a minires checkpoint")
        with archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, CheckpointError):
            raise
        reason = str(err).rstrip(".")
        raise CheckpointError(f"{path} is not a readable minires checkpoint: {reason}. Checkpoints "
                              "hold only arrays and are loaded with allow_pickle=False.") from err
