"""The release artifact: a folder shaped like a Hub dataset repo, written from a stream of rows.

README.md                   card with YAML `configs:` (load_dataset reads it)
manifest.json               everything needed to reproduce the set
data/<part>/<split>-0000i-of-0000N.parquet

No step holds every row. A shard writes its rows in released order (`SortedRows`: sorted in
memory up to `mixture.sort_buffer_mb` of text, beyond that an external sort through run files);
the release merges such files row by row (`in_release_order`) into per-part files capped by rows
and bytes, hashing and counting as rows go by (`write_folder`). Rows are read a few at a time.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from in2.errors import ConfigError
from in2.synth.config import PARTS, MixtureConfig
from in2.synth.mixture import order_key, validation_count

FEATURES_SPEC = {
    "id": "string",
    "type": "string",
    "prompt": "messages",
    "completion": "messages",
    "source_ids": "list[string]",
    "context_tokens": "int32",
    "num_tokens": "int32",
    "key_positions": "list[float32]",
}
PACKAGES = ("in2", "torch", "transformers", "trl", "datasets", "tokenizers", "openai", "huggingface-hub", "peft")
GROUP_BYTES = 16 << 20
"""A parquet row group holds at most this much row text (and at most GROUP_ROWS rows)."""
GROUP_ROWS = 1000
READ_ROWS = 16
"""Rows decoded at a time from each file being read."""
READ_BUFFER = 1 << 20
"""Bytes read at a time from a column chunk (so a reader never holds a whole row group)."""

DICTIONARY_COLUMNS = ["type", "prompt.list.element.role", "completion.list.element.role"]
"""Columns of few distinct values; dictionary pages of unique long texts would be held whole by readers."""

Key = tuple[bytes, bytes]
"""A row's place in the release: (order key, sha256 of its canonical JSON)."""


def features():
    from datasets import Features, List, Value

    msg = List({"role": Value("string"), "content": Value("string")})
    kinds = {"messages": msg, "list[string]": List(Value("string")), "list[float32]": List(Value("float32"))}
    return Features({k: kinds.get(v) or Value(v) for k, v in FEATURES_SPEC.items()})


@functools.cache
def schema():
    """The Arrow schema of every parquet file, with the `datasets` features in its metadata."""
    return features().arrow_schema


def canonical(row: dict) -> bytes:
    """A row as JSON with sorted keys: what the content hash is computed over."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False).encode()


def text_bytes(row: dict) -> int:
    """About how much text a row holds (its messages, plus a little for the other columns)."""
    return 256 + sum(len(m["content"]) for m in (*row["prompt"], *row["completion"]))


def memory_bytes(row: dict) -> int:
    """About how much memory a row takes in Python: its messages as stored (1, 2 or 4 bytes per
    character: one curly quote in a context doubles it), plus its other objects."""
    return 2048 + sum(sys.getsizeof(m["content"]) for m in (*row["prompt"], *row["completion"]))


class ParquetSink:
    """One parquet file written a row group at a time; `size` is the bytes written so far."""

    def __init__(self, path: Path, group_bytes: int = GROUP_BYTES):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        self.file = pa.OSFile(str(path), "wb")
        self.writer = pq.ParquetWriter(
            self.file, schema(), use_dictionary=DICTIONARY_COLUMNS, write_batch_size=READ_ROWS
        )  # pages of a few rows: a reader holds one page per column, not a row group
        self.group_bytes = group_bytes
        self.buffer: list[dict] = []
        self.buffered = 0
        self.rows = 0
        self.groups = 0
        self.flushed = 0
        """Row text written so far (`text_bytes`)."""

    @property
    def size(self) -> int:
        return self.file.tell()

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        self.buffered += text_bytes(row)
        self.rows += 1
        if self.buffered >= self.group_bytes or len(self.buffer) >= GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self.buffer:
            return
        table = pa.Table.from_pylist(self.buffer, schema=schema())
        self.writer.write_table(table, row_group_size=len(self.buffer))
        self.groups += 1
        self.flushed += self.buffered
        self.buffer, self.buffered = [], 0

    def projected(self, more: int, ratio: float) -> float:
        """Bytes the file would have, closed, with `more` bytes of row text added, written at `ratio`
        bytes per byte of text; the footer takes about 2 KB per row group plus the schema."""
        return self.size + (self.buffered + more) * ratio + 4096 + 2048 * (self.groups + 2)

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.file.close()


def read_rows(path: Path) -> Iterator[dict]:
    """The rows of a parquet file, READ_ROWS at a time."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False) as f:  # pre_buffer reads ahead
        for batch in f.iter_batches(batch_size=READ_ROWS, use_threads=False):  # threads read ahead
            yield from batch.to_pylist()


def _keyed(path: Path, seed: int) -> Iterator[tuple[Key, dict]]:
    """A file's rows with their release key, checking the file is in release order. Rows sharing an
    order key (texts with the same corpus id) come by digest: their order does not depend on the file."""
    group: list[tuple[Key, dict]] = []
    for row in read_rows(path):
        k = order_key(seed, row["id"])
        if group and k != group[0][0][0]:
            if k < group[0][0][0]:
                raise ConfigError(
                    f"{path}: rows are not in release order (at id {row['id']}): written by another seed or "
                    "in2 version; rebuild it"
                )
            yield from sorted(group, key=lambda t: t[0])
            group = []
        group.append(((k, hashlib.sha256(canonical(row)).digest()), row))
    yield from sorted(group, key=lambda t: t[0])


def in_release_order(paths: Iterable[Path], seed: int) -> Iterator[tuple[Key, dict]]:
    """The rows of files that are each in release order, merged into that order (one pass, a few
    rows per file in memory)."""
    return heapq.merge(*(_keyed(p, seed) for p in paths), key=lambda t: t[0])


class SortedRows:
    """A shard's rows, written to one parquet file in release order while holding at most
    `buffer_bytes` of rows (`memory_bytes`): a full buffer is sorted into a run file beside `path`,
    and `close` merges the runs."""

    def __init__(self, path: Path, seed: int, buffer_bytes: int):
        self.path, self.seed, self.buffer_bytes = path, seed, buffer_bytes
        self.runs_dir = path.with_name(path.name + ".runs")
        self.buffer: list[tuple[bytes, dict]] = []
        self.buffered = 0
        self.runs: list[Path] = []
        self.parts: Counter = Counter()  # rows per part (the `type` column)

    def add(self, row: dict) -> None:
        self.buffer.append((order_key(self.seed, row["id"]), row))
        self.buffered += memory_bytes(row)
        self.parts[row["type"]] += 1
        if self.buffered >= self.buffer_bytes:
            self._spill()

    def _write_buffer(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.buffer.sort(key=lambda t: t[0], reverse=True)
        sink = ParquetSink(path)
        while self.buffer:  # each row freed once written: Arrow leaves a UTF-8 copy in non-ASCII strings
            sink.add(self.buffer.pop()[1])
        sink.close()
        self.buffered = 0

    def _spill(self) -> None:
        self.runs.append(self.runs_dir / f"run-{len(self.runs):05d}.parquet")
        self._write_buffer(self.runs[-1])

    def close(self) -> Counter:
        """Write the file; returns the rows per part."""
        if not self.runs:
            self._write_buffer(self.path)
            return self.parts
        if self.buffer:
            self._spill()
        sink = ParquetSink(self.path)
        for _, row in in_release_order(self.runs, self.seed):
            sink.add(row)
        sink.close()
        shutil.rmtree(self.runs_dir)
        return self.parts


class SplitFiles:
    """The files of one part's split, `<split>-0000i-of-0000N.parquet`: a new file once one holds
    `rows_per_file` rows or the next row would take it past `max_bytes` (estimated from the bytes per
    byte of text written so far; a single row larger than that gets a file of its own)."""

    def __init__(self, folder: Path, split: str, rows_per_file: int, max_bytes: int):
        self.folder, self.split = folder, split
        self.rows_per_file, self.max_bytes = rows_per_file, max_bytes
        self.group_bytes = max(1, min(GROUP_BYTES, max_bytes // 4))
        self.sink: ParquetSink | None = None
        self.done: list[Path] = []
        self.ratio = 1.0  # file bytes per byte of row text, measured on what was written

    def add(self, row: dict) -> None:
        s = self.sink
        if s is not None:
            if s.flushed:
                self.ratio = s.size / s.flushed
            if s.rows >= self.rows_per_file or s.projected(text_bytes(row), self.ratio) > self.max_bytes:
                self._close()
        if self.sink is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.sink = ParquetSink(self.folder / f"{self.split}-{len(self.done):05d}.part", self.group_bytes)
        self.sink.add(row)

    def _close(self) -> None:
        self.sink.close()
        self.done.append(self.sink.path)
        self.sink = None

    def finish(self) -> None:
        """Close the last file and give every file its final name (now that N is known)."""
        if self.sink is not None:
            self._close()
        n = len(self.done)
        for i, path in enumerate(self.done):
            path.rename(self.folder / f"{self.split}-{i:05d}-of-{n:05d}.parquet")


def write_folder(
    out_dir: str | Path, rows: Iterator[tuple[Key, dict]], total: int, manifest: dict, mixture: MixtureConfig
) -> Path:
    """Write the release from `total` rows in release order (`in_release_order`): per-part parquet
    files, plots, the resolved config, the manifest (its `splits` and `content_hash` filled here) and
    the rendered card; atomically (a sibling temp folder, swapped in at the end).

    The content hash is sha256 over the released rows in release order, each as its split's name and
    the sha256 of its canonical JSON: equal hashes mean the same rows in the same splits and order.
    The order depends on the seed and the rows only, so any number of shards gives the same hash.

    Memory: what `in_release_order` reads (READ_ROWS rows and a page per column of each input file)
    plus one row group (GROUP_BYTES of text) per part being written; the only thing that grows with
    the rows is the context-length histogram, one entry per distinct token count."""
    from in2 import redact
    from in2.synth import card

    manifest = redact.data(manifest)  # a config or generator URL may carry credentials
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n_validation = validation_count(total, mixture.validation_rows)
    max_bytes = int(mixture.max_file_mb * 1e6)
    digest = hashlib.sha256()
    stats = card.Stats()
    files: dict[str, SplitFiles] = {}
    layout: dict[str, list[str]] = {}  # part -> its non-empty splits (load_dataset rejects empty ones)
    splits: Counter = Counter()
    sample = None
    previous, duplicates = None, Counter()  # rows of one id arrive together (same order key)
    for (_, row_digest), row in tqdm(rows, total=total, desc="writing the release", unit="row"):
        if row["id"] == previous:
            duplicates[row["id"]] += 1
        previous = row["id"]
        split = "validation" if splits["validation"] < n_validation else "train"
        splits[split] += 1
        digest.update(split.encode() + b"\0" + row_digest)
        stats.add(row)
        if sample is None or (row["type"] == "fine_grained" and sample["type"] != "fine_grained"):
            sample = row  # the card shows the first fine-grained row
        part = files.get(row["type"])
        if part is None or part.split != split:
            if part is not None:
                part.finish()
            part = files[row["type"]] = SplitFiles(tmp / "data" / row["type"], split, mixture.rows_per_file, max_bytes)
            layout.setdefault(row["type"], []).append(split)
        part.add(row)
    for part in files.values():
        part.finish()
    if splits.total() != total:
        raise ConfigError(f"expected {total} rows, read {splits.total()}: did a shard change during the merge?")
    layout = {p: sorted(layout[p], key=("train", "validation").index) for p in PARTS if p in layout}
    manifest["splits"] = {"train": splits["train"], "validation": splits["validation"]}
    manifest["content_hash"] = digest.hexdigest()
    if duplicates:  # shards skip repeated corpus ids, so these came from two shards' slices of the corpus
        manifest["duplicate_row_ids"] = {"rows": duplicates.total(), "ids": sorted(duplicates)[:20]}
    card.plots(stats, tmp)
    config = {k: v for k, v in manifest["config"].items() if k not in ("num_shards", "shard_index")}
    (tmp / "synth_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (tmp / "README.md").write_text(card.markdown(manifest, sample, layout, repo=str(out)))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
