"""CPU training: keep memory that a step frees inside the process.

glibc returns large freed blocks (activations, gradients) to the system and maps them again, zero-filled,
on the next step, so a CPU training loop spends much of its time in the kernel. Raising malloc's mmap and
trim thresholds keeps those blocks for reuse: the demo's `make train` is about a third faster with the
same loss (benchmarks/RESULTS.md, Training); generation (`make eval`) did not change, so only training
uses it. `IN2_KEEP_FREED_MEMORY=0` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger("in2")

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt(3) parameters
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap and are reused
TRIM_THRESHOLD = (1 << 31) - 1  # never give free heap back (mallopt takes an int)
TOP_PAD = 1 << 28  # grow the heap in steps of 256 MiB

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory, once per process. False where it does not apply (not
    Linux/glibc, or turned off with IN2_KEEP_FREED_MEMORY=0)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("IN2_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    _applied = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    if not _applied:
        logger.warning("could not tune glibc malloc for CPU runs; continuing with its defaults")
    return _applied
