"""`in2 export`: a LoRA or QLoRA checkpoint merged into its base weights (PEFT's `merge_and_unload`), written as
a plain model folder (safetensors, config, tokenizer) with its card, for servers and tools that take no adapter.

The base is loaded in `dtype` from the adapter's `base_model_name_or_path` (or `base`), never 4-bit: a QLoRA
adapter is merged into the unquantized base, as PEFT documents (the merged model then differs from the
4-bit one it was trained against by the quantization error only).
"""

from __future__ import annotations

import json
from pathlib import Path

from in2.errors import ConfigError

DTYPES = ("bfloat16", "float16", "float32")
MERGED = "LoRA, merged into the base weights"


def export(checkpoint: str | Path, output: str | Path, dtype: str = "bfloat16", base: str | None = None) -> Path:
    """Merge the adapter in `checkpoint` into its base and save a model folder and card at `output`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from in2.cards import model_card

    checkpoint, output = Path(checkpoint), Path(output)
    config = checkpoint / "adapter_config.json"
    if not config.is_file():
        raise ConfigError(
            f"{checkpoint}: no adapter_config.json, so not a LoRA/QLoRA checkpoint (a full fine-tune is "
            "already a plain model folder: serve it as it is)"
        )
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"--output {output} exists and is not empty")
    base = base or json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{config} names no base_model_name_or_path: pass --base")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, checkpoint).merge_and_unload()
    merged.save_pretrained(output, safe_serialization=True)
    has_tokenizer = any(
        (checkpoint / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    )
    AutoTokenizer.from_pretrained(checkpoint if has_tokenizer else base).save_pretrained(output)
    model_card.write(output, card_context(checkpoint, output, base))
    return output


def card_context(checkpoint: Path, output: Path, base: str) -> dict:
    """The adapter's card context (in2 train's in2_card.json), as a merged model's; a minimal one for an
    adapter in2 did not train."""
    from in2 import prompts

    path = checkpoint / "in2_card.json"
    if path.is_file():
        ctx = json.loads(path.read_text())
    else:
        ctx = {
            "base_model": base,
            "dataset": {
                "name": None,
                "config": None,
                "revision": None,
                "train_split": "unknown",
                "train_rows": "?",
                "content_hash": None,
                "rows_per_type": None,
            },
            "status": "adapter merged by in2 export (not trained by in2: no training record)",
            "prompt_template": prompts.load(prompts.FILM_CONTEXT),
            "hyperparameters": [],
            "results": [],
            "recipe": "# unknown",
            "max_length": "the training length",
            "license": None,
        }
    was = ctx.get("method", "LoRA")
    return {
        **ctx,
        "model_name": output.name,
        "hub_model_id": None,
        "method": f"{MERGED} ({was} adapter)",
        "merged_from": str(checkpoint),
        "base_model": ctx.get("base_model") or base,
    }
