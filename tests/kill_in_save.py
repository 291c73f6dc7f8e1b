"""kill -9 an `in2` process in the middle of a checkpoint save, at a chosen file.

    python -m tests.kill_in_save CHECKPOINT POINT in2-arguments...

runs `in2 in2-arguments...` and, at the POINT-th file written into `checkpoint-CHECKPOINT/` (in write
order: the trainer's torch.save and safetensors files, and every file opened for writing), sends itself
SIGKILL: a tensor file is half on disk, a file opened by Python is not there yet.
`kill_in_save(checkpoint, point, *args)` starts it as a subprocess.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path


def _instrument(checkpoint: int, point: int) -> None:
    import safetensors.torch  # before transformers imports save_file by name
    import torch

    folder = f"checkpoint-{checkpoint}"
    state = {"writes": 0, "busy": False}

    def reached(path) -> bool:
        if state["busy"] or not isinstance(path, (str, os.PathLike)) or Path(path).parent.name != folder:
            return False
        state["writes"] += 1
        return state["writes"] == point

    def die_with_half(path, data: bytes) -> None:
        state["busy"] = True
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    torch_save = torch.save

    def save(obj, f, *args, **kwargs):
        if reached(f):
            buffer = io.BytesIO()
            torch_save(obj, buffer, *args, **kwargs)
            die_with_half(f, buffer.getvalue())
        return torch_save(obj, f, *args, **kwargs)

    save_file = safetensors.torch.save_file

    def save_tensors(tensors, filename, metadata=None):
        if reached(filename):
            die_with_half(filename, safetensors.torch.save(tensors, metadata=metadata))
        return save_file(tensors, filename, metadata=metadata)

    def audit(event, args):
        if event == "open" and isinstance(args[1], str) and set(args[1]) & set("wax") and reached(args[0]):
            os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save
    safetensors.torch.save_file = save_tensors
    sys.addaudithook(audit)


def kill_in_save(checkpoint: int, point: int, *args: str) -> subprocess.Popen:
    """Start `in2 ARGS` that kills itself at the `point`-th file of checkpoint-`checkpoint`'s save."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.kill_in_save", str(checkpoint), str(point), *args],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


if __name__ == "__main__":
    _instrument(int(sys.argv[1]), int(sys.argv[2]))
    from in2.cli import main

    sys.exit(main(sys.argv[3:]))
