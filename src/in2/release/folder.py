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

    Dataset.from_list(rows, features=features()).to_parquet(str(path))


def read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def configs_yaml(splits: list[str]) -> dict:
    return {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits],
            }
        ]
    }


def minimal_card(manifest: dict, splits: list[str]) -> str:
    header = yaml.safe_dump(configs_yaml(splits), sort_keys=False)
    c = manifest["counts"]
    lines = [
        f"---\n{header}---",
        "# IN2 training data",
        "",
        "Information-intensive (IN2) long-context QA data, built with in2 after",
        '"Make Your LLM Fully Utilize the Context" (An et al., 2024, arXiv:2404.16811).',
        "",
        "| part | rows |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in c["rows"].items()],
        "",
        f"Generator: `{manifest['generator']['model']}`; tokenizer: `{manifest['tokenizer']['name_or_path']}`; "
        f"context {manifest['config']['context']['min_context_tokens']}-"
        f"{manifest['config']['context']['max_context_tokens']} tokens; seed {manifest['config']['seed']}.",
        f"Content hash: `{manifest['content_hash']}`. See manifest.json for everything else.",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("PATH_OR_REPO")',
        "```",
    ]
    return "\n".join(lines) + "\n"


def write_folder(out_dir: str | Path, splits: dict[str, list[dict]], manifest: dict, rows_per_file: int) -> Path:
    """Write atomically: into a sibling temp folder, then swap it in."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "data").mkdir(parents=True)
    for name, rows in splits.items():
        n = max(1, -(-len(rows) // rows_per_file))
        for i in range(n):
            write_parquet(
                rows[i * rows_per_file : (i + 1) * rows_per_file], tmp / "data" / f"{name}-{i:05d}-of-{n:05d}.parquet"
            )
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    card = minimal_card(manifest, list(splits)).replace("PATH_OR_REPO", str(out))
    (tmp / "README.md").write_text(card)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
