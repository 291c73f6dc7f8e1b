"""`in2 <command>`: parse arguments, call one library function, print the outcome."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from in2 import __version__, redact
from in2.arguments import FIELD_USAGE, Parser, add_recipe_fields, subparser
from in2.errors import ConfigError
from in2.evaluation.config import EvalConfig
from in2.evaluation.serve import ServerError
from in2.jsonl import BadFileError
from in2.llm.base import BatchPending, FatalRequestError
from in2.llm.engine import BudgetExceeded
from in2.recipes import load_config
from in2.release.publish import PublishError
from in2.synth.config import SynthConfig
from in2.train import HELP as TRAIN_HELP

SYNTH_ALIASES = {
    "output_dir": ["--output-dir"],
    "num_shards": ["--num-shards"],
    "shard_index": ["--shard-index"],
    "generator.max_requests": ["--max-requests"],
    "generator.max_cost_usd": ["--max-cost-usd"],
}
"""Flags older than the `--section.field` rule, kept as aliases of their fields."""
FIELDS_HELP = (
    "Every recipe field is an option, --section.field VALUE (or --section.field=VALUE; section.field=VALUE works "
    "too): VALUE is read as YAML, e.g. 100, gpt-4o, null, '[4096]'; it overrides the recipe."
)


RECIPES = {
    SynthConfig: ("synthesis recipe", "recipes/film-7b/in2_data.yaml", SYNTH_ALIASES, False),
    EvalConfig: ("eval recipe", "recipes/demo/eval.yaml", {}, True),
}
"""Per recipe class: what it is called in help, an example, the flag aliases of its fields, whether --config is
required."""


def _recipe_command(sub, name: str, help: str, cls: type, func):
    """A subcommand run from a recipe: `--config`, its fields as options, positional `section.field=value`."""
    what, example, aliases, required = RECIPES[cls]
    config = "--config RECIPE" if required else "[--config RECIPE]"
    p = sub.add_parser(
        name,
        help=help,
        description=f"{help[0].upper()}{help[1:]}. {FIELDS_HELP}",
        usage=f"%(prog)s {config} {FIELD_USAGE} [options]",
    )
    p.add_argument("--config", required=required, metavar="RECIPE", help=f"{what} YAML, e.g. {example}")
    p.add_argument("overrides", nargs="*", metavar="section.field=VALUE", help="the same as --section.field VALUE")
    add_recipe_fields(p, cls, aliases)
    p.set_defaults(func=func, parser=p)
    return p


def _load(cls, args):
    return load_config(cls, args.config, [*args.overrides, *args.fields])


def cmd_synth(args) -> int:
    cfg = _load(SynthConfig, args)
    from in2.synth import pipeline, shards

    if args.batch_status:
        from in2.llm.batch_backend import status

        rows = status(cfg.generator)
        for row in rows:
            print(json.dumps(row))
        done = sum(r["answered"] for r in rows)
        cost = sum(r["cost_usd"] for r in rows)
        from in2.llm.base import backend_class

        priced = (
            "the batch price" if getattr(backend_class(cfg.generator.backend), "batch_priced", False) else "its price"
        )
        print(f"{len(rows)} batches, {done:,} requests answered, ${cost:.4f} so far (at {priced})")
        return 0
    if args.batch_cancel:
        from in2.llm.batch_backend import cancel

        rows = cancel(cfg.generator)
        for row in rows:
            print(json.dumps(row))
        print(f"{len(rows)} live batches cancelled; run the same command without --batch-cancel to go on")
        return 0
    if args.pilot and not args.dry_run:
        raise ConfigError("--pilot goes with --dry-run")
    if args.dry_run:
        report = pipeline.dry_run(cfg, sample=args.dry_run_sample, pilot=args.pilot)
        print(json.dumps(report, indent=2))
        b = report["batch"]
        hours = report["hours_under_rate_limits"]
        print(
            f"dry run: ~{report['requests']:,} requests in ~{report['expected_waves']} waves, "
            f"~{report['prompt_tokens']:,} prompt tokens, "
            f"<= {report['completion_tokens_at_most']:,} completion tokens, "
            f"<= ${report['estimated_cost_usd_at_most']:.2f}; realistic ~${report['estimated_cost_usd_realistic']:.2f} "
            f"({report['reply_tokens']['value']:g} tokens per reply, {report['reply_tokens']['source'].split(':')[0]}), "
            f"~${b['estimated_cost_usd_realistic']:.2f} in ~{b['batches']} batches ({b['waves']} rounds) "
            f"through the Batch API"
            + (f", ~{hours:g} h under the rate limits" if hours is not None else "")
            + "; nothing was sent"
        )
        return 0
    shards.check_count(cfg.output_dir, cfg.num_shards)
    out = pipeline.synth(cfg)
    if cfg.num_shards > 1:
        print(f"shard {cfg.shard_index} of {cfg.num_shards} written to {out}; run `in2 merge` when all are done")
    else:
        _print_done(out)
    return 0


def _print_done(out) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"\nrows: {manifest['counts']['rows']}  splits: {manifest['splits']}  rejected: {manifest['rejected']}")
    if manifest["shortfall"]:
        short = ", ".join(f"{part} {n} of {manifest['requested'][part]}" for part, n in manifest["shortfall"].items())
        print(
            f"in2: warning: rows missing: {short} (the corpus or the instruction data ran out, or replies were "
            "rejected: see `rejected` and counts in manifest.json)",
            file=sys.stderr,
        )
    if dup := manifest.get("duplicate_row_ids"):
        print(
            f"in2: warning: {dup['rows']} rows repeat the id of another row (e.g. {dup['ids'][0]}): two shards "
            "read texts with the same corpus.id_field value; see duplicate_row_ids in manifest.json",
            file=sys.stderr,
        )
    print(f"dataset folder: {out}")
    print(f'load it with:   from datasets import load_dataset; ds = load_dataset("{out}")')


def cmd_merge(args) -> int:
    cfg = _load(SynthConfig, args)
    from in2.synth import pipeline

    _print_done(pipeline.merge(cfg.output_dir))
    return 0


def cmd_publish(args) -> int:
    from in2.release import publish

    if args.dry_run:
        report = publish.plan(args.folder, args.repo_id, args.version, args.private)
        for f in report["files"]:
            print(f"  {f['bytes']:>12,}  {f['path']}")
        print(
            f"dry run: would upload {len(report['files'])} files ({report['total_bytes']:,} bytes) to dataset "
            f"repo {report['repo_id']}{' (private)' if args.private else ''} and tag the commit {report['tag']}"
        )
        print(f"then load it with: {report['load']}")
        return 0
    report = publish.publish(
        args.folder, args.repo_id, args.version, private=args.private, force=args.force, keep_card=args.keep_card
    )
    print(
        f"uploaded {len(report['files'])} files to {report['repo_id']} at {report['commit'][:10]}, "
        f"tagged {report['tag']}{' (moved)' if report['moved_tag'] else ''}"
    )
    print(f"load it with: {report['load']}")
    return 0


def cmd_export(args) -> int:
    from in2.release import export

    out = export.export(args.checkpoint, args.output, dtype=args.dtype, base=args.base)
    print(f"merged model and card written to {out}")
    return 0


def cmd_doctor(args) -> int:
    from in2 import doctor

    rows = doctor.diagnose(args.config, args.accelerate_config)
    print(f"in2 doctor: {args.config}\n")
    print(doctor.table(rows))
    blockers = [r.check for r in rows if r.status == doctor.BLOCKER]
    warnings = [r.check for r in rows if r.status == doctor.WARN]
    print(f"\n{len(blockers)} blocker(s){': ' + ', '.join(blockers) if blockers else ''}; {len(warnings)} warning(s)")
    return 1 if blockers else 0


def cmd_train(args) -> int:
    from in2.train import sft

    return sft.main(args.train_argv, parser=args.parser)


def cmd_eval(args) -> int:
    from in2.evaluation import suite

    cfg = _load(EvalConfig, args)
    repo = None
    if args.push_card:
        from in2.cards import model_card

        repo = model_card.push_target(cfg.model_card, None if args.push_card is True else args.push_card)
    out = suite.evaluate(cfg)
    print((out / suite.TABLE).read_text())
    print(f"results: {out / suite.RESULTS}, plots: {out / 'plots'}")
    if cfg.model_card:
        print(f"model card refreshed: {cfg.model_card}/README.md")
    if repo:
        commit = model_card.push(cfg.model_card, repo)
        print(f"card and results pushed to {repo} ({commit[:10]})")
    return 0


def cmd_probe_build(args) -> int:
    from in2.evaluation import fit
    from in2.evaluation.probing import build

    cfg = _load(EvalConfig, args)
    fit.check(cfg)
    folder, names = build.build_all(cfg)
    print(f"probe files in {folder}: {', '.join(names)}")
    return 0


def cmd_probe_score(args) -> int:
    from in2.evaluation import suite
    from in2.evaluation.probing import build, report

    names = args.names or sorted(
        p.name[len("sample_") : -len(".jsonl")] for p in Path(args.predictions).glob("sample_*.jsonl")
    )
    if not names:
        raise FileNotFoundError(f"{args.predictions}: no sample_<name>.jsonl prediction files")
    span_size = args.span_size or build.recorded_span_size(args.probes) or 50
    print(f"spans of {span_size} positions" + ("" if args.span_size else " (from the probe folder, or FILM's 50)"))
    results = suite.score_folder(args.probes, args.predictions, names, span_size, args.parity)
    print(report.table({args.model: results}))
    if args.output:
        Path(args.output).write_text(json.dumps({args.model: results}, indent=2) + "\n")
    return 0


def build_parser(train: bool = False) -> argparse.ArgumentParser:
    """in2's parser; with `train`, `in2 train`'s own TrlParser is built (it imports TRL, ~8 s), else a
    placeholder that only names the command."""
    parser = Parser(prog="in2", description="IN2 training data, recipes and evaluation")
    parser.add_argument("--version", action="version", version=f"in2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=subparser)
    p = _recipe_command(
        sub, "synth", "build an IN2 dataset folder from a corpus and a generator", SynthConfig, cmd_synth
    )
    p.add_argument("--dry-run", action="store_true", help="plan requests, estimate tokens and cost, send nothing")
    p.add_argument("--dry-run-sample", type=int, default=2000, help="requests built and counted by --dry-run")
    p.add_argument(
        "--pilot",
        metavar="MANIFEST",
        help="--dry-run: reply lengths and reject rates per part measured by a small real run (its manifest.json)",
    )
    p.add_argument(
        "--batch-status",
        action="store_true",
        help="show the batches of this recipe's run (generator.backend openai_batch / batch_files): state, counts, "
        "cost so far; sends nothing",
    )
    p.add_argument(
        "--batch-cancel",
        action="store_true",
        help="cancel this recipe's live Batch API batches (openai_batch): they stop and are billed no further; "
        "what they answered is kept, and a rerun sends the rest again",
    )
    merge = "join the shards of a sharded synth run into one dataset folder"
    _recipe_command(sub, "merge", merge, SynthConfig, cmd_merge)
    p = sub.add_parser("publish", help="upload a dataset folder to the Hub and tag it with a version")
    p.add_argument("folder", help="dataset folder written by `in2 synth`")
    p.add_argument("--repo-id", required=True, help="org/name of the dataset repo")
    p.add_argument("--version", required=True, help="semantic version tag, e.g. v1.0.0")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--force", action="store_true", help="move the tag if it already exists")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded; touch nothing")
    p.add_argument("--keep-card", metavar="DIR", help="also copy the released card to DIR/<org>--<name>-<version>.md")
    p.set_defaults(func=cmd_publish, parser=p)
    p = sub.add_parser(
        "export",
        help="merge a LoRA/QLoRA checkpoint into its base: a plain model folder and card",
        description="Merge the adapter of a LoRA or QLoRA checkpoint into its base weights (PEFT's "
        "merge_and_unload; the base loaded in --dtype, never 4-bit) and write a plain model folder "
        "(safetensors, config, tokenizer) with its model card, e.g. for a server without LoRA support.",
    )
    p.add_argument("checkpoint", help="folder written by `in2 train` with a LoRA/QLoRA recipe (adapter_config.json)")
    p.add_argument("--output", required=True, help="folder to write the merged model to (new or empty)")
    p.add_argument(
        "--dtype", default="bfloat16", help="weights of the merged model: bfloat16 (default), float16, float32"
    )
    p.add_argument("--base", help="base model to merge into (default: the adapter's base_model_name_or_path)")
    p.set_defaults(func=cmd_export, parser=p)
    if train:
        from in2.train.args import make_parser

        p = make_parser(sub)
    else:  # named only: `in2 train` builds the real one
        p = sub.add_parser("train", help=TRAIN_HELP, add_help=False)
    p.set_defaults(func=cmd_train, parser=p)
    p = sub.add_parser(
        "doctor",
        help="check this machine against a recipe before anything runs: one table, exit 1 on a blocker",
        description="Check what a synth, train or eval recipe needs on this machine (packages and kernels, CUDA "
        "and GPU memory against the recipe's measured need, tokenizer, dataset, generator endpoint, disk, Hub "
        "token, output folder) and print one table. Exit status 1 when a row is a BLOCKER, else 0.",
    )
    p.add_argument("--config", required=True, metavar="RECIPE", help="recipe YAML, e.g. recipes/film-7b/sft_full.yaml")
    p.add_argument(
        "--accelerate-config", metavar="FILE", help="the accelerate config the training recipe is launched with"
    )
    p.set_defaults(func=cmd_doctor, parser=p)
    evaluate = "evaluate every model of an eval recipe (VaL probing, LongBench, short tasks); report, plots, model card"
    p = _recipe_command(sub, "eval", evaluate, EvalConfig, cmd_eval)
    p.add_argument(
        "--push-card",
        nargs="?",
        const=True,
        default=None,
        metavar="REPO",
        help="after the run, upload model_card's README.md (scores in its model-index), eval_results.json and plots "
        "to the model repo REPO (default: the hub_model_id it was trained with); needs a Hugging Face token",
    )
    probe = sub.add_parser(
        "probe",
        help="VaL probe files: build them, or score FILM-format predictions",
        description="VaL probe files: build them from an eval recipe, or score FILM-format predictions.",
    )
    psub = probe.add_subparsers(dest="probe_command", required=True, metavar="COMMAND")
    build = "write the probe files of an eval recipe (its probes section)"
    _recipe_command(psub, "build", build, EvalConfig, cmd_probe_build)
    p = psub.add_parser(
        "score",
        help="score sample_<name>.jsonl predictions against <name>.jsonl probe files",
        description="Score FILM-format predictions (sample_<name>.jsonl) against probe files (<name>.jsonl): "
        "recall per position span, Avg and Max-Min Gap, as in the paper's VaL probing tables.",
    )
    p.add_argument("--probes", required=True, help="folder of probe files (ours or FILM's VaLProbing-32K)")
    p.add_argument("--predictions", required=True, help="folder of sample_<name>.jsonl files")
    p.add_argument("--names", nargs="*", help="probe names, e.g. document_bi_32k (default: every prediction file)")
    p.add_argument(
        "--span-size",
        type=int,
        help="positions per span (default: the span size the probe folder's manifest.json records, else 50)",
    )
    p.add_argument("--parity", action="store_true", help="score 49 of each 50 positions, like FILM's script")
    p.add_argument("--model", default="model", help="name for the table")
    p.add_argument("--output", help="write the scores as JSON here")
    p.set_defaults(func=cmd_probe_score, parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    redact.scrub_logs()
    argv = list(sys.argv[1:] if argv is None else argv)
    train = argv[:1] == ["train"]
    parser = build_parser(train=train)
    args, rest = parser.parse_known_args(argv)
    if rest:
        args.parser.unknown(rest)
    if train:  # TrlParser reads them again with the recipe: --config recipe.yaml and any field as --name value
        args.train_argv = argv[1:]
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, BadFileError, PublishError, ServerError) as e:
        print(f"in2: error: {redact.text(str(e))}", file=sys.stderr)
        return 2
    except BudgetExceeded as e:
        print(f"in2: stopped: {e}. Everything so far is saved; rerun with a higher limit to continue.", file=sys.stderr)
        return 4
    except BatchPending as e:
        print(f"in2: waiting: {e}", file=sys.stderr)
        return 5
    except FatalRequestError as e:
        print(f"in2: error: {redact.text(str(e))}. Answers so far are cached; rerun to resume.", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
