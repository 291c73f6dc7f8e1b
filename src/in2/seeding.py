"""Per-item randomness from one seed: the same item gets the same draw in any run, shard or resume."""

from __future__ import annotations

import hashlib
import random


def _digest(seed: int, parts: tuple) -> bytes:
    return hashlib.sha256(repr((seed, *parts)).encode()).digest()


def rng(seed: int, *parts) -> random.Random:
    """A Random seeded by (seed, parts)."""
    return random.Random(int.from_bytes(_digest(seed, parts)[:8], "big"))


def unit(seed: int, *parts) -> float:
    """A float in [0, 1) determined by (seed, parts)."""
    return int.from_bytes(_digest(seed, parts)[:8], "big") / 2**64


def short_id(seed: int, *parts) -> str:
    return _digest(seed, parts).hex()[:16]


def key(seed: int, *parts) -> bytes:
    """Bytes that sort items in a seeded random order, the same for an item wherever it is."""
    return _digest(seed, parts)[:16]
