"""The release artifact: a folder shaped like a Hub dataset repo.

README.md                   card with YAML `configs:` (load_dataset reads it)
manifest.json               everything needed to reproduce the set
data/<split>-0000i-of-0000N.parquet
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

import yaml

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


def features():
    from datasets import Features, List, Value

    msg = List({"role": Value("string"), "content": Value("string")})
    kinds = {"messages": msg, "list[string]": List(Value("string")), "list[float32]": List(Value("float32"))}
    return Features({k: kinds.get(v) or Value(v) for k, v in FEATURES_SPEC.items()})


def versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def content_hash(splits: dict[str, list[dict]]) -> str:
    """sha256 over the rows of all splits in order: equal hashes mean identical datasets."""
    h = hashlib.sha256()
    for name in sorted(splits):
        for row in splits[name]:
            h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def write_parquet(rows: list[dict], path: Path) -> None:
    from datasets import Dataset

    ds = (
        Dataset.from_list(rows, features=features())
        if rows
        else Dataset.from_dict({k: [] for k in FEATURES_SPEC}, features=features())
    )  # keeps the schema of an empty file
    ds.to_parquet(str(path))


def read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def write_folder(out_dir: str | Path, splits: dict[str, list[dict]], manifest: dict, rows_per_file: int) -> Path:
    """Write atomically (a sibling temp folder, then swapped in): per-part parquet files, plots,
    the resolved config, the manifest and the rendered card."""
    from in2 import redact
    from in2.data.mixture import PARTS
    from in2.release import card

    manifest = redact.data(manifest)  # a config or generator URL may carry credentials
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    layout: dict[str, list[str]] = {}  # part -> its non-empty splits (load_dataset rejects empty ones)
    for part in PARTS:
        for name, rows in splits.items():
            rows = [r for r in rows if r["type"] == part]
            if not rows:
                continue
            layout.setdefault(part, []).append(name)
            (tmp / "data" / part).mkdir(parents=True, exist_ok=True)
            n = -(-len(rows) // rows_per_file)
            for i in range(n):
                chunk = rows[i * rows_per_file : (i + 1) * rows_per_file]
                write_parquet(chunk, tmp / "data" / part / f"{name}-{i:05d}-of-{n:05d}.parquet")
    all_rows = [r for rows in splits.values() for r in rows]
    card.plots(all_rows, tmp)
    config = {k: v for k, v in manifest["config"].items() if k not in ("num_shards", "shard_index")}
    (tmp / "synth_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (tmp / "README.md").write_text(card.render(manifest, all_rows, layout, repo=str(out)))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
