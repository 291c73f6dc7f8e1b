"""The training set: its splits from a dataset folder or a Hub repo, and what the model card says of it."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from in2.assets import loading
from in2.errors import ConfigError
from in2.train.args import In2ScriptArguments


def folder_version(folder: str | Path) -> str | None:
    """A local dataset folder as its files are now: a hash of its absolute path and every file's path, size and
    modification time (a stat each, no reading; hidden files left out). None for a Hub repo."""
    path = Path(folder)
    if not path.is_dir():
        return None
    h = hashlib.sha256(str(path.resolve()).encode())
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            st = p.stat()
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def folder_cache_dir(folder: str | Path) -> str | None:
    """A datasets cache of its own for a local dataset folder as its files are now (`folder_version`; None for a
    Hub repo). datasets 5.2 keys its Arrow cache of a folder whose README lists `configs:` by the folder's name
    and the config, not by the files: a re-synthesized `data/in2-demo`, or another folder of the same name, loads
    the rows cached from the first one."""
    version = folder_version(folder)
    if version is None:
        return None
    from datasets import config

    return str(Path(config.HF_DATASETS_CACHE) / "in2-folders" / version)


def load_splits(script_args: In2ScriptArguments, want_eval: bool):
    """(train, eval or None) from the dataset folder or Hub repo at the requested config and revision."""
    from datasets import load_dataset

    at = f" at revision {script_args.dataset_revision}" if script_args.dataset_revision else ""
    with loading("dataset_name", f"{script_args.dataset_name!r}, config {script_args.dataset_config!r}{at}"):
        ds = load_dataset(
            script_args.dataset_name,
            name=script_args.dataset_config,
            revision=script_args.dataset_revision,
            cache_dir=folder_cache_dir(script_args.dataset_name),
        )
    for field, split, needed in (
        ("dataset_train_split", script_args.dataset_train_split, True),
        ("dataset_test_split", script_args.dataset_test_split, want_eval),
    ):
        if needed and split not in ds:
            raise ConfigError(f"{field}: {script_args.dataset_name} has no split {split!r} (it has {sorted(ds)})")
    return ds[script_args.dataset_train_split], ds[script_args.dataset_test_split] if want_eval else None


def dataset_info(script_args: In2ScriptArguments, train) -> dict:
    info = {
        "name": script_args.dataset_name,
        "config": script_args.dataset_config,
        "revision": script_args.dataset_revision,
        "train_split": script_args.dataset_train_split,
        "train_rows": len(train),
        "rows_per_type": dict(sorted(Counter(train["type"]).items())) if "type" in train.column_names else {},
        "content_hash": None,
    }
    manifest = Path(script_args.dataset_name) / "manifest.json"
    if manifest.is_file():
        info["content_hash"] = json.loads(manifest.read_text()).get("content_hash")
    return info
