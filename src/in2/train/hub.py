"""Publish a training run to the Hub: each checkpoint on its own branch, the final model on main.

Only the weights (safetensors), config, tokenizer, card and trainer state go up: optimizer, scheduler and RNG
states never leave the machine, and no pickle does (an FSDP checkpoint's `pytorch_model_fsdp*.bin` or sharded
`*.distcp` is a second copy of the weights, ~29 GB for 7B in fp32, and a pickle is code to whoever loads it).
A failed checkpoint upload is reported and does not stop the final model's push.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from transformers import TrainerCallback

from in2.errors import ConfigError

logger = logging.getLogger("in2.train")

# Trainer, FSDP and DeepSpeed resume states, FSDP's own copy of the weights, and every pickle
IGNORE = [
    "*.bin",  # pytorch_model_fsdp.bin (FSDP FULL_STATE_DICT), training_args.bin, optimizer.bin
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.distcp",  # torch.distributed.checkpoint shards (FSDP SHARDED_STATE_DICT)
    "pytorch_model_fsdp*",
    "optimizer*",
    "*/optimizer*",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*",
    "global_step*",
    "latest",
    "zero_to_fp32.py",
    "training_args.bin",
    "checkpoint-*",
    "incomplete-checkpoints*",  # torn checkpoints moved aside on resume (in2.train.checkpoints.ASIDE)
    "prepared-data*",  # the tokenized dataset (in2.train.prepare)
]


def check_token() -> None:
    """Fail before training, not after it, when there is no Hub token."""
    from huggingface_hub import get_token

    if not get_token():
        raise ConfigError("push_to_hub: no Hugging Face token; set HF_TOKEN or run `hf auth login`")


class HubPublisher(TrainerCallback):
    """Uploads `checkpoint-N` to branch `checkpoint-N` in the background as training goes on: every
    `every`th save (0: none; the final model is always pushed by `finish`)."""

    def __init__(self, repo_id: str, private: bool | None = None, api=None, every: int = 1):
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi()
        self.api, self.repo_id, self.private = api, repo_id, private
        self._pool = ThreadPoolExecutor(max_workers=1)  # one upload at a time, in save order
        self._pending: list[tuple[int, Future]] = []
        self.failed: list[int] = []  # steps whose checkpoint upload failed
        self._created = False
        self.every, self._saves = every, 0

    def _repo(self) -> None:
        if not self._created:
            self.api.create_repo(self.repo_id, private=self.private, exist_ok=True)
            self._created = True

    def upload_checkpoint(self, folder: Path, step: int) -> None:
        self._repo()
        branch = f"checkpoint-{step}"
        self.api.create_branch(self.repo_id, branch=branch, exist_ok=True)
        self.api.upload_folder(
            repo_id=self.repo_id,
            folder_path=str(folder),
            revision=branch,
            ignore_patterns=IGNORE,
            commit_message=f"in2: checkpoint at step {step}",
        )

    def due(self, args, state) -> bool:
        """Whether this save is one to upload: the run's save number is a multiple of `every`. The number counts
        from the run's start, so a resumed run keeps its cadence: global_step / the trainer's absolute save_steps
        (a ratio already resolved) for step saves, the epoch for epoch saves, else saves of this session."""
        self._saves += 1
        if self.every <= 0:
            return False
        strategy = getattr(args, "save_strategy", "steps")
        strategy = str(getattr(strategy, "value", strategy))
        steps = getattr(state, "save_steps", 0) or 0
        if strategy == "steps" and steps >= 1:
            number = state.global_step // int(steps)
        elif strategy == "epoch" and getattr(state, "epoch", None):
            number = round(state.epoch)
        else:
            number = self._saves
        return number % self.every == 0

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.due(args, state):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            upload = self._pool.submit(self.upload_checkpoint, folder, state.global_step)
            self._pending.append((state.global_step, upload))

    def finish(self, output_dir: str | Path) -> str:
        """Wait for checkpoint uploads (a failed one is logged, in `failed`, and skipped), then upload the final
        folder to main; returns the commit id."""
        for step, future in self._pending:
            try:
                future.result()
            except Exception as e:  # a checkpoint branch is a convenience; the final model must still go up
                self.failed.append(step)
                logger.warning(
                    "could not upload checkpoint-%d to %s (branch checkpoint-%d): %s: %s; pushing the final model anyway",
                    *(step, self.repo_id, step, type(e).__name__, e),
                )
        self._repo()
        commit = self.api.upload_folder(
            repo_id=self.repo_id,
            folder_path=str(output_dir),
            ignore_patterns=IGNORE,
            commit_message="in2: final model",
        )
        return getattr(commit, "oid", "")
