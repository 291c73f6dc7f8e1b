"""QA generation: plan items over source texts, build prompts, parse strictly, filter, count rejects.

Each item is for one part of the mixture (in2.synth.config.PARTS) and asks one type of question (`qa_type`,
the FILM paper's types (a) and (b), Section 2):
part `fine_grained`, type (a): one random segment -> one question and answer.
part `integration`, type (b): all segments of a text as numbered pieces -> a question needing >= 2 pieces.
part `short`: a QA pair of either type whose context will be the source text itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from in2 import prompts
from in2.llm import Engine, Request
from in2.llm.base import FatalRequestError
from in2.seeding import short_id, unit
from in2.synth.config import QA_PARTS, ContextConfig, MixtureConfig, QAConfig
from in2.synth.segment import Source

_QUESTION = re.compile(r"^\s*\**\s*question\s*\**\s*:\s*\**(.*)$", re.I)
_ANSWER = re.compile(r"^\s*\**\s*answer\s*\**\s*:\s*\**(.*)$", re.I)
_PIECES = re.compile(r"^\s*\**\s*pieces?\s*\**\s*:\s*(.*)$", re.I)
_CONTEXT_REF = re.compile(
    r"\b(according to|based on|from|in|within) (the|this|these|given|provided|above) "
    r"(given |provided |above )?(context|text|passage|article|document|pieces?|excerpt|snippet|sentence|paragraph)s?\b"
    r"|\b(the|this) (context|passage|text|article|excerpt) (says?|states?|mentions?|describes?|above)\b"
    r"|\b(the|this|that|above|given) (passage|excerpt)\b"
    r"|\bpieces? \d"
    r"|\b(this|that|the above|the following) question\b|\bthe answer to the question\b",  # points at itself
    re.I,
)
_REFUSAL = re.compile(r"^(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|as an ai)", re.I)
# an answer that is a question: ends in "?", its first sentence does, or a how-to heading
_QUESTION_SHAPED = re.compile(r"\?[\s\"'*`)\]]*$|^[^.!?\n]*\?(\s|$)|^\W*how to\b", re.I)
_STOP = frozenset(
    "a an the of to in on for and or but is are was were be been being it its this that these those with as by at "
    "from which who whom what when where why how not no do does did has have had can could will would should may "
    "might must than then there their they them he she his her we our you your i also into about such more most".split()
)


FAILED = "request_failed_"
RETRY_ROUNDS = 2
"""Rounds in which a wave's items whose requests failed for a passing reason are asked again."""
REFUSED_AS_ASKED = ("http_400", "http_413", "http_422")
"""Request errors that depend on the request itself (too long, rejected content): rejects, not retried."""
GAVE_UP = ("batch_attempts_exhausted",)
"""A request that generator.batch_attempts batches did not answer: a reject (counted), not asked again."""


def passing(reason: str | None) -> bool:
    """A reject reason of a request that failed for a reason that may pass (not REFUSED_AS_ASKED)."""
    return bool(reason) and reason.startswith(FAILED) and reason.removeprefix(FAILED) not in REFUSED_AS_ASKED + GAVE_UP


def planned(missing: int, oversample: float) -> int:
    """Requests planned for `missing` rows (rounded up, immune to float noise such as 300000 * 1.15)."""
    return math.ceil(round(missing * oversample, 6)) if missing > 0 else 0


def oversample(q: QAConfig, part: str) -> float:
    """Requests planned per missing row of `part`."""
    return q.oversample_integration if part == "integration" and q.oversample_integration is not None else q.oversample


def reject_rate(q: QAConfig, part: str) -> float:
    """The share of `part`'s replies the dry run expects to be rejected."""
    if part == "integration" and q.expected_reject_rate_integration is not None:
        return q.expected_reject_rate_integration
    return q.expected_reject_rate


def expected_waves(missing: int, oversample: float, reject_rate: float, max_waves: int = 100) -> list[int]:
    """Items each wave plans for `missing` rows when a share `reject_rate` of replies is rejected (in
    expectation): wave after wave plans `planned(still missing, oversample)` until under half a row is
    missing (or `max_waves`)."""
    waves: list[int] = []
    left = float(missing)
    while left >= 0.5 and len(waves) < max_waves:
        waves.append(planned(math.ceil(left - 1e-9), oversample))
        left -= waves[-1] * (1 - reject_rate)
    return waves


@dataclass
class QAItem:
    id: str
    part: str
    """The mixture part the item is for (`fine_grained`, `integration`, `short`)."""
    qa_type: str
    """The question it asks: `fine_grained` (type (a)) or `integration` (type (b)); a short item asks either."""
    source: Source
    key: list[int]
    """Indices of the segments the QA is written from (all of them for integration)."""


@dataclass
class QA:
    question: str
    answer: str


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in _STOP and len(w) > 1]


def restates(question: str, answer: str) -> bool:
    """The answer repeats the question instead of answering it: it opens with the question's first
    three words, or, four words or longer, it has no content word the question lacks (a shorter
    answer may pick one of the options the question names: "False", "the second one")."""
    q, a = words(question), words(answer)
    if len(a) >= 3 and a[:3] == q[:3]:
        return True
    asked = set(q)
    return len(a) >= 4 and all(w in asked for w in content_words(answer))


def grounding(answer: str, source_text: str) -> float:
    """Share of the answer's content words that occur in the source."""
    words = content_words(answer)
    if not words:
        return 1.0
    seen = set(content_words(source_text))
    return sum(w in seen for w in words) / len(words)


def parse(text: str, qa_type: str, num_pieces: int) -> tuple[QA | None, str | None]:
    """Strict parse of the generator's reply into a QA, or (None, reason).

    Expected lines: `Question: ...`, `Answer: ...` and for integration `Pieces: 1, 3`; nothing else.
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None, "empty"
    if not (m := _QUESTION.match(lines[0])):
        return None, "refusal" if _REFUSAL.match(lines[0]) else "unparseable"
    question = m.group(1).strip().strip("*").strip()
    if len(lines) < 2 or not (a := _ANSWER.match(lines[1])):
        return None, "no_answer" if len(lines) == 1 else "unparseable"
    answer = a.group(1).strip().strip("*").strip()
    if re.search(r"\banswer\s*:", question, re.I):
        return None, "unparseable"
    rest = lines[2:]
    if qa_type == "integration":
        if not rest or not (p := _PIECES.match(rest[0])):
            return None, "no_pieces"
        pieces = {int(n) for n in re.findall(r"\d+", p.group(1)) if 1 <= int(n) <= num_pieces}
        if len(pieces) < 2:
            return None, "fewer_than_two_pieces"
        rest = rest[1:]
    if rest:
        return None, "extra_text"
    if not question or not answer:
        return None, "empty"
    return QA(question=question, answer=answer), None


def check(qa: QA, source_text: str, min_grounding: float) -> str | None:
    """Content rules on a parsed QA; returns the rejection reason or None."""
    if _CONTEXT_REF.search(qa.question):
        return "context_reference"
    if _REFUSAL.match(qa.answer) or _REFUSAL.match(qa.question):
        return "refusal"
    if _QUESTION_SHAPED.search(qa.answer.strip()):
        return "question_shaped_answer"
    if restates(qa.question, qa.answer):
        return "answer_restates_question"
    if not set(content_words(qa.question)) & set(content_words(source_text)):
        return "off_topic_question"  # not one of its content words is the source's
    if grounding(qa.answer, source_text) < min_grounding:
        return "ungrounded"
    return None


def join(prefix: str, text: str) -> str:
    """A prefilled field and its continuation, with one space between them where the backend dropped
    it (the local one strips the leading whitespace of a continuation)."""
    space = prefix and text and not prefix[-1].isspace() and not text[0].isspace() and text[0] not in ".,;:!?)]}'\""
    return prefix + (" " if space else "") + text


class QAGenerator:
    """Turns a stream of Sources into accepted QA items, in waves until each part's count is met.

    Deterministic for a seed: parts and key segments are hashed from ids, and every answer comes
    from the request cache on a rerun, so a resumed run accepts exactly the same items.
    """

    def __init__(
        self,
        qa: QAConfig,
        context: ContextConfig,
        mixture: MixtureConfig,
        seed: int,
        engine: Engine | None,
        total_tokens: Callable[[Source], int],
        prefill: bool = False,
    ):
        self.qa, self.context, self.mixture, self.seed = qa, context, mixture, seed
        self.prefill = prefill
        """`generator.prefill`: one request per reply line (see `generate`)."""
        self.engine = engine
        self.total_tokens = total_tokens
        self.stats: Counter = Counter()
        self.by_part: dict[str, Counter] = {}
        """Per mixture part: items planned and rejected by reason (the manifest's `qa_by_part`)."""

    # -- planning -----------------------------------------------------------------------------
    def eligible(self, src: Source, part: str) -> bool:
        q, c = self.qa, self.context
        if part == "fine_grained":
            return True
        if part == "integration":
            return 2 <= len(src.segments) <= q.max_integration_pieces and self.total_tokens(src) <= c.min_context_tokens
        return self.total_tokens(src) <= min(self.mixture.short_max_tokens, c.max_context_tokens)

    def make_item(self, src: Source, part: str) -> QAItem:
        seed = self.seed
        qa_type = part
        if part == "short":
            m = self.mixture
            share_b = m.integration / max(1, m.fine_grained + m.integration)
            can_b = 2 <= len(src.segments) <= self.qa.max_integration_pieces
            qa_type = "integration" if can_b and unit(seed, "short-type", src.id) < share_b else "fine_grained"
        if qa_type == "integration":
            key = list(range(len(src.segments)))
        else:
            key = [int(unit(seed, "segment", src.id) * len(src.segments))]
        return QAItem(id=short_id(seed, part, src.id), part=part, qa_type=qa_type, source=src, key=key)

    def plan_wave(self, sources: Iterator[Source], missing: dict[str, int]) -> list[QAItem]:
        quota = {p: planned(n, oversample(self.qa, p)) for p, n in missing.items() if n > 0}
        wave: list[QAItem] = []
        while any(quota.values()):
            src = next(sources, None)
            if src is None:
                break
            parts = [p for p in QA_PARTS if quota.get(p, 0) > 0 and self.eligible(src, p)]
            if not parts:
                continue
            total = sum(quota[p] for p in parts)
            # "role" names the draw (its old name, kept: renaming it would change every set)
            u, acc = unit(self.seed, "role", src.id) * total, 0
            part = parts[-1]
            for p in parts:
                acc += quota[p]
                if u < acc:
                    part = p
                    break
            quota[part] -= 1
            wave.append(self.make_item(src, part))
        return wave

    # -- prompting ----------------------------------------------------------------------------
    def request(self, item: QAItem) -> Request:
        q = self.qa
        if item.qa_type == "fine_grained":
            text = prompts.fill(prompts.load(q.prompt_fine_grained), passage=item.source.segments[item.key[0]])
        else:
            pieces = "\n\n".join(f"[Piece {i + 1}]\n{s}" for i, s in enumerate(item.source.segments))
            text = prompts.fill(
                prompts.load(q.prompt_integration), num_pieces=str(len(item.source.segments)), pieces=pieces
            )
        return Request.user(text)

    def grounding_text(self, item: QAItem) -> str:
        return "\n".join(item.source.segments[i] for i in item.key)

    def _judge(self, item: QAItem, text: str, response) -> tuple[QA | None, str | None]:
        """Parse and check a whole reply (`text` includes any prefilled fields)."""
        if response.error is not None:
            return None, f"request_failed_{response.error}"
        if response.finish_reason == "content_filter":
            return None, "refusal"
        if response.finish_reason == "length":
            return None, "truncated"
        qa, reason = parse(text, item.qa_type, len(item.source.segments))
        if qa is not None:
            reason = check(qa, self.grounding_text(item), self.qa.min_answer_grounding)
            if reason:
                qa = None
        return qa, reason

    def fields(self, item: QAItem) -> list[str]:
        """The prefilled start of each reply line: the question's with `qa.question_start`, the pieces'
        with the label the pieces carry in the prompt (`[Piece 1]`), which small models then repeat."""
        question = f"Question: {self.qa.question_start}".rstrip(" ") if self.qa.question_start else "Question:"
        return [question, "Answer:"] + (["Pieces: [Piece"] if item.qa_type == "integration" else [])

    def first_request(self, item: QAItem) -> Request:
        """The first request the run sends for `item` (with prefill: the one for its first field)."""
        base = self.request(item)
        return self.field_request(base, "", self.fields(item)[0]) if self.prefill else base

    @staticmethod
    def field_request(base: Request, text: str, field: str) -> Request:
        """Prefill: continue the assistant turn after the fields written so far with the next field."""
        return Request(messages=base.messages, prefix=text + field, stop=("\n",))

    def generate(self, items: list[QAItem], desc: str = "QA pairs") -> list[tuple[QA | None, str | None]]:
        """One request per item; with `generator.prefill`, one request per field instead, each
        continuing the assistant turn with the fields so far and stopping at the line's end."""
        base = [self.request(it) for it in items]
        if not self.prefill:
            responses = self.engine.generate(base, desc=desc)
            return [self._judge(it, rs.text or "", rs) for it, rs in zip(items, responses, strict=True)]
        texts = [""] * len(items)
        results: list[tuple[QA | None, str | None] | None] = [None] * len(items)
        last = [None] * len(items)
        for step in range(3):
            live = [i for i, it in enumerate(items) if results[i] is None and step < len(self.fields(it))]
            if not live:
                break
            reqs = [self.field_request(base[i], texts[i], self.fields(items[i])[step]) for i in live]
            for i, rq, rs in zip(live, reqs, self.engine.generate(reqs, desc=f"{desc}, field {step + 1}"), strict=True):
                last[i] = rs
                if rs.error is not None or rs.finish_reason in ("length", "content_filter"):
                    results[i] = self._judge(items[i], "", rs)
                elif not rs.text.strip():
                    results[i] = (None, "empty")
                else:
                    texts[i] = join(rq.prefix, rs.text) + "\n"
        return [r if r is not None else self._judge(items[i], texts[i], last[i]) for i, r in enumerate(results)]

    def answered(self, items: list[QAItem], desc: str) -> list[tuple[QA | None, str | None]]:
        """`generate`, with items whose request failed for a passing reason (a timeout, a dropped connection,
        HTTP 429 or 5xx, a cut-off reply) asked again, RETRY_ROUNDS times, instead of being replaced by new
        texts: which rows exist must not depend on transient errors. What still fails stops the run (a
        rerun asks again; answers so far are cached). A request the server refuses for what it is (HTTP
        400, 413, 422: the same each time) is a reject."""
        results = self.generate(items, desc=desc)
        for round_no in range(1, RETRY_ROUNDS + 1):
            again = [i for i, (_, reason) in enumerate(results) if passing(reason)]
            if not again:
                return results
            retried = self.generate([items[i] for i in again], desc=f"{desc}, failed requests again ({round_no})")
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        left = Counter(reason for _, reason in results if passing(reason))
        if left:
            raise FatalRequestError(
                f"{sum(left.values())} requests still failed after {RETRY_ROUNDS} more rounds of retries "
                f"({', '.join(f'{k.removeprefix(FAILED)} x{v}' for k, v in left.most_common())})"
            )
        return results

    # -- the loop -----------------------------------------------------------------------------
    def run(self, sources: Iterator[Source], need: dict[str, int]) -> dict[str, list[tuple[QAItem, QA]]]:
        accepted: dict[str, list[tuple[QAItem, QA]]] = {r: [] for r in need}
        wave_no = 0
        while True:
            missing = {r: need[r] - len(accepted[r]) for r in need}
            if all(n <= 0 for n in missing.values()):
                break
            wave = self.plan_wave(sources, missing)
            if not wave:
                break
            wave_no += 1
            self.stats["planned"] += len(wave)
            for item, (qa, reason) in zip(wave, self.answered(wave, f"QA pairs (wave {wave_no})"), strict=True):
                part = self.by_part.setdefault(item.part, Counter())
                part["planned"] += 1
                if qa is None:
                    self.stats[f"rejected_{reason}"] += 1
                    part[f"rejected_{reason}"] += 1
                elif len(accepted[item.part]) < need[item.part]:
                    accepted[item.part].append((item, qa))
                else:
                    self.stats["surplus"] += 1
        self.stats["waves"] = wave_no
        return accepted
