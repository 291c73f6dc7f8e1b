"""The budget sheet (issue 22, item 4) is computed, not typed: docs/reproducing-film-7b.md holds exactly what
benchmarks/budget.py prints from the stored dry run, the recipes and src/in2/measured.py."""

import importlib.util
import json
from pathlib import Path

import pytest

from in2 import budget, measured

ROOT = Path(__file__).resolve().parents[1]


def script():
    spec = importlib.util.spec_from_file_location("budget_script", ROOT / "benchmarks" / "budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_doc_holds_the_sheet_the_script_computes():
    s = script()
    doc = s.DOC.read_text()
    assert s.with_sheet(doc, s.render()) == doc, "run `python benchmarks/budget.py --write`"


def test_the_sheet_follows_its_inputs():
    s = script()
    report = json.loads(s.REPORT.read_text())
    assert report["command"].startswith("in2 synth --config recipes/film-7b/in2_data.yaml --dry-run")
    import yaml

    synth = yaml.safe_load((ROOT / "recipes/film-7b/in2_data.yaml").read_text())
    train = yaml.safe_load((ROOT / "recipes/film-7b/sft_full.yaml").read_text())
    text = budget.sheet(report, synth, train)
    bound = report["prompt_tokens"] * 10e-6 + report["completion_tokens_at_most"] * 30e-6
    assert f"| {budget.money(bound)} |" in text
    assert budget.money(bound) == budget.money(report["estimated_cost_usd_at_most"])  # the dry run's own bound
    synth["generator"]["price_output_per_1m"] = 60.0  # another price, another sheet
    assert budget.money(report["prompt_tokens"] * 10e-6 + report["completion_tokens_at_most"] * 60e-6) in (
        budget.sheet(report, synth, train)
    )
    # the evaluation budget counts every suite of recipes/film-7b/eval.yaml, RULER's 13 x 500 x 4 lengths included
    assert "RULER 26,000 prompts" in text and "LongBench at most 1,750 prompts" in text
    # every price row says it is an estimate (only measured figures go unlabelled)
    prices = [line for line in text.splitlines() if line.startswith(("| bound", "| realistic"))]
    assert len(prices) == 3 and all("(estimate" in line for line in prices)
    # every training row names its rate and whether it was measured
    for line in text.splitlines():
        if line.startswith("| full fine-tune") or line.startswith("| LoRA") or line.startswith("| QLoRA"):
            assert "(measured)" in line or "(estimate)" in line


def test_checkpoint_sizes_and_tolerances():
    ckpt, final, _ = budget.checkpoint_bytes("film-7b/sft_full.yaml")
    assert ckpt == pytest.approx(7.24e9 * 12) and final == pytest.approx(7.24e9 * 4)
    assert budget.lora_params(budget.MISTRAL_7B) == pytest.approx(167.8e6, rel=1e-3)  # r 64 on every linear layer
    assert budget.tolerance(50.0, 1000) == pytest.approx(300 * (2 * 0.25 / 1000) ** 0.5)
    assert budget.tolerance(85.9, 9400) < budget.tolerance(85.9, 1000)
    assert measured.TOKENS_PER_S_PER_GPU["film-7b/sft_full_1gpu.yaml"].measured
    assert not measured.TOKENS_PER_S_PER_GPU["film-7b/sft_qlora.yaml"].measured
