"""Long contexts: key segment(s) shuffled among filler segments of OTHER texts, to a target length.

Target lengths cycle through `num_length_buckets` equal-width buckets of
[min_context_tokens, max_context_tokens] in a seeded order (counts per bucket differ by at most one
per shard) and are uniform inside a bucket. Token counts are added from per-segment counts
measured once (see segment.TokenCounter) plus the tokens each separator adds after its segment (BPE
tokenizers such as Tekken merge a segment's final punctuation with the newlines after it); `verify`
re-tokenizes a sample exactly.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from in2.config import ContextConfig
from in2.data import templates
from in2.data.qa import QA, QAItem
from in2.data.segment import TAIL_CHARS, Source, TokenCounter
from in2.seeding import rng, unit

PROBE = "word"  # a one-word context, to measure a row's tokens besides its context
ROW_BATCH = 64  # rows built before their context tails are tokenized together and handed on


@dataclass
class Layout:
    context: str
    context_tokens: int
    key_positions: list[float]
    source_ids: list[str]


class FillerPool:
    """All segments of the texts read, flattened, for uniform random picks."""

    def __init__(self, sources: list[Source]):
        self.texts: list[str] = []
        self.tokens: list[int] = []
        self.owner: list[str] = []
        for s in sources:
            self.texts += s.segments
            self.tokens += s.tokens
            self.owner += [s.id] * len(s.segments)

    def __len__(self) -> int:
        return len(self.texts)


def layout(units: list[tuple[str, int, str, bool, int]], sep: str) -> Layout:
    """Join (text, tokens, source id, is_key, tokens `sep` adds after it) units; a key's position is its
    start offset over the room it could start in, so the first slot is 0 and the last is 1."""
    total = sum(u[1] + u[4] for u in units) - (units[-1][4] if units else 0)
    positions, offset, ids = [], 0, []
    for _text, tokens, sid, is_key, joiner in units:
        if is_key:
            room = total - tokens
            positions.append(round(offset / room, 6) if room > 0 else 0.0)
        if sid not in ids:
            ids.append(sid)
        offset += tokens + joiner
    return Layout(sep.join(u[0] for u in units), total, positions, ids)


class Assembler:
    def __init__(self, tokenizer, cfg: ContextConfig, seed: int):
        self.tok = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.counter = TokenCounter(tokenizer)
        self.newline_joiner = self.counter.joiner("\n")
        after = templates.load(templates.FILM_CONTEXT).split("{context}", 1)[1]
        self.tail = after[: len(after) - len(after.lstrip("\n"))]  # what follows the context in the prompt
        self.pool_joiners: list[int] = []
        self.stats: Counter = Counter()

    # -- lengths --------------------------------------------------------------------------------
    def bucket_edges(self) -> list[float]:
        lo, hi, b = self.cfg.min_context_tokens, self.cfg.max_context_tokens, self.cfg.num_length_buckets
        return [lo + (hi - lo) * i / b for i in range(b + 1)]

    def target(self, k: int) -> int:
        """The k-th long row's target context length."""
        b = self.cfg.num_length_buckets
        order = list(range(b))
        rng(self.seed, "bucket-cycle", k // b).shuffle(order)
        bucket = order[k % b]
        edges = self.bucket_edges()
        return int(rng(self.seed, "target", k).uniform(edges[bucket], edges[bucket + 1]))

    def source_tokens(self, src: Source) -> int:
        """Tokens of the source text itself (segments joined by newlines)."""
        return sum(src.tokens) + self.newline_joiner * (len(src.segments) - 1)

    # -- rows -----------------------------------------------------------------------------------
    def overheads(self, qas: list[QA]) -> list[int]:
        """Exact tokens of each row besides its context: template, question, answer, chat markup. Measured
        around a one-word context and less that word's own count, so that the newlines around a context
        are tokenized as they are in a row."""
        word = self.counter.after_newline([PROBE])[0] + self.counter.joiners([PROBE], self.tail)[0]
        convs = [
            [
                {"role": "user", "content": templates.film_user(PROBE, qa.question)},
                {"role": "assistant", "content": qa.answer},
            ]
            for qa in qas
        ]
        if not convs:
            return []
        ids = self.tok.apply_chat_template(convs, tokenize=True, return_dict=False)
        return [len(x) - word for x in ids]

    def unit_joiners(self, items: list[QAItem]) -> list[list[int]]:
        """Per item, the tokens the separator adds after each of its units (key segments of a long row,
        every segment of a short one). BPE tokenizers such as Tekken merge trailing punctuation with
        the newlines that follow, so this depends on each segment's end."""
        texts: dict[str, list[str]] = {self.cfg.separator: [], "\n": []}
        for item in items:
            short = item.role == "short"
            texts["\n" if short else self.cfg.separator] += [
                item.source.segments[i] for i in (range(len(item.source.segments)) if short else item.key)
            ]
        counts = {sep: iter(self.counter.joiners(t, sep)) for sep, t in texts.items()}
        out = []
        for item in items:
            short = item.role == "short"
            n = len(item.source.segments) if short else len(item.key)
            out.append([next(counts["\n" if short else self.cfg.separator]) for _ in range(n)])
        return out

    def long_layout(self, item: QAItem, target: int, room: int, pool: FillerPool, joiners: list[int]) -> Layout | None:
        src = item.source
        keys = [(src.segments[i], src.tokens[i], src.id, True, j) for i, j in zip(item.key, joiners, strict=True)]
        used = sum(k[1] + k[4] for k in keys)
        if used > room:
            return None
        budget = min(target, room) - used
        r = rng(self.seed, "fill", item.id)
        fillers: list[tuple[str, int, str, bool, int]] = []
        taken: set[int] = set()
        misses = 0
        while misses < self.cfg.max_filler_tries and len(pool):
            j = r.randrange(len(pool))
            cost = pool.tokens[j] + self.pool_joiners[j]
            if j in taken or pool.owner[j] == src.id or cost > budget:
                misses += 1
                continue
            taken.add(j)
            fillers.append((pool.texts[j], pool.tokens[j], pool.owner[j], False, self.pool_joiners[j]))
            budget -= cost
            misses = 0
        units = keys + fillers
        r.shuffle(units)
        return layout(units, self.cfg.separator)

    def short_layout(self, item: QAItem, joiners: list[int]) -> Layout:
        src = item.source
        key = set(item.key)
        parts = zip(src.segments, src.tokens, joiners, strict=True)
        return layout([(s, t, src.id, i in key, j) for i, (s, t, j) in enumerate(parts)], "\n")

    def rows(self, accepted: list[tuple[QAItem, QA]], pool: FillerPool) -> Iterator[dict]:
        """Rows in TRL's conversational prompt-completion format, plus metadata columns, handed on
        ROW_BATCH at a time (a shard never holds all of its rows)."""
        c = self.cfg
        self.pool_joiners = self.counter.joiners(pool.texts, c.separator)
        out, ends = [], []
        k = 0
        overheads = self.overheads([qa for _, qa in accepted])
        joiners = self.unit_joiners([item for item, _ in accepted])
        for (item, qa), overhead, item_joiners in zip(accepted, overheads, joiners, strict=True):
            room = c.max_length - overhead - c.length_margin_tokens
            if item.role == "short":
                lay = self.short_layout(item, item_joiners)
                if lay.context_tokens > room:
                    lay = None
            else:
                lay = self.long_layout(item, self.target(k), room, pool, item_joiners)
                k += 1
            if lay is None:
                self.stats["dropped_over_max_length"] += 1
                continue
            ends.append(lay.context[-TAIL_CHARS:])
            out.append(
                {
                    "id": item.id,
                    "type": item.role,
                    "prompt": [{"role": "user", "content": templates.film_user(lay.context, qa.question)}],
                    "completion": [{"role": "assistant", "content": qa.answer}],
                    "source_ids": lay.source_ids,
                    "context_tokens": lay.context_tokens,
                    "num_tokens": overhead + lay.context_tokens,
                    "key_positions": lay.key_positions,
                }
            )
            if len(out) == ROW_BATCH:
                yield from self._with_tails(out, ends)
                out, ends = [], []
        yield from self._with_tails(out, ends)

    def _with_tails(self, rows: list[dict], ends: list[str]) -> Iterator[dict]:
        for row, tail in zip(rows, self.counter.joiners(ends, self.tail), strict=True):
            row["num_tokens"] += tail  # the newlines after the context, tokenized with its end
            yield row


def exact_tokens(tokenizer, rows: list[dict]) -> list[int]:
    """Tokens of prompt + completion through the chat template, counted exactly."""
    convs = [r["prompt"] + r["completion"] for r in rows]
    if not convs:
        return []
    return [len(x) for x in tokenizer.apply_chat_template(convs, tokenize=True, return_dict=False)]


class Sample:
    """The `size` rows with the smallest seeded hash of their id, picked while rows stream by:
    the same rows whatever their order, and never more than `size` of them held."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.heap: list[tuple[float, int, dict]] = []  # (-hash, tie-breaker, row): the largest hash on top
        self.seen = itertools.count()

    def add(self, row: dict) -> None:
        item = (-unit(self.seed, "verify", row["id"]), next(self.seen), row)
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, item)
        elif self.size and item[0] > self.heap[0][0]:
            heapq.heapreplace(self.heap, item)

    @property
    def rows(self) -> list[dict]:
        return [row for _, _, row in sorted(self.heap, key=lambda t: (-t[0], t[1]))]


def verify(tokenizer, rows: list[dict], max_length: int, sample: int, seed: int) -> dict:
    """Re-tokenize a sample exactly; raise if any row exceeds max_length. Returns the figures."""
    picked = rows if len(rows) <= sample else rng(seed, "verify").sample(rows, sample)
    # a few rows at a time: 256 rows of 18K tokens take ~700 MB as one batch of encodings, 8 rows ~40 MB
    exact = [n for i in range(0, len(picked), 8) for n in exact_tokens(tokenizer, picked[i : i + 8])]
    diffs = [e - r["num_tokens"] for e, r in zip(exact, picked, strict=True)]
    over = [r["id"] for e, r in zip(exact, picked, strict=True) if e > max_length]
    if over:
        raise RuntimeError(
            f"rows {over[:5]} exceed context.max_length={max_length}: raise context.length_margin_tokens"
        )
    return {
        "rows_checked": len(picked),
        "max_abs_error_tokens": max((abs(d) for d in diffs), default=0),
        "mean_error_tokens": round(sum(diffs) / len(diffs), 3) if diffs else 0.0,
    }
