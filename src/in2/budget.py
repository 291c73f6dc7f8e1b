"""What a FILM-7B run costs in GPU-hours and disk, computed from in2.measured's figures and the recipes' own
fields (benchmarks/budget.py prints the sheet in docs/reproducing-film-7b.md; `in2 doctor` checks disk)."""

from __future__ import annotations

from in2.measured import Figure

MISTRAL_7B = {"params": 7.24e9, "layers": 32, "hidden": 4096, "kv": 1024, "intermediate": 14336}
"""Mistral-7B-v0.2's shape (its config.json): the parameter count the MFU figures in RESULTS.md use."""


def lora_params(shape: dict, r: int = 64) -> float:
    """Adapter parameters of LoRA rank `r` on every linear layer (q, k, v, o, gate, up, down) of each block."""
    h, kv, i = shape["hidden"], shape["kv"], shape["intermediate"]
    per_block = r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)
    return per_block * shape["layers"]


BYTES_PER_PARAM = {
    # a checkpoint: weights + AdamW's two moments (what Trainer saves to resume), then the final weights alone
    "full": (4 + 8, 4, "fp32 weights + fp32 AdamW moments"),
    "full_1gpu": (2 + 4 + 2, 2, "bf16 weights + bf16 AdamW moments + bf16 Kahan buffer"),
    "lora": (4 + 8, 4, "fp32 adapter + fp32 AdamW moments"),
}
RECIPES = {
    "film-7b/sft_full.yaml": "full",
    "film-7b/sft_full_1gpu.yaml": "full_1gpu",
    "film-7b/sft_lora.yaml": "lora",
    "film-7b/sft_qlora.yaml": "lora",
}


def checkpoint_bytes(key: str) -> tuple[float, float, str] | None:
    """(bytes of one resumable checkpoint, bytes of the final weights, what they hold) of a FILM-7B recipe."""
    kind = RECIPES.get(key)
    if kind is None:
        return None
    n = lora_params(MISTRAL_7B) if kind == "lora" else MISTRAL_7B["params"]
    per_ckpt, final, what = BYTES_PER_PARAM[kind]
    return n * per_ckpt, n * final, what


def train_disk_bytes(key: str, save_total_limit: int | None) -> Figure | None:
    """Disk a training run's output_dir reaches: `save_total_limit` checkpoints (all of them when None: not
    bounded, so not computed) plus the final weights."""
    sizes = checkpoint_bytes(key)
    if sizes is None or save_total_limit is None:
        return None
    ckpt, final, what = sizes
    total = ckpt * save_total_limit + final
    return Figure(total, f"{save_total_limit} checkpoints of {ckpt / 1e9:.1f} GB ({what}) + final weights", False)
