"""Decontamination: word n-grams of evaluation data, hashed to uint64 and kept in one sorted array
(8 bytes per n-gram), so millions of corpus texts are checked with little memory."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from in2.errors import ConfigError
from in2.synth.config import DecontamConfig, EvalSourceConfig
from in2.synth.corpus import iter_records

_WORD = re.compile(r"\w+")
_BASE = np.uint64(1_000_003)


class NgramHasher:
    """Stable 64-bit hashes of lower-cased word n-grams (the same in every process)."""

    def __init__(self, n: int):
        self.n = n
        self._words: dict[str, int] = {}
        self._powers = np.array([_BASE ** np.uint64(k) for k in range(n - 1, -1, -1)], dtype=np.uint64)

    def _word(self, w: str) -> int:
        h = self._words.get(w)
        if h is None:
            h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            if len(self._words) < 2_000_000:
                self._words[w] = h
        return h

    def __call__(self, text: str) -> np.ndarray:
        words = _WORD.findall(text.lower())
        if len(words) < self.n:
            return np.empty(0, dtype=np.uint64)
        ids = np.fromiter((self._word(w) for w in words), dtype=np.uint64, count=len(words))
        windows = np.lib.stride_tricks.sliding_window_view(ids, self.n)
        with np.errstate(over="ignore"):
            return (windows * self._powers).sum(axis=1, dtype=np.uint64)


class Decontaminator:
    def __init__(self, n: int = 10):
        self.hasher = NgramHasher(n)
        self.banned = np.empty(0, dtype=np.uint64)
        self.stats: Counter = Counter()
        self.revisions: dict[str, str] = {}
        """The Hub commit each Hub source was read at (merge refuses shards that read different ones)."""

    def add(self, texts: Iterable[str]) -> None:
        chunks = [self.banned]
        for t in texts:
            chunks.append(self.hasher(t))
            self.stats["eval_texts"] += 1
        self.banned = np.unique(np.concatenate(chunks))
        self.stats["eval_ngrams"] = int(self.banned.size)

    def contaminated(self, text: str) -> bool:
        h = self.hasher(text)
        if not h.size or not self.banned.size:
            return False
        idx = np.searchsorted(self.banned, h).clip(max=self.banned.size - 1)
        return bool((self.banned[idx] == h).any())


def hub_source(src: EvalSourceConfig) -> bool:
    """Whether `src` names a Hugging Face dataset (not built-in data or a local path)."""
    return not src.source.startswith("builtin:") and not Path(src.source).exists() and "*" not in src.source


def resolved(src: EvalSourceConfig) -> str | None:
    """The Hub commit `src` is read at: its `revision`, or the latest one's commit (None: offline and not
    cached, or not a Hub dataset)."""
    from in2.llm.weights import hub_revision

    return hub_revision(src.source, "dataset", src.revision) if hub_source(src) else None


def eval_records(src: EvalSourceConfig, revision: str | None) -> Iterable[dict]:
    """Rows of `src` at `revision`: its `archive`'s `<name>.jsonl` (no loading script runs) or the dataset."""
    fields = tuple(src.fields)
    if src.archive is None:
        return iter_records(src.source, name=src.name, split=src.split, fields=fields, revision=revision)
    from in2.assets import jsonl_folder, loading

    field = f"decontam.sources ({src.source} {src.archive})"
    with loading(field, f"{src.source!r} at revision {revision or 'main'}"):
        path = jsonl_folder(src.source, src.archive, revision) / f"{src.name}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{field}: {src.archive} holds no {src.name}.jsonl (decontam.sources[].name)")
    return iter_records(str(path), fields=fields)


def eval_texts(src: EvalSourceConfig, revision: str | None = None) -> Iterable[str]:
    """Every string (or list of strings) under `src.fields` of every row (at the Hub commit `revision`)."""
    for row in eval_records(src, revision):
        for f in src.fields:
            value = row.get(f)
            values = value if isinstance(value, list) else [value]
            yield from (v for v in values if isinstance(v, str))


def pinned(path: Path, key: str, commit: str | None) -> str | None:
    """The job's commit for source `key`: the one an earlier shard recorded in `path` (one JSON file per
    source key, written once: the first shard to resolve a source pins it for the whole job), else `commit`,
    recorded now. Shards started days apart so read the same data, unless the recipe names a revision."""
    path.mkdir(parents=True, exist_ok=True)
    target = path / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
    if not target.exists() and commit:
        tmp = path / f".{target.name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"source": key, "commit": commit}))
        try:
            os.link(tmp, target)  # atomic and exclusive: of two shards resolving at once, one pins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return json.loads(target.read_text())["commit"] if target.exists() else commit


def build(cfg: DecontamConfig, pins: Path | None = None) -> Decontaminator | None:
    """The decontaminator for a config, or None when no evaluation data is configured. With `pins` (the job's
    folder of pinned commits), a Hub source without a `revision` is read at the commit the job's first shard
    resolved."""
    if not cfg.sources:
        return None
    d = Decontaminator(cfg.ngram)
    for src in cfg.sources:
        key = f"{src.source} {src.name or ''} {src.split}".strip()
        commit = resolved(src)
        if pins is not None and src.revision is None and hub_source(src):
            commit = pinned(pins, key, commit)
        if commit:
            d.revisions[key] = commit
        d.add(tqdm(eval_texts(src, commit or src.revision), desc=f"eval n-grams: {src.source}", unit="text"))
    return d
