"""What a trained model's card says of its run, read back from the trainer: results, hyperparameters and
how the run was spread (the card itself: in2.cards.model_card)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from in2.train import checkpoints, fsdp, optim, parallel, tiling

if TYPE_CHECKING:
    from trl import SFTTrainer


def context(trainer: SFTTrainer, status: str, train_loss: float | None = None) -> dict:
    """The card's context: what `trainer.card` holds (set at the start of training) plus `status`, the
    results so far (whole-run figures after a resume) and the hyperparameters."""
    state = trainer.state
    logs = state.log_history
    last = {k: next((h[k] for h in reversed(logs) if k in h), None) for k in ("loss", "eval_loss", "num_tokens")}
    if train_loss is not None:  # this session's mean: make it the whole run's
        train_loss = checkpoints.whole_run_loss(logs, trainer.accounting.resumed_at, state.global_step, train_loss)
    results = [("optimizer steps", state.global_step), ("epochs", round(state.epoch or 0.0, 3))]
    results += [
        (name, _fmt(v))
        for name, v in (
            ("last logged training loss", last["loss"]),
            ("mean training loss", train_loss),
            ("eval loss", last["eval_loss"]),
            ("training tokens", last["num_tokens"]),
        )
        if v is not None
    ]
    return {**trainer.card, "status": status, "results": results, "hyperparameters": hyperparameters(trainer)}


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def hyperparameters(trainer: SFTTrainer) -> list[tuple[str, str]]:
    """What the card reports about the optimisation, read back from the trainer."""
    a = trainer.args
    world = a.world_size // parallel.degree(trainer)  # data-parallel processes
    rows = [
        (
            "global batch",
            f"{a.per_device_train_batch_size * a.gradient_accumulation_steps * world} "
            f"= {a.per_device_train_batch_size} per device x {a.gradient_accumulation_steps} "
            f"accumulation x {world} processes",
        ),
        ("learning rate", f"{a.learning_rate:g}"),
        (
            "schedule",
            f"{a.lr_scheduler_type.value if hasattr(a.lr_scheduler_type, 'value') else a.lr_scheduler_type}, "
            f"warm-up {a.warmup_steps:g}{' of the steps' if a.warmup_steps < 1 else ' steps'}",
        ),
        ("epochs", f"{a.num_train_epochs:g}" if a.max_steps <= 0 else f"max {a.max_steps} steps"),
        (
            "optimizer",
            f"{optim.describe(a, trainer.optimizer_cls_and_kwargs, trainer.optimizer)}, weight decay {a.weight_decay:g}, "
            f"grad clip {a.max_grad_norm:g}",
        ),
        ("loss", loss(a)),
        ("max length", str(a.max_length)),
        ("packing", f"{a.packing_strategy}" if a.packing else "off"),
        (
            "precision",
            f"{str(trainer.model.dtype).removeprefix('torch.')} weights, "
            f"{'bf16 autocast' if a.bf16 else 'fp16 autocast' if a.fp16 else 'no autocast'}",
        ),
        ("activation checkpointing", str(bool(a.activation_checkpointing))),
        ("distributed", distributed(trainer)),
        ("attention", trainer.card["attention"]),
        ("Liger kernels", "on" if a.use_liger_kernel else "off"),
        ("seed", str(a.seed)),
    ]
    rope = trainer.card.get("rope_theta")
    if rope is not None:
        rows.append(("RoPE base (rope_theta)", f"{rope:g}"))
    if trainer.card.get("rope_scaling"):
        rows.append(("RoPE scaling", str(trainer.card["rope_scaling"])))
    if trainer.card["lora"]:
        rows.append(("LoRA", trainer.card["lora"]))
    if tiled := tiling.describe(trainer):
        rows.append(("tiled MLP", tiled))
    return rows


def loss(args) -> str:
    """The loss every recipe trains on (in2.train.ulysses makes sequence parallelism's the same)."""
    kind = getattr(args.loss_type, "value", args.loss_type)
    name = "negative log-likelihood" if kind == "nll" else str(kind)
    if args.average_tokens_across_devices:
        return f"{name}, mean over the answer tokens of each optimizer step (all its rows and processes)"
    return f"{name}, mean over each process's answer tokens, averaged over the processes"


def distributed(trainer: SFTTrainer) -> str:
    """How the run was spread: accelerate's distributed type, with the ZeRO stage or FSDP settings."""
    state = trainer.accelerator.state
    kind = getattr(state.distributed_type, "value", str(state.distributed_type))
    if state.deepspeed_plugin is not None:
        kind += f", ZeRO stage {state.deepspeed_plugin.zero_stage}"
    if parallel.degree(trainer) > 1:
        kind += f", Ulysses sequence parallel over {parallel.degree(trainer)} GPUs"
    if getattr(state, "fsdp_plugin", None) is not None:
        plugin = state.fsdp_plugin
        offload = plugin.cpu_offload  # FSDP1: CPUOffload(offload_params=...); FSDP2: (CPU)OffloadPolicy
        on = getattr(offload, "offload_params", type(offload).__name__ == "CPUOffloadPolicy")
        kind += f", FSDP{plugin.fsdp_version}, CPU offload {'on' if on else 'off'}"
        if (reduce := fsdp.reduce_dtype(trainer.accelerator)) is not None:
            kind += f", gradients reduced in {reduce}"
    return kind
