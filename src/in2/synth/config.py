"""The synthesis recipe (`in2 synth`, e.g. recipes/film-7b/in2_data.yaml): every choice of the pipeline is a
field here, from the corpus to the data card. Errors name the offending field."""

from __future__ import annotations

from dataclasses import dataclass, field

from in2.llm.config import GeneratorConfig, generator_checks
from in2.recipes import raise_first
from in2.tokenizer import TokenizerConfig

PARTS = ("fine_grained", "integration", "short", "general")
"""The mixture's parts, in this order everywhere: MixtureConfig's row counts, the dataset's folders
(data/<part>/) and the value of its `type` column."""
QA_PARTS = PARTS[:3]
"""The parts made of QA pairs written by the generator (`general` rows come from instruction data)."""


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
class QAConfig:
    """QA generation, parsing and filtering."""

    prompt_fine_grained: str = "fine_grained.txt"
    prompt_integration: str = "integration.txt"
    """Prompt files: names of in2's own (in2/prompts/) or paths."""
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
    """General instruction data in FILM's no-context prompt (FILM-7B: OpenOrca)."""

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
        for name in (*PARTS, "validation_rows"):
            checks.append((getattr(m, name) < 0, f"mixture.{name}", "must be >= 0"))
        raise_first(checks)
