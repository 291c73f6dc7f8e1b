"""Files in2 writes: with the permissions the user's umask gives (libraries that write through a private
temporary file, as safetensors does with `model.safetensors` at 0600, would otherwise leave a checkpoint or a
converted model that teammates sharing the folder cannot read), and caches that several processes may fill
at once (the ranks of a node, the workers of a test run) without one reading another's half-written copy."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import stat
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


def partial_path(target: str | Path) -> Path:
    """Where this process builds `target` before `publish_once`: a sibling no other process writes (named by
    host and pid, as a home folder on a cluster's shared filesystem is seen by every node). Partial copies
    that a killed process of this host left beside `target` are removed first."""
    target = Path(target)
    host = socket.gethostname().split(".")[0] or "host"
    for stale in target.parent.glob(f"{glob.escape(target.name)}.partial-{glob.escape(host)}-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return target.with_name(f"{target.name}.partial-{host}-{os.getpid()}")


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
