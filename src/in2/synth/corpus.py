"""Raw texts from the built-in offline corpus, local files, or a (streamed) Hugging Face dataset."""

from __future__ import annotations

import glob
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from in2.assets import loading, packaged_path
from in2.errors import ConfigError

LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


@dataclass
class Text:
    id: str
    text: str


def reflow(text: str) -> str:
    """Hard-wrapped text -> one line per paragraph (blank lines separate paragraphs)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [
            ln.strip() for ln in block.splitlines() if ln.strip() and not re.fullmatch(r"[=*\-~^]{3,}", ln.strip())
        ]
        if lines:
            paragraphs.append(" ".join(lines))
    return "\n".join(paragraphs)


def _pydoc_texts() -> Iterator[dict]:
    """Python's own reference documentation (stdlib pydoc_data): one text per section; a section that
    several topics share (37 of 198) is read once, so no QA pair is written twice."""
    from pydoc_data import topics

    seen = set()
    for name in sorted(topics.topics):
        sections = re.split(r"\n(?=[^\n]+\n[=*\-]{3,}\n)", topics.topics[name])
        for j, section in enumerate(sections):
            text = reflow(section)
            if text not in seen:
                seen.add(text)
                yield {"id": f"pydoc/{name}/{j}", "text": text}


def _local_files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(source, recursive=True))
    return [f for f in files if f.is_file()]


def _read_local(files: list[Path], stats: Counter) -> Iterator[dict]:
    for f in files:
        if f.suffix == ".txt":
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                stats["skipped_not_utf8"] += 1
                continue
            yield {"id": str(f), "text": text}
        elif f.suffix in (".jsonl", ".json"):
            with f.open("rb") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        stats["skipped_bad_json_line"] += 1
                        continue
                    if isinstance(row, dict):
                        row.setdefault("id", f"{f}:{n}")
                        yield row
                    else:
                        stats["skipped_bad_json_line"] += 1
        elif f.suffix == ".parquet":
            import pyarrow.parquet as pq

            n = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):  # never the whole file in memory
                for row in batch.to_pylist():
                    row.setdefault("id", f"{f}:{n}")
                    n += 1
                    yield row


def streamed_per_kept(num_files: int, num_shards: int) -> int:
    """Rows a shard streams for each row it keeps: 1 when every shard reads whole files of its own (at
    least as many files as shards), else `num_shards` (every shard streams every file and keeps 1 row in
    `num_shards`)."""
    return 1 if num_shards <= 1 or num_files >= num_shards else num_shards


def split_for_shard(ds, shard_index: int, num_shards: int, source: str):
    """Shard `shard_index`'s part of a dataset: for a streamed one, whole files, each file read by one
    shard only (files i, i + n, i + 2n, ...) when it has at least `num_shards` files; else one row in
    `num_shards` of every file, with a warning that says so."""
    from datasets import IterableDataset
    from datasets.distributed import split_dataset_by_node

    if not isinstance(ds, IterableDataset):
        return split_dataset_by_node(ds, rank=shard_index, world_size=num_shards)
    files = ds.num_shards
    if streamed_per_kept(files, num_shards) == 1:
        mine = len(range(shard_index, files, num_shards))
        print(f"in2: shard {shard_index} of {num_shards} streams {mine} of {source}'s {files} files", file=sys.stderr)
        return split_dataset_by_node(ds, rank=shard_index, world_size=num_shards, strategy="shards")
    print(
        f"in2: note: {source} has {files} files, fewer than num_shards={num_shards}: each shard streams all of "
        f"them and keeps 1 row in {num_shards}",
        file=sys.stderr,
    )
    return split_dataset_by_node(ds, rank=shard_index, world_size=num_shards, strategy="examples")


def iter_records(
    source: str,
    *,
    name: str | None = None,
    split: str = "train",
    streaming: bool = True,
    fields: tuple[str, ...],
    shard_index: int = 0,
    num_shards: int = 1,
    stats: Counter | None = None,
    revision: str | None = None,
) -> Iterator[dict]:
    """Rows of `source` that belong to this shard; `fields` must exist (checked on the first row)."""
    stats = Counter() if stats is None else stats
    if source.startswith("builtin:"):
        kind = source.split(":", 1)[1]
        if kind == "pydoc":
            rows: Iterator[dict] = _pydoc_texts()
        else:
            path = packaged_path(__package__, "builtin", f"{kind}.jsonl")
            if not path.is_file():
                raise ConfigError(f"unknown built-in corpus {source!r} (known: builtin:pydoc, builtin:instructions)")
            rows = _read_local([path], stats)
        every_nth = True  # one file: each shard keeps 1 row in num_shards
    elif files := _local_files(source):
        if streamed_per_kept(len(files), num_shards) == 1:  # whole files per shard, like a streamed dataset
            if num_shards > 1:
                n = len(files)
                files = files[shard_index::num_shards]
                print(
                    f"in2: shard {shard_index} of {num_shards} reads {len(files)} of {source}'s {n} files",
                    file=sys.stderr,
                )
            rows, every_nth = _read_local(files, stats), False
        else:
            if num_shards > 1:
                print(
                    f"in2: note: {source} has {len(files)} files, fewer than num_shards={num_shards}: each shard "
                    f"reads all of them and keeps 1 row in {num_shards}",
                    file=sys.stderr,
                )
            rows, every_nth = _read_local(files, stats), True
    elif Path(source).exists() or any(ch in source for ch in "*?"):
        raise ConfigError(f"no {'/'.join(LOCAL_SUFFIXES)} files found at {source}")
    else:
        from datasets import load_dataset

        with loading("dataset", f"{source!r}" + (f", config {name!r}" if name else "") + f", split {split!r}"):
            ds = load_dataset(source, name, split=split, streaming=streaming, revision=revision)
        if num_shards > 1:
            ds = split_for_shard(ds, shard_index, num_shards, source)
        rows, every_nth = iter(ds), False
    checked = False
    for i, row in enumerate(rows):
        if every_nth and num_shards > 1 and i % num_shards != shard_index:
            continue
        if not checked:
            missing = [f for f in fields if f not in row]
            if missing:
                raise ConfigError(
                    f"field {missing[0]!r} not found in {source} (columns: {', '.join(sorted(map(str, row)))}); "
                    "set the *_field option to one of them"
                )
            checked = True
        row.setdefault("id", f"{shard_index}/{i}")
        yield row


def iter_texts(cfg, shard_index: int = 0, num_shards: int = 1, stats: Counter | None = None) -> Iterator[Text]:
    """Usable texts of corpus config `cfg` for one shard; empty or non-text rows, and a text whose id
    (`id_field`) an earlier text of the shard had, are counted, not kept (items, rows and cached
    requests are named by that id). The ids seen are kept as 8-byte hashes."""
    stats = Counter() if stats is None else stats
    limit = None if cfg.max_texts is None else -(-cfg.max_texts // num_shards)
    n = 0
    seen: set[bytes] = set()
    for row in iter_records(
        cfg.source,
        name=cfg.name,
        split=cfg.split,
        streaming=cfg.streaming,
        fields=(cfg.text_field,),
        shard_index=shard_index,
        num_shards=num_shards,
        stats=stats,
    ):
        if limit is not None and n >= limit:
            break
        n += 1
        stats["texts_read"] += 1
        text = row.get(cfg.text_field)
        if not isinstance(text, str):
            stats["skipped_not_text"] += 1
            continue
        text = text.replace("\r\n", "\n").replace("\x00", "")
        if not text.strip():
            stats["skipped_empty"] += 1
            continue
        tid = str(row[cfg.id_field]) if cfg.id_field and row.get(cfg.id_field) is not None else str(row["id"])
        h = hashlib.blake2b(tid.encode(), digest_size=8).digest()
        if h in seen:
            stats["skipped_duplicate_id"] += 1
            continue
        seen.add(h)
        yield Text(id=tid, text=text)
