"""Send requests to a model and append the answers to FILM-format prediction files, resumably.

Every evaluation (probing, LongBench) writes `sample_<name>.jsonl`, one `{"samples": [text]}` line per
row in row order, a chunk at a time. Beside it, `sample_<name>.fingerprint` names what the lines answer:
a hash of every row's request cache key (model weights, prompt, sampling). A rerun with the same
fingerprint continues after the last complete line (a line cut short by a crash is dropped); any other
fingerprint (retrained weights, new probes, other sampling) starts the file over, and in2's engine
cache answers anything already asked of those weights.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from in2.llm import Engine, Request
from in2.llm.base import FatalRequestError


def predictions_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"sample_{name}.jsonl"


def fingerprint(engine: Engine, requests: Iterable[Request | None]) -> tuple[str, int]:
    """sha256 over the cache keys of a job's rows in order (a skipped row counts as such), and the rows."""
    h, count = hashlib.sha256(), 0
    for r in requests:
        h.update(b"skip" if r is None else engine.key(r).encode())
        count += 1
    return h.hexdigest(), count


def start(path: Path, fingerprint: str) -> None:
    """Keep `path` only when it answers the same requests; otherwise remove it, then record the new
    fingerprint (in that order, so a crash between them never pairs old lines with a new fingerprint)."""
    stamp = path.with_suffix(".fingerprint")
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return
    path.unlink(missing_ok=True)
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(fingerprint + "\n")
    os.replace(tmp, stamp)


def written(path: Path) -> int:
    """Complete lines already in `path`; a cut last line is removed."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] != "":
        path.write_text("\n".join(lines[:-1]) + ("\n" if len(lines) > 1 else ""), encoding="utf-8")
        lines = lines[:-1] + [""]
    return len(lines) - 1


def run_named(jobs: dict[str, Iterable[Request | None]], out_dir: str | Path, engine: Engine, chunk: int = 64):
    """Answer every job's requests in order into `out_dir/sample_<name>.jsonl`; returns the paths.

    A None request is not sent: its line holds an empty sample marked `"skipped": true`. All jobs share
    one request stream, so a local backend fills its batches across them. Each job is gone over twice (its
    fingerprint, then its answers) and `chunk` requests at a time: a job may be a list, or a reader that
    goes back to a file too large to hold (a 128K probe file is GiBs).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: predictions_path(out, name) for name in jobs}
    done, todo = {}, 0
    for name, requests in jobs.items():
        digest, count = fingerprint(engine, requests)
        start(paths[name], digest)
        done[name] = written(paths[name])
        todo += count - done[name]

    def pending() -> Iterator[tuple[str, Request | None]]:
        for name, requests in jobs.items():
            yield from ((name, r) for r in itertools.islice(requests, done[name], None))

    handles = {name: open(paths[name], "a", encoding="utf-8") for name in jobs}  # noqa: SIM115
    try:
        stream, sent = pending(), 0
        while part := list(itertools.islice(stream, chunk)):
            sent += len(part)
            responses = engine.generate([r for _, r in part if r is not None], desc=f"answers {sent}/{todo}")
            failed = [r.error for r in responses if r.error is not None]
            if failed:
                raise FatalRequestError(f"{len(failed)} requests failed ({failed[0]}); rerun to retry them")
            texts = iter(responses)
            for n, r in part:
                line = {"samples": [(next(texts).text or "") if r is not None else ""]}
                if r is None:
                    line["skipped"] = True
                handles[n].write(json.dumps(line, ensure_ascii=False) + "\n")
            for n in {n for n, _ in part}:
                handles[n].flush()
    finally:
        for h in handles.values():
            h.close()
    return paths
