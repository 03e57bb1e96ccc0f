"""What the `minires` commands share: option types, the output folder, and failing in one line.

An output folder belongs to one run at a time:

    with output_folder("train", out, run_files=RUN_FILES, resume=args.resume,
                       overwrite=args.overwrite, describe=describe_run) as folder:
        ...   # the folder exists, is writable, is locked for this process, holds no other run

- **Locked.** `fcntl.flock` on ``<out>/.minires.lock`` (which holds the holder's pid): a second
  command on the same folder is refused at once, naming the folder and that pid. The operating
  system releases the lock when the process ends in any way (also `kill -9`), so a stale lock
  never blocks a rerun.
- **Never replaced silently.** A folder with a run's files is refused unless the command resumes
  it (`--resume`) or `--overwrite` moves the old files into ``<out>/replaced-<UTC time>/``
  (nothing is deleted).
- **Writable before any work**: a file is created, fsynced and removed there first
  (`check_writable`), so a read-only folder, a file where the folder should be, or a full disk is
  one line at the start, not after an epoch. `check_can_create` does the same for a command that
  makes its folder only at the end (`gradients`): it probes the nearest existing ancestor.

`one_line(command, err)` turns an OSError into "minires <command>: cannot write <path>: <why>";
`StopRequest` makes the first Ctrl-C a request that a training loop honours between steps (it
saves, then stops), and a second one an immediate KeyboardInterrupt; `INTERRUPTED` (130) is the
exit status of a command stopped by Ctrl-C, as a shell reports a process killed by SIGINT.
`checkpoint_counters(path)` reads a checkpoint's step for the messages, every member capped.
"""
import argparse
import contextlib
import errno
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path

LOCK_NAME = ".minires.lock"
INTERRUPTED = 130  # 128 + SIGINT


def count_at_least(low):
    """An argparse type: an integer >= low (argparse prints the error and the usage)."""
    def count(text):
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    count.__name__ = f"integer >= {low}"
    return count


def one_line(command, err):
    """The one-line message for an error: OSErrors name the path and the reason."""
    if isinstance(err, OSError) and err.strerror:
        where = f" {err.filename}" if err.filename is not None else ""
        return f"minires {command}: cannot write{where}: {err.strerror}"
    return f"minires {command}: {err}"


def add_overwrite_option(parser):
    """--overwrite, as every command that writes a run has it (see output_folder)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out that holds a run: its files are moved "
                             "into <out>/replaced-<time>/ (nothing is deleted)")


@contextlib.contextmanager
def output_folder(command, folder, run_files, resume=False, overwrite=False, describe=None):
    """Make `folder`, lock it for this process, refuse a run already there unless `resume` (or
    move it aside with `overwrite`), check it is writable; yields the folder as a Path.

    run_files: the names (files or folders) that mean "a run is here". describe(folder): a few
    words on that run, e.g. "its checkpoint is at step 12". Every refusal is a SystemExit with
    one line "minires <command>: ...".
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(command, folder)
    except OSError as err:
        raise SystemExit(one_line(command, err)) from None
    try:
        present = [name for name in run_files if (folder / name).exists()]
        if present and overwrite:
            moved_to = _move_aside(command, folder, present)
            print(f"minires {command}: moved the old run's files to {moved_to}")
        elif present and not resume:
            what = describe(folder) if describe else ""
            raise SystemExit(
                f"minires {command}: {folder} holds a run ({', '.join(present)}"
                f"{'; ' + what if what else ''}); go on with it with --resume, choose another "
                f"--out, or pass --overwrite to move its files aside (nothing is deleted)")
        try:
            check_writable(folder)
        except OSError as err:
            raise SystemExit(one_line(command, err)) from None
        yield folder
    finally:
        os.close(lock)  # releases the flock


def _lock(command, folder):
    """An open descriptor holding an exclusive flock on folder's lock file (SystemExit if held)."""
    path = folder / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        os.close(descriptor)
        raise SystemExit(f"minires {command}: {folder} is in use by another minires command"
                         f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it to "
                         "finish, or choose another --out") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


def _move_aside(command, folder, names):
    """Move `names` of `folder` into a new folder/replaced-<UTC time>[-n]/; returns it."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = folder / f"replaced-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"replaced-{stamp}-{n}"
    try:
        target.mkdir()
        for name in names:
            os.replace(folder / name, target / name)
    except OSError as err:
        raise SystemExit(one_line(command, err)) from None
    return target


def checkpoint_counters(path):
    """(step, epochs done) of the checkpoint at `path`, for messages. The model is not known
    here, so every member is capped at 16 MiB before it is read; CheckpointError otherwise."""
    import numpy as np

    from ..checkpoint import CheckpointError, load_checkpoint, read_int
    from ..checkpoint_checks import SMALL_MEMBERS_BYTES

    def capped(name, shape, dtype):
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size > SMALL_MEMBERS_BYTES:
            raise CheckpointError(f"{name} declares {dtype} of shape {shape} ({size} bytes)")
    sections = load_checkpoint(path, capped)
    return (read_int(sections, "meta/step", 0, 2 ** 62),
            read_int(sections, "meta/epoch", 0, 2 ** 62))


def check_writable(folder):
    """Create, fsync and remove a small file in `folder`: the OSError that a later write would
    raise (read-only, full disk, not a folder) comes now, naming the path."""
    probe = Path(folder) / f".minires-write-test.{os.getpid()}"
    try:
        with open(probe, "xb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        probe.unlink(missing_ok=True)
        if err.filename is None and err.strerror:  # a failed write or fsync names no file
            raise OSError(err.errno, err.strerror, str(folder)) from None
        raise
    probe.unlink()


def check_can_create(folder):
    """Like check_writable, for a folder that is made only at the end: its nearest existing
    ancestor must be a writable folder (a file there is a NotADirectoryError naming it)."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if existing == folder and not folder.is_dir():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(folder))
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    check_writable(existing)


class StopRequest:
    """Ctrl-C as a request: while active (a `with` block in the main thread), the first SIGINT
    sets the request (a training loop checks it between steps, saves and stops) and a second one
    raises KeyboardInterrupt at once. Calling the object says whether a stop was requested."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __call__(self):
        return self.requested

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _on_interrupt(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def interrupted(command, message):
    """Print "minires <command>: interrupted; <message>" to stderr; returns INTERRUPTED (130)."""
    print(f"minires {command}: interrupted; {message}", file=sys.stderr)
    return INTERRUPTED
