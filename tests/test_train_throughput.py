"""benchmarks/train_throughput.py with every FILM-7B recipe, offline, on a tiny Mistral: the benchmark reads
recipes as `in2 train` does (built-in chat template, Liger fallback), so it cannot fail where training works."""

import json
import os
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    """The benchmark sets the CUDA allocator's variable, as `in2 train` does: keep it out of later tests."""
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if "ALLOC_CONF" not in k})


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


def test_train_throughput_tiles_the_nemo_lora_recipe_and_sets_the_allocator(tmp_path, monkeypatch):
    """The Nemo LoRA recipe (tiled MLP) at toy size: the report says what the tiling callback did and which
    allocator setting the run had (activation offload needs CUDA: off here)."""
    report = tmp_path / "report.json"
    recipe = ROOT / "recipes" / "mistral-nemo-12b" / "sft_lora.yaml"
    argv = ["train_throughput.py", "--config", str(recipe), "--arch", "tiny-mistral", "--seq-len", "96", "--steps", "1"]
    argv += ["--json", str(report), "--use_cpu", "true", "--dataloader_num_workers", "0"]
    argv += ["--activation_offloading", "false", "--tiled_mlp_tokens", "32"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "benchmarks" / "train_throughput.py"), run_name="__main__")
    figures = json.loads(report.read_text())
    assert figures["tiled_mlp"] == "2 MLPs over slices of 32 positions" and figures["tiled_mlp_tokens"] == 32
    assert figures["allocator"] == "expandable_segments:True" and figures["lora"]


def test_the_allocator_setting_leaves_a_users_own_alone(monkeypatch):
    from in2.train.allocator import expandable_segments

    expandable_segments()
    assert os.environ["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setattr(os, "environ", {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"})
    expandable_segments()
    assert os.environ == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}


def test_long_context_fit_predicts_each_point_from_the_others(tmp_path, capsys, monkeypatch):
    """Three lengths on one line and a fourth off it: the left-out prediction of the fourth shows its error,
    the line gives the longest sequence per GPU, --predict prints one length."""

    def run(name, tokens, reserved, **kw):
        return {"name": name, "seq_len": tokens, "lora": True, "arch": "mistral-nemo-12b", "oom": False,
                "activation_offloading": False, "tiled_mlp": "40 MLPs over slices of 8192 positions", "device": "H",
                "peak_memory_gib": reserved - 1, "peak_reserved_gib": reserved, **kw}  # fmt: skip

    rows = [run("a", 16384, 34.0), run("b", 32768, 42.0), run("c", 65536, 58.0), run("d", 49152, 55.0)]
    rows.append({"name": "e", "skipped": "10 s left, needs about 40 s"})
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(sys, "argv", ["long_context_fit.py", str(results)])
    runpy.run_path(str(ROOT / "benchmarks" / "long_context_fit.py"), run_name="__main__")
    out = capsys.readouterr().out
    # d (55.0 measured) from a, b, c: 34 + (49152 - 16384) x 8 / 16384 = 50.0, 9.1% under
    assert "| d | lora12b_tiled | 49,152 |" in out and "| 50.0 (-9.1%) |" in out
    assert "| e | | | skipped 10 s left, needs about 40 s |" in out
    monkeypatch.setattr(sys, "argv", ["long_context_fit.py", str(results), "--predict", "lora12b_tiled"])
    runpy.run_path(str(ROOT / "benchmarks" / "long_context_fit.py"), run_name="__main__")
    assert int(capsys.readouterr().out) > 65536
