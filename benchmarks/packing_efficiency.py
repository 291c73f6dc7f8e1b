"""Training efficiency on the IN2 length distribution: padding with and without packing, and real
(non-padding) tokens per second padded vs packed, on a tiny model on the CPU.

    python benchmarks/packing_efficiency.py [--scale 16] [--rows 256] [--batch 4]

Row lengths follow the FILM-7B mixture (the FILM paper's Section 2): 80% long-context rows spread evenly
over 4K-32K tokens, 9% short-context rows and 11% instruction rows of a few hundred tokens; all
lengths are divided by --scale so a CPU can train on them. Prints the figures and appends them to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lengths(n: int, scale: int, seed: int = 0) -> list[int]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        u = r.random()
        if u < 1.4 / 1.75:
            out.append(r.randint(4096, 32768))
        elif u < 1.55 / 1.75:
            out.append(r.randint(300, 4096))  # short-context: a source text and its QA
        else:
            out.append(r.randint(100, 800))  # general instruction data
    return [max(16, x // scale) for x in out]


def padding_share(lens: list[int], batch: int, seed: int = 0) -> float:
    """Share of padded positions when random batches are padded to their longest row."""
    order = lens[:]
    random.Random(seed).shuffle(order)
    real = padded = 0
    for i in range(0, len(order), batch):
        chunk = order[i : i + batch]
        real += sum(chunk)
        padded += max(chunk) * len(chunk)
    return 1 - real / padded


def train_tokens_per_second(
    lens: list[int], packed: bool, batch: int, max_length: int, steps: int
) -> tuple[float, int]:
    import torch
    from datasets import Dataset
    from transformers import MistralConfig, MistralForCausalLM
    from trl import SFTConfig, SFTTrainer

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import MISTRAL_TOKENIZER, _tokenizer

    tok = _tokenizer(MISTRAL_TOKENIZER)  # the pad token only: the rows are token ids
    r = random.Random(1)
    rows = [
        {
            "input_ids": [r.randrange(100, 32000) for _ in range(n)],
            "completion_mask": [0] * (n - min(32, n // 2)) + [1] * min(32, n // 2),
        }
        for n in lens
    ]
    torch.manual_seed(0)
    model = MistralForCausalLM(
        MistralConfig(
            vocab_size=32000,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_length,
            sliding_window=None,
        )
    )
    model.config.use_cache = False
    scratch = tempfile.mkdtemp(prefix="in2-bench-pack-")
    args = SFTConfig(
        output_dir=scratch,  # nothing is saved (save_strategy no)
        bf16=False,
        use_cpu=True,
        activation_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1000,
        max_steps=steps,
        per_device_train_batch_size=1 if packed else batch,
        packing=packed,
        packing_strategy="bfd",
        max_length=max_length,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    shutil.rmtree(scratch, ignore_errors=True)
    return trainer.state.num_input_tokens_seen / elapsed, len(trainer.train_dataset)


def _record(text: str, section: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when run through runpy
    from results_md import record

    record(text, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=16)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    lens = lengths(args.rows, args.scale)
    max_length = 32768 // args.scale
    share = {b: padding_share(lens, b) for b in (1, 2, 4, 8)}
    padded_tps, _ = train_tokens_per_second(lens, False, args.batch, max_length, args.steps)
    packed_tps, packs = train_tokens_per_second(lens, True, args.batch, max_length, args.steps)
    fill = sum(lens) / (packs * max_length)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    cmd = f"`python benchmarks/packing_efficiency.py --scale {args.scale} --rows {args.rows} --batch {args.batch}`"
    rows = [
        f"| padding share, IN2 lengths | {machine} | {cmd} | unpacked batches of 1/2/4/8: "
        + "/".join(f"{100 * share[b]:.0f}%" for b in (1, 2, 4, 8))
        + f"; BFD packing to {max_length}: no padding, {len(lens)} rows in {packs} sequences ({100 * fill:.0f}% full) |",
        f"| real tokens/s, tiny Mistral (4 x 128) | {machine} | {cmd} | padded batch {args.batch}: {padded_tps:.0f}; "
        f"packed (BFD, padding-free, SDPA): {packed_tps:.0f} ({packed_tps / padded_tps:.2f}x) |",
    ]
    print("\n".join(rows))
    if not args.no_write:
        _record("\n".join(rows), "Packing")


if __name__ == "__main__":
    main()
