"""Every benchmark script runs at toy size, as a user runs it (`python benchmarks/X.py ARGS`, here through runpy in
this process): what each would catch is a script that no longer runs against the code it measures. The figures
are printed, never asserted (speed and memory goals are the benchmarks' business, not the suite's).
long_context_fit.py, prepare_throughput.py, train_throughput.py, scale_rehearsal.py and longbench_parity.py are
run by the test files of what they measure."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(monkeypatch, capsys, script: str, *args: str) -> str:
    """Run benchmarks/`script` with `args` (and --no-write where it writes RESULTS.md); its printed output."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")
    return capsys.readouterr().out


def test_assembly_throughput_at_toy_size(monkeypatch, capsys):
    out = bench(
        monkeypatch, capsys, "assembly_throughput.py", "--contexts", "8", "--max-context-tokens", "4608", "--no-write"
    )
    row = out.strip().splitlines()[-1]
    assert (
        row.startswith("| assembly, 8 contexts of 4,096-4,608 Mistral tokens") and "per bucket 1/1/1/1/1/1/1/1" in row
    )
    assert "KS of key positions vs uniform, fine_grained" in out


def test_generation_throughput_at_toy_size(monkeypatch, capsys):
    args = ("--latency", "0.05", "--concurrency", "4", "--rounds", "2", "--no-write")
    row = bench(monkeypatch, capsys, "generation_throughput.py", *args).strip().splitlines()[-1]
    assert row.startswith("| generation throughput, L=0.05s, C=4 |") and "8 requests in " in row
    assert row.endswith(", 0 requests sent |")  # the second pass came from the cache


def test_packing_efficiency_at_toy_size(monkeypatch, capsys):
    args = ("--scale", "256", "--rows", "8", "--batch", "2", "--steps", "1", "--no-write")
    padding, speed = bench(monkeypatch, capsys, "packing_efficiency.py", *args).strip().splitlines()[-2:]
    assert padding.startswith("| padding share, IN2 lengths |") and "BFD packing to 128: no padding, 8 rows" in padding
    assert speed.startswith("| real tokens/s, tiny Mistral (4 x 128) |") and "packed (BFD, padding-free, SDPA)" in speed


def test_probe_lengths_at_toy_size(monkeypatch, capsys):
    out = bench(monkeypatch, capsys, "probe_lengths.py", "--lengths", "1024")
    rows = [line for line in out.splitlines() if line.startswith("| builtin |")]
    assert [row.split(" | ")[1:3] for row in rows] == [["document", "1,024"], ["code", "1,024"], ["database", "1,024"]]


def test_gpu_long_context_parses_its_runs_and_skips_what_no_longer_fits(tmp_path):
    """benchmarks/gpu_long_context.sh has no dry run; with no time left (TOTAL=0) it names every run of a group
    as skipped, in order, without starting one (its argument parsing and budget on a machine without a GPU)."""
    env = {**os.environ, "OUT": str(tmp_path), "TOTAL": "0"}
    script = str(ROOT / "benchmarks" / "gpu_long_context.sh")
    for group in ("memory", "speed"):
        done = subprocess.run(["bash", script, group], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows][:2] == ["lora12b_offload_128k", "lora12b_64k"] and len(rows) == 8 + 2
    assert [r["name"] for r in rows][-2:] == ["full7b_32k", "full7b_8k"] and all("skipped" in r for r in rows)
    bad = subprocess.run(["bash", script, "no_such_run"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown run: no_such_run" in bad.stderr


def test_ruler_examples_at_toy_size(monkeypatch, capsys):
    out = bench(monkeypatch, capsys, "ruler_examples.py", "--tasks", "ruler_vt", "--lengths", "4096")
    row = out.strip().splitlines()[-1]
    assert row.startswith("| ruler_vt | 4096 | 500 examples | ") and " CPU s | " in row
