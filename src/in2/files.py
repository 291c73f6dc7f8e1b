"""Files in2 writes get the permissions the user's umask gives: libraries that write through a private
temporary file (safetensors writes `model.safetensors` as 0600) would otherwise leave a checkpoint or a
converted model that teammates sharing the folder cannot read."""

from __future__ import annotations

import os
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
