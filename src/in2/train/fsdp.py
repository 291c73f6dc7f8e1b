"""FSDP2: gradients reduced in the weights' precision, and after evaluation, the forward of sharded units that
ran only in part finished.

Gradient reduce dtype. Under `mixed_precision: bf16` accelerate 1.15 gives FSDP2 a MixedPrecisionPolicy with
`reduce_dtype` bf16, so the gradients are averaged over the processes in bf16 (8 bits of mantissa) even where the
recipe keeps fp32 master weights (FILM-7B's `dtype: float32`) for precision. `reduce_in_weight_dtype` sets the
reduce dtype to the weights' dtype: fp32 weights get fp32 gradient reductions (twice the reduce-scatter traffic
of bf16), bf16 weights keep bf16.

Partial forwards.

Without this, a run under accelerate_configs/fsdp.yaml crashes on the first training step after a step
that both evaluates and saves a checkpoint (`aten.embedding.default` or `aten.mul.Tensor got mixed
torch.Tensor and DTensor`). Three upstream behaviours meet:

1. accelerate 1.15 (`fsdp2_prepare_model`) shards the final norm and the LM head as one FSDP2 unit,
   `fully_shard([norm, lm_head], reshard_after_forward=False)`; with tied embeddings the input
   embedding joins that unit.
2. TRL 1.16's SFTTrainer computes the loss with a fused LM head (`trl.trainer.utils.add_fused_lm_head`):
   the forward runs the backbone and reads `lm_head.weight`, so `lm_head.forward` never runs.
3. torch < 2.13 runs a grouped unit's pre-forward (unshard) only when the unit's set of modules still to
   run (`FSDPState._modules_to_run_forward`) is empty, and its post-forward only once every module has
   run. A forward that skips `lm_head` leaves the set at {lm_head} and the unit in FORWARD, with its
   unsharded parameters registered as plain tensors. In training, the root's post-backward callback
   clears the set; evaluation has no backward, so the unit stays that way.

Evaluation alone is harmless: the next step skips the unit's unshard but finds the plain tensors still
there. Saving alone is harmless too. Saving after evaluation is not: `model.state_dict()` (accelerate's
`get_state_dict` and `save_fsdp_model`) runs FSDP2's state-dict pre-hook, which registers the sharded
DTensor parameters again; the next forward still skips the unshard and computes with a DTensor weight.
torch 2.13 completes such units at the root's post-forward (`_force_complete_incomplete_states`,
pytorch/pytorch#180428); on it this callback finds nothing to do.
"""

from __future__ import annotations

import dataclasses
import logging

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def reduce_in_weight_dtype(accelerator, weights_dtype) -> None:
    """Before the model is prepared: FSDP2 reduces gradients in `weights_dtype` (see the module docstring)."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    policy = getattr(plugin, "mixed_precision_policy", None)
    if plugin is None or plugin.fsdp_version != 2 or policy is None or policy.reduce_dtype in (None, weights_dtype):
        return
    plugin.mixed_precision_policy = dataclasses.replace(policy, reduce_dtype=weights_dtype)


def reduce_dtype(accelerator) -> str | None:
    """FSDP2's gradient reduce dtype, for the card ("float32"); None without an FSDP2 mixed-precision policy."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    dtype = getattr(getattr(plugin, "mixed_precision_policy", None), "reduce_dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None and plugin.fsdp_version == 2 else None


def finish_partial_forwards(model) -> int:
    """Run the post-forward FSDP2 skipped for units whose forward left modules out; returns how many units.

    What the post-forward does is FSDP2's own: reshard where the unit reshards after forward, and mark
    the unit idle, so its next pre-forward unshards whatever parameters are registered then.
    """
    try:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.fsdp._fully_shard._fsdp_common import TrainingState
    except ImportError:  # a torch without FSDP2
        return 0
    finished, seen = 0, set()
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        state = module._get_fsdp_state()
        if id(state) in seen:
            continue
        seen.add(id(state))
        if not state._modules_to_run_forward:
            continue
        state._modules_to_run_forward.clear()
        groups = getattr(state, "_fsdp_param_groups", None)  # torch >= 2.13: a list; before: one group or None
        if groups is None:
            groups = [state._fsdp_param_group] if state._fsdp_param_group is not None else []
        for group in groups:
            group.post_forward(None, None, None)
        state._training_state = TrainingState.IDLE
        finished += 1
    return finished


class FinishPartialForwards(TrainerCallback):
    """After each evaluation, leave every FSDP2 unit as a complete forward would (see the module docstring)."""

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if model is not None and (n := finish_partial_forwards(model)):
            logger.debug("completed the post-forward of %d FSDP2 unit(s) after evaluation", n)
