"""Dataset preparation before training (`in2 train --prepare_only true`, in2.train.prepare): rows/s, tokens/s and
disk per million rows, on IN2-shaped rows (a FILM prompt of `--context-tokens` Mistral tokens of Python standard
library text, a short answer) through the FILM-7B recipe's preparation (Mistral tokenizer, mistral-instruct
template, max_length 32768, no packing). No network.

    python benchmarks/prepare_throughput.py [--rows 2000] [--context-tokens 16000] [--procs N]

Prints the figures and appends them to benchmarks/RESULTS.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus_text(chars: int) -> str:
    """The standard library's sources, concatenated until `chars` characters."""
    out, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        total += len(text)
        if total >= chars:
            break
    return "".join(out)[:chars]


def write_rows(folder: Path, rows: int, context_tokens: int) -> None:
    from datasets import Dataset

    from in2.prompts import film_user

    chars = int(context_tokens * 3.2)  # ~3.2 characters per Mistral token of Python source (measured below)
    text = corpus_text(chars * 4)
    (folder / "data").mkdir(parents=True)

    def gen():
        for i in range(rows):
            start = (i * 7919) % (len(text) - chars)
            yield {
                "id": f"row-{i}",
                "type": "fine_grained",
                "prompt": [{"role": "user", "content": film_user(text[start : start + chars], f"What is item {i}?")}],
                "completion": [{"role": "assistant", "content": f"Item {i} is the segment starting at {start}."}],
            }

    Dataset.from_generator(gen).to_parquet(folder / "data" / "train-00000-of-00001.parquet")


def _record(text: str, section: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when run through runpy
    from results_md import record

    record(text, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--context-tokens", type=int, default=16000)
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from in2.tokenizer import TokenizerConfig, load_tokenizer
    from in2.train import sft

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = load_tokenizer(
            TokenizerConfig("pkg://mistral_common/data/tokenizer.model.v1", None, "mistral-instruct")
        )
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_rows(tmp / "rows", args.rows, args.context_tokens)
        argv = ["--config", str(ROOT / "recipes" / "film-7b" / "sft_full.yaml")]
        argv += ["--model_name_or_path", str(tmp / "tokenizer"), "--dataset_name", str(tmp / "rows")]
        argv += ["--dataset_config", "default", "--output_dir", str(tmp / "out"), "--eval_strategy", "no"]
        argv += ["--use_cpu", "true", "--bf16", "false", "--dataset_num_proc", str(args.procs)]
        script_args, training_args, model_args, _ = sft.parse(argv)
        start = time.perf_counter()
        folder = sft.prepare_only(script_args, training_args, model_args)
        seconds = time.perf_counter() - start
        record = json.loads((folder / "prepared.json").read_text())
    rows, tokens, size = record["rows"]["train"], record["tokens"]["train"], record["bytes"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {args.procs} processes"
    cmd = f"`python benchmarks/prepare_throughput.py --rows {args.rows} --context-tokens {args.context_tokens}`"
    figure = (
        f"{rows:,} rows, {tokens / 1e6:.1f}M tokens ({tokens / rows:,.0f} per row) in {seconds:.1f} s: "
        f"{rows / seconds:.1f} rows/s, {tokens / seconds / 1e6:.2f}M tokens/s; prepared copy {size / 1e6:.0f} MB "
        f"= {size / rows * 1e6 / 1e9:.0f} GB per million rows ({size / tokens:.1f} bytes per token); "
        f"commit {commit.strip()}"
    )
    line = f"| prepare (tokenize, labels, truncate, save) | {machine} | {cmd} | {figure} |"
    print(line)
    if not args.no_write:
        _record(line, "Dataset preparation")


if __name__ == "__main__":
    main()
