"""Checks on a sharded run before it spends anything."""

from __future__ import annotations

from in2.errors import ConfigError
from in2.synth.pipeline import SHARD_NAME, shards_dir


def check_count(output_dir: str, num_shards: int) -> None:
    """Stop when `<output_dir>.shards/` already holds shards of a run with another shard count: a shard
    built with another count holds other rows, and `in2 merge` would refuse the mix."""
    root = shards_dir(output_dir)
    counts = sorted({int(m.group(2)) for p in root.glob("shard-*") if (m := SHARD_NAME.fullmatch(p.name))})
    other = [n for n in counts if n != num_shards]
    if num_shards > 1 and other:
        raise ConfigError(
            f"num_shards: {root} holds shards of a run with {other[0]} shards, this run has {num_shards}: use the "
            f"same count (--num-shards {other[0]}; NUM_SHARDS={other[0]} for recipes/film-7b/synth.slurm), or remove "
            "the stale shards first"
        )
