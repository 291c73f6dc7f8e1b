"""Segmentation (the paper's Algorithm 1) and token counts from the target tokenizer.

A text is split on newlines; whole lines accumulate until their running token count reaches
`min_segment_tokens`; the lines are joined with "\\n" as one segment; a leftover tail is merged
into the previous segment. A text shorter than `min_segment_tokens` yields no segment (counted as
`skipped_too_short`): the paper's segments are all >= 128 tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from in2.synth.corpus import Text

TAIL_CHARS = 64  # longer than any last pre-token of real text; tokenizing more costs time
NEXT = "The"  # a word after a separator, for measuring it


@dataclass
class Source:
    """A segmented text. `tokens[i]` is segment i's token count as it appears after a newline
    (how every segment sits in a context), so counts add up across joins. `line_tokens[i]` holds the
    counts of segment i's lines (each as after a newline): assembly uses them to choose where to cut
    the last filler of a context; empty when unknown (they are then counted on demand)."""

    id: str
    segments: list[str]
    tokens: list[int]
    line_tokens: list[list[int]] = field(default_factory=list)


def split_lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def group_lines(counts: list[int], min_tokens: int) -> list[list[int]]:
    """Indices of lines per segment: accumulate until >= min_tokens; merge the tail backwards."""
    groups: list[list[int]] = []
    current: list[int] = []
    running = 0
    for i, c in enumerate(counts):
        current.append(i)
        running += c
        if running >= min_tokens:
            groups.append(current)
            current, running = [], 0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


class TokenCounter:
    """Batched token counts with the fast tokenizer, as text appears after a newline."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self._nl = self._raw(["\n"])[0]

    def _raw(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]

    def after_newline(self, texts: list[str]) -> list[int]:
        return [n - self._nl for n in self._raw(["\n" + t for t in texts])]

    def joiners(self, texts: list[str], sep: str) -> list[int]:
        """Tokens `sep` adds after each text, with text after it: merges happen within a text's last
        pre-token, so its tail is enough, and a byte-level BPE (SmolLM2's) merges "\n\n" into one
        token at the end of a text but not before a word, so a word follows."""
        tails = [t[-TAIL_CHARS:] for t in texts]
        after = self.after_newline([NEXT])[0]
        joined = self._raw([t + sep + NEXT for t in tails])
        return [a - b - after for a, b in zip(joined, self._raw(tails), strict=True)]

    def joiner(self, sep: str) -> int:
        """Tokens a separator adds between two segments of plain text."""
        return self.joiners(["end of a segment."], sep)[0]


class Segmenter:
    def __init__(self, tokenizer, min_tokens: int, max_tokens: int):
        self.counter = TokenCounter(tokenizer)
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens

    def __call__(self, texts: list[Text], stats: Counter) -> list[Source]:
        """Segment a batch of texts; two batched tokenizer calls per batch."""
        lines = [split_lines(t.text) for t in texts]
        flat = [ln for ls in lines for ln in ls]
        counts = self.counter.after_newline(flat)
        pending: list[tuple[Text, list[str], list[list[int]]]] = []
        pos = 0
        for t, ls in zip(texts, lines, strict=True):
            c = counts[pos : pos + len(ls)]
            pos += len(ls)
            if sum(c) < self.min_tokens:
                stats["skipped_too_short"] += 1
                continue
            groups = group_lines(c, self.min_tokens)
            segs = ["\n".join(ls[i] for i in g) for g in groups]
            pending.append((t, segs, [[c[i] for i in g] for g in groups]))
        seg_counts = self.counter.after_newline([s for _, segs, _ in pending for s in segs])
        out, pos = [], 0
        for t, segs, line_counts in pending:
            c = seg_counts[pos : pos + len(segs)]
            pos += len(segs)
            if max(c) > self.max_tokens:
                stats["skipped_segment_too_long"] += 1
                continue
            out.append(Source(id=t.id, segments=segs, tokens=c, line_tokens=line_counts))
        stats["texts_segmented"] += len(out)
        stats["segments"] += sum(len(s.segments) for s in out)
        return out
