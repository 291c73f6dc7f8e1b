"""Sequence-tiled MLP for long sequences on one GPU (`tiled_mlp_tokens`).

Each decoder layer's MLP runs over slices of `tokens` positions, in the forward pass and again in the
backward pass, so its intermediate activations (intermediate_size wide: 2.8x the hidden size for Mistral,
and LoRA adds dropout copies of each projection's input) exist for one slice at a time instead of the whole
sequence. The idea is the tiled MLP of Snowflake's Arctic Long Sequence Training (ALST, arXiv 2506.13996);
this is in2's own implementation. Measured effect: benchmarks/RESULTS.md.

Cost: the MLP's forward runs once more per layer (each slice is recomputed in backward). The result equals
the untiled MLP up to summation order; dropout inside the MLP (LoRA's) draws the same masks in the
recomputation as in the forward (the random state is kept per slice).

Parameter gradients are accumulated by an inner backward per slice, which data-parallel wrappers (DDP,
FSDP, DeepSpeed) do not expect: in2 allows it in single-process training only (`check`).
"""

from __future__ import annotations

import functools
import types

import torch
from transformers import TrainerCallback

from in2.errors import ConfigError


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _kept():
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)


class _TiledMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mlp, tokens: int, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        ctx.mlp, ctx.tokens = mlp, tokens
        # the backward pass recomputes each slice under the forward's autocast and random state
        ctx.autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.rng = []
        outputs = []
        for piece in x.split(tokens, dim=-2):
            ctx.rng.append(_rng_state(x.device))
            outputs.append(mlp(piece))
        ctx.save_for_backward(x)
        return torch.cat(outputs, dim=-2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        device = x.device
        enabled, dtype = ctx.autocast
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[2] else None
        start = 0
        cuda_devices = [device] if device.type == "cuda" else []  # the CPU's state is always forked
        for piece, piece_grad, (cpu_rng, cuda_rng) in zip(
            x.split(ctx.tokens, dim=-2), grad.split(ctx.tokens, dim=-2), ctx.rng, strict=True
        ):
            leaf = piece.detach().requires_grad_(grad_x is not None)
            with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
                torch.set_rng_state(cpu_rng)
                if cuda_rng is not None:
                    torch.cuda.set_rng_state(cuda_rng, device)
                # own saved-tensor hooks: the recomputation keeps its tensors where they are, out of the reach of
                # hooks active around the step (TRL's activation offloading would move each slice's
                # intermediates to the host and back, on its copy stream)
                with torch.enable_grad(), torch.autocast(device.type, dtype=dtype, enabled=enabled), _kept():
                    out = ctx.mlp(leaf)
            torch.autograd.backward(out, piece_grad)
            if grad_x is not None:
                grad_x.narrow(-2, start, piece.shape[-2]).copy_(leaf.grad)
            start += piece.shape[-2]
        return None, None, grad_x, *([None] * (len(ctx.needs_input_grad) - 3))


def _tiled_forward(module: torch.nn.Module, x: torch.Tensor, *, inner, tokens: int) -> torch.Tensor:
    if x.shape[-2] <= tokens:
        return inner(x)
    trainable = [p for p in module.parameters() if p.requires_grad]
    return _TiledMLP.apply(inner, tokens, x, *trainable)


def mlps(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers' MLP modules (`...layers.N.mlp`, with a `down_proj` as Llama-family MLPs have)."""
    return [m for name, m in model.named_modules() if name.endswith(".mlp") and hasattr(m, "down_proj")]


def tile(model: torch.nn.Module, tokens: int) -> int:
    """Make every decoder MLP of `model` run over slices of `tokens` positions; returns how many were tiled.
    Wraps each module's current forward (Liger's, when Liger patched it), once."""
    found = mlps(model)
    if not found:
        raise ConfigError(f"tiled_mlp_tokens: {type(model).__name__} has no decoder MLP (layers.N.mlp) to tile")
    for mlp in found:
        if getattr(mlp, "_in2_tiled_tokens", None) == tokens:
            continue
        inner = getattr(mlp, "_in2_untiled_forward", None) or mlp.forward
        mlp._in2_untiled_forward = inner
        mlp._in2_tiled_tokens = tokens
        mlp.forward = types.MethodType(functools.partial(_tiled_forward, inner=inner, tokens=tokens), mlp)
    return len(found)


def check(tokens: int | None, distributed_type) -> None:
    """`tokens` positive, and the run one process with no data-parallel wrapper (accelerate's distributed type NO)."""
    if tokens is None:
        return
    if tokens < 1:
        raise ConfigError(f"tiled_mlp_tokens: must be a positive number of positions or null, got {tokens}")
    kind = getattr(distributed_type, "value", str(distributed_type))
    if kind != "NO":
        raise ConfigError(
            f"tiled_mlp_tokens: single-process training without DDP, FSDP or DeepSpeed only (this run: {kind}); "
            "on several GPUs split long rows over them instead (sequence_parallel_size)"
        )


class TileMLPs(TrainerCallback):
    """Tiles the MLPs when training starts, after the trainer applied Liger's kernels and PEFT's adapters;
    `tiled` counts the modules it tiled (the model card reports it)."""

    def __init__(self, tokens: int):
        self.tokens, self.tiled = tokens, 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.tiled = tile(model, self.tokens)


def callbacks(tokens: int | None) -> list[TileMLPs]:
    """The trainer callbacks for `tiled_mlp_tokens` (none when it is None)."""
    return [TileMLPs(tokens)] if tokens else []


def describe(trainer) -> str | None:
    """What the model card says of tiling: what the callback did, not what was asked."""
    done = [c for c in trainer.callback_handler.callbacks if isinstance(c, TileMLPs) and c.tiled]
    return f"{done[0].tiled} MLPs over slices of {done[0].tokens} positions" if done else None
