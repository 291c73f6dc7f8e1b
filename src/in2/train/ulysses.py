"""The trainer under Ulysses sequence parallelism (in2.train.parallel): the same loss as every other recipe, and
resuming mid-epoch.

Loss. Every recipe trains on the paper's SFT loss, the mean over the answer tokens of the whole optimizer step
(all rows of all gradient-accumulation micro-batches on all processes): transformers does this for plain, FSDP
and LoRA runs by passing `num_items_in_batch`. Under DeepSpeed SP, transformers 5.24 instead takes each row's own
token mean (`deepspeed_sp_compute_loss`) and averages those over the rows, so a short answer weighs as much as a
long one. Here each process's loss is its tokens' summed loss over the step's token count, as for the others:
the Ulysses dataloader gives each process 1/N of every row's tokens (its `shift_labels`), so the step's token
count is the sum of those over the micro-batches and all processes, each token counted once.

Resuming. transformers skips the batches trained before a checkpoint with accelerate's `skip_first_batches`,
which rebuilds a plain DataLoader from `.dataset` and fails on DeepSpeed's `UlyssesSPDataLoaderAdapter`
(`AttributeError: ... has no attribute 'dataset'`). The adapter turns each batch of the dataloader it wraps into
N micro-batches, so skipping k micro-batches is skipping k // N batches underneath, then k % N micro-batches.
"""

from __future__ import annotations

import contextlib

import transformers.trainer
from accelerate import skip_first_batches
from transformers import Trainer


def _adapter_class():
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPDataLoaderAdapter

    return UlyssesSPDataLoaderAdapter


def skip_micro_batches(dataloader, n: int):
    """`skip_first_batches` that also takes DeepSpeed's Ulysses dataloader adapter (n counts its micro-batches)."""
    try:
        adapter = _adapter_class()
    except ImportError:
        adapter = None
    if adapter is None or not isinstance(dataloader, adapter):
        return skip_first_batches(dataloader, n)
    sp = dataloader.sp_world_size
    skipped = adapter(
        skip_first_batches(dataloader.dl, n // sp),
        sp_rank=dataloader.sp_rank,
        sp_group=dataloader.sp_group,
        sp_world_size=sp,
        device=dataloader.device,
    )
    for _ in range(n % sp):
        next(skipped)
    return skipped


class UlyssesTrainer(Trainer):
    """Trainer mixin (placed before Trainer in the MRO, so TRL's SFTTrainer calls it): the token-mean loss and
    mid-epoch resume under DeepSpeed SP; without SP it changes nothing."""

    def _ulysses(self) -> bool:
        pc = getattr(self.accelerator, "parallelism_config", None)
        return pc is not None and pc.sp_backend == "deepspeed" and pc.sp_enabled

    def _get_num_items_in_batch(self, batch_samples, device):
        if not (self._ulysses() and batch_samples and "shift_labels" in batch_samples[0]):
            return super()._get_num_items_in_batch(batch_samples, device)
        count = sum(batch["shift_labels"].ne(-100).sum() for batch in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (self._ulysses() and self.model.training and num_items_in_batch is not None):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if "labels" not in inputs:  # the adapter keeps only the shifted labels
            inputs["labels"] = inputs["shift_labels"]
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch)  # this process's summed loss / step tokens
        loss = outputs.loss
        if self.args.average_tokens_across_devices:  # DeepSpeed averages the gradients over all processes
            loss = loss * self.accelerator.num_processes
        self.loss_is_scaled_for_ga = True
        return (loss, outputs) if return_outputs else loss

    def _run_epoch(self, model, epoch, train_dataloader, *args, **kwargs):
        if not self._ulysses():
            return super()._run_epoch(model, epoch, train_dataloader, *args, **kwargs)
        with _skipping_micro_batches():
            return super()._run_epoch(model, epoch, train_dataloader, *args, **kwargs)


@contextlib.contextmanager
def _skipping_micro_batches():
    """transformers.trainer's `skip_first_batches` (its own import of accelerate's) as skip_micro_batches."""
    original = transformers.trainer.skip_first_batches
    transformers.trainer.skip_first_batches = skip_micro_batches
    try:
        yield
    finally:
        transformers.trainer.skip_first_batches = original
