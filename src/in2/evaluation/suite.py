"""`in2 eval`: run the chosen suites (probing, longbench, short) for every model, write one results
file and one report, and refresh the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from in2 import redact
from in2.assets import resolve
from in2.cards import model_card
from in2.errors import ConfigError
from in2.evaluation import fit, longbench, tables
from in2.evaluation.config import EvalConfig
from in2.evaluation.probing import build, report, run, score
from in2.evaluation.runner import predictions_path
from in2.recipes import to_dict
from in2.versions import versions

RESULTS = "results.json"
PACKAGES = ("in2", "transformers", "torch", "lm-eval", "evaluate", "rouge", "openai")  # what shapes the scores
TABLE = "results.md"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def score_folder(probe_dir: str | Path, pred_dir: str | Path, names: list[str], span_size: int, parity: bool) -> dict:
    """Scores of FILM-format predictions (`sample_<name>.jsonl`) against probe files (`<name>.jsonl`)."""
    out = {}
    for name in names:
        rows, skip = build.read(probe_dir, name, prompts=False)
        predictions = score.read_predictions(predictions_path(pred_dir, name))
        out[name] = score.score(name, rows, skip, predictions, span_size, parity)
    return out


def by_length(per_probe: dict[str, dict]) -> dict[str, dict]:
    """The paper's "All" (mean Avg and mean Gap over tasks) for each context length."""
    lengths = sorted({n.rsplit("_", 1)[1] for n in per_probe})
    return {t: score.overall([r for n, r in per_probe.items() if n.endswith("_" + t)]) for t in lengths}


def _probing(cfg: EvalConfig, out: Path) -> tuple[dict, list[Path], str]:
    fit.check(cfg)
    probe_dir, names = build.build_all(cfg)
    results = {}
    for m in cfg.models:
        pred_dir = out / "predictions" / slug(m.name)
        run.run(probe_dir, names, m.generator, pred_dir, cfg.probes.prompt_format, cfg.probes.raw_template)
        results[m.name] = score_folder(probe_dir, pred_dir, names, cfg.probes.span_size, cfg.probes.parity)
    plots = report.plots(results, out / "plots")
    text = (
        "### VaL probing\n\n" + report.table(results) + "\nPublished, for reference:\n\n" + report.published_probing()
    )
    data = {
        "models": {m: {"probes": per, "all": by_length(per)} for m, per in results.items()},
        "probe_dir": str(probe_dir),
    }
    return data, plots, text


def _longbench(cfg: EvalConfig, out: Path) -> tuple[dict, str]:
    lb = cfg.longbench
    prompts, source = longbench.load_prompts(lb)
    results = {
        m.name: longbench.run(cfg, i, out / "predictions" / slug(m.name), prompts) for i, m in enumerate(cfg.models)
    }
    data = {
        "scoring": lb.scoring,
        "prompts": source,
        "not_comparable_with_paper": longbench.not_comparable(lb.scoring, source),
        "models": {m: {"tasks": per, "average": longbench.average(per)} for m, per in results.items()},
    }
    return data, "### LongBench\n\n" + tables.longbench(results, lb.scoring, source)


def _short(cfg: EvalConfig) -> tuple[dict, str]:
    from in2.evaluation import short

    scores = {m.name: short.run(cfg, m.generator) for m in cfg.models}
    deltas = short.deltas(scores, cfg.base)
    return {"scores": scores, "deltas": deltas, "base": cfg.base}, "### Short tasks\n\n" + tables.short(scores, deltas)


def evaluate(cfg: EvalConfig) -> Path:
    """Run the whole evaluation; returns the results folder."""
    if not cfg.models:
        raise ConfigError("models: list at least one model to evaluate")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data: dict = {"versions": versions(PACKAGES), "config": redact.data(to_dict(cfg))}
    sections, plots = [], []
    if "probing" in cfg.suites:
        data["probing"], plots, text = _probing(cfg, out)
        sections.append(text)
    if "longbench" in cfg.suites:
        data["longbench"], text = _longbench(cfg, out)
        sections.append(text)
    if "short" in cfg.suites:
        data["short"], text = _short(cfg)
        sections.append(text)
    data["plots"] = [str(p.relative_to(out)) for p in plots]
    data, summary = redact.data(data), redact.text("\n".join(sections))
    (out / TABLE).write_text(summary)
    (out / RESULTS).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    if cfg.model_card:
        refresh_card(cfg, data, summary, plots)
    return out


def card_rows(data: dict, model: str) -> list[dict]:
    """One model's headline numbers as eval_results.json rows."""
    rows = []
    probing = data.get("probing", {}).get("models", {}).get(model)
    if probing:
        for name, r in probing["probes"].items():
            rows.append({"task": f"VaL {name}", "metric": "Avg / Gap", "value": score.avg_gap(r["avg"], r["gap"])})
        for length, r in probing["all"].items():
            rows.append(
                {"task": f"VaL All {length}", "metric": "Avg / Gap", "value": score.avg_gap(r["avg"], r["gap"])}
            )
    lb = data.get("longbench", {})
    if model in lb.get("models", {}):
        how = longbench.describe(lb["scoring"], lb["prompts"])
        for task, r in lb["models"][model]["tasks"].items():
            rows.append({"task": f"LongBench {task}", "metric": f"{r['metric']}; {how}", "value": round(r["score"], 1)})
        rows.append(
            {"task": "LongBench average", "metric": f"score; {how}", "value": round(lb["models"][model]["average"], 1)}
        )
    short = data.get("short", {})
    for task, value in short.get("scores", {}).get(model, {}).items():
        delta = short.get("deltas", {}).get(model, {}).get(task)
        shown = f"{value:.1f}" + (f" ({delta:+.1f} vs base)" if delta is not None else "")
        rows.append({"task": f"short {task}", "metric": "score", "value": shown})
    return [{**r, "model": model} for r in rows]


def refresh_card(cfg: EvalConfig, data: dict, summary: str, plots: list[Path]) -> Path:
    """Write eval_results.json (this checkpoint's rows; every model in the summary) and re-render the card."""
    folder = Path(cfg.model_card)
    mine = [m.name for m in cfg.models if Path(resolve(m.generator.model)).resolve() == folder.resolve()]
    rows = [r for model in (mine or [m.name for m in cfg.models]) for r in card_rows(data, model)]
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    copied = []
    for p in plots:
        shutil.copyfile(p, folder / "plots" / p.name)
        copied.append(f"plots/{p.name}")
    text = "Every model below was evaluated in the same run; rows marked (paper) are published numbers.\n\n" + summary
    (folder / model_card.EVAL_RESULTS).write_text(
        json.dumps({"summary": text, "results": rows, "plots": copied}, indent=2, ensure_ascii=False) + "\n"
    )
    return model_card.refresh(folder)
