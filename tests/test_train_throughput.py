"""benchmarks/train_throughput.py with every FILM-7B recipe, offline, on a tiny Mistral: the benchmark reads
recipes as `in2 train` does (built-in chat template, Liger fallback), so it cannot fail where training works."""

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes" / "film-7b").glob("sft*.yaml")), ids=lambda p: p.stem)
def test_train_throughput_runs_each_film_recipe_offline(recipe, tmp_path, monkeypatch, caplog):
    report = tmp_path / "report.json"
    argv = ["train_throughput.py", "--config", str(recipe), "--arch", "tiny-mistral", "--seq-len", "96", "--steps", "1"]
    # the recipes ask for bf16, which TrainingArguments validates against the device: use_cpu on CPUs
    argv += ["--json", str(report), "--use_cpu", "true", "--dataloader_num_workers", "0"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "benchmarks" / "train_throughput.py"), run_name="__main__")
    figures = json.loads(report.read_text())
    assert figures["device"] == "cpu" and figures["seq_len"] == 96 and figures["tokens_per_s_per_device"] > 0
    assert figures["lora"] == ("lora" in recipe.stem) and figures["params"] > 2_000_000  # 32K x 64 embeddings
    assert figures["liger_kernels"] is False and figures["attention"] == "sdpa"
    assert sum(r.getMessage().startswith("use_liger_kernel:") for r in caplog.records) == 1  # one warning
