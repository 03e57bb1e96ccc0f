"""CIFAR-10: download, verify, extract safely, and parse the binary version.

The dataset comes from the official archive ``cifar-10-binary.tar.gz`` (about 160 MB). Its md5 is
checked before anything is extracted, extraction accepts only regular files and folders inside the
target folder, and the ``.bin`` files are parsed with NumPy: no pickle anywhere, so a tampered
download cannot run code.

Binary format (one ``.bin`` file = 10000 records of 3073 bytes)::

    byte 0          label 0..9
    bytes 1..1024   red   channel, 32 rows of 32 pixels, row-major
    bytes 1025..    green channel, same layout
    bytes 2049..    blue  channel, same layout

Where the files live: ``root`` (default: env ``MINIRES_DATA``, else ``~/.cache/minires``) holds the
archive and/or the extracted folder ``cifar-10-batches-bin/``. A machine without network access can
copy either one there by hand.
"""
import hashlib
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
FOLDER_NAME = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)  # per channel (R, G, B), pixels scaled to [0, 1]
STD = (0.2470, 0.2435, 0.2616)

IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + pixels = 3073
RECORDS_PER_FILE = 10000


class Splits(NamedTuple):
    """A dataset as four arrays; unpacks as ``x_train, y_train, x_test, y_test = splits``.

    Images are uint8 pixels ``(N, 3, H, W)`` (channels first, RGB), labels int64 ``(N,)``.
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class DatasetNotFound(FileNotFoundError):
    """The dataset is not on disk and could not (or may not) be downloaded."""


class ChecksumError(ValueError):
    """A file's md5 is not the published one: a truncated or tampered download."""


class UnsafeArchiveError(ValueError):
    """A tar member would land outside the target folder, or is a link or a device."""


def default_root():
    """The data folder: env ``MINIRES_DATA``, else ``~/.cache/minires``."""
    return Path(os.environ.get("MINIRES_DATA") or Path.home() / ".cache" / "minires")


# ---------------------------------------------------------------- download and checksum

def download(url, path, progress=True):
    """Fetch `url` into `path` with a progress bar; the file appears only once complete.

    Bytes go to ``path.part`` first and are renamed at the end, so an interrupted download never
    leaves a half file under the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name,
                      disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def md5sum(path):
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path, expected):
    """Raise ChecksumError unless the md5 of `path` is `expected`."""
    actual = md5sum(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{path}: md5 is {actual}, expected {expected}. The file is truncated or not the "
            f"official archive: delete it and run again (or download it from {URL}).")


# ---------------------------------------------------------------- safe extraction

def _member_target(member, dest):
    """The path a tar member would be written to, or UnsafeArchiveError if it is not allowed."""
    name = member.name
    if not (member.isfile() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise UnsafeArchiveError(f"archive member {name!r} is a {kind}: only regular files "
                                 "and folders are extracted")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() \
            or PureWindowsPath(name).drive:
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    target = (dest / name).resolve()
    if not target.is_relative_to(dest):
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {dest}")
    if member.isfile() and target == dest:
        raise UnsafeArchiveError(f"archive member {name!r} is a file named as the target folder "
                                 "itself")
    return target


def safe_extract(archive, dest):
    """Extract the regular files of a tar archive into `dest`, refusing anything unsafe.

    Every member is checked before a single byte is written: no absolute paths, no '..', no
    symbolic or hard links, no devices, nothing whose resolved path leaves `dest`, no file that
    would replace `dest` itself (a member named '.'): nothing is ever written outside `dest`.
    Each file is written to ``name.part`` beside it and renamed, so an interrupted extraction
    leaves no truncated file.
    Returns the list of extracted file paths.
    """
    dest = Path(dest).resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        targets = [_member_target(m, dest) for m in members]
        written = []
        for member, target in zip(members, targets):
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            with tar.extractfile(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(part, target)
            written.append(target)
    return written


# ---------------------------------------------------------------- parsing

def parse_records(raw):
    """Parse CIFAR-10 binary records: bytes -> (images uint8 (N, 3, 32, 32), labels int64 (N,)).

    A label byte outside 0..9 is a ValueError naming the first such record.
    """
    if len(raw) % RECORD_BYTES:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)  # (N, 3073)
    labels = records[:, 0].astype(np.int64)                                # (N,)
    bad = np.flatnonzero(labels >= len(CLASSES))
    if bad.size:
        raise ValueError(f"record {bad[0]} has label {labels[bad[0]]}, but CIFAR-10 labels are "
                         f"0..{len(CLASSES) - 1} ({bad.size} record(s) out of range)")
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE).copy()              # (N, 3, 32, 32)
    return images, labels


def read_batch_file(path):
    """Read one ``.bin`` file, checking it holds exactly RECORDS_PER_FILE records."""
    path = Path(path)
    expected = RECORDS_PER_FILE * RECORD_BYTES
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path}: {size} bytes, expected {expected} ({RECORDS_PER_FILE} records "
                         f"of {RECORD_BYTES} bytes). The file is truncated or not CIFAR-10 binary; "
                         f"delete the folder {path.parent} and load again.")
    try:
        return parse_records(path.read_bytes())
    except ValueError as err:
        raise ValueError(f"{path}: {err}. The file is corrupt or not CIFAR-10 binary; delete the "
                         f"folder {path.parent} and load again.") from None


def read_folder(folder):
    """Read an extracted ``cifar-10-batches-bin`` folder into Splits."""
    folder = Path(folder)
    train = [read_batch_file(folder / name) for name in TRAIN_FILES]
    x_test, y_test = read_batch_file(folder / TEST_FILE)
    return Splits(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                  x_test, y_test)


# ---------------------------------------------------------------- the entry point

def _has_all_files(folder):
    return all((folder / name).is_file() for name in TRAIN_FILES + (TEST_FILE,))


def _not_found(root, reason):
    return DatasetNotFound(
        f"CIFAR-10 not found ({reason}). Put the archive at {root / ARCHIVE_NAME} or the "
        f"extracted folder at {root / FOLDER_NAME} (download it from {URL}), or point the "
        "environment variable MINIRES_DATA at a folder that holds one of them.")


def load_cifar10(root=None, download=True, progress=True, md5=MD5):
    """Load CIFAR-10 as Splits: x_train uint8 (50000, 3, 32, 32), y_train int64 (50000,), and the
    10000-image test set likewise.

    Looks in `root` (default: ``default_root()``) for the extracted folder, then for the archive;
    with neither, downloads the archive from the official URL when `download` is true. The archive's
    md5 is checked against `md5` before extraction (``md5=None`` skips the check, for tests and
    for private copies). Raises DatasetNotFound, naming the exact paths, when there is no data and
    no way to get it.
    """
    root = Path(root) if root is not None else default_root()
    folder, archive = root / FOLDER_NAME, root / ARCHIVE_NAME
    if not _has_all_files(folder):
        if not archive.is_file():
            _fetch(archive, root, download, progress)  # `download` here is the flag
        if md5 is not None:
            verify_md5(archive, md5)
        safe_extract(archive, root)
        if not _has_all_files(folder):
            raise _not_found(root, f"{archive} does not contain {FOLDER_NAME}/ with "
                                   f"{', '.join(TRAIN_FILES + (TEST_FILE,))}")
    return read_folder(folder)


def _fetch(archive, root, allowed, progress):
    """Download the archive, turning 'no network' into a DatasetNotFound that says what to do."""
    if not allowed:
        raise _not_found(root, "download=False")
    try:
        download(URL, archive, progress)
    except OSError as err:  # urllib.error.URLError (no network, DNS, refused) is an OSError
        raise _not_found(root, f"download failed: {err}") from err
