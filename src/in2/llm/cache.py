"""On-disk request cache: answers keyed by what was asked (model, messages, sampling)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

# Bump when a backend changes what the same request returns (e.g. how stop strings apply), so
# caches written by an older in2 are not replayed as if they were answers to today's requests.
CACHE_VERSION = 2  # 2: the local backend's repetition penalty covers the reply only


def request_key(model: str, messages: list[dict], prefix: str, sampling: dict) -> str:
    """A stable hash of everything that determines an answer."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "model": model, "messages": messages, "prefix": prefix, "sampling": sampling},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """A SQLite table of key -> JSON answer. Each answer is committed as it arrives, so a killed
    run loses only requests in flight."""

    def __init__(self, folder: str | Path):
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "requests.sqlite"
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value)))
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()
