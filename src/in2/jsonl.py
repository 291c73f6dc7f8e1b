"""JSON-lines files (one object per line): a bad line or a missing field is named with file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


class BadFileError(ValueError):
    """A data file that is not what its format says: the message names the file and the line."""


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    """Every non-blank line of `path` as a dict holding at least the `required` fields."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise BadFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadFileError(f"{path}:{n}: not a JSON line ({e.msg})") from None
        if not isinstance(row, dict):
            raise BadFileError(f"{path}:{n}: a line must be a JSON object")
        missing = [f for f in required if f not in row]
        if missing:
            raise BadFileError(f"{path}:{n}: missing field(s) {', '.join(missing)}")
        rows.append(row)
    return rows
