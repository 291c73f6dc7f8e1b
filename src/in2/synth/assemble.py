"""Long contexts: key segment(s) placed at uniformly random offsets among filler segments of OTHER
texts, filled to a drawn target length.

Target lengths cycle through `num_length_buckets` equal-width buckets of
[min_context_tokens, max_context_tokens] in a seeded order (counts per bucket differ by at most one
per shard) and are uniform inside a bucket, drawn at least `length_tolerance_tokens` above its lower
edge. Each context lands in [target - length_tolerance_tokens, target], so in its target's bucket.

Placement: the free room (target minus the keys) is cut at k uniform random points (k keys, in a
random order); each gap before, between and after the keys is filled with random whole fillers while
they fit, then closed by the filler whose leading lines fit the rest best (the filler is cut at a line
boundary). What a gap leaves unfilled carries over to the next one. A key's position is then uniform
over the room it could start in, not a slot among a handful of fillers (the slot scheme put a key
alone or first at exactly 0.0 whenever few fillers fit).

Token counts are added from per-segment (and per-line) counts measured once (see
segment.TokenCounter) plus the tokens each separator adds after its segment (BPE tokenizers such as
Tekken merge a segment's final punctuation with the newlines after it); a cut filler is counted
exactly; `verify` re-tokenizes a sample exactly.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from in2 import prompts
from in2.seeding import rng, unit
from in2.synth.config import ContextConfig
from in2.synth.qa import QA, QAItem
from in2.synth.segment import TAIL_CHARS, Source, TokenCounter

Unit = tuple[str, int, str, bool, int]  # text, tokens, source id, is_key, tokens the separator adds after it
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
        self.line_tokens: list[list[int] | None] = []
        for s in sources:
            self.texts += s.segments
            self.tokens += s.tokens
            self.owner += [s.id] * len(s.segments)
            self.line_tokens += s.line_tokens if len(s.line_tokens) == len(s.segments) else [None] * len(s.segments)

    def __len__(self) -> int:
        return len(self.texts)


def layout(units: list[Unit], sep: str) -> Layout:
    """Join units; a key's position is its start offset over the room it could start in (0: at the
    very start, 1: at the very end)."""
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


def ks_uniform(values: list[float]) -> float:
    """Kolmogorov-Smirnov statistic of `values` (in [0, 1]) against the uniform distribution."""
    xs = sorted(values)
    n = len(xs)
    if not n:
        return math.nan
    return max(max((i + 1) / n - x, x - i / n) for i, x in enumerate(xs))


class Assembler:
    def __init__(self, tokenizer, cfg: ContextConfig, seed: int):
        self.tok = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.counter = TokenCounter(tokenizer)
        self.newline_joiner = self.counter.joiner("\n")
        after = prompts.load(prompts.FILM_CONTEXT).split("{context}", 1)[1]
        self.tail = after[: len(after) - len(after.lstrip("\n"))]  # what follows the context in the prompt
        self.pool_joiners: list[int] = []
        self.stats: Counter = Counter()

    # -- lengths --------------------------------------------------------------------------------
    def bucket_edges(self) -> list[float]:
        lo, hi, b = self.cfg.min_context_tokens, self.cfg.max_context_tokens, self.cfg.num_length_buckets
        return [lo + (hi - lo) * i / b for i in range(b + 1)]

    def bucket_of(self, tokens: int) -> int:
        """The length bucket a context of `tokens` tokens falls in (the last one includes its upper edge)."""
        return min(sum(tokens >= e for e in self.bucket_edges()[1:-1]), self.cfg.num_length_buckets - 1)

    def target(self, k: int) -> int:
        """The k-th long row's target context length: uniform over the integers of its bucket that
        leave the whole tolerance window [target - tolerance, target] inside the bucket."""
        b = self.cfg.num_length_buckets
        order = list(range(b))
        rng(self.seed, "bucket-cycle", k // b).shuffle(order)
        bucket = order[k % b]
        edges = self.bucket_edges()
        last = bucket == b - 1
        hi = self.cfg.max_context_tokens if last else math.ceil(edges[bucket + 1]) - 1
        lo = min(math.ceil(edges[bucket]) + self.cfg.length_tolerance_tokens, hi)
        return rng(self.seed, "target", k).randint(lo, hi)

    def source_tokens(self, src: Source) -> int:
        """Tokens of the source text itself (segments joined by newlines)."""
        return sum(src.tokens) + self.newline_joiner * (len(src.segments) - 1)

    # -- rows -----------------------------------------------------------------------------------
    def overheads(self, qas: list[QA]) -> list[int]:
        """Exact tokens of each row besides its context: FILM prompt, question, answer, chat markup. Measured
        around a one-word context and less that word's own count, so that the newlines around a context
        are tokenized as they are in a row."""
        word = self.counter.after_newline([PROBE])[0] + self.counter.joiners([PROBE], self.tail)[0]
        convs = [
            [
                {"role": "user", "content": prompts.film_user(PROBE, qa.question)},
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
            short = item.part == "short"
            texts["\n" if short else self.cfg.separator] += [
                item.source.segments[i] for i in (range(len(item.source.segments)) if short else item.key)
            ]
        counts = {sep: iter(self.counter.joiners(t, sep)) for sep, t in texts.items()}
        out = []
        for item in items:
            short = item.part == "short"
            n = len(item.source.segments) if short else len(item.key)
            out.append([next(counts["\n" if short else self.cfg.separator]) for _ in range(n)])
        return out

    def _lines(self, pool: FillerPool, j: int) -> list[int]:
        if pool.line_tokens[j] is None:
            pool.line_tokens[j] = self.counter.after_newline(pool.texts[j].split("\n"))
        return pool.line_tokens[j]

    def _cut(self, pool: FillerPool, j: int, budget: int) -> tuple[int, int, int]:
        """(first line, end line, estimated tokens) of the run of whole lines of filler j that fills
        most of `budget` with a separator after it; (0, 0, 0) when no single line fits."""
        counts = self._lines(pool, j)
        best = (0, 0, 0)
        room = budget - self.pool_joiners[j]
        for a in range(len(counts)):
            est = -self.newline_joiner
            for b in range(a, len(counts)):
                est += counts[b] + self.newline_joiner
                if est > room:
                    break
                if est > best[2]:
                    best = (a, b + 1, est)
        return best

    def _fill(self, budget: int, r, pool: FillerPool, taken: set[int], owner: str) -> tuple[list[Unit], int]:
        """Fillers for one gap of `budget` tokens (each filler costs its tokens plus its separator's):
        random whole fillers while they fit, then the run of whole lines, from the fillers that did not
        fit, that fills the rest best. Returns the units and the tokens they use."""
        units: list[Unit] = []
        used, misses = 0, 0
        best = (0, -1, 0, 0)  # estimated tokens, filler, its line run [a, b)
        while budget - used > 1 and misses < self.cfg.max_filler_tries:
            j = r.randrange(len(pool))
            if j in taken or pool.owner[j] == owner:
                misses += 1
                continue
            cost = pool.tokens[j] + self.pool_joiners[j]
            if cost <= budget - used:
                taken.add(j)
                units.append((pool.texts[j], pool.tokens[j], pool.owner[j], False, self.pool_joiners[j]))
                used += cost
                misses, best = 0, (0, -1, 0, 0)  # cuts chosen for a larger rest may not fit now
                continue
            misses += 1
            a, b, est = self._cut(pool, j, budget - used)
            if est > best[0]:
                best = (est, j, a, b)
            if budget - used - self.pool_joiners[j] - best[0] <= self.cfg.length_tolerance_tokens // 2:
                break  # close enough: no need to look further
        est, j, a, b = best
        while j >= 0 and b > a:
            text = "\n".join(pool.texts[j].split("\n")[a:b])
            exact = self.counter.after_newline([text])[0]
            joiner = self.counter.joiners([text], self.cfg.separator)[0]
            if exact + joiner <= budget - used:
                taken.add(j)
                units.append((text, exact, pool.owner[j], False, joiner))
                used += exact + joiner
                self.stats["fillers_cut"] += 1
                break
            b -= 1  # the per-line estimate was short: one line less
        return units, used

    def long_layout(self, item: QAItem, target: int, room: int, pool: FillerPool, joiners: list[int]) -> Layout | None:
        """The context of a long row: keys at uniform random offsets, filled to `target` tokens (or
        `room`, when the row's question and answer leave less); None if the keys alone do not fit.
        `joiners`: the tokens the separator adds after each key."""
        src = item.source
        keys: list[Unit] = [
            (src.segments[i], src.tokens[i], src.id, True, j) for i, j in zip(item.key, joiners, strict=True)
        ]
        used = sum(k[1] + k[4] for k in keys)  # units cost their tokens and their separator's; the last has none
        if used > room:
            return None
        if target > room:
            self.stats["target_cut_to_max_length"] += 1
            target = room
        r = rng(self.seed, "fill", item.id)
        r.shuffle(keys)
        free = target - used
        cuts = sorted(r.random() * free for _ in keys)
        gaps = [b - a for a, b in zip([0.0, *cuts], [*cuts, float(free)], strict=True)]
        units: list[Unit] = []
        taken: set[int] = set()
        spent, planned = 0, 0.0
        for g, gap in enumerate(gaps):
            planned += gap  # what a gap leaves unfilled carries over to the next
            if len(pool):
                fill, n = self._fill(round(planned) - spent, r, pool, taken, src.id)
                r.shuffle(fill)  # the cut filler is not always the one next to a key
                units += fill
                spent += n
            if g < len(keys):
                units.append(keys[g])
        out = layout(units, self.cfg.separator)
        ok = target - self.cfg.length_tolerance_tokens <= out.context_tokens <= target
        self.stats["length_within_tolerance" if ok else "length_outside_tolerance"] += 1
        return out

    def keys_layout(self, item: QAItem, joiners: list[int]) -> Layout:
        """`context.keys_only`: the key segments of a long row alone, in the order its long context has them
        (the same seeded shuffle as `long_layout`), joined by the separator."""
        src = item.source
        keys: list[Unit] = [
            (src.segments[i], src.tokens[i], src.id, True, j) for i, j in zip(item.key, joiners, strict=True)
        ]
        rng(self.seed, "fill", item.id).shuffle(keys)
        return layout(keys, self.cfg.separator)

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
            if item.part == "short":
                lay = self.short_layout(item, item_joiners)
                if lay.context_tokens > room:
                    lay = None
            else:
                lay = self.long_layout(item, self.target(k), room, pool, item_joiners)
                k += 1
            if lay is None:
                self.stats["dropped_over_max_length"] += 1
                continue
            if item.part != "short" and not c.min_context_tokens <= lay.context_tokens <= c.max_context_tokens:
                self.stats["dropped_length_out_of_range"] += 1  # too little filler, or no room for the minimum
                continue
            if c.keys_only and item.part != "short":
                lay = self.keys_layout(item, item_joiners)
            ends.append(lay.context[-TAIL_CHARS:])
            out.append(
                {
                    "id": item.id,
                    "type": item.part,  # the dataset's column of the part
                    "prompt": [{"role": "user", "content": prompts.film_user(lay.context, qa.question)}],
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
