"""GGUF weights as a regular model folder, converted once: transformers can load GGUF files but not
fine-tune them, and dequantizes the whole file on every load (~13 s for SmolLM2-135M's 98 MB), which
training and the local generation backend would otherwise pay each time."""

from __future__ import annotations

import logging
from pathlib import Path

from in2.files import follow_umask, partial_path, publish_once, version_key

logger = logging.getLogger(__name__)
MODELS_CACHE = Path.home() / ".cache" / "in2" / "models"


def stage_gguf(folder: str | Path, gguf_file: str) -> Path:
    """The model folder (float32 safetensors, config, generation config, tokenizer) converted once from
    `folder`/`gguf_file`; keyed by the file's path, size and modification time and the transformers version that
    converts it (`in2.files.version_key`: hashing a 7B GGUF took seconds in every command that loads it)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = Path(folder) / gguf_file
    if not source.is_file():
        raise FileNotFoundError(f"gguf_file: {source} does not exist")
    import transformers

    target = MODELS_CACHE / f"{source.stem}-{version_key(source, transformers.__version__)}"
    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to %s (once)", source, target)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, gguf_file=gguf_file))
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    partial = partial_path(target)  # the ranks of a node may all convert at once: each in its own folder
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(partial)
    follow_umask(partial)  # safetensors writes model.safetensors as 0600
    return publish_once(partial, target)  # a folder with config.json is complete
