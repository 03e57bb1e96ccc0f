"""Running student code where it cannot reach the grader, and leaving nothing of it behind.

Layers, strongest first (each one is used where the machine allows it):

- A PID namespace (`unshare --pid --fork --kill-child`, util-linux; with `--user --map-root-user`
  when the grader is not root). Inside it the grader's PID does not exist, so no signal can reach
  it, and when the namespace's first process ends the kernel kills every process left in it, a
  double-forked `setsid` grandchild included.
- An unprivileged user when the grader runs as root (Gradescope runs it as root): the child gives
  up root for `nobody` (uid 65534) before any student code loads. It can then neither signal the
  grader nor write its files, and the process-count limit counts its own processes only.
- Always: a new session (its own process group), resource limits the child sets on itself
  (sandbox.py), SIGKILL to the child when the grader dies (PR_SET_PDEATHSIG), and the grader as
  a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`, Linux) while it grades: whatever escapes the
  process group is re-parented to the grader, which kills it before it writes any result.

The limit, honestly: with none of the first two layers (not Linux, or no `unshare` and not root),
student code runs as the grader's own user and can SIGKILL the grader itself; the results file is
then left as the grader wrote it before running any student code (every part 0, "grading did not
finish"), never with marks the grader did not give.
"""
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
SANDBOX_UID = 65534  # nobody
LINUX = sys.platform.startswith("linux")


@functools.lru_cache(maxsize=None)
def namespace_prefix():
    """The `unshare` command line that puts a child in its own PID namespace, or () where the
    kernel or the container refuses it."""
    unshare = shutil.which("unshare")
    if not LINUX or unshare is None:
        return ()
    prefix = (unshare, "--pid", "--fork", "--kill-child")
    if os.geteuid() != 0:
        prefix += ("--user", "--map-root-user")
    try:
        probe = subprocess.run(prefix + ("true",), capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if probe.returncode == 0 else ()


def sandbox_uid():
    """The user the child becomes: `nobody` when the grader is root, else None (the same user)."""
    return SANDBOX_UID if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def isolation_summary():
    """One line for the results: which layers this run had."""
    layers = ["own session", "resource limits"]
    if namespace_prefix():
        layers.append("PID namespace")
    if sandbox_uid() is not None:
        layers.append(f"uid {SANDBOX_UID}")
    return ", ".join(layers)


def _libc():
    return ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def reaper():
    """While open, this process is a child subreaper (Linux): orphans of its descendants become its
    children, so `kill_descendants` finds them. The previous setting is restored on exit."""
    if not LINUX:
        yield
        return
    libc, previous = _libc(), ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, previous.value, 0, 0, 0)


def children():
    """PIDs whose parent is this process (Linux /proc)."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == me:
            found.add(int(entry.name))
    return found


def kill_descendants(process, keep):
    """SIGKILL the child's process group, then every child of ours not in `keep` (orphans the
    subreaper took in), until none is left; reap them all."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if not LINUX:
        return
    for _ in range(1000):  # each round kills the orphans the last one re-parented to us
        strays = children() - keep
        if not strays:
            return
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in strays:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    raise RuntimeError("grader: student processes kept appearing after 1000 rounds of SIGKILL")


def run_isolated(command, cwd, log, timeout):
    """Run `command` (a Python child) isolated, wait at most `timeout` seconds, then kill it and
    everything it started. Returns (exit code or None on timeout, seconds taken)."""
    keep = children() if LINUX else set()
    start = time.monotonic()
    with open(log, "wb") as output:
        process = subprocess.Popen(namespace_prefix() + tuple(command), cwd=cwd,
                                   env=child_environment(), stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        kill_descendants(process, keep)
    return code, time.monotonic() - start


def child_environment():
    """A clean environment: the grader's minires on the path, one thread per library, no
    inherited secrets."""
    package_root = str(Path(__file__).resolve().parents[2])
    one = "1"
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": package_root,
            "HOME": "/nonexistent", "LANG": "C.UTF-8", "MINIRES_DEVICE": "cpu",
            "MINIRES_NUM_THREADS": one, "OMP_NUM_THREADS": one, "OPENBLAS_NUM_THREADS": one,
            "MKL_NUM_THREADS": one, "PYTHONDONTWRITEBYTECODE": one}
