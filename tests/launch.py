"""Training runs launched as users launch them: `accelerate launch` with the repo's accelerate configs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def accelerate_launch(config: str, *args: str, env: dict | None = None, timeout: int = 600):
    """`accelerate launch --config_file accelerate_configs/<config>.yaml --num_processes 1 ARGS`, output captured."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "accelerate_configs" / f"{config}.yaml"),
    ]
    cmd += ["--num_processes", "1", "--main_process_port", "0", *args]  # port 0: a free one
    return subprocess.run(
        cmd,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def logged(folder: Path) -> list[tuple[int, str, float]]:
    """(step, "loss" or "eval_loss", value) from a checkpoint's trainer_state.json, in logging order."""
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return [(h["step"], k, h[k]) for h in history for k in ("loss", "eval_loss") if k in h]


def mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def eval_save_resume(tmp_path, tiny_model, dataset_folder, config: str, *, cpu: bool, rel: float) -> dict:
    """The FILM-7B full recipe on a tiny Mistral under `config`: evaluation and a checkpoint both at step 2,
    steps 3-4 after them, then a second launch resumed from checkpoint-2 that must start after step 2 (its only
    checkpoint is step 4) and log the same losses for steps 3-4 (within `rel`). Returns the logged losses of
    both runs."""
    flags = ["--config", str(ROOT / "recipes" / "film-7b" / "sft_full.yaml")]
    flags += [
        "--model_name_or_path",
        str(tiny_model),
        "--dataset_name",
        str(dataset_folder),
        "--dataset_config",
        "default",
    ]
    flags += ["--global_batch_size", "2", "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2"]
    flags += ["--logging_steps", "1", "--max_length", "256", "--learning_rate", "1e-3", "--optim", "adamw_torch"]
    flags += ["--attn_implementation", "sdpa", "--dataloader_num_workers", "0", "--save_total_limit", "3"]
    if cpu:
        entry, env = [str(ROOT / "tests" / "fsdp_cpu.py")], {}
        flags += ["--use_cpu", "true"]
        if config.startswith("deepspeed"):
            entry, env = ["-m", "in2.train.sft"], {"DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu"}
            flags[-1] = "false"  # use_cpu would make accelerate wrap the model in DDP instead of the engine
            flags += ["--bf16", "false"]
    else:
        entry, env = ["-m", "in2.train.sft"], {}
    precision = ["--mixed_precision", "no"] if cpu and config.startswith("deepspeed") else []
    first_out, second_out = tmp_path / "first", tmp_path / "resumed"
    first = accelerate_launch(config, *precision, *entry, *flags, "--output_dir", str(first_out), env=env)
    assert first.returncode == 0, first.stderr[-4000:]
    assert (first_out / "checkpoint-2").is_dir() and (first_out / "checkpoint-4").is_dir()
    runs = {"first": logged(first_out / "checkpoint-4")}
    assert [(s, k) for s, k, _ in runs["first"]] == [
        (1, "loss"),
        (2, "loss"),
        (2, "eval_loss"),
        (3, "loss"),
        (4, "loss"),
        (4, "eval_loss"),
    ]
    assert all(math.isfinite(v) for _, _, v in runs["first"])
    resume = ["--resume_from_checkpoint", str(first_out / "checkpoint-2"), "--output_dir", str(second_out)]
    source = mtimes(first_out / "checkpoint-2")
    second = accelerate_launch(config, *precision, *entry, *flags, *resume, env=env)
    assert second.returncode == 0, second.stderr[-4000:]
    # what only resuming gives (a second launch from scratch logs the same losses): the run starts after step 2,
    # so its first save is step 4, and the checkpoint it read is as the first launch wrote it
    assert sorted(p.name for p in second_out.glob("checkpoint-*")) == ["checkpoint-4"]
    assert mtimes(first_out / "checkpoint-2") == source
    runs["resumed"] = logged(second_out / "checkpoint-4")
    after = [(s, k, v) for s, k, v in runs["first"] if s > 2]
    resumed = [(s, k, v) for s, k, v in runs["resumed"] if s > 2]
    assert [(s, k) for s, k, _ in resumed] == [(s, k) for s, k, _ in after]
    for (s, k, a), (_, _, b) in zip(after, resumed, strict=True):
        assert b == pytest.approx(a, rel=rel), (s, k)
    card = (second_out / "README.md").read_text()
    assert "finished after 4 optimizer steps" in card
    return runs
