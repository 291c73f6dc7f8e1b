"""Markdown tables for LongBench and the short-task guard, with the paper's numbers for reference."""

from __future__ import annotations

from in2.evaluation.longbench import describe, not_comparable
from in2.evaluation.published import LONGBENCH, SHORT
from in2.evaluation.tasks import LONGBENCH_TASKS


def longbench(results: dict[str, dict[str, dict]], scoring: str, prompts: dict) -> str:
    """`results[model][task]` -> one row per model, columns = tasks + average; the paper's rows below only
    when the scores are comparable with them (`film` scoring, LongBench's prompts: see longbench.py)."""
    tasks = [t for t in LONGBENCH_TASKS if any(t in per for per in results.values())]
    lines = ["| model | " + " | ".join(tasks) + " | average |", "|" + "---|" * (len(tasks) + 2)]
    for model, per in results.items():
        scores = [per[t]["score"] for t in tasks if t in per]
        cells = [f"{per[t]['score']:.1f}" if t in per else "" for t in tasks]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {sum(scores) / len(scores):.1f} |")
    why = not_comparable(scoring, prompts)
    if not why:
        order = list(LONGBENCH_TASKS)
        for model, values in LONGBENCH.items():
            cells = [f"{values[order.index(t)]:.1f}" for t in tasks]
            lines.append(f"| {model} (paper) | " + " | ".join(cells) + f" | {values[-1]:.1f} |")
    notes = [
        "LongBench scores in percent: token F1 (QA tasks), ROUGE-L F of the `rouge` package (summaries); "
        + describe(scoring, prompts)
        + "."
    ]
    if why:
        notes.append(
            "Not comparable with the paper's LongBench table (" + "; ".join(why) + "): its rows are not shown."
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def short(scores: dict[str, dict[str, float]], deltas: dict[str, dict[str, float]]) -> str:
    """Scores per model and task; the change against the base in brackets; the paper's rows below."""
    tasks = sorted({t for per in scores.values() for t in per})
    lines = ["| model | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for model, per in scores.items():
        cells = []
        for t in tasks:
            if t not in per:
                cells.append("")
                continue
            d = deltas.get(model, {}).get(t)
            cells.append(f"{per[t]:.1f}" + (f" ({d:+.1f})" if d is not None else ""))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    for model, per in SHORT.items():
        lines.append(f"| {model} (paper) | " + " | ".join(f"{per[t]:.1f}" if t in per else "" for t in tasks) + " |")
    return "\n".join(lines) + "\n\nShort tasks in percent; in brackets the change against the base model.\n"
