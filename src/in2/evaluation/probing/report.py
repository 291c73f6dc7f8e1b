"""Probing reports: a Markdown table, position plots per task, a length x depth heatmap."""

from __future__ import annotations

from pathlib import Path

from in2.evaluation.probing.score import NO_SIGNAL_AVG, avg_gap
from in2.evaluation.tasks import PROBE_TASKS

TITLES = {
    "document": "Document sentence retrieval",
    "code": "Code function retrieval",
    "database": "Database entity retrieval",
}


def table(results: dict[str, dict[str, dict]]) -> str:
    """`results[model][probe_name]` score dicts -> Markdown, Avg / Gap per probe and the All column per length."""
    names = sorted({n for per_model in results.values() for n in per_model}, key=_order)
    lengths = sorted({n.rsplit("_", 1)[1] for n in names}, key=_tag_tokens)
    head = ["model", *names, *[f"All {length}" for length in lengths]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, per in results.items():
        cells = [model]
        for n in names:
            r = per.get(n)
            cells.append(avg_gap(r["avg"], r["gap"]) if r else "")
        for length in lengths:
            rs = [r for n, r in per.items() if n.endswith("_" + length)]
            cells.append(avg_gap(sum(r["avg"] for r in rs) / len(rs), sum(r["gap"] for r in rs) / len(rs)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "Avg / Gap in percent over whole spans of positions (Gap: best span minus worst span; lower is better).",
        f"no signal: Avg below {NO_SIGNAL_AVG:g}%, where the spans differ by noise and a Gap would mislead.",
    ]
    dropped = sorted({(n, r["dropped"]) for per in results.values() for n, r in per.items() if r.get("dropped")})
    if dropped:
        notes.append(
            "Positions past the last whole span, not scored: "
            + ", ".join(f"{n} {d}" for n, d in dropped)
            + " (probe files built by in2 have none; pass --span-size to match the file)."
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _tag_tokens(tag: str) -> float:
    return float(tag[:-1]) * 1024 if tag.endswith("k") else float(tag)


def _order(name: str) -> tuple:
    task = name.split("_")[0]
    return (_tag_tokens(name.rsplit("_", 1)[1]), PROBE_TASKS.index(task))


def position_plot(name: str, per_model: dict[str, dict], path: Path) -> Path:
    """Mean score per span, one line per model, error bars = spread across sets (like the paper's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for model, r in per_model.items():
        x = list(range(len(r["spans"])))
        ax.errorbar(
            x, r["spans"], yerr=r["span_std"], marker="o", capsize=3, label=f"{model} ({avg_gap(r['avg'], r['gap'])})"
        )
    any_r = next(iter(per_model.values()))
    size = any_r["span_size"]
    ax.set_xlabel(f"position span ({size} items each) of {any_r['positions']} items")
    ax.set_ylabel("score (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{TITLES[any_r['task']]}: {name}")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def heatmap(model: str, task: str, rows: dict[str, dict], path: Path) -> Path:
    """Score by context length (rows) and depth tenth (columns) for one model and task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = sorted(rows, key=_order)
    grid = np.array([[np.nan if v is None else v for v in rows[n]["depth"]] for n in names], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(names)), dpi=120)
    im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    ax.set_yticks(range(len(names)), [n.rsplit("_", 1)[1] for n in names])
    ax.set_xticks(range(10), [f"{10 * i}%" for i in range(10)])
    ax.set_xlabel("depth of the key in the context")
    ax.set_ylabel("context length")
    ax.set_title(f"{model}: {TITLES[task]}")
    fig.colorbar(im, ax=ax, label="score (%)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plots(results: dict[str, dict[str, dict]], folder: Path) -> list[Path]:
    """A position plot per probe file; a heatmap per model and task when several lengths were run."""
    out = []
    names = sorted({n for per in results.values() for n in per}, key=_order)
    for name in names:
        per_model = {m: per[name] for m, per in results.items() if name in per}
        out.append(position_plot(name, per_model, folder / f"val_{name}.png"))
    for model, per in results.items():
        for task in PROBE_TASKS:
            rows = {n: r for n, r in per.items() if r["task"] == task}
            if len(rows) > 1:
                slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in model)
                out.append(heatmap(model, task, rows, folder / f"heatmap_{slug}_{task}.png"))
    return out


def published_probing() -> str:
    from in2.evaluation.published import PROBING_32K

    lines = ["| model (VaLProbing-32K) | document | code | database | All |", "|---|---|---|---|---|"]
    for model, r in PROBING_32K.items():
        cells = [f"{r[k][0]:.1f} / {r[k][1]:.1f}" for k in (*PROBE_TASKS, "all")]
        lines.append(f"| {model} (paper) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
