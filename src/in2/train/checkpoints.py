"""Which checkpoint a rerun resumes from, and what a resumed run must carry over.

A save writes straight into `checkpoint-N` (transformers' Trainer._save_checkpoint): weights, config
and tokenizer, `training_args.bin`, optimizer and scheduler (or FSDP's `pytorch_model_fsdp_0/` and
`optimizer_0/`, or DeepSpeed's `global_stepN/`), RNG states, and `trainer_state.json` last.
In2SFTTrainer makes every process finish its files before that last one is written, so a checkpoint
is complete when its `trainer_state.json` reads back whole and names its own step. A kill during a
save leaves a torn folder: a rerun resumes from the newest complete checkpoint and moves the torn
ones aside (into `incomplete-checkpoints/`), never deleting anything.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from transformers import TrainerCallback

from in2.errors import ConfigError

logger = logging.getLogger("in2.train")
STATE = "trainer_state.json"
ASIDE = "incomplete-checkpoints"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step(folder: Path) -> int | None:
    """N of a `checkpoint-N` folder."""
    m = _NAME.match(folder.name)
    return int(m.group(1)) if m else None


def saved_step(folder: Path) -> int | None:
    """The step of a complete checkpoint (its trainer state, written last, reads back whole and names
    the folder's step); None for a torn one."""
    try:
        state = json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        return None
    at = state.get("global_step") if isinstance(state, dict) else None
    return at if isinstance(at, int) and step(folder) in (None, at) else None


def complete(folder: Path) -> bool:
    return saved_step(folder) is not None


def scan(output_dir: Path) -> tuple[Path | None, list[Path]]:
    """(newest complete checkpoint or None, incomplete checkpoints) in `output_dir`."""
    found = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.is_dir() and step(p) is not None), key=step, reverse=True
    )
    done = [p for p in found if complete(p)]
    return (done[0] if done else None), [p for p in found if not complete(p)]


def move_aside(folders: list[Path]) -> list[Path]:
    """Move torn checkpoints into `<output_dir>/incomplete-checkpoints/` (out of reach of resuming and of
    the Trainer's rotation), renamed `checkpoint-N.1`, `.2`... when a name is taken."""
    moved = []
    for folder in folders:
        aside = folder.parent / ASIDE
        aside.mkdir(exist_ok=True)
        target, n = aside / folder.name, 0
        while target.exists():
            n += 1
            target = aside / f"{folder.name}.{n}"
        folder.rename(target)
        moved.append(target)
    return moved


def resume_point(output_dir: Path, requested: str | None, main_process: bool) -> Path | None:
    """The checkpoint to resume from: `requested` when given (it must be complete), else the newest
    complete one in `output_dir`. The main process names it and the torn ones, and moves those aside."""
    if requested:
        if not complete(Path(requested)):
            raise ConfigError(
                f"resume_from_checkpoint: {requested} is not a complete checkpoint (no whole {STATE}: "
                "its save was interrupted); name an earlier one, or leave it unset to resume from the "
                "newest complete checkpoint"
            )
        return Path(requested)
    if not output_dir.is_dir():
        return None
    newest, torn = scan(output_dir)
    if torn and main_process:
        moved = move_aside(torn)
        logger.warning(
            "skipped incomplete checkpoint(s) %s (a save was interrupted: no whole %s); moved to %s",
            ", ".join(p.name for p in torn),
            STATE,
            moved[0].parent,
        )
    if newest is not None and main_process:
        logger.warning(
            "resuming from %s (step %d); to start over instead, train into a new output_dir", newest, step(newest)
        )
    return newest


def earlier_resumes(checkpoint: Path) -> list[dict]:
    """The resumes recorded in a checkpoint's card context (in2_card.json), oldest first."""
    try:
        return list(json.loads((checkpoint / "in2_card.json").read_text()).get("resumed", []))
    except (OSError, ValueError, AttributeError):
        return []


def whole_run_loss(log_history: list[dict], resumed_at: int, global_step: int, session_loss: float) -> float | None:
    """Mean training loss per optimizer step over the whole run: the logged losses up to the resume
    (each the mean over the steps since the log before it) and this session's exact mean after it."""
    before, last = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry["step"] <= resumed_at:
            before += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    steps = last + global_step - resumed_at
    return (before + session_loss * (global_step - resumed_at)) / steps if steps else None


class RunAccounting(TrainerCallback):
    """Keeps the card's whole-run figures true across resumes.

    A log entry at every checkpoint step (whatever `logging_steps` says) makes a checkpoint's log history
    cover all its steps; on resume, TRL's training-token counter (which restarts at 0) continues from
    the checkpoint's last logged `num_tokens`, and `resumed_at` records the step.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.resumed_at = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.resumed_at = state.global_step
        tokens = next((h["num_tokens"] for h in reversed(state.log_history) if "num_tokens" in h), None)
        if state.global_step and tokens is not None and hasattr(self.trainer, "_total_train_tokens"):
            self.trainer._total_train_tokens = int(tokens)

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True

    on_epoch_end = on_step_end
