"""On-disk request cache: answers keyed by what was asked (model, messages, sampling), the spend of
each job that used it (committed with each answer, so a killed run's spend is kept), and the sha256 of
weight files, computed once per file version."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from in2.errors import ConfigError
from in2.files import LOCK_STALE_S, LockHeld, folder_lock

# Bump when a backend changes what the same request returns (e.g. how stop strings apply), so
# caches written by an older in2 are not replayed as if they were answers to today's requests.
# Keys of local models carry a fingerprint of their weights (in2.llm.weights) where they once carried
# the model path: such old keys just never match again, and keys of OpenAI-compatible servers did not
# change, so that needed no bump. Keys of a server at a `base_url` name it beside the model (and a served
# local folder is known by its weights): those keys changed without a bump for the same reason, while
# keys for OpenAI's API (no base_url) stayed as they were, so a paid cache keeps answering. 2: the local backend's repetition penalty covers the reply only.
CACHE_VERSION = 2
CHUNK = 16 << 20
GROUP = 1000


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
        self._db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, version TEXT, sha256 TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spend (job TEXT PRIMARY KEY, requests INTEGER NOT NULL, "
            "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, usd REAL NOT NULL)"
        )
        self._db.commit()
        self._group: int | None = None  # puts not yet committed, inside grouped()

    @contextmanager
    def grouped(self):
        """Commit puts in groups of GROUP (and at the end) instead of one by one: for answers that are
        on disk already (a batch's output file), so a killed run loses none of them."""
        self._group = 0
        try:
            yield
        finally:
            self._group = None
            self._db.commit()

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str | None, value: dict | None, spend: tuple[str, int, int, float] | None = None) -> None:
        """Store an answer (key None: none) and add `spend` = (job, prompt tokens, completion tokens, USD)
        of one sent request to that job's total, in one transaction."""
        if key is not None:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value)))
        if spend is not None:
            job, p, c, usd = spend
            self._db.execute(
                "INSERT INTO spend VALUES (?, 1, ?, ?, ?) ON CONFLICT(job) DO UPDATE SET requests = requests + 1, "
                "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = completion_tokens + excluded.completion_tokens, usd = usd + excluded.usd",
                (job, p, c, usd),
            )
        if self._group is not None:
            self._group += 1
            if self._group % GROUP:
                return
        self._db.commit()

    def spent(self, job: str) -> dict:
        """What the requests sent for `job` through this cache cost, over every run: requests, tokens, USD."""
        row = self._db.execute(
            "SELECT requests, prompt_tokens, completion_tokens, usd FROM spend WHERE job = ?", (job,)
        ).fetchone()
        return dict(zip(("requests", "prompt_tokens", "completion_tokens", "usd"), row or (0, 0, 0, 0.0), strict=True))

    def digest(self, path: str | Path) -> str:
        """sha256 of a file's content, hashed once per version (size, mtime and ctime) of the file."""
        from tqdm.auto import tqdm

        path = Path(path).resolve()
        st = path.stat()
        version = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        row = self._db.execute("SELECT version, sha256 FROM files WHERE path = ?", (str(path),)).fetchone()
        if row and row[0] == version:
            return row[1]
        h = hashlib.sha256()
        with (
            open(path, "rb") as f,
            tqdm(
                total=st.st_size, unit="B", unit_scale=True, desc=f"hashing {path.name}", disable=st.st_size < 1 << 30
            ) as bar,
        ):
            while chunk := f.read(CHUNK):
                h.update(chunk)
                bar.update(len(chunk))
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", (str(path), version, h.hexdigest()))
        self._db.commit()
        return h.hexdigest()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()


@contextmanager
def one_run(cache_dir: str | Path, what: str):
    """The block runs as the only in2 run on the answer cache `cache_dir` (in2.files.folder_lock): a second
    run would ask, and pay, for the same requests at the same time, or submit the same batches twice."""
    try:
        with folder_lock(cache_dir, what):
            yield
    except LockHeld as e:
        h = e.holder
        raise ConfigError(
            f"generator.cache_dir: {cache_dir} is in use by {h.get('what', 'another in2 run')} (pid {h.get('pid')} "
            f"on {h.get('host')}, since {h.get('started')}); two runs on one answer cache would ask, and pay, for "
            "the same requests twice: wait for that run or stop it (a dead run's lock is taken over: on its host at once, "
            f"from another host once not renewed for {LOCK_STALE_S:g} s), or give this run its own generator.cache_dir"
        ) from None
