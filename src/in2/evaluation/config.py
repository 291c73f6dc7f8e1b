"""The evaluation recipe (`in2 eval`, `in2 probe build`, e.g. recipes/film-7b/eval.yaml): suites, probes,
LongBench, short tasks and the models to run them on. Errors name the offending field."""

from __future__ import annotations

from dataclasses import dataclass, field

from in2.evaluation.ruler_data import RulerDataConfig
from in2.evaluation.serve import ServeConfig, serve_checks
from in2.evaluation.tasks import (
    LONGBENCH_TASKS,
    PROBE_SEPARATORS,
    PROBE_TASKS,
    RULER_LENGTHS,
    RULER_TASKS,
    SUITES,
)
from in2.llm.config import GeneratorConfig, generator_checks
from in2.prompts import MISTRAL_INST
from in2.recipes import option, raise_first
from in2.tokenizer import TokenizerConfig


@dataclass
class ProbeConfig:
    """VaL probes: which tasks, at which lengths, how many sets and queried positions."""

    tasks: list[str] = option(
        factory=lambda: list(PROBE_TASKS),
        doc="Probe tasks: any of document, code, database (the paper's three VaL probes).",
    )
    lengths: list[int] = option(
        factory=lambda: [32768],
        doc="Tokens per context, as named (`document_bi_32k`): the prompt (FILM user turn in `raw_template`, "
        "measured with `tokenizer`) plus `reserved_tokens`.",
    )
    reserved_tokens: int = option(
        0,
        "Kept free in each length for what the server adds and for the answer (e.g. 1 BOS + 128 new "
        "tokens), so a probe of length L runs in a window of L tokens.",
    )
    sets: int = option(4, "Probe sets per task and length.")
    span_size: int = option(50, "Positions per span, for scoring (Avg, Gap) and for `positions_per_span`.")
    positions_per_span: int | None = option(
        None, "Query this many seeded positions per span; None queries every position (the paper's setting)."
    )
    pools: str = option(
        "builtin",
        "`builtin` (built offline: pydoc sentences, stdlib functions, stdlib entity table), a folder with"
        " FILM's `pieces/*.jsonl`, or `film` to download FILM's pools.",
    )
    document_source: str = option("builtin:pydoc", "Corpus for the builtin document pool (any `corpus.source`).")
    separators: dict[str, str] = option(
        factory=lambda: dict(PROBE_SEPARATORS), doc="Between items of a context, per task (the paper does not say)."
    )
    raw_template: str = option(
        MISTRAL_INST, "How the stored `prompt` wraps the FILM user turn (Mistral's format, as in FILM's released set)."
    )
    prompt_format: str = option(
        "chat", "`chat`: the user turn through each model's chat template; `raw`: the stored prompt as is."
    )
    parity: bool = option(
        False, "Score only 49 of each 50 positions, like FILM's released script (for comparing with its numbers)."
    )
    output_dir: str = option("probes/val", "Folder the probe files are written to.")
    prebuilt: str | None = option(
        None,
        "A folder of probe files to use as they are instead of building (FILM's VaLProbing-32K files: "
        "`<name>.jsonl` and `<name>_skip_list.json`); every `<name>.jsonl` in it is run.",
    )


@dataclass
class LongBenchConfig:
    """LongBench's 9 English tasks (the FILM paper's Section 4, arXiv 2404.16811)."""

    tasks: list[str] = option(
        factory=lambda: list(LONGBENCH_TASKS), doc="LongBench tasks to run (default: the 9 English tasks)."
    )
    data: str = option(
        "THUDM/LongBench", "A folder of LongBench's `<task>.jsonl` files, or a Hub dataset repo with them in data.zip."
    )
    data_revision: str | None = option(
        None, "Tag, branch or commit of the Hub dataset repo `data` (None: its latest); recorded with the scores."
    )
    max_samples: int | None = option(None, "Rows per task (None: all), for quick runs.")
    max_input_tokens: int = option(
        31500,
        "LongBench's max_length for 32K models: a prompt of more tokens than this, counted with the "
        "special tokens its tokenizer adds (BOS), keeps its first and last max_input_tokens // 2 tokens.",
    )
    tokenizer: str = option(
        "model",
        "Which tokenizer counts and cuts the prompts: `model` (each model's own, as LongBench does: "
        "`models[i].tokenizer`, else loaded from its generator.model and gguf_file) or `eval` (the "
        "recipe's `tokenizer`, for every model).",
    )
    prompts: str = option(
        "official",
        "`official`: LongBench's config/dataset2prompt.json at `prompts_revision`, downloaded once into "
        "~/.cache/in2/longbench/; `in2`: in2's own wording (its scores are marked not comparable); or a "
        "path to a JSON file of the same shape, {task: prompt with {context} and {input}}.",
    )
    prompts_revision: str = option(
        "8ae23fd444b0ed5837e993fb8d764f70b388c568", "The THUDM/LongBench commit the official prompts are read at."
    )
    prompts_url: str = option(
        "https://raw.githubusercontent.com/THUDM/LongBench/{revision}/config/dataset2prompt.json",
        "Where the official prompts are downloaded from ({revision}: `prompts_revision`), e.g. a mirror.",
    )
    prompts_sha256: str | None = option(
        "e0b7e5942a5663be6e7f8754cd65a7819b8b59343967201235200a2404ecc2e9",
        "Checked against the official prompts file (null: the first download's digest, recorded and checked from"
        " then on). The default was computed"
        " from a stored copy of the file at `prompts_revision`, not from a download from GitHub.",
    )
    scoring: str = option(
        "longbench",
        "`longbench`: LongBench's official scorer (token F1; ROUGE-L F of the `rouge` package, 0 when it "
        "fails). `film`: the same plus FILM's rules (a QA prediction is cut at its first blank line; null"
        " predictions are skipped), the scorer behind the paper's table: only these scores are shown "
        "beside it.",
    )
    prompt_format: str = option(
        "chat", "`chat`: each prompt through the model's chat template; `raw`: through `raw_template`."
    )
    raw_template: str = option(
        MISTRAL_INST, "With prompt_format raw: how the prompt is wrapped; must contain {prompt}."
    )


@dataclass
class RulerConfig:
    """RULER through lm-evaluation-harness's `ruler` tasks (in2.evaluation.ruler)."""

    tasks: list[str] = option(
        factory=lambda: list(RULER_TASKS), doc="RULER tasks (default: its 13, as lm-eval names them)."
    )
    lengths: list[int] = option(
        factory=lambda: [4096, 8192, 16384, 32768], doc="Sequence lengths, among RULER's 4096 ... 131072."
    )
    limit: int | None = option(None, "Examples per task and length (None: lm-eval's 500, RULER's setting).")
    threshold: float = option(
        85.6, "Score a length must exceed to count as effective (RULER's: Llama-2-7B-chat at 4K)."
    )
    tokenizer: str | None = option(
        None, "Tokenizer that sizes the examples (HF id or folder); None: the model's own (generator.model)."
    )
    apply_chat_template: bool = option(
        True, "Send each example through the model's chat template (RULER does, for chat models)."
    )
    batch_size: int = option(1, "lm-eval batch size (local models).")
    data: RulerDataConfig = field(default_factory=RulerDataConfig)


@dataclass
class ShortTaskConfig:
    name: str = option("mmlu", "An lm-evaluation-harness task name.")
    num_fewshot: int = option(0, "Few-shot examples per question.")
    metric: str = option("acc,none", "The lm-eval result key reported.")


def _short_tasks() -> list[ShortTaskConfig]:
    """The paper's eight short tasks (Section 4), as in its table (in2.evaluation.published.SHORT); where it
    gives no shot count, lm-eval's default (0)."""
    return [
        ShortTaskConfig("mmlu", 5, "acc,none"),
        ShortTaskConfig("boolq", 0, "acc,none"),
        ShortTaskConfig("race", 0, "acc,none"),
        ShortTaskConfig("commonsense_qa", 0, "acc,none"),
        ShortTaskConfig("arc_challenge", 0, "acc_norm,none"),
        ShortTaskConfig("hellaswag", 0, "acc_norm,none"),
        ShortTaskConfig("gsm8k", 8, "exact_match,strict-match"),
        ShortTaskConfig("minerva_math", 4, "exact_match,none"),
    ]


@dataclass
class ShortConfig:
    """The short-task guard through lm-evaluation-harness (optional extra `short`)."""

    tasks: list[ShortTaskConfig] = option(
        factory=_short_tasks, doc="lm-eval tasks, a list of {name, num_fewshot, metric}."
    )
    limit: int | None = option(None, "Examples per task (None: all), for quick runs.")
    batch_size: int = option(8, "lm-eval batch size.")
    include_path: str | None = option(None, "A folder of extra lm-eval task YAMLs (your own or local-data tasks).")


@dataclass
class EvalModelConfig:
    """One model to evaluate: a display name and how to reach it (in2's generator settings)."""

    name: str = option("model", "Name shown in tables, plots and the model card.")
    generator: GeneratorConfig = option(
        factory=lambda: GeneratorConfig(temperature=0.0, max_tokens=128, gguf_file=None),
        doc="How to reach the model (a generator section).",
    )
    tokenizer: TokenizerConfig | None = option(
        None,
        "The model's own tokenizer, for LongBench's truncation (give `gguf_file: null` unless it is a "
        "GGUF file); None: loaded from generator.model and gguf_file.",
    )
    serve: ServeConfig | None = option(
        None,
        "Start this model's server for its suites and stop it after (`{engine: vllm, args: [...]}`: "
        "in2.evaluation.serve); None: the server at generator.base_url is yours to run.",
    )


@dataclass
class EvalConfig:
    """The whole `in2 eval` job: build probes, run every model, score, report, refresh the model card."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    suites: list[str] = option(factory=lambda: ["probing"], doc="Any of probing, longbench, ruler, short.")
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    longbench: LongBenchConfig = field(default_factory=LongBenchConfig)
    ruler: RulerConfig = field(default_factory=RulerConfig)
    short: ShortConfig = field(default_factory=ShortConfig)
    models: list[EvalModelConfig] = option(
        factory=list, doc="Models to evaluate, a list of {name, generator, tokenizer}."
    )
    base: str | None = option(
        None, "Name of the base model among `models`: the short-task guard reports changes against it."
    )
    output_dir: str = option("results/eval", "Folder for results, tables and plots.")
    model_card: str | None = option(None, "A folder written by `in2 train`: its card gets the results and plots.")
    seed: int = option(0, "Seed of the probe building (pools, items, queried positions).")

    def validate(self) -> None:
        p = self.probes
        checks = [
            (not p.tasks, "probes.tasks", "must name at least one task"),
            (not p.lengths or min(p.lengths) < 64, "probes.lengths", "must be a list of lengths >= 64 tokens"),
            (
                not 0 <= p.reserved_tokens <= min(p.lengths or [0]) - 64,
                "probes.reserved_tokens",
                "must be >= 0 and leave at least 64 prompt tokens in the shortest length",
            ),
            (p.sets < 1, "probes.sets", "must be >= 1"),
            (p.span_size < 1, "probes.span_size", "must be >= 1"),
            (
                p.positions_per_span is not None and p.positions_per_span < 1,
                "probes.positions_per_span",
                "must be >= 1",
            ),
            (
                p.prompt_format not in ("chat", "raw"),
                "probes.prompt_format",
                f"must be chat or raw, got {p.prompt_format!r}",
            ),
            ("{prompt}" not in p.raw_template, "probes.raw_template", "must contain {prompt}"),
            (len({m.name for m in self.models}) != len(self.models), "models", "names must be distinct"),
        ]
        checks += [(t not in PROBE_TASKS, "probes.tasks", f"unknown task {t!r}") for t in p.tasks]
        checks += [(s not in SUITES, "suites", f"unknown suite {s!r}") for s in self.suites]
        lb = self.longbench
        checks += [(t not in LONGBENCH_TASKS, "longbench.tasks", f"unknown task {t!r}") for t in lb.tasks]
        checks += [
            (lb.max_input_tokens < 16, "longbench.max_input_tokens", "must be >= 16"),
            (lb.prompt_format not in ("chat", "raw"), "longbench.prompt_format", "must be chat or raw"),
            (lb.max_samples is not None and lb.max_samples < 1, "longbench.max_samples", "must be >= 1"),
            (
                lb.tokenizer not in ("model", "eval"),
                "longbench.tokenizer",
                f"must be model or eval, got {lb.tokenizer!r}",
            ),
            (
                lb.scoring not in ("longbench", "film"),
                "longbench.scoring",
                f"must be longbench or film, got {lb.scoring!r}",
            ),
            (
                self.base is not None and self.base not in {m.name for m in self.models},
                "base",
                f"{self.base!r} is not the name of a model in models",
            ),
        ]
        ru = self.ruler
        checks += [(t not in RULER_TASKS, "ruler.tasks", f"unknown task {t!r}") for t in ru.tasks]
        checks += [
            (n not in RULER_LENGTHS, "ruler.lengths", f"{n} is not one of RULER's lengths {list(RULER_LENGTHS)}")
            for n in ru.lengths
        ]
        checks += [
            (not ru.tasks, "ruler.tasks", "must name at least one task"),
            (not ru.lengths, "ruler.lengths", "must name at least one length"),
            (ru.limit is not None and ru.limit < 1, "ruler.limit", "must be >= 1"),
        ]
        for i, m in enumerate(self.models):
            checks += generator_checks(m.generator, f"models[{i}].generator")
            if m.serve is not None:
                checks += serve_checks(m.serve, m.generator, f"models[{i}]")
        raise_first(checks)
