"""The synthesis recipe (`in2 synth`, e.g. recipes/film-7b/in2_data.yaml): every choice of the pipeline is a
field here, from the corpus to the data card. Errors name the offending field."""

from __future__ import annotations

from dataclasses import dataclass, field

from in2.llm.config import GeneratorConfig, generator_checks
from in2.recipes import option, raise_first
from in2.tokenizer import TokenizerConfig

PARTS = ("fine_grained", "integration", "short", "general")
"""The mixture's parts, in this order everywhere: MixtureConfig's row counts, the dataset's folders
(data/<part>/) and the value of its `type` column."""
QA_PARTS = PARTS[:3]
"""The parts made of QA pairs written by the generator (`general` rows come from instruction data)."""
RUNTIME_FIELDS = frozenset(
    {
        "shard_index",
        "output_dir",
        "context.verify_rows",
        "mixture.sort_buffer_mb",
        *(
            f"generator.{name}"
            for name in (
                "api_key_env",
                "cache_dir",
                "concurrency",
                "batch_size",
                "requests_per_minute",
                "tokens_per_minute",
                "max_retries",
                "timeout_s",
                "price_input_per_1m",
                "price_output_per_1m",
                "max_requests",
                "max_cost_usd",
                "max_errors_in_a_row",
                "max_failure_rate",
                # synchronous or batch, the same requests to the same model (its cache key is compared)
                "backend",
                "batch_max_requests",
                "batch_max_mb",
                "batch_attempts",
                "batch_poll_s",
                "batch_price_factor",
            )
        ),
    }
)
"""Fields that say how a shard runs (where its cache is, how fast it asks, what it may spend, how far it
checks), never which rows it builds: `in2 merge` compares every other field across shards."""


def data_settings(config: dict, prefix: str = "") -> dict[str, object]:
    """A config (as in a manifest) flattened to dotted names, without RUNTIME_FIELDS: what shapes the rows."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = prefix + key
        if name in RUNTIME_FIELDS:
            continue
        if isinstance(value, dict):
            out.update(data_settings(value, name + "."))
        else:
            out[name] = value
    return out


@dataclass
class CorpusConfig:
    """Where raw texts come from and how they are cut into segments."""

    source: str = option(
        "builtin:pydoc",
        "`builtin:pydoc` (offline stdlib text), a local file/folder/glob (.txt, .jsonl, .parquet), or a "
        "Hugging Face dataset id such as `allenai/c4`.",
    )
    name: str | None = option(None, "HF dataset config, e.g. `realnewslike`.")
    split: str = option("train", "Split of the corpus dataset to read.")
    text_field: str = option("text", "Column (or JSONL key) holding the text.")
    id_field: str | None = option(None, "Column with a stable text id (e.g. `url`); default: position in the stream.")
    streaming: bool = option(True, "Stream a Hugging Face dataset instead of downloading it whole.")
    max_texts: int | None = option(
        None, "Stop after this many texts (over all shards). None: read until the plan is met."
    )
    filler_pool_texts: int = option(
        1000, "Read at least this many texts (per shard) so fillers come from a varied pool."
    )
    min_segment_tokens: int = option(128, "Segments are at least this many tokens (the paper's 128).")
    max_segment_tokens: int = option(
        2048, "A text with a segment longer than this (one huge line) is skipped and counted."
    )


@dataclass
class QAConfig:
    """QA generation, parsing and filtering."""

    prompt_fine_grained: str = option(
        "fine_grained.txt", "Prompt file for type (a) fine-grained QA: a name of in2's own (in2/prompts/) or a path."
    )
    prompt_integration: str = option(
        "integration.txt", "Prompt file for type (b) integration QA: a name of in2's own (in2/prompts/) or a path."
    )
    min_answer_grounding: float = option(0.5, "Share of the answer's content words that must occur in the source text.")
    oversample: float = option(
        1.3, "Requests planned per missing row, to absorb rejects; waves repeat until the plan is met."
    )
    expected_reject_rate: float = option(
        0.2,
        "The reject budget: share of replies expected to be rejected (take `rejected` / `planned` of a "
        "pilot run's manifest). Only the dry run uses it, to count the waves the run will need.",
    )
    oversample_integration: float | None = option(
        None, "`oversample` for integration rows (None: the same); type (b) replies are rejected more often."
    )
    expected_reject_rate_integration: float | None = option(
        None, "`expected_reject_rate` for integration rows (None: the same)."
    )
    max_integration_pieces: int = option(12, "Type (b) uses texts with 2..this many segments.")
    question_start: str = option(
        "",
        "With generator.prefill: the words every question starts with, e.g. `What` (ours, for small "
        'generators: asked freely, they write "How to ..." questions and repeat them as the answer).',
    )


@dataclass
class ContextConfig:
    """Long-context assembly and the token budget."""

    min_context_tokens: int = option(4096, "Shortest long context, in tokens (the paper's 4K).")
    max_context_tokens: int = option(32000, "Longest long context, in tokens (the paper's 32K).")
    num_length_buckets: int = option(8, "Context lengths are spread evenly over this many buckets between min and max.")
    length_tolerance_tokens: int = option(
        32,
        "Each long context lands in [target - this, target] of its drawn target length (ours: the paper "
        "only says lengths spread evenly); targets are drawn so that window stays inside the bucket.",
    )
    max_length: int = option(32768, "Prompt plus answer through the chat template never exceed this many tokens.")
    separator: str = option("\n\n", "Between segments in a context; must end with a newline (exact token accounting).")
    length_margin_tokens: int = option(
        8, "Safety margin: tokens kept free under max_length beyond the counted prompt and answer."
    )
    verify_rows: int = option(64, "Rows re-tokenized exactly per run to check the token accounting.")
    max_filler_tries: int = option(
        32, "Fillers drawn in a row that do not fit before a gap is closed by cutting one at a line boundary."
    )
    keys_only: bool = option(
        False,
        "The short-only ablation arm: each fine-grained and integration row keeps only its key segment(s) as "
        "context, in the order its long context has them. Everything else is the IN2 build's: with the same "
        "recipe otherwise (and its request cache) the rows, questions, answers, ids and splits are the same, "
        "so both arms train for the same steps on the same answer tokens (recipes/smol-ablation).",
    )


@dataclass
class MixtureConfig:
    """Rows per part of the released set (per whole job; shards split them)."""

    fine_grained: int = option(24, "Type (a) rows: one segment's question in a long context.")
    integration: int = option(6, "Type (b) rows: questions over several segments of one text in a long context.")
    short: int = option(6, "QA rows whose context is the source text itself (FILM: ~10% of QA pairs).")
    general: int = option(6, "General instruction rows (no context).")
    short_max_tokens: int = option(4096, "A text longer than this is not used as a short context.")
    validation_rows: int = option(8, "Rows held out for the validation split.")
    rows_per_file: int = option(100_000, "Rows per released parquet file.")
    max_file_mb: float = option(
        500.0, "A released parquet file is also closed before it passes about this size (the Hub's usual shard size)."
    )
    sort_buffer_mb: float = option(
        256.0,
        "Memory of the rows a shard holds before sorting them into a run file on disk (an external sort: "
        "any shard size fits); see recipes/film-7b/README.md for a shard's whole memory.",
    )


@dataclass
class GeneralConfig:
    """General instruction data in FILM's no-context prompt (FILM-7B: OpenOrca)."""

    source: str = option(
        "builtin:instructions",
        "`builtin:instructions` (offline), a local file/folder/glob, or a Hugging Face dataset id "
        "(FILM-7B: Open-Orca/OpenOrca).",
    )
    name: str | None = option(None, "HF dataset config, if any.")
    split: str = option("train", "Split to read.")
    instruction_field: str = option("question", "Column holding the instruction.")
    response_field: str = option("response", "Column holding the response.")
    streaming: bool = option(True, "Stream a Hugging Face dataset instead of downloading it whole.")


@dataclass
class EvalSourceConfig:
    """Evaluation data to keep out of training: local files or a Hugging Face dataset."""

    source: str = option("", "Local file/folder/glob or a Hugging Face dataset id.")
    name: str | None = option(None, "HF dataset config, if any; with `archive`, the `<name>.jsonl` file to read.")
    split: str = option("test", "Split to read.")
    revision: str | None = option(
        None,
        "Hub commit (or tag) to read, so shards run on different days read the same data; None: the latest, "
        "resolved to a commit when the shard starts and recorded in its manifest (merge compares them).",
    )
    archive: str | None = option(
        None,
        "A zip of `<name>.jsonl` files in the Hub dataset repo, read instead of loading the repo with "
        "datasets (LongBench: `data.zip`; its loading script is one datasets no longer runs).",
    )
    fields: list[str] = option(
        factory=lambda: ["text"], doc="Text fields whose n-grams are banned (e.g. context, input, answers)."
    )


@dataclass
class DecontamConfig:
    """Drop source texts sharing an n-gram of words with evaluation data (as QA source and filler)."""

    ngram: int = option(10, "Words per banned n-gram.")
    sources: list[EvalSourceConfig] = option(
        factory=list, doc="Evaluation data to keep out, a list of {source, name, split, fields}."
    )


@dataclass
class ReleaseConfig:
    """What the data card says about the release."""

    pretty_name: str = option("IN2 training data", "Title of the data card.")
    license: str = option("other", "HF license id of the release (FILM-7B recipe: odc-by, C4's license).")


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
    seed: int = option(42, "Seed of every random choice (segments, positions, lengths, mixture).")
    output_dir: str = option("data/in2-demo", "Dataset folder to write.")
    num_shards: int = option(1, "Split the job over this many independent runs (joined by `in2 merge`).")
    shard_index: int = option(0, "Which shard this run builds (0-based).")

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
        for name in (*PARTS, "validation_rows"):
            checks.append((getattr(m, name) < 0, f"mixture.{name}", "must be >= 0"))
        raise_first(checks)
