"""Score VaL probe predictions by the paper's rules; Avg and Gap over position spans.

Per example: document, recall of the gold sentence's lower-cased whitespace words in the output;
code, 1 if the gold function name (trailing dots stripped) is a substring of the output; database,
1 if the gold label or description (lower-cased, dots stripped) is a substring of the lower-cased
output. Per set, the mean over each whole span of `span_size` consecutive positions; each span is
averaged over the sets; Avg is the mean over spans, Gap the best span minus the worst, both in
percent. Only whole spans count (FILM's rule; its files hold a whole number of spans per set):
positions past the last span that every set fills are dropped and counted (`dropped`).
FILM's released script reads only the first 49 of every 50 positions; `parity=True` does the same.
Where Avg is below NO_SIGNAL_AVG the model retrieves almost nothing and a Gap measures noise, so
reports show "no signal" instead of it (`no_signal`).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from in2.evaluation.probing.build import task_of_name
from in2.jsonl import BadFileError, read_jsonl

NO_SIGNAL_AVG = 5.0
"""Avg (percent) below which a Gap is not reported: spans near zero differ by noise only."""


def example_score(task: str, row: dict, prediction: str) -> float:
    if task == "document":
        gold = set(row["completion"].strip().lower().split())
        return len(gold & set(prediction.strip().lower().split())) / len(gold) if gold else 0.0
    if task == "code":
        return float(row["completion"].strip(".") in prediction)
    if task == "database":
        pred = prediction.lower()
        return float(row["label"].strip(".").lower() in pred or row["description"].strip(".").lower() in pred)
    raise ValueError(f"unknown probing task {task!r}")


def aggregate(scored: list[tuple[int, int, float]], num_positions: int, span_size: int = 50, parity: bool = False):
    """(set_id, position_id, score) triples -> per-span means across sets, Avg and Gap (percent), over
    the whole spans of the first `num_positions` positions; `dropped` counts the triples past them."""
    if span_size < 1:
        raise ValueError("span_size must be >= 1")
    end_all = num_positions - num_positions % span_size
    by_set: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    dropped = 0
    for set_id, position, score in scored:
        if position >= end_all:
            dropped += 1
            continue
        by_set[set_id][position].append(score)
    spans, spread = [], []
    for start in range(0, end_all, span_size):
        end = start + span_size - (1 if parity else 0)
        per_set = []
        for positions in by_set.values():
            values = [v for p in range(start, end) for v in positions.get(p, [])]
            if values:
                per_set.append(sum(values) / len(values))
        if per_set:
            spans.append(100 * sum(per_set) / len(per_set))
            spread.append(100 * statistics.pstdev(per_set))
    if not spans:
        return {"avg": math.nan, "gap": math.nan, "spans": [], "span_std": [], "dropped": dropped, "no_signal": True}
    avg = sum(spans) / len(spans)
    return {
        "avg": avg,
        "gap": max(spans) - min(spans),
        "spans": spans,
        "span_std": spread,
        "dropped": dropped,
        "no_signal": not avg >= NO_SIGNAL_AVG,
    }


def avg_gap(avg: float, gap: float) -> str:
    """`Avg / Gap` for tables and cards; "no signal" instead of a Gap where Avg is below NO_SIGNAL_AVG."""
    return f"{avg:.1f} / " + (f"{gap:.1f}" if avg >= NO_SIGNAL_AVG else "no signal")


def depth_profile(points: list[tuple[float, float]], bins: int = 10) -> list[float | None]:
    """Mean score (percent) per tenth of the context, from (relative position, score) pairs."""
    sums, counts = [0.0] * bins, [0] * bins
    for depth, value in points:
        b = min(int(depth * bins), bins - 1)
        sums[b] += value
        counts[b] += 1
    return [100 * s / c if c else None for s, c in zip(sums, counts, strict=True)]


def read_predictions(path: str | Path) -> list[str]:
    """FILM's prediction lines: {"samples": [text, ...]} (first sample) or {"sample": text}."""
    out = []
    for n, record in enumerate(read_jsonl(path), 1):
        if "samples" in record:
            out.append(record["samples"][0] if record["samples"] else "")
        elif "sample" in record:
            out.append(record["sample"])
        else:
            raise BadFileError(f"{path}: prediction {n} needs 'samples' or 'sample'")
    return out


def score(
    name: str, rows: list[dict], skip: list[int], predictions: list[str], span_size: int = 50, parity: bool = False
) -> dict:
    """Scores of one probe file; rows in `skip` are left out, as FILM does."""
    if len(predictions) != len(rows):
        raise BadFileError(f"{name}: {len(predictions)} predictions for {len(rows)} probe rows")
    task, skipped = task_of_name(name), set(skip)
    scored = [
        (row["set_id"], row["position_id"], example_score(task, row, pred))
        for i, (row, pred) in enumerate(zip(rows, predictions, strict=True))
        if i not in skipped
    ]
    size: dict[int, int] = defaultdict(int)  # positions per set: its num_items, or its last position + 1
    for row in rows:
        size[row["set_id"]] = max(size[row["set_id"]], row.get("num_items", row["position_id"] + 1))
    num_positions = max(size.values())
    result = aggregate(scored, min(size.values()), span_size, parity)
    result["depth"] = depth_profile(
        [
            (row["position_id"] / row.get("num_items", num_positions), s)
            for row, (_, _, s) in zip([r for i, r in enumerate(rows) if i not in skipped], scored, strict=True)
        ]
    )
    sets = sorted({row["set_id"] for row in rows})
    return {
        "task": task,
        "name": name,
        "scored": len(scored),
        "skipped": len(rows) - len(scored),
        "sets": len(sets),
        "positions": num_positions,
        "span_size": span_size,
        "parity": parity,
        **result,
    }


def overall(results: list[dict]) -> dict:
    """The paper's "All": the mean of the tasks' Avg and the mean of their Gap."""
    if not results:
        return {"avg": math.nan, "gap": math.nan}
    return {"avg": sum(r["avg"] for r in results) / len(results), "gap": sum(r["gap"] for r in results) / len(results)}
