"""`in2 eval`: run the chosen suites (probing, longbench, short) for every model, write one results
file and one report, and refresh the model card."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from in2 import redact
from in2.assets import resolve
from in2.cards import model_card
from in2.errors import ConfigError
from in2.evaluation import fit, longbench, ruler_data, serve, tables
from in2.evaluation.config import EvalConfig, EvalModelConfig
from in2.evaluation.probing import build, report, run, score
from in2.evaluation.runner import predictions_path
from in2.llm.config import GeneratorConfig
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


def _probing(results: dict[str, dict], out: Path) -> tuple[dict, list[Path], str]:
    """The probing section from every model's scores (`_probe_model`)."""
    plots = report.plots(results, out / "plots")
    text = (
        "### VaL probing\n\n" + report.table(results) + "\nPublished, for reference:\n\n" + report.published_probing()
    )
    data = {"models": {m: {"probes": per, "all": by_length(per)} for m, per in results.items()}}
    return data, plots, text


def _probe_model(cfg: EvalConfig, model: EvalModelConfig, probes: tuple[Path, list[str]], out: Path) -> dict:
    probe_dir, names = probes
    pred_dir = out / "predictions" / slug(model.name)
    run.run(probe_dir, names, model.generator, pred_dir, cfg.probes.prompt_format, cfg.probes.raw_template)
    return score_folder(probe_dir, pred_dir, names, cfg.probes.span_size, cfg.probes.parity)


def _longbench(cfg: EvalConfig, results: dict[str, dict], source: dict) -> tuple[dict, str]:
    lb = cfg.longbench
    data = {
        "scoring": lb.scoring,
        "prompts": source,
        "not_comparable_with_paper": longbench.not_comparable(lb.scoring, source),
        "models": {m: {"tasks": per, "average": longbench.average(per)} for m, per in results.items()},
    }
    return data, "### LongBench\n\n" + tables.longbench(results, lb.scoring, source)


def _ruler(cfg: EvalConfig, results: dict[str, dict]) -> tuple[dict, str]:
    from in2.evaluation import ruler

    r = cfg.ruler
    models = {m: ruler.summary(per, r.threshold, r.tasks) for m, per in results.items()}
    data = {"threshold": r.threshold, "lengths": r.lengths, "limit": r.limit, "models": models}
    return data, "### RULER\n\n" + tables.ruler(models, r.threshold)


def _short(cfg: EvalConfig, scores: dict[str, dict]) -> tuple[dict, str]:
    from in2.evaluation import short

    deltas = short.deltas(scores, cfg.base)
    return {"scores": scores, "deltas": deltas, "base": cfg.base}, "### Short tasks\n\n" + tables.short(scores, deltas)


def _served(cfg: EvalConfig, index: int, generator: GeneratorConfig) -> EvalConfig:
    """`cfg` with models[index] answering through `generator` (its managed server's URL)."""
    models = list(cfg.models)
    models[index] = dataclasses.replace(models[index], generator=generator)
    return dataclasses.replace(cfg, models=models)


def check_local_models(cfg: EvalConfig) -> None:
    """Fail before minutes of probe building when a local-backend model cannot be there: a path that does not
    exist, a GGUF file missing from its folder, or offline a Hub id with no cached copy."""
    import re

    from huggingface_hub import constants

    from in2.llm.weights import hub_revision

    for m in cfg.models:
        g = m.generator
        if g.backend != "transformers" or m.serve is not None:
            continue
        path = Path(resolve(g.model)).expanduser()
        if path.exists():
            if g.gguf_file and not (path / g.gguf_file).is_file():
                raise ConfigError(f"generator.gguf_file: cannot load {g.gguf_file!r} (model {m.name!r}): not in {path}")
        elif not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", g.model):
            raise ConfigError(f"generator.model: cannot load {g.model!r} (model {m.name!r}): no such folder")
        elif constants.HF_HUB_OFFLINE and hub_revision(g.model) is None:
            raise ConfigError(
                f"generator.model: cannot load {g.model!r} (model {m.name!r}): offline (HF_HUB_OFFLINE) and not in "
                "the local Hub cache"
            )


def evaluate(cfg: EvalConfig) -> Path:
    """Run the whole evaluation, one model at a time (its server up, when in2 manages it, for all of its
    suites); returns the results folder."""
    if not cfg.models:
        raise ConfigError("models: list at least one model to evaluate")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data: dict = {"versions": versions(PACKAGES), "config": redact.data(to_dict(cfg))}
    if cfg.model_card:
        model_card.check_folder(cfg.model_card)  # before the suites, not after them
    check_local_models(cfg)
    if "probing" in cfg.suites:
        fit.check(cfg)  # every probe length, with the answer budget, inside each model's window
    probes = build.build_all(cfg) if "probing" in cfg.suites else None
    prompts, source = longbench.load_prompts(cfg.longbench) if "longbench" in cfg.suites else (None, None)
    ruler_files = ruler_data.fetch_all(cfg.ruler.data, cfg.ruler.tasks) if "ruler" in cfg.suites else {}
    per: dict[str, dict[str, dict]] = {s: {} for s in cfg.suites}
    short_datasets: dict[str, dict] = {}
    for i, m in enumerate(cfg.models):
        with serve.serving(m.name, m.generator, m.serve, out / "servers") as generator:
            run_cfg = _served(cfg, i, generator)
            model = run_cfg.models[i]
            if probes is not None:
                per["probing"][m.name] = _probe_model(run_cfg, model, probes, out)
            if prompts is not None:
                per["longbench"][m.name] = longbench.run(run_cfg, i, out / "predictions" / slug(m.name), prompts)
            if "ruler" in cfg.suites:
                from in2.evaluation import ruler

                per["ruler"][m.name] = ruler.run(run_cfg, generator, out / "predictions" / slug(m.name), ruler_files)
            if "short" in cfg.suites:
                from in2.evaluation import short

                per["short"][m.name] = short.run(run_cfg, generator, out / "predictions" / slug(m.name), short_datasets)
    sections, plots = [], []
    if probes is not None:
        data["probing"], plots, text = _probing(per["probing"], out)
        data["probing"]["probe_dir"] = str(probes[0])
        sections.append(text)
    if prompts is not None:
        data["longbench"], text = _longbench(cfg, per["longbench"], source)
        sections.append(text)
    if "ruler" in cfg.suites:
        data["ruler"], text = _ruler(cfg, per["ruler"])
        data["ruler"]["data"] = {
            name: {k: f[k] for k in ("url", "sha256", "pinned")} for name, f in ruler_files.items()
        }
        sections.append(text)
    if "short" in cfg.suites:
        data["short"], text = _short(cfg, per["short"])
        data["short"]["datasets"] = short_datasets
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
    ru = data.get("ruler", {}).get("models", {}).get(model)
    if ru:
        from in2.evaluation.ruler import length_label

        for n, value in ru["per_length"].items():
            rows.append({"task": f"RULER {length_label(n)}", "metric": "score", "value": round(value, 1)})
        rows.append({"task": "RULER average", "metric": "score", "value": round(ru["average"], 1)})
        eff = length_label(ru["effective_length"])
        rows.append({"task": "RULER effective length", "metric": f"> {data['ruler']['threshold']:g}", "value": eff})
    short = data.get("short", {})
    for task, value in short.get("scores", {}).get(model, {}).items():
        delta = short.get("deltas", {}).get(model, {}).get(task)
        shown = f"{value:.1f}" + (f" ({delta:+.1f} vs base)" if delta is not None else "")
        rows.append({"task": f"short {task}", "metric": "score", "value": shown})
    return [{**r, "model": model} for r in rows]


def model_index(data: dict, model: str) -> list[dict]:
    """One model's scores as Hub `model-index` results (huggingface_hub.EvalResult fields): VaL Avg and Gap per
    probe and length, LongBench per task and average, short tasks; each with its dataset and revision."""
    rows: list[dict] = []

    def add(dataset_type, dataset_name, metric_type, metric_name, value, **extra):
        rows.append(
            {
                "task_type": "text-generation",
                "dataset_type": dataset_type,
                "dataset_name": dataset_name,
                "metric_type": metric_type,
                "metric_name": metric_name,
                "metric_value": round(float(value), 2),
                **{k: v for k, v in extra.items() if v is not None},
            }
        )

    config = data.get("config", {})
    probing = data.get("probing", {}).get("models", {}).get(model)
    if probing:
        pools = config.get("probes", {}).get("pools")
        revision = pools_revision(pools)
        named = {**probing["probes"], **{f"All {length}": r for length, r in probing["all"].items()}}
        for name, r in named.items():
            for metric in ("avg", "gap"):
                if r.get(metric) is None or (metric == "gap" and r.get("no_signal")):
                    continue
                add(
                    "val-probing",
                    f"VaL probing {name}",
                    metric,
                    f"VaL {metric.capitalize()} ({name})",
                    r[metric],
                    dataset_config=name.replace(" ", "_").lower(),  # the Hub groups results by dataset, not its name
                    dataset_revision=revision,
                    dataset_args={"pools": pools},
                )
    lb = data.get("longbench", {})
    if model in lb.get("models", {}):
        lb_cfg = config.get("longbench", {})
        per = lb["models"][model]
        args = {"prompts_revision": lb_cfg.get("prompts_revision"), "scoring": lb["scoring"]}
        for task, r in per["tasks"].items():
            add(
                "THUDM/LongBench",
                f"LongBench {task}",
                r["metric"],
                f"LongBench {task} ({r['metric']})",
                r["score"],
                dataset_config=task,
                dataset_split="test",
                dataset_revision=lb_cfg.get("data_revision"),
                dataset_args=args,
            )
        add(
            "THUDM/LongBench",
            "LongBench (average of the tasks run)",
            "score",
            "LongBench average",
            per["average"],
            dataset_revision=lb_cfg.get("data_revision"),
            dataset_args=args,
        )
    ru = data.get("ruler", {}).get("models", {}).get(model)
    if ru:
        from in2.evaluation.ruler import length_label

        lm_eval = data.get("versions", {}).get("lm-eval")
        for task, per in ru["tasks"].items():
            for n, r in per.items():
                add("ruler", f"RULER {task}", "recall", f"RULER {task} {length_label(n)}", r["score"],
                    dataset_config=f"{task}_{n}", dataset_args={"lm_eval": lm_eval, "limit": data["ruler"]["limit"]})  # fmt: skip
        for n, value in ru["per_length"].items():
            add("ruler", f"RULER {length_label(n)}", "recall", f"RULER {length_label(n)} (mean of the tasks run)", value,
                dataset_config=f"all_{n}", dataset_args={"lm_eval": lm_eval, "tasks": len(ru["tasks"])})  # fmt: skip
    short = data.get("short", {})
    for task, value in short.get("scores", {}).get(model, {}).items():
        ds = short.get("datasets", {}).get(task, {})
        metric = next((t["metric"] for t in config.get("short", {}).get("tasks", []) if t["name"] == task), "score")
        add(
            ds.get("path") or task,
            f"{task} (lm-evaluation-harness)",
            metric.split(",")[0],
            f"{task} {metric}",
            value,
            dataset_config=ds.get("name"),
            dataset_revision=ds.get("revision"),
        )
    return rows


def pools_revision(pools: str | None) -> str | None:
    """The revision of the probe pools: FILM's pinned commit for `film`, else none known."""
    from in2.evaluation.probing.pools import FILM_REVISION

    return FILM_REVISION if pools == "film" else None


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
    index = [r for model in mine for r in model_index(data, model)]  # the Hub reads them as this model's
    (folder / model_card.EVAL_RESULTS).write_text(
        json.dumps(
            {"summary": text, "results": rows, "plots": copied, "model_index": index}, indent=2, ensure_ascii=False
        )
        + "\n"
    )
    return model_card.refresh(folder)
