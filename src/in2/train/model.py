"""Load the model to train: GGUF staging, RoPE base and scaling, attention and Liger kernels with fallbacks, QLoRA."""

from __future__ import annotations

import json
import logging
import warnings

import torch

from in2.assets import loading, resolve
from in2.errors import ConfigError
from in2.gguf import stage_gguf
from in2.train.args import In2ModelConfig

logger = logging.getLogger(__name__)
FLASH = ("flash_attention_2", "flash_attention_3")


def attention_implementation(requested: str | None) -> str | None:
    """`requested`, or "sdpa" when a flash-attention kernel was asked for but cannot run here."""
    if requested not in FLASH:
        return requested
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    available = is_flash_attn_2_available() if requested == "flash_attention_2" else is_flash_attn_3_available()
    if torch.cuda.is_available() and available:
        return requested
    logger.warning("%s is not available on this machine (no CUDA or no flash-attn); using sdpa", requested)
    return "sdpa"


def liger_kernels(requested: bool) -> bool:
    """`requested`, or False with one warning where Liger's Triton kernels cannot run (no CUDA, triton or liger-kernel)."""
    if not requested:
        return False
    from importlib.util import find_spec

    from transformers.utils import is_liger_kernel_available

    needs = {
        "CUDA": torch.cuda.is_available(),
        "triton": find_spec("triton"),
        "liger-kernel": is_liger_kernel_available(),
    }
    missing = [name for name, present in needs.items() if not present]
    if missing:
        logger.warning("use_liger_kernel: no %s on this machine; training without Liger kernels", ", no ".join(missing))
        return False
    # TRL 1.16 deprecates use_liger_kernel for Hub kernels, which are fetched from the Hub at run time; in2 keeps
    # Liger's (RMSNorm, SwiGLU, RoPE; TRL's own fused LM head computes the loss) so that training runs offline
    warnings.filterwarnings("ignore", message="`use_liger_kernel=True` is deprecated", category=FutureWarning)
    return True


def set_rope_theta(config, rope_theta: float) -> None:
    """Set the RoPE base on a transformers config (kept in `rope_parameters` since transformers 5)."""
    params = getattr(config, "rope_parameters", None)
    if params is None:
        raise ValueError(f"rope_theta: {type(config).__name__} has no rope_parameters to set")
    config.rope_parameters = {**params, "rope_theta": float(rope_theta)}


def rope_scaling(value: dict | str | None) -> dict | None:
    """The recipe's rope_scaling as a mapping (the command line passes JSON)."""
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"rope_scaling: not a mapping or JSON object: {value!r} ({e})") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"rope_scaling: must be a mapping such as {{'rope_type': 'yarn', ...}}, got {value!r}")
    return parsed


def set_rope_scaling(config, scaling: dict) -> None:
    """Merge RoPE scaling into the config's rope_parameters (the RoPE base stays) and let transformers check it."""
    params = getattr(config, "rope_parameters", None)
    if params is None:
        raise ConfigError(f"rope_scaling: {type(config).__name__} has no rope_parameters to scale")
    config.rope_parameters = {**params, **scaling}
    try:
        config.validate_rope()
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"rope_scaling: {scaling} is not valid for {type(config).__name__}: {e}") from None


def model_path(args: In2ModelConfig) -> str:
    """Where the weights load from: `pkg://` resolved and GGUF staged."""
    if not args.model_name_or_path:
        raise ValueError("model_name_or_path is required")
    path = resolve(args.model_name_or_path)
    return str(stage_gguf(path, args.gguf_file)) if args.gguf_file else path


def load_model(args: In2ModelConfig, trust_remote_code: bool = False):
    """(model, tokenizer, attention implementation) for training; the KV cache is off."""
    from accelerate import PartialState
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import get_quantization_config

    path = model_path(args)
    with loading("model_name_or_path", repr(args.model_name_or_path)):
        config = AutoConfig.from_pretrained(path, revision=args.model_revision, trust_remote_code=trust_remote_code)
    if args.rope_theta is not None:
        set_rope_theta(config, args.rope_theta)
    if args.rope_scaling:
        set_rope_scaling(config, rope_scaling(args.rope_scaling))
    config.use_cache = False
    attn = attention_implementation(args.attn_implementation)
    dtype = args.dtype if args.dtype in (None, "auto") else getattr(torch, args.dtype)
    kwargs = dict(config=config, revision=args.model_revision, dtype=dtype, trust_remote_code=trust_remote_code)
    if attn:
        kwargs["attn_implementation"] = attn
    quantization = get_quantization_config(args)
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": PartialState().local_process_index})
    with loading("model_name_or_path", repr(args.model_name_or_path)):
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        # mistral_format=False: a fast tokenizer from tokenizer.json even where a Mistral repo also ships
        # tekken.json, so training applies the chat template synthesis counted tokens with
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=args.model_revision, trust_remote_code=trust_remote_code, mistral_format=False
        )
    return model, tokenizer, attn or model.config._attn_implementation
