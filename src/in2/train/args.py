"""The recipe's argument groups: TRL's ScriptArguments, SFTConfig and ModelConfig, extended for IN2."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments


@dataclass
class In2ScriptArguments(ScriptArguments):
    """Which dataset to train on and the run-level settings that are not SFTConfig fields."""

    dataset_revision: str | None = field(
        default=None, metadata={"help": "Tag, branch or commit of the Hub dataset repo, e.g. v1.0.0."}
    )
    dataset_test_split: str = field(
        default="validation", metadata={"help": "Split evaluated when eval_strategy is not 'no'."}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Examples per optimizer step over all processes. When set, gradient_accumulation_steps is "
            "derived as global_batch_size / (per_device_train_batch_size x number of processes)."
        },
    )
    base_model_id: str | None = field(
        default=None,
        metadata={"help": "Hub id of the base model for the model card, when model_name_or_path is a local path."},
    )
    license: str | None = field(default=None, metadata={"help": "License of the trained model, for its card."})
    kahan_summation: bool = field(
        default=False,
        metadata={
            "help": "Train bf16 weights with torch-optimi's Kahan-compensated AdamW instead of `optim` (an AdamW), "
            "so that updates far below bf16's resolution (the paper's LR 1e-6) are not rounded away. "
            "See in2.train.optim."
        },
    )
    sequence_parallel_size: int | None = field(
        default=None,
        metadata={
            "help": "GPUs that share each sequence (Ulysses sequence parallelism through DeepSpeed, accelerate's "
            "ParallelismConfig sp_backend=deepspeed), for sequences longer than one GPU holds. Needs a DeepSpeed "
            "launch (accelerate_configs/deepspeed_zero3_sp8.yaml); None takes the accelerate config's "
            "parallelism_config_sp_size, else 1. See in2.train.parallel."
        },
    )


@dataclass
class In2ModelConfig(ModelConfig):
    """TRL's ModelConfig plus GGUF weights, the RoPE base and RoPE scaling."""

    gguf_file: str | None = field(
        default=None,
        metadata={"help": "GGUF file inside model_name_or_path; its weights are converted once to a cached folder."},
    )
    rope_theta: float | None = field(
        default=None,
        metadata={
            "help": "RoPE base to train with; None keeps the model's. The paper's ablation favours 10x the default."
        },
    )
    rope_scaling: dict | str | None = field(
        default=None,
        metadata={
            "help": "RoPE scaling merged into the model config's rope_parameters, as a mapping in the recipe or JSON "
            'on the command line, e.g. {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": '
            "32768}; None keeps the model's."
        },
    )


def gradient_accumulation(global_batch_size: int, per_device: int, world_size: int) -> int:
    """Accumulation steps that make `per_device x steps x world_size == global_batch_size`."""
    per_step = per_device * world_size
    if global_batch_size <= 0 or global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not a positive multiple of per_device_train_batch_size "
            f"({per_device}) x processes ({world_size}) = {per_step}"
        )
    return global_batch_size // per_step
