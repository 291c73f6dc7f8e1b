"""The measured figures `in2 doctor` and `benchmarks/budget.py` read, in one table so that a new measurement is
entered once. Each says where it was measured (machine, software, commit) or that it is an estimate; the runs
themselves are in benchmarks/RESULTS.md."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One number and where it comes from; `measured` False marks an estimate."""

    value: float
    source: str
    measured: bool = True

    def label(self) -> str:
        return self.source if self.measured else f"estimate: {self.source}"


H200_1126 = "one H200, torch 2.11.0+cu130, transformers 5.24.0, trl 1.16.0, liger-kernel 0.8.5, commit 557db0e"
H200_1204 = "one H200, torch 2.11.0+cu130, transformers 5.24.0, trl 1.16.0, liger-kernel 0.8.5, commit 767c5b4"
H200_1204_TILED = (
    "one H200, torch 2.11.0+cu130, transformers 5.24.0, trl 1.16.0, peft 0.21.2, liger-kernel 0.8.5, "
    "expandable-segments allocator, commit 8a6476c"
)

GPU_MEMORY_GIB: dict[str, Figure | None] = {
    "film-7b/sft_full_1gpu.yaml": Figure(73.01, f"peak reserved at 32K, Liger on, {H200_1204_TILED}"),
    "film-7b/sft_lora.yaml": Figure(35.07, f"peak at 32K, Liger on, {H200_1126}"),
    "film-7b/sft_qlora.yaml": Figure(27.0, "LoRA's measured 35 GiB with ~4 GB of 4-bit base weights", False),
    "film-7b/sft_full.yaml": Figure(
        22.0, "per GPU of 8-way FSDP: 14.5 GB of sharded fp32 states + measured 32K activations + buffers", False
    ),
    "mistral-nemo-12b/sft_lora.yaml": Figure(
        50.4, f"peak reserved at 128K with activation offload and the tiled MLP, first step, {H200_1204_TILED}"
    ),
    "mistral-nemo-12b/sft_full.yaml": None,
}
"""Peak GPU memory per GPU of each GPU recipe (keyed `<recipe folder>/<file>`) at its max_length; None: a GPU
recipe with no figure yet."""

TOKENS_PER_S_PER_GPU: dict[str, Figure] = {
    "film-7b/sft_full.yaml": Figure(
        6323.9,
        f"the full recipe at 32K with bf16 weights on one GPU, Liger on (no FSDP traffic: under FSDP expect less), "
        f"{H200_1126}",
    ),
    "film-7b/sft_full_1gpu.yaml": Figure(6171.9, f"at 32K, bf16 weights, Kahan AdamW, Liger on, {H200_1204_TILED}"),
    "film-7b/sft_lora.yaml": Figure(5667.7, f"at 32K, Liger on, {H200_1126}"),
    "film-7b/sft_qlora.yaml": Figure(5667.7, "LoRA's measured rate; 4-bit dequantization makes it slower", False),
}
"""Training throughput per GPU at the recipe's 32K tokens (benchmarks/train_throughput.py, random weights)."""

RELEASE_BYTES_PER_ROW = Figure(
    1345 * 2**20 / 50_000,
    "release parquet of the 50,000-row scale rehearsal (FILM-7B's lengths, an offline corpus that compresses "
    "~2.2x; C4 compresses less), x86_64, benchmarks/scale_rehearsal.py",
)
"""Disk per released row; a sharded run holds the shards beside the release (twice this)."""

MEAN_LONG_CONTEXT_TOKENS = Figure(
    18_000,
    "mean context of the scale rehearsal's rows with FILM-7B's lengths (4K-32K) and Mistral tokenizer, "
    "benchmarks/scale_rehearsal.py (benchmarks/RESULTS.md, Scale rehearsal: 18.0K, x86_64, 2 cores)",
)
"""Training tokens per long-context (fine-grained, integration) row."""

REPLY_TOKENS = Figure(
    150, "a JSON question and answer from GPT-4-Turbo; a pilot run's manifest `usage` measures it", False
)
"""Completion tokens per QA reply: the dry run's realistic figure without --pilot, and the budget sheet's."""
