"""Files in2 writes: with the permissions the user's umask gives (libraries that write through a private
temporary file, as safetensors does with `model.safetensors` at 0600, would otherwise leave a checkpoint or a
converted model that teammates sharing the folder cannot read), and caches that several processes may fill
at once (the ranks of a node, the workers of a test run) without one reading another's half-written copy."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process's umask (from /proc where it is listed, so no other thread sees it changed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give `path` (a file, or a folder and everything in it) at least the permissions a plain open() or
    mkdir() would: 0644 files and 0755 folders under umask 022. Permissions are added, never removed."""
    root = Path(path)
    keep = ~umask()
    for p in (root, *root.rglob("*")) if root.is_dir() else (root,):
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        wanted = mode | ((0o777 if p.is_dir() else 0o666) & keep)
        if wanted != mode:
            p.chmod(wanted)


def version_key(path: str | Path, *extra: str) -> str:
    """A short key for a file as it is now, without reading it: its absolute path, size and modification time
    (plus `extra`, e.g. the version of the library that converts it). For caches of what is converted from big
    files (a 7B GGUF takes seconds to hash)."""
    p = Path(path)
    st = p.stat()
    return hashlib.sha256(
        "|".join((str(p.resolve()), str(st.st_size), str(st.st_mtime_ns), *extra)).encode()
    ).hexdigest()[:16]


def partial_path(target: str | Path) -> Path:
    """Where this process builds `target` before `publish_once`: a sibling no other process writes (named by
    host and pid, as a home folder on a cluster's shared filesystem is seen by every node). Partial copies
    that a killed process of this host left beside `target` are removed first."""
    target = Path(target)
    host = _host()
    for stale in target.parent.glob(f"{glob.escape(target.name)}.partial-{glob.escape(host)}-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return target.with_name(f"{target.name}.partial-{host}-{os.getpid()}")


def _host() -> str:
    """This machine's short host name (as a cluster's nodes are told apart in shared folders)."""
    return socket.gethostname().split(".")[0] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def publish_once(partial: Path, target: str | Path) -> Path:
    """Move a finished `partial` (file or folder) to `target` in one rename; when another process got there
    first, keep its copy and drop ours (both were built from the same source)."""
    target = Path(target)
    try:
        partial.rename(target)  # atomic on one filesystem; a folder onto an existing folder fails
    except OSError:
        if not target.exists():
            raise
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
    return target


LOCK_NAME = "in2.lock"
LOCK_STALE_S = 120.0
"""A lock of another host whose file has not been touched for this long is left by a dead run (its holder
touches it every quarter of this): taken over, so a job requeued on another node (whose pid cannot be checked)
goes on. On the lock's own host its pid decides."""


class LockHeld(Exception):
    """Another live in2 process holds the folder's lock: `holder` is its JSON (host, pid, started, what)."""

    def __init__(self, path: Path, holder: dict):
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


def _holder_is_dead(path: Path, holder: dict, stale_s: float) -> bool:
    """On this host the holder's pid says (a stopped or suspended run is alive); from another host, the lock's
    heartbeat: not touched for `stale_s`."""
    if holder.get("host") == _host() and isinstance(holder.get("pid"), int):
        return not _alive(holder["pid"])
    try:
        return time.time() - path.stat().st_mtime > stale_s
    except FileNotFoundError:
        return True


@contextmanager
def folder_lock(folder: str | Path, what: str, stale_s: float = LOCK_STALE_S):
    """Hold `folder`/in2.lock while the block runs, for one process at a time; raises LockHeld naming the live
    holder. A lock left by a dead process is taken over: one of this host whose pid is gone, or one of another
    host whose file has not been touched for `stale_s` (a thread of the holder touches it every `stale_s / 4`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {
        "host": _host(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "what": what,
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if not _holder_is_dead(path, holder, stale_s):
                raise LockHeld(path, holder) from None
            path.unlink(missing_ok=True)  # a dead run's: take it over (another taker may win the next create)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise LockHeld(path, {})
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(stale_s / 4):
            try:
                os.utime(path)
            except OSError:
                return

    thread = threading.Thread(target=beat, name="in2-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        try:
            if json.loads(path.read_text()) == me:  # still ours (not taken over after a long stall)
                path.unlink()
        except (OSError, ValueError):
            pass
