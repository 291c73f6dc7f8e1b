"""`in2 eval`: build the probes, run every model, score, write the report, refresh the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from in2.assets import resolve
from in2.config import EvalConfig, to_dict
from in2.evaluation.probing import build, report, run, score
from in2.evaluation.runner import predictions_path

RESULTS = "results.json"
TABLE = "results.md"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def score_folder(probe_dir: str | Path, pred_dir: str | Path, names: list[str], span_size: int, parity: bool) -> dict:
    """Scores of FILM-format predictions (`sample_<name>.jsonl`) against probe files (`<name>.jsonl`)."""
    out = {}
    for name in names:
        rows, skip = build.read(probe_dir, name)
        predictions = score.read_predictions(predictions_path(pred_dir, name))
        out[name] = score.score(name, rows, skip, predictions, span_size, parity)
    return out


def by_length(per_probe: dict[str, dict]) -> dict[str, dict]:
    """The paper's "All" (mean Avg and mean Gap over tasks) for each context length."""
    lengths = sorted({n.rsplit("_", 1)[1] for n in per_probe})
    return {t: score.overall([r for n, r in per_probe.items() if n.endswith("_" + t)]) for t in lengths}


def evaluate(cfg: EvalConfig) -> Path:
    """Run the whole evaluation; returns the results folder."""
    if not cfg.models:
        from in2.config import ConfigError

        raise ConfigError("models: list at least one model to evaluate")
    probe_dir, names = build.build_all(cfg)
    out = Path(cfg.output_dir)
    results: dict[str, dict] = {}
    for m in cfg.models:
        pred_dir = out / "predictions" / slug(m.name)
        run.run(probe_dir, names, m.generator, pred_dir, cfg.probes.prompt_format, cfg.probes.raw_template)
        results[m.name] = score_folder(probe_dir, pred_dir, names, cfg.probes.span_size, cfg.probes.parity)
    plots = report.plots(results, out / "plots")
    summary = report.table(results)
    (out / TABLE).write_text(summary)
    data = {
        "probing": {m: {"probes": per, "all": by_length(per)} for m, per in results.items()},
        "config": to_dict(cfg),
        "probe_dir": str(probe_dir),
        "plots": [str(p.relative_to(out)) for p in plots],
    }
    (out / RESULTS).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    if cfg.model_card:
        refresh_card(cfg, results, summary, plots)
    return out


def refresh_card(cfg: EvalConfig, results: dict[str, dict], summary: str, plots: list[Path]) -> Path:
    """Write eval_results.json (this checkpoint's rows, every model in the summary) and re-render the card."""
    from in2.train import model_card

    folder = Path(cfg.model_card)
    mine = [m.name for m in cfg.models if Path(resolve(m.generator.model)).resolve() == folder.resolve()]
    rows = []
    for model in mine or list(results):
        per = results[model]
        for name, r in per.items():
            rows += [
                {"task": f"VaL {name}", "metric": "Avg", "value": round(r["avg"], 1), "model": model},
                {"task": f"VaL {name}", "metric": "Gap", "value": round(r["gap"], 1), "model": model},
            ]
        for length, r in by_length(per).items():
            rows.append(
                {
                    "task": f"VaL All {length}",
                    "metric": "Avg / Gap",
                    "value": f"{r['avg']:.1f} / {r['gap']:.1f}",
                    "model": model,
                }
            )
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    copied = []
    for p in plots:
        shutil.copyfile(p, folder / "plots" / p.name)
        copied.append(f"plots/{p.name}")
    text = "VaL probing (paper's rules; every model evaluated in the same run):\n\n" + summary
    (folder / model_card.EVAL_RESULTS).write_text(
        json.dumps({"summary": text, "results": rows, "plots": copied}, indent=2, ensure_ascii=False) + "\n"
    )
    return model_card.refresh(folder)
