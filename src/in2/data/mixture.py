"""The mixture: general instruction rows (no-context template) and the final shuffle and split."""

from __future__ import annotations

from collections import Counter

from in2.config import GeneralConfig
from in2.data import templates
from in2.data.assemble import exact_tokens
from in2.data.corpus import iter_records
from in2.seeding import rng, short_id

PARTS = ("fine_grained", "integration", "short", "general")


def general_rows(
    cfg: GeneralConfig,
    n: int,
    tokenizer,
    max_length: int,
    seed: int,
    shard_index: int,
    num_shards: int,
    stats: Counter,
) -> list[dict]:
    """The first `n` usable instruction/response pairs of this shard, in FILM's no-context template."""
    if n <= 0:
        return []
    rows: list[dict] = []
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
            "prompt": [{"role": "user", "content": templates.film_user_no_context(inst.strip())}],
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
        rows.append(row)
        if len(rows) >= n:
            break
    return rows


def mix(rows: list[dict], seed: int, validation_rows: int) -> dict[str, list[dict]]:
    """Seeded shuffle of all parts, then the first `validation_rows` rows become validation."""
    rows = sorted(rows, key=lambda r: r["id"])  # independent of arrival order (shards, waves)
    rng(seed, "mix").shuffle(rows)
    k = min(validation_rows, len(rows) // 2)
    return {"train": rows[k:], "validation": rows[:k]}


def counts(rows: list[dict]) -> dict[str, int]:
    c = Counter(r["type"] for r in rows)
    return {p: c.get(p, 0) for p in PARTS}
