"""glibc malloc tuning for CPU runs, observed through mallinfo2 in a fresh process."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import ctypes, sys
from in2.cpu import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(block)
print(applied, mapped, libc.mallinfo2().fordblks >= 64 << 20)
"""


def _probe(mode: str, **env) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), **env},
    )
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_large_blocks_come_from_the_heap_and_stay_after_free():
    applied, mapped, kept = _probe("default")
    assert int(mapped) >= 64 << 20 and kept == "False"  # glibc's default: its own mapping, unmapped on free
    applied, mapped, kept = _probe("tuned")
    assert applied == "True" and int(mapped) == 0 and kept == "True"  # from the heap, kept for the next step


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_it_can_be_turned_off():
    applied, mapped, _ = _probe("tuned", IN2_KEEP_FREED_MEMORY="0")
    assert applied == "False" and int(mapped) >= 64 << 20
