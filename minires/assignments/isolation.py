"""Running student code where it can reach neither the answers, nor the grader, nor another
student, and leaving nothing of it behind.

Layers, strongest first (each one is used where the machine allows it):

- Its own namespaces (`unshare`, util-linux; with `--user --map-root-user` when the grader is not
  root): PID (the grader's PID does not exist inside, and when the namespace's first process ends
  the kernel kills every process left in it), network (no interface but a loopback that is down),
  IPC, UTS and mount. In its mount namespace the child builds a jail (`enter_jail`): an empty tmpfs
  root, made the namespace's root by pivot_root with the old root detached, holding, read-only,
  only the interpreter, the system libraries, NumPy and the stripped minires (stripped.py: no
  solution in it), the student's files, a writable output folder, a private /tmp (a small tmpfs
  that dies with the namespace), a fresh /proc and /dev/{null,zero,random,urandom}. The grader's
  complete minires, where it lies inside one of those folders (a venv), is covered by an empty
  tmpfs.
- Its own unprivileged user, when the grader runs as root (Gradescope runs it as root): each part
  of each submission claims a uid of its own from SANDBOX_UIDS, under a lock that concurrent
  graders share (`claimed_uid`), and the child gives up root for it before any student code
  loads: it can signal no other sandbox and write no other sandbox's files, and the process-count
  limit counts its own processes only.
- Always: a new session, resource limits the child sets on itself (sandbox.py), SIGKILL to the
  child when the grader dies (PR_SET_PDEATHSIG), and the grader as a child subreaper
  (`prctl(PR_SET_CHILD_SUBREAPER)`, Linux) while it grades: whatever escapes the process group is
  re-parented to the grader, which kills it before it reads any result.

The limit, honestly: without namespaces and without root (not Linux, or no `unshare`), student
code runs as the grader's own user, can read what the grader can read (the complete minires
included) and can SIGKILL the grader. `isolation_summary()` says which layers a run has; the
grader prints it first and writes it into results.json. Untrusted code must then be graded in a
container.
"""
import contextlib
import ctypes
import fcntl
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
SANDBOX_UIDS = range(2000, 3000)  # one per running sandbox, machine-wide
LOCK_FOLDER = Path("/tmp/minires-sandbox-uids")  # every grader on the machine shares it
PACKAGE = Path(__file__).resolve().parents[1]  # the grader's own (complete) minires
LINUX = sys.platform.startswith("linux")
UNSHARE = ("--pid", "--fork", "--kill-child", "--mount", "--net", "--ipc", "--uts")


@functools.lru_cache(maxsize=None)
def namespace_prefix():
    """The `unshare` command line that gives a child its own namespaces, or () where the kernel or
    the container refuses them."""
    unshare = shutil.which("unshare")
    if not LINUX or unshare is None:
        return ()
    prefix = (unshare,) + UNSHARE
    if os.geteuid() != 0:
        prefix += ("--user", "--map-root-user")
    try:
        probe = subprocess.run(prefix + ("true",), capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if probe.returncode == 0 else ()


def switches_user():
    """True where the child can give up root for a uid of its own (the grader runs as root)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def isolation_summary():
    """One line for the results: which layers this run has, and what that means."""
    layers = ["own session", "resource limits"]
    if namespace_prefix():
        layers.append("own PID, mount, network and IPC namespaces; a jail with only the stripped "
                      "minires, the student's files and the system's libraries")
    if switches_user():
        layers.append(f"own uid per part ({SANDBOX_UIDS.start}-{SANDBOX_UIDS.stop - 1})")
    if not namespace_prefix() and not switches_user():
        layers.append("WARNING: student code runs as the grader's own user and can read what the "
                      "grader can read; grade untrusted code in a container")
    elif not namespace_prefix() and _readable_by_others(PACKAGE):
        layers.append(f"WARNING: no jail, and the complete minires ({PACKAGE}) is readable by the "
                      "sandbox's user; make it root's alone (chmod -R go-rwx) or grade where "
                      "unshare works")
    return ", ".join(layers)


def _readable_by_others(folder):
    """True when a user other than the owner may read `folder` and every folder above it."""
    for path in [folder, *folder.parents]:
        mode = os.stat(path).st_mode
        if mode & (0o005 if path == folder else 0o001) != (0o005 if path == folder else 0o001):
            return False
    return True


# --- one uid per sandbox -------------------------------------------------------------------------

def _lock_folder():
    """A folder only root may enter, where the uid locks live (shared by concurrent graders)."""
    folder = LOCK_FOLDER if LOCK_FOLDER.parent.is_dir() else \
        Path(tempfile.gettempdir()) / LOCK_FOLDER.name
    folder.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if info.st_uid != 0 or info.st_mode & 0o077 or not os.path.isdir(folder) \
            or os.path.islink(folder):
        raise RuntimeError(f"{folder} must be a folder of root's own, mode 0700")
    return folder


def processes_of(uid):
    """PIDs (Linux /proc) of the processes running as `uid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def claimed_uid():
    """A uid from SANDBOX_UIDS that no other sandbox holds and no process runs as, locked for the
    block (an flock: it goes with this process, however it ends); None where the grader is not
    root."""
    if not switches_user():
        yield None
        return
    folder = _lock_folder()
    candidates = list(SANDBOX_UIDS)
    random.shuffle(candidates)
    for uid in candidates:
        lock = os.open(folder / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            continue
        try:
            if processes_of(uid):  # left by someone else: not ours to share
                continue
            yield uid
            return
        finally:
            os.close(lock)  # releases the flock
    raise RuntimeError(f"every sandbox uid in {SANDBOX_UIDS.start}-{SANDBOX_UIDS.stop - 1} is in "
                       "use")


# --- the jail (child side, as root in its own mount namespace) -----------------------------------

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, ST_RELATIME, MNT_DETACH = 1 << 18, 1 << 21, 4096, 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 217}  # no libc wrapper: the raw system call
SYSTEM_FOLDERS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
DEVICES = ("null", "zero", "random", "urandom")


def jail_plan(readable, writable, hidden):
    """What enter_jail mounts, as plain data for the child's spec: the folders it may read (the
    system's, the interpreter's, NumPy's and `readable`), the ones it may write, and the ones
    covered by an empty tmpfs wherever they lie inside a readable one."""
    import numpy

    folders = {*SYSTEM_FOLDERS, sys.prefix, sys.base_prefix, sys.exec_prefix,
               str(Path(numpy.__file__).resolve().parents[1]), *map(str, readable)}
    return {"readable": sorted(f for f in folders if os.path.lexists(f)),
            "writable": [str(w) for w in writable], "hidden": [str(h) for h in hidden]}


def _mount(source, target, fstype, flags, data=None):
    libc = ctypes.CDLL(None, use_errno=True)
    encode = (lambda s: None if s is None else str(s).encode())
    if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} on {target}: {os.strerror(error)}")


def _kept_flags(path):
    """The flags of the mount `path` lies on that a remount must keep (in a user namespace the
    kernel refuses to clear them): nosuid, nodev, noexec and the access-time ones."""
    st_flags = os.statvfs(path).f_flag
    kept = st_flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    return kept | (MS_RELATIME if st_flags & ST_RELATIME else 0)


def _bind(source, inside, read_only):
    """Mount `source` at the same path inside the jail (a link is copied as a link)."""
    target = Path(inside + source)
    if os.path.islink(source):
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(source), target)
        return
    if os.path.isdir(source):
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
    _mount(None, target, None, flags | _kept_flags(source))


def enter_jail(plan, jail):
    """Build the jail in the empty folder `jail`, make it the root (as root, in a mount namespace
    of this process's own: nothing here is seen outside, and all of it goes with the namespace)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", jail, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    for folder, fstype, data in (("proc", "proc", None), ("tmp", "tmpfs", "size=64m,mode=1777")):
        (Path(jail) / folder).mkdir()
        _mount(fstype, Path(jail) / folder, fstype, MS_NOSUID | MS_NODEV | MS_NOEXEC, data)
    for device in DEVICES:
        _bind(f"/dev/{device}", jail, read_only=False)
    for folder in sorted(plan["readable"], key=len):
        _bind(folder, jail, read_only=True)
    for folder in plan["writable"]:
        _bind(folder, jail, read_only=False)
    for folder in plan["hidden"]:
        if os.path.isdir(jail + folder):
            _mount("tmpfs", jail + folder, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV,
                   "size=4k,mode=755")
    _switch_root(jail)


def _switch_root(jail):
    """Make `jail` this namespace's root and detach the old one, so that nothing of it stays
    reachable (a chroot alone can be left by a process that keeps CAP_SYS_CHROOT, as root in a
    user namespace does); chroot where pivot_root's number is not known."""
    import platform

    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        os.chroot(jail)
        os.chdir("/")
        return
    old = Path(jail) / ".old-root"
    old.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, str(jail).encode(), str(old).encode()) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"pivot_root into {jail}: {os.strerror(error)}")
    os.chdir("/")
    if libc.umount2(b"/.old-root", MNT_DETACH) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"detaching the old root: {os.strerror(error)}")
    os.rmdir("/.old-root")


# --- the parent's side ---------------------------------------------------------------------------

@contextlib.contextmanager
def bounded_folder(folder, size):
    """While open, `folder` is a tmpfs of at most `size` bytes (root on Linux only; elsewhere it
    stays as it is): a sandbox that writes file after file fills its own folder, not the disk the
    other graders share. Unmounted, with whatever is in it, on exit."""
    if not (LINUX and switches_user()):
        yield
        return
    _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
           f"size={size},mode=700")
    try:
        yield
    finally:
        if _libc().umount2(str(folder).encode(), MNT_DETACH) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"unmounting {folder}: {os.strerror(error)}")

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


def kill_descendants(process, keep, uid=None):
    """SIGKILL the child's process group, then every child of ours not in `keep` (orphans the
    subreaper took in) and every process of the sandbox's own `uid`, until none is left; reap
    them all."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if not LINUX:
        return
    for _ in range(1000):  # each round kills the orphans the last one re-parented to us
        strays = children() - keep
        owned = set(processes_of(uid)) if uid is not None else set()
        if not strays and not owned:
            return
        for pid in strays | owned:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in strays:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if owned and not strays:
            time.sleep(0.01)  # not our children: let the kernel finish them
    raise RuntimeError("grader: student processes kept appearing after 1000 rounds of SIGKILL")


def run_isolated(command, cwd, log, timeout, env, uid=None):
    """Run `command` (a Python child) isolated, wait at most `timeout` seconds, then kill it and
    everything it started. Returns (exit code or None on timeout, seconds taken)."""
    keep = children() if LINUX else set()
    start = time.monotonic()
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as output:
        process = subprocess.Popen(namespace_prefix() + tuple(command), cwd=cwd, env=env,
                                   stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   close_fds=True)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        kill_descendants(process, keep, uid)
    return code, time.monotonic() - start


def child_environment(path):
    """A clean environment: `path` (the stripped minires) on the path, one thread per library, no
    inherited secrets."""
    one = "1"
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(path), "HOME": "/nonexistent",
            "LANG": "C.UTF-8", "MINIRES_DEVICE": "cpu", "MINIRES_NUM_THREADS": one,
            "OMP_NUM_THREADS": one, "OPENBLAS_NUM_THREADS": one, "MKL_NUM_THREADS": one,
            "PYTHONDONTWRITEBYTECODE": one, "MINIRES_FAST_OPS": "0"}
