"""Publish a training run to the Hub: each checkpoint on its own branch, the final model on main.

Optimizer, scheduler and RNG states never leave the machine.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from transformers import TrainerCallback

from in2.errors import ConfigError

# Trainer, FSDP and DeepSpeed resume states, and pickled arguments
IGNORE = [
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
]


def check_token() -> None:
    """Fail before training, not after it, when there is no Hub token."""
    from huggingface_hub import get_token

    if not get_token():
        raise ConfigError("push_to_hub: no Hugging Face token; set HF_TOKEN or run `hf auth login`")


class HubPublisher(TrainerCallback):
    """Uploads `checkpoint-N` to branch `checkpoint-N` in the background as training goes on."""

    def __init__(self, repo_id: str, private: bool | None = None, api=None):
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi()
        self.api, self.repo_id, self.private = api, repo_id, private
        self._pool = ThreadPoolExecutor(max_workers=1)  # one upload at a time, in save order
        self._pending: list[Future] = []
        self._created = False

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

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self._pending.append(self._pool.submit(self.upload_checkpoint, folder, state.global_step))

    def finish(self, output_dir: str | Path) -> str:
        """Wait for checkpoint uploads, then upload the final folder to main; returns the commit id."""
        for future in self._pending:
            future.result()  # an upload error surfaces here, after training
        self._repo()
        commit = self.api.upload_folder(
            repo_id=self.repo_id,
            folder_path=str(output_dir),
            ignore_patterns=IGNORE,
            commit_message="in2: final model",
        )
        return getattr(commit, "oid", "")
