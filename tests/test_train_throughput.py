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
    """A run is predicted without itself: from the other lengths of its setup, or from the line of the same setup
    with the other activation-offload setting plus or minus the kept layer inputs (40 x 5120 x 2 bytes per
    token for the 12B). The longest sequence per GPU comes from the lines; --predict prints one length."""

    def run(name, tokens, reserved, offload=False):
        return {"name": name, "seq_len": tokens, "lora": True, "arch": "mistral-nemo-12b", "oom": False,
                "activation_offloading": offload, "tiled_mlp": "40 MLPs over slices of 8192 positions",
                "device": "H", "peak_memory_gib": reserved - 1, "peak_reserved_gib": reserved}  # fmt: skip

    rows = [run("a", 16384, 34.0), run("b", 32768, 42.0), run("c", 65536, 58.0), run("d", 49152, 55.0)]
    rows += [run("o1", 65536, 40.0, True), run("o2", 131072, 52.0, True), {"name": "e", "skipped": "10 s left"}]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(sys, "argv", ["long_context_fit.py", str(results)])
    runpy.run_path(str(ROOT / "benchmarks" / "long_context_fit.py"), run_name="__main__")
    out = capsys.readouterr().out
    kept = 40 * 5120 * 2 / 2**30  # GiB per token
    # d from the offload line (28 + 12/65536 GiB per token) plus what offloading moves off the GPU
    d = 28 + (12 / 65536 + kept) * 49152
    assert (
        "| d | lora12b_tiled | 49,152 | " in out
        and f"| {d:.1f} ({d / 55 - 1:+.1%}, from lora12b_offload_tiled) |" in out
    )
    # o2 from the line through a-d (no offload) less the kept layer inputs
    assert "| o2 | lora12b_offload_tiled | 131,072 |" in out and "from lora12b_tiled) |" in out
    assert "| e | | | skipped 10 s left | | | |" in out
    monkeypatch.setattr(sys, "argv", ["long_context_fit.py", str(results), "--predict", "lora12b_tiled"])
    runpy.run_path(str(ROOT / "benchmarks" / "long_context_fit.py"), run_name="__main__")
    assert int(capsys.readouterr().out) > 65536


def test_benchmark_rows_land_in_their_own_section_of_results_md(tmp_path):
    """benchmarks/results_md.record: a row goes to the end of its section, before the next heading (not to the
    end of the file, under whichever section came last); a missing section is added at the end."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from results_md import record

    md = tmp_path / "RESULTS.md"
    md.write_text("# Figures\n\n## Packing (rows)\n\n| a |\n\n## Assembly (rows)\n\n| b |\n")
    record("| new packing row |", "Packing", path=md)
    record("| c |", "Assembly", path=md)
    record("| d |", "Scale rehearsal", path=md)
    assert md.read_text() == (
        "# Figures\n\n## Packing (rows)\n\n| a |\n| new packing row |\n\n## Assembly (rows)\n\n| b |\n| c |\n"
        "\n## Scale rehearsal\n\n| d |\n"
    )
