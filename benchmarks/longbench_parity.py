"""LongBench parity: score FILM's released predictions with in2's scorer in both modes and print the
scores beside the reference numbers of the folder's README.

    python benchmarks/longbench_parity.py [../shared/film/longbench]

The folder holds one `<task>.jsonl` per task (rows: `answers` and one prediction per model, keyed by
the model's name in snake case) and a README whose table gives, per model, the paper's per-task
scores and the averages of the paper, of FILM's scorer and of LongBench's official scorer. Expected:
`longbench` scoring within 0.01 of LongBench's official averages, `film` scoring within 0.05 of the
paper's per-task scores, comparing the two-decimal score FILM's scorer prints (the paper rounds that);
tests/test_realworld.py asserts both when the folder is there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "film" / "longbench"
MODES = ("longbench", "film")
# README column -> what it holds, for the three average columns
AVERAGES = {"avg (paper)": "paper", "avg, FILM's scorer": "film", "avg, LongBench's official scorer": "longbench"}


def key(model: str) -> str:
    """`Mistral-7B-Instruct-v0.2` -> `mistral_7b_instruct_v0_2`, the prediction's field in the rows."""
    return re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None  # "-": not published


def references(folder: Path) -> dict[str, dict]:
    """The README's table: {model: {"tasks": {task: paper score or None}, "paper"|"film"|"longbench": average}}."""
    from in2.evaluation.tasks import LONGBENCH_TASKS as TASKS

    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in (folder / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("|")
    ]
    header = next((r for r in rows if r[0] == "model"), None)
    if header is None or not set(TASKS) | set(AVERAGES) <= set(header):
        raise ValueError(f"{folder / 'README.md'}: no reference table with the columns {list(TASKS) + list(AVERAGES)}")
    out = {}
    for row in rows:
        if row[0] in ("model", "") or set(row[0]) <= {"-"}:
            continue
        cells = dict(zip(header, row, strict=True))
        out[row[0]] = {"tasks": {t: _number(cells[t]) for t in TASKS}}
        out[row[0]].update({name: _number(cells[col]) for col, name in AVERAGES.items()})
    return out


def parity(folder: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """{mode: {model: {task: score, ..., "average": mean over the tasks}}} for every model of the README."""
    from in2.evaluation.longbench import score
    from in2.evaluation.tasks import LONGBENCH_TASKS as TASKS

    folder = Path(folder)
    models = list(references(folder))
    rows = {t: [json.loads(line) for line in open(folder / f"{t}.jsonl", encoding="utf-8")] for t in TASKS}
    out: dict = {mode: {m: {} for m in models} for mode in MODES}
    for mode in MODES:
        for m in models:
            for t in TASKS:
                predictions = [r[key(m)] for r in rows[t]]
                out[mode][m][t] = score(t, predictions, [r["answers"] for r in rows[t]], mode)["score"]
            out[mode][m]["average"] = sum(out[mode][m][t] for t in TASKS) / len(TASKS)
    return out


def differences(scores: dict, refs: dict) -> tuple[float, float]:
    """The largest distance of a `longbench` average from LongBench's official one, and of a `film` task
    score, at the two decimals FILM's scorer prints (the paper rounds those), from the paper's."""
    worst_avg = max(abs(s["average"] - refs[m]["longbench"]) for m, s in scores["longbench"].items())
    worst_task = max(
        (
            abs(round(s[t], 2) - v)
            for m, s in scores["film"].items()
            for t, v in refs[m]["tasks"].items()
            if v is not None
        ),
        default=0.0,
    )
    return worst_avg, worst_task


def table(scores: dict, refs: dict) -> str:
    """Markdown: per mode and model, in2's scores over the reference numbers."""
    from in2.evaluation.tasks import LONGBENCH_TASKS as TASKS

    lines = [
        "| scoring | model | " + " | ".join(TASKS) + " | average | reference average |",
        "|" + "---|" * (len(TASKS) + 4),
    ]
    for mode, per_model in scores.items():
        for m, s in per_model.items():
            ref = refs[m]
            cells = [f"{s[t]:.2f}" for t in TASKS]
            lines.append(f"| {mode} | {m} | " + " | ".join(cells) + f" | {s['average']:.2f} | {ref[mode]:.2f} |")
            if mode == "film" and any(v is not None for v in ref["tasks"].values()):
                paper = [f"{ref['tasks'][t]:.1f}" if ref["tasks"][t] is not None else "-" for t in TASKS]
                lines.append(f"| paper | {m} | " + " | ".join(paper) + f" | {ref['paper']:.1f} | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(DEFAULT), help="FILM's predictions with gold answers and README")
    args = p.parse_args(argv)
    start = time.perf_counter()
    refs = references(Path(args.folder))
    scores = parity(args.folder)
    print(table(scores, refs))
    worst_avg, worst_task = differences(scores, refs)
    print(f"longbench scoring: largest difference from LongBench's official averages {worst_avg:.4f} (target 0.01)")
    print(f"film scoring: largest difference from the paper's per-task scores {worst_task:.4f} (target 0.05)")
    print(f"{time.perf_counter() - start:.1f} s")
    return 0 if worst_avg <= 0.01 and worst_task <= 0.05 + 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
