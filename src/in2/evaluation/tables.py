"""Markdown tables for LongBench and the short-task guard, with the paper's numbers for reference."""

from __future__ import annotations

from in2.evaluation.longbench import describe, not_comparable
from in2.evaluation.published import LONGBENCH, RULER, SHORT
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


def ruler(results: dict[str, dict], threshold: float) -> str:
    """One row per model (`ruler.summary` dicts): score per length, average, effective length; a row per task
    below; RULER's published rows for reference."""
    from in2.evaluation.ruler import length_label

    lengths = sorted({n for r in results.values() for n in r["per_length"]}, key=int)
    head = "| model | " + " | ".join(length_label(n) for n in lengths) + " | average | effective length |"
    lines = [head, "|" + "---|" * (len(lengths) + 3)]
    for model, r in results.items():
        cells = [f"{r['per_length'][n]:.1f}" if n in r["per_length"] else "" for n in lengths]
        eff = length_label(r["effective_length"])
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {r['average']:.1f} | {eff} |")
    for model, pub in RULER.items():
        cells = [f"{pub[n]:.1f}" if n in pub else "" for n in lengths]
        avg = f"{pub['average']:.1f}" if "average" in pub else ""
        lines.append(f"| {model} (published) | " + " | ".join(cells) + f" | {avg} | {length_label(pub['effective'])} |")
    tasks = sorted({t for r in results.values() for t in r["tasks"]})
    per_task = [
        "| model | task | " + " | ".join(length_label(n) for n in lengths) + " |",
        "|" + "---|" * (len(lengths) + 2),
    ]
    for model, r in results.items():
        for t in tasks:
            cells = [f"{r['tasks'][t][n]['score']:.1f}" if n in r["tasks"].get(t, {}) else "" for n in lengths]
            per_task.append(f"| {model} | {t} | " + " | ".join(cells) + " |")
    notes = [
        f"RULER scores in percent (recall of the expected strings), the mean over the tasks run at each length; "
        f"effective length: the longest length up to which every length scores above {threshold:g} (RULER's "
        "threshold, Llama-2-7B-chat at 4K).",
        "Published rows: RULER's results table, 13 tasks, 500 examples per length; their average is over 4K-128K "
        "(blank: a figure not given here). Ours compare with them only with all 13 tasks, the same lengths and "
        "no `ruler.limit`.",
    ]
    if any(not r["all_13_tasks"] for r in results.values()):
        notes.append("Not all of RULER's 13 tasks were run: the averages are not RULER's.")
    return "\n".join(lines) + "\n\n" + "\n".join(per_task) + "\n\n" + "\n".join(notes) + "\n"
