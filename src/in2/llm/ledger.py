"""A job's spend over all its processes (the shards of `in2 synth` and every rerun of each), so that
`generator.max_cost_usd` caps the job, not one process.

Each process's answer cache records what it sent, committed with each answer (Cache.spent); the process
publishes that total as one small JSON file, `<name>.json`, in the job's ledger folder on shared storage,
and reads every other file there. One writer per file, replaced atomically: safe on a network file system
where one SQLite file shared by many nodes is not."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Ledger:
    folder: Path
    name: str
    """This process's file: a shard's name, which its reruns share."""

    def publish(self, spent: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{self.name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(spent))
        os.replace(tmp, self.folder / f"{self.name}.json")

    def read(self) -> dict[str, dict]:
        """Every process's published spend, by name."""
        out = {}
        for f in sorted(self.folder.glob("*.json")):
            try:
                out[f.stem] = json.loads(f.read_text())
            except (OSError, ValueError):  # removed or cut short: its writer publishes again
                continue
        return out
