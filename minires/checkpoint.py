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

Writing goes to a temporary file in the same folder (``.<name>.<pid>.<hex>.tmp``), is flushed to
disk (fsync), and then renamed over the target with ``os.replace``: a crash or an error mid-write
leaves the previous checkpoint whole. `atomic_write` does the same for any file (the trainer's
metrics use it), and `remove_stale_temp_files` deletes the temporary files that a killed process
left behind.

Reading a section's fields back goes through `read_int`, `read_float` and `read_array`, which
check type, range and shape and raise a CheckpointError that names the field ("meta/epoch is -5,
expected 0..3"), so that no value in a file reaches a loop or an index unchecked.
"""
import os
import re
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


def load_checkpoint(path, check_member=None):
    """Read a checkpoint into {section: {key: array}}; 0-d arrays come back as NumPy scalars.

    Before any array is inflated, every member's .npy header is read from the zip (a few hundred
    bytes) and its declared shape and dtype must account for exactly the size the zip's headers
    declare; `check_member(name, shape, dtype)`, if given, may then refuse it (a CheckpointError)
    on its shape, so that a small file declaring a huge array costs neither time nor memory.

    Raises FileNotFoundError for a missing file and CheckpointError for anything that is not a
    minires checkpoint (another .npz, a pickle, a truncated file, an array of Python objects).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    for name, shape, dtype in _declared_arrays(path):
        if check_member is not None:
            check_member(name, shape, dtype)
    arrays = _read_npz(path)
    if FORMAT_KEY not in arrays or str(arrays.pop(FORMAT_KEY)) != FORMAT:
        raise CheckpointError(f"{path} is an .npz file but not a minires checkpoint "
                              f"(no {FORMAT_KEY!r} = {FORMAT!r} entry)")
    sections = {}
    for name, value in arrays.items():
        if "/" not in name:
            raise CheckpointError(f"{path}: entry {name!r} is not of the form 'section/key'")
        section, key = name.split("/", 1)
        sections.setdefault(section, {})[key] = value[()] if value.ndim == 0 else value
    return sections


def _declared_arrays(path):
    """[(name, shape, dtype)] of every .npy member of the zip at `path`, from the headers only.

    A member whose header's shape and dtype do not add up to its declared uncompressed size, or
    that holds Python objects, is a CheckpointError: np.load would only find out by inflating it.
    """
    declared = []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-len(".npy")]
                with archive.open(info) as member:
                    shape, dtype, offset = _npy_header(member)
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: {name} holds Python objects, which need "
                                          "pickle; checkpoints hold only arrays and are loaded "
                                          "with allow_pickle=False")
                size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if size != info.file_size:
                    raise CheckpointError(
                        f"{path}: {name} declares {dtype} of shape {shape} ({size} bytes) in a "
                        f"member of {info.file_size} bytes; the file is damaged or forged")
                declared.append((name, shape, dtype))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path} is not a readable minires checkpoint: "
                              f"{str(err).rstrip('.')}") from err
    return declared


def _npy_header(stream):
    """(shape, dtype, bytes before the data) of the .npy file that `stream` starts with."""
    version = np.lib.format.read_magic(stream)
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f".npy format version {version} is not one minires writes")
    shape, _, dtype = readers[version](stream)
    return tuple(shape), dtype, stream.tell()


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
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path, write):
    """Call `write(f)` on a new temporary file beside `path`, fsync it, then rename it over `path`.

    Readers see the old file or the new one, never half of one (and a reader that opened the old
    file goes on reading the old file whole: the new one is another file under the same name).
    An OSError that names no file (a full disk at write or fsync) is raised naming `path`.
    The temporary file is opened like
    any new file ("x": it must not exist), so the result gets the usual permissions (umask), not
    the owner-only ones of tempfile.mkstemp. Returns `path`.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        if err.filename is None and err.strerror:  # a failed write or fsync names no file
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


_TEMP_NAME = re.compile(r"\..+\.(\d+)\.[0-9a-f]{8}\.tmp")


def remove_stale_temp_files(folder):
    """Delete the temporary files of `atomic_write` in `folder` whose writer is gone; returns them.

    A process killed mid-write leaves ``.<name>.<pid>.<hex>.tmp`` behind. A file is stale when its
    process id is this process's (which is not writing at the time it calls this) or no running
    process's; one whose process is still running may be another writer's and is left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for temp in folder.iterdir():
        match = _TEMP_NAME.fullmatch(temp.name)
        if match and temp.is_file() and not _other_process_alive(int(match.group(1))):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def _other_process_alive(pid):
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: sends nothing, only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but belongs to someone else (or cannot be asked): leave it
    return True


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


# --- reading fields back, checked -------------------------------------------------------------

def section(sections, name):
    """sections[name], or a CheckpointError saying which sections the checkpoint has."""
    if name not in sections:
        raise CheckpointError(f"the checkpoint has no section '{name}' (it has "
                              f"{', '.join(sorted(sections)) or 'none'})")
    return sections[name]


def field(sections, name):
    """sections["section"]["key"] for name "section/key"; CheckpointError naming what is missing."""
    section_name, key = name.split("/", 1)
    values = section(sections, section_name)
    if key not in values:
        raise CheckpointError(f"the checkpoint has no field {name}")
    return values[key]


def read_int(sections, name, low, high):
    """The integer field `name`, checked to lie in low..high (bools and floats are refused)."""
    value = field(sections, name)
    if np.ndim(value) != 0 or np.asarray(value).dtype.kind not in "iu":
        raise CheckpointError(f"{name} must be an integer, got {_describe(value)}")
    value = int(value)
    if not low <= value <= high:
        raise CheckpointError(f"{name} is {value}, expected "
                              f"{low if low == high else f'{low}..{high}'}")
    return value


def read_float(sections, name, low=-np.inf, high=np.inf, finite=True):
    """The real-number field `name` (an integer is accepted too), checked against low..high."""
    value = field(sections, name)
    if np.ndim(value) != 0 or np.asarray(value).dtype.kind not in "iuf":
        raise CheckpointError(f"{name} must be a number, got {_describe(value)}")
    value = float(value)
    if finite and not np.isfinite(value):
        raise CheckpointError(f"{name} is {value}, expected a finite number")
    if not low <= value <= high and not np.isnan(value):
        raise CheckpointError(f"{name} is {value}, expected {low:g}..{high:g}")
    return value


def read_array(sections, name, kinds, shape):
    """The array field `name`, checked to have a dtype kind in `kinds` ("f", "iu", "u", "U") and
    exactly `shape`."""
    value = np.asarray(field(sections, name))
    if value.dtype.kind not in kinds or value.shape != tuple(shape):
        raise CheckpointError(f"{name} must be an array of shape {tuple(shape)} and kind "
                              f"{_KIND_NAMES[kinds]}, got {_describe(value)}")
    return value


_KIND_NAMES = {"f": "float", "iu": "integer", "u": "unsigned integer", "U": "string"}


def _describe(value):
    array = np.asarray(value)
    return f"{array.dtype} of shape {array.shape}" if array.ndim else f"{array.dtype} {array!s}"
