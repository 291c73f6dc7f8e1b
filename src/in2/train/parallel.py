"""Sequences longer than one GPU holds: Ulysses sequence parallelism (DeepSpeed ALST) through accelerate.

`sequence_parallel_size: N` makes N GPUs share each sequence. Every GPU holds 1/N of the tokens for the
whole layer stack; around attention an all-to-all swaps that for all tokens of 1/N of the heads, so the
attention kernel (FlashAttention 2/3 or SDPA) sees whole sequences and the sequence length per GPU drops
N-fold. DeepSpeed ZeRO-3 shards the weights, gradients and optimizer states over all GPUs, and the
groups of N GPUs form the data-parallel dimension: examples per optimizer step = per-device batch x
gradient accumulation x (processes / N).

Why Ulysses and not accelerate's other option, ring-attention context parallelism (cp_size, FSDP2 only):
IN2 rows have every length from 4K to 128K, and Ulysses takes them as they come (padded only to a
multiple of N), keeps FlashAttention and padding-free packing, and works with DeepSpeed's CPU/gloo
backend, so its loss is tested against one process here (tests/test_parallel.py). Context parallelism
replaces every attention mask by a plain causal one (no packing), runs only under SDPA, and only on GPU
meshes: accelerate turns FSDP on only for GPU-type devices, so a CPU run gets DistributedType.NO and
ParallelismConfig rejects it. Ulysses' limit is the head count: N must divide the attention heads and
divide or be divided by the KV heads (Mistral-7B and Mistral-Nemo: 32 and 8, so N up to 8 per sequence).
"""

from __future__ import annotations

import os

from in2.errors import ConfigError
from in2.train.args import gradient_accumulation

ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3")
ACCELERATE_SP = "PARALLELISM_CONFIG_SP_SIZE"
LAUNCH = "accelerate launch --config_file accelerate_configs/deepspeed_zero3_sp8.yaml -m in2.train.sft --config ..."


def _deepspeed(training_args) -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" or bool(training_args.deepspeed)


def _from_accelerate() -> int | None:
    """sp_size of the accelerate config's parallelism_config section, when the launch has one."""
    if os.environ.get("ACCELERATE_USE_PARALLELISM_CONFIG", "false").lower() != "true":
        return None
    value = os.environ.get(ACCELERATE_SP)
    return int(value) if value not in (None, "", "None") else None


def check(script_args, training_args) -> int:
    """Validate the recipe before anything loads and return the sequence-parallel degree N (1: off).
    Pads every batch to a multiple of N when pad_to_multiple_of is unset."""
    recipe, launched = script_args.sequence_parallel_size, _from_accelerate()
    if recipe is not None and launched is not None and recipe != launched:
        raise ConfigError(
            f"sequence_parallel_size: the recipe says {recipe}, the accelerate config's parallelism_config_sp_size "
            f"says {launched}; set one of them, or both to the same value"
        )
    sp = recipe if recipe is not None else launched if launched is not None else 1
    if sp < 1:
        raise ConfigError(f"sequence_parallel_size: must be >= 1, got {sp}")
    if sp == 1:
        return 1
    if not _deepspeed(training_args):
        raise ConfigError(
            f"sequence_parallel_size: {sp} needs DeepSpeed (Ulysses sequence parallelism is DeepSpeed's); "
            f"launch with `{LAUNCH}`"
        )
    world = training_args.world_size
    if world % sp:
        raise ConfigError(f"sequence_parallel_size: {sp} must divide the number of processes ({world})")
    pad = training_args.pad_to_multiple_of
    if pad is None:
        training_args.pad_to_multiple_of = sp
    elif pad % sp:
        raise ConfigError(
            f"pad_to_multiple_of: {pad} must be a multiple of sequence_parallel_size ({sp}): each sequence is "
            f"cut into {sp} equal parts"
        )
    return sp


def settle_batch(script_args, training_args, sp: int) -> None:
    """Derive gradient_accumulation_steps from global_batch_size over the data-parallel groups (processes / N).
    A DeepSpeed JSON named by `deepspeed:` had its "auto" values filled when the arguments were built, with the
    recipe's accumulation: it is filled again here, so DeepSpeed accumulates what the trainer does."""
    if script_args.global_batch_size:
        try:
            training_args.gradient_accumulation_steps = gradient_accumulation(
                script_args.global_batch_size, training_args.per_device_train_batch_size, training_args.world_size // sp
            )
        except ValueError as e:
            raise ConfigError(f"global_batch_size: {e}") from None
    if training_args.deepspeed:  # as TrainingArguments.__post_init__ does, with the accumulation now known
        from accelerate.utils import DeepSpeedPlugin
        from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

        training_args.hf_deepspeed_config = HfTrainerDeepSpeedConfig(training_args.deepspeed)
        training_args.hf_deepspeed_config.trainer_config_process(training_args)
        training_args.deepspeed_plugin = DeepSpeedPlugin(hf_ds_config=training_args.hf_deepspeed_config)


def configure(training_args, sp: int, model_config, attention: str) -> None:
    """Once the model is loaded: check its heads and attention kernel against N, then hand accelerate the
    ParallelismConfig (DeepSpeed backend, sequences of variable length) through the training arguments."""
    if sp == 1:
        return
    if attention not in ATTENTION:
        raise ConfigError(
            f"attn_implementation: sequence_parallel_size {sp} needs one of {', '.join(ATTENTION)}, got {attention!r}"
        )
    text = model_config.get_text_config()
    heads, kv = text.num_attention_heads, text.num_key_value_heads
    if heads % sp or (kv % sp and sp % kv):
        raise ConfigError(
            f"sequence_parallel_size: {sp} must divide the model's {heads} attention heads and divide or be a "
            f"multiple of its {kv} key-value heads"
        )
    if training_args.packing and attention == "sdpa":
        raise ConfigError(
            "packing: with sequence_parallel_size > 1, SDPA would let packed rows attend to each other; "
            "use attn_implementation flash_attention_2 or packing: false"
        )
    from accelerate import ParallelismConfig
    from accelerate.utils import DeepSpeedSequenceParallelConfig

    training_args.parallelism_config = ParallelismConfig(
        dp_replicate_size=1,
        # the data-parallel groups: processes / N. accelerate sets DeepSpeed's train_batch_size to micro batch x
        # accumulation x this, and DeepSpeed checks it against processes / N (ZeRO itself shards over all)
        dp_shard_size=training_args.world_size // sp,
        tp_size=1,
        cp_size=1,
        sp_size=sp,
        sp_backend="deepspeed",
        sp_handler=DeepSpeedSequenceParallelConfig(sp_seq_length_is_variable=True, sp_attn_implementation=attention),
    )


def degree(trainer) -> int:
    """N of a built trainer (1 without sequence parallelism)."""
    config = getattr(trainer.accelerator, "parallelism_config", None)
    return config.sp_size if config is not None and config.sp_enabled else 1
