"""Tokenize the training set once, before the training job, into a cache the training processes only load.

    in2 train --config recipes/film-7b/sft_full.yaml --prepare_only true

Left to TRL, SFTTrainer tokenizes the whole set inside the job, on one process per node, while every other
process waits at a barrier that times out after `ddp_timeout` (1800 s): at FILM-7B's 1.75M rows (~2 x 25B
tokens through the tokenizer) the first launch would hit it. Here TRL's own preparation (SFTTrainer's
`_prepare_dataset`: chat template, tokenization, completion mask, labels, truncation, packing) runs in one
process with `dataset_num_proc` workers (default: every CPU, at most one per 1,000 rows), and the result is saved with `save_to_disk` in
`prepared_dataset_dir/<key>/`. The key is a hash of what the result depends on: the dataset (name, config,
revision, splits, the folder's content hash and datasets' fingerprint of its files), the tokenizer (its full
serialization), the chat template, the TRL fields that shape the rows, and the TRL version. The folder
appears whole or not at all (written aside, renamed last); `prepared.json` in it records the key's inputs, rows,
tokens, bytes and seconds. With packing, TRL's best-fit-decreasing packs within each worker's shard, so the packs
depend on the worker count; that is left out of the key (every such packing is a valid one). An interrupted preparation starts over, but datasets' cache keeps each map's finished
shards, which the rerun loads; once the prepared copy is saved, those intermediate caches are removed.

`in2 train` then loads the prepared splits and tells TRL to skip its preparation (`dataset_kwargs:
{skip_prepare_dataset: true}`). Where nothing is prepared yet, a one-process run prepares first; a multi-process
launch leaves it to TRL inside the job, as before, with a warning naming the command above.
accelerate_configs/launch.slurm runs the preparation before it starts the training job. The folder must be on a
filesystem every node reads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

from in2.errors import ConfigError
from in2.files import partial_path, publish_once
from in2.train import data

logger = logging.getLogger("in2.train")
MARK = "prepared.json"
WRITER_ROWS = 64  # rows each datasets map worker buffers before writing (see _writing_every)
KEEP = ("input_ids", "labels", "seq_lengths")  # what TRL's collator reads of a prepared row
# SFTConfig fields that change the prepared rows
SHAPING = (
    "max_length",
    "truncation_mode",
    "packing",
    "packing_strategy",
    "eval_packing",
    "completion_only_loss",
    "assistant_only_loss",
    "dataset_text_field",
    "shuffle_dataset",
)


def folder(script_args, training_args) -> Path:
    """prepared_dataset_dir, default `<output_dir>/prepared-data`."""
    return Path(script_args.prepared_dataset_dir or Path(training_args.output_dir) / "prepared-data")


def supported(training_args) -> str | None:
    """Why TRL must prepare in the job instead (None: in2 prepares)."""
    template = training_args.chat_template_path
    if template and not (os.path.isfile(template) and template.endswith((".jinja", ".j2"))):
        return f"chat_template_path {template!r} is a tokenizer to clone (TRL adds its tokens to the model)"
    if training_args.assistant_only_loss:
        return "assistant_only_loss swaps in a training chat template"
    return None


def load_tokenizer(model_args, training_args):
    """The tokenizer in2.train.model.load_model loads, with the recipe's chat template as TRL applies it."""
    from transformers import AutoTokenizer

    from in2.assets import loading
    from in2.train.model import model_path

    with loading("model_name_or_path", repr(model_args.model_name_or_path)):
        tokenizer = AutoTokenizer.from_pretrained(
            model_path(model_args),
            revision=model_args.model_revision,
            trust_remote_code=training_args.trust_remote_code,
            mistral_format=False,
        )
    if training_args.chat_template_path:
        tokenizer.chat_template = Path(training_args.chat_template_path).read_text(encoding="utf-8")
    return tokenizer


def key_inputs(script_args, training_args, tokenizer, train, eval_set) -> dict:
    import trl

    manifest = Path(script_args.dataset_name) / "manifest.json"
    content_hash = json.loads(manifest.read_text()).get("content_hash") if manifest.is_file() else None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    serialized = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return {
        "dataset": {
            "name": script_args.dataset_name,
            "config": script_args.dataset_config,
            "revision": script_args.dataset_revision,
            "train_split": script_args.dataset_train_split,
            "eval_split": script_args.dataset_test_split if eval_set is not None else None,
            "content_hash": content_hash,
            "files": data.folder_version(script_args.dataset_name),  # datasets' fingerprint misses a rewrite
            "fingerprints": [getattr(d, "_fingerprint", None) for d in (train, eval_set) if d is not None],
        },
        "tokenizer": {
            "class": type(tokenizer).__name__,
            "sha256": hashlib.sha256(serialized.encode()).hexdigest(),
            "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        },
        "chat_template_sha256": hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest(),
        "trl": {"version": trl.__version__, **{f: _plain(getattr(training_args, f)) for f in SHAPING}},
        "seed": training_args.seed if training_args.shuffle_dataset else None,
    }


def _plain(value):
    return getattr(value, "value", value)


def key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def prepare(script_args, training_args, tokenizer, train, eval_set, num_proc: int | None = None) -> Path:
    """The prepared folder for these splits: found, or made now with TRL's preparation and saved."""
    from trl import SFTTrainer

    inputs = key_inputs(script_args, training_args, tokenizer, train, eval_set)
    root = folder(script_args, training_args)
    target = root / key(inputs)
    if (target / MARK).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    aside = partial_path(target)  # and a killed preparation's partial copy on this host is removed
    sample = next(iter(train))
    trainer = SimpleNamespace(  # what SFTTrainer._prepare_dataset reads of the trainer, as SFTTrainer sets it
        _tokenizer=tokenizer,
        chat_template=None,  # assistant_only_loss (a training template) is left to TRL: see supported()
        completion_only_loss=training_args.completion_only_loss
        if training_args.completion_only_loss is not None
        else "prompt" in sample and "completion" in sample,
    )
    # every CPU, but no more workers than thousands of rows: starting a worker costs seconds, a small set less
    procs = num_proc or training_args.dataset_num_proc or min(os.cpu_count() or 1, max(1, len(train) // 1000))
    saved_procs, training_args.dataset_num_proc = training_args.dataset_num_proc, procs
    started = time.perf_counter()
    try:
        with _writing_every(WRITER_ROWS):
            splits = {
                "train": SFTTrainer._prepare_dataset(
                    trainer, train, tokenizer, training_args, training_args.packing, None, "train"
                )
            }
            if eval_set is not None:
                packing = training_args.packing if training_args.eval_packing is None else training_args.eval_packing
                splits["eval"] = SFTTrainer._prepare_dataset(
                    trainer, eval_set, tokenizer, training_args, packing, None, "eval"
                )
        for name, split in splits.items():
            split = split.select_columns([c for c in KEEP if c in split.column_names])  # not the raw text again
            # TRL makes int64 labels: int32 takes a third less disk
            split = split.cast(_int32(split.features), batch_size=WRITER_ROWS, writer_batch_size=WRITER_ROWS)
            splits[name] = split
            writers = min(procs, len(split) // 10_000)  # datasets starts a process manager for any num_proc, 1 too
            split.save_to_disk(str(aside / name), num_proc=writers if writers > 1 else None)
    finally:
        training_args.dataset_num_proc = saved_procs
    seconds = time.perf_counter() - started
    record = {
        "key": target.name,
        "inputs": inputs,
        "rows": {name: len(split) for name, split in splits.items()},
        "tokens": {name: _tokens(split) for name, split in splits.items()},
        "bytes": sum(p.stat().st_size for p in aside.rglob("*") if p.is_file()),
        "seconds": round(seconds, 1),
        "processes": procs,
    }
    (aside / MARK).write_text(json.dumps(record, indent=1) + "\n")
    publish_once(aside, target)  # another process (another node's main) may have finished first
    for split in splits.values():  # the maps' intermediate copies in datasets' cache, a full copy each
        split.cleanup_cache_files()
    logger.warning(
        "prepared %s rows (%s tokens) in %.0f s with %d processes: %s",
        f"{record['rows']['train']:,}",
        f"{record['tokens']['train']:,}",
        seconds,
        procs,
        target,
    )
    return target


@contextlib.contextmanager
def _writing_every(rows: int):
    """datasets' `Dataset.map` with `writer_batch_size=rows` where the caller gives none. Each map worker holds
    writer_batch_size rows as Python objects before it writes them: at the default 1000 and 15K-token rows that
    is several GB per worker (measured: 4.7 GB peak RSS, 1,000 such rows over 2 workers), with a worker per CPU. TRL's
    `_prepare_dataset` passes no writer_batch_size, so it is set here, for the preparation only."""
    from datasets import Dataset

    original = Dataset.map

    @functools.wraps(original)
    def map_(self, *args, **kwargs):
        kwargs.setdefault("writer_batch_size", rows)
        return original(self, *args, **kwargs)

    Dataset.map = map_
    try:
        yield
    finally:
        Dataset.map = original


def _int32(features):
    """The prepared columns as lists of int32 (token ids and -100 fit; TRL's collator makes int64 tensors)."""
    from datasets import Features, List, Value

    return Features({name: List(Value("int32")) for name in features})


def _tokens(split) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(split.data.column("input_ids"))).as_py() or 0)


def load(target: Path, want_eval: bool):
    """(train, eval or None) of a prepared folder."""
    from datasets import load_from_disk

    train = load_from_disk(str(target / "train"))
    if not want_eval:
        return train, None
    if not (target / "eval").is_dir():
        raise ConfigError(f"prepared_dataset_dir: {target} has no eval split; prepare again with eval_strategy set")
    return train, load_from_disk(str(target / "eval"))


def splits(script_args, training_args, model_args, train, eval_set):
    """What the trainer trains on: the prepared splits, made now in a one-process run where missing, with the flag
    that tells TRL they are ready; the raw splits where TRL prepares in the job (`supported`, or a multi-process
    launch with nothing prepared: the main process decides for all, so a folder only it sees fails loudly)."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    why = supported(training_args)
    if why is not None:
        logger.warning("TRL tokenizes the dataset inside the training job: %s", why)
        return train, eval_set
    tokenizer = load_tokenizer(model_args, training_args)
    state = PartialState()
    target = folder(script_args, training_args) / key(
        key_inputs(script_args, training_args, tokenizer, train, eval_set)
    )
    ready = [(target / MARK).is_file()]
    if state.num_processes > 1:
        broadcast_object_list(ready)
        if not ready[0]:
            if state.is_main_process:
                logger.warning(
                    "no prepared dataset in %s: TRL tokenizes %s rows inside the job while the other processes wait "
                    "(up to ddp_timeout, %d s); run `in2 train --config <recipe> --prepare_only true` before the job "
                    "(accelerate_configs/launch.slurm does)",
                    *(target.parent, f"{len(train):,}", training_args.ddp_timeout),
                )
            return train, eval_set
    else:
        target = prepare(script_args, training_args, tokenizer, train, eval_set)
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    return load(target, eval_set is not None)
