"""JSON-lines files (one object per line): a bad line or a missing field is named with file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path


class BadFileError(ValueError):
    """A data file that is not what its format says: the message names the file and the line."""


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    """Every non-blank line of `path` as a dict holding at least the `required` fields."""
    return list(iter_jsonl(path, required))


def iter_jsonl(path: str | Path, required: Iterable[str] = ()) -> Iterator[dict]:
    """`read_jsonl` one line at a time, for files too large to hold (a 128K probe file is GiBs). Lines end at
    newlines only: a U+2028 written raw inside a JSON string stays in its line."""
    path, required = Path(path), tuple(required)
    with open(path, encoding="utf-8") as f:
        n = 0
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BadFileError(f"{path}:{n}: not a JSON line ({e.msg})") from None
                if not isinstance(row, dict):
                    raise BadFileError(f"{path}:{n}: a line must be a JSON object")
                missing = [name for name in required if name not in row]
                if missing:
                    raise BadFileError(f"{path}:{n}: missing field(s) {', '.join(missing)}")
                yield row
        except UnicodeDecodeError as e:
            raise BadFileError(f"{path}: not UTF-8 text ({e.reason}, after line {n})") from None
