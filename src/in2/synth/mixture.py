"""The mixture: general instruction rows (FILM's no-context prompt) and the final shuffle and split.

The shuffle is an order, not a permutation of a list: every row's place is a seeded hash of its id
(`order_key`), so shards can sort their own rows and a merge of sorted shards is the released order,
whatever the number of shards. The first `validation_count` rows of that order are the validation split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from in2 import prompts
from in2.seeding import key, short_id
from in2.synth.assemble import exact_tokens
from in2.synth.config import PARTS, GeneralConfig
from in2.synth.corpus import iter_records


def general_rows(
    cfg: GeneralConfig,
    n: int,
    tokenizer,
    max_length: int,
    seed: int,
    shard_index: int,
    num_shards: int,
    stats: Counter,
) -> Iterator[dict]:
    """The first `n` usable instruction/response pairs of this shard, in FILM's no-context prompt."""
    if n <= 0:
        return
    made = 0
    records = iter_records(
        cfg.source,
        name=cfg.name,
        split=cfg.split,
        streaming=cfg.streaming,
        fields=(cfg.instruction_field, cfg.response_field),
        shard_index=shard_index,
        num_shards=num_shards,
        stats=stats,
    )
    for rec in records:
        inst, resp = rec.get(cfg.instruction_field), rec.get(cfg.response_field)
        if not isinstance(inst, str) or not isinstance(resp, str) or not inst.strip() or not resp.strip():
            stats["general_skipped_empty"] += 1
            continue
        row = {
            "id": short_id(seed, "general", str(rec["id"])),
            "type": "general",
            "prompt": [{"role": "user", "content": prompts.film_user_no_context(inst.strip())}],
            "completion": [{"role": "assistant", "content": resp.strip()}],
            "source_ids": [f"{cfg.source}:{rec['id']}"],
            "context_tokens": 0,
            "num_tokens": 0,
            "key_positions": [],
        }
        row["num_tokens"] = exact_tokens(tokenizer, [row])[0]
        if row["num_tokens"] > max_length:
            stats["general_skipped_over_max_length"] += 1
            continue
        yield row
        made += 1
        if made >= n:
            break


def order_key(seed: int, row_id: str) -> bytes:
    """A row's place in the released order (the seeded shuffle): a hash of the seed and its id."""
    return key(seed, "mix", row_id)


def validation_count(total: int, validation_rows: int) -> int:
    """Rows of the validation split: the first ones of the released order (at most half of them)."""
    return min(validation_rows, total // 2)


def counts(parts: Counter) -> dict[str, int]:
    """Rows per part with every part named (0 for a part without rows)."""
    return {p: parts.get(p, 0) for p in PARTS}
