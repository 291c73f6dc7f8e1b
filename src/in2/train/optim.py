"""AdamW that keeps the paper's 1e-6 updates on bf16 weights: Kahan-compensated AdamW from torch-optimi.

A bf16 weight near 0.02 has a spacing of about 1.2e-4, so an AdamW step of about lr = 1e-6 rounds back
to the same weight and plain bf16 AdamW does not train at all. torch-optimi's AdamW with Kahan summation
keeps, per weight, a bf16 compensation buffer holding what rounding took away and adds it back on the
next step (+2 bytes per parameter; 14.5 GB for 7.24B parameters). `kahan_summation: true` in a recipe
selects it; `optim` then names the AdamW variant it replaces and AdamW's own fields (learning_rate,
adam_beta1, adam_beta2, adam_epsilon, weight_decay) carry over.

It is for runs that update bf16 weights themselves (one GPU, DDP). DeepSpeed ZeRO keeps fp32 master weights
and hands the optimizer those, and accelerate's FSDP2 upcasts trainable weights to fp32 under mixed precision
(`fsdp2_prepare_model`): there the compensation would never hold anything, so `check` refuses it.
"""

from __future__ import annotations

import os
from typing import Any

from in2.errors import ConfigError

ADAMW = ("adamw_torch", "adamw_torch_fused")
LOW_PRECISION = ("bfloat16", "float16")


def _name(value) -> str:
    return getattr(value, "value", value)


def check(script_args, training_args, model_args) -> None:
    """Errors that name the recipe field, before any model loads."""
    if not getattr(script_args, "kahan_summation", False):
        return
    if _name(training_args.optim) not in ADAMW:
        raise ConfigError(
            f"kahan_summation: replaces AdamW, but optim is {_name(training_args.optim)!r}; set optim to one of "
            f"{', '.join(ADAMW)}"
        )
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" or training_args.deepspeed
    fsdp2 = (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or bool(training_args.fsdp)) and (
        os.environ.get("FSDP_VERSION") == "2" or str((training_args.fsdp_config or {}).get("version")) == "2"
    )
    mixed = training_args.bf16 or training_args.fp16 or os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no"
    if deepspeed or (fsdp2 and mixed):
        how = "DeepSpeed ZeRO" if deepspeed else "FSDP2 under mixed precision"
        raise ConfigError(
            f"kahan_summation: does nothing under {how}, which updates fp32 master weights already; "
            "set kahan_summation: false (it is for one-GPU or DDP runs that update bf16 weights)"
        )
    if model_args.dtype not in LOW_PRECISION:
        raise ConfigError(
            f"kahan_summation: needs bfloat16 or float16 weights, but dtype is {model_args.dtype!r}; with float32 "
            "weights plain AdamW keeps small updates already"
        )
    try:
        import optimi  # noqa: F401
    except ImportError:
        raise ConfigError(
            'kahan_summation: needs torch-optimi (pip install -e ".[kahan]" or pip install torch-optimi)'
        ) from None


def optimizer_cls_and_kwargs(script_args, training_args) -> tuple[type, dict[str, Any]] | None:
    """What Trainer's `optimizer_cls_and_kwargs` takes for the recipe, or None for `optim` as given."""
    if not getattr(script_args, "kahan_summation", False):
        return None
    from optimi import AdamW

    a = training_args
    kwargs = {
        "lr": a.learning_rate,
        "betas": (a.adam_beta1, a.adam_beta2),
        "eps": a.adam_epsilon,
        "weight_decay": a.weight_decay,
        "kahan_sum": True,
    }
    return AdamW, kwargs


def describe(training_args, cls_and_kwargs: tuple[type, dict] | None, optimizer=None) -> str:
    """The optimizer as the model card names it: the one the trainer built when given (under accelerate's and
    DeepSpeed's wrappers; torch's and DeepSpeed's own go by the recipe's `optim`), else the recipe's choice."""
    while hasattr(optimizer, "optimizer"):  # AcceleratedOptimizer, DeepSpeed's ZeRO optimizers
        optimizer = optimizer.optimizer
    if optimizer is not None:
        cls = type(optimizer)
        if cls.__module__.split(".")[0] in ("torch", "deepspeed"):
            return str(_name(training_args.optim))
        kahan = any(group.get("kahan_sum") for group in optimizer.param_groups)
    elif cls_and_kwargs is None:
        return str(_name(training_args.optim))
    else:
        cls, kahan = cls_and_kwargs[0], cls_and_kwargs[1].get("kahan_sum")
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}{', Kahan-compensated bf16 weights' if kahan else ''}"
