"""`in2 export`: a LoRA checkpoint trained by `in2 train`, merged into its base as a plain model folder and card."""

import json

import pytest
import torch

from tests.conftest import write_recipe


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory, tiny_model, dataset_folder):
    from in2.train import sft

    tmp = tmp_path_factory.mktemp("lora")
    recipe = write_recipe(
        tmp, tiny_model, dataset_folder, use_peft=True, lora_r=4, lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"], learning_rate=5e-2, max_steps=1, save_strategy="no",
    )  # fmt: skip
    return sft.train(*sft.parse(["--config", str(recipe)])[:3])


def test_export_merges_a_lora_checkpoint_into_a_plain_model_folder(tmp_path, lora_checkpoint, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from in2.cli import main

    out = tmp_path / "merged"
    assert main(["export", str(lora_checkpoint), "--output", str(out), "--dtype", "float32"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    ids = torch.tensor([[1, 733, 16289, 28793, 22557]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(base, lora_checkpoint)(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert torch.allclose(merged, adapted, atol=1e-5) and not torch.allclose(merged, before, atol=1e-4)
    assert (
        AutoTokenizer.from_pretrained(out)("hello").input_ids
        == AutoTokenizer.from_pretrained(tiny_model)("hello").input_ids
    )
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "library_name: peft" not in card
    assert f"the adapter at `{lora_checkpoint}` merged into its base weights" in card
    assert "Method: **LoRA, merged into the base weights (LoRA adapter)**" in card and "needs `peft`" not in card
    assert json.loads((out / "in2_card.json").read_text())["merged_from"] == str(lora_checkpoint)


def test_export_refuses_what_it_cannot_merge(tmp_path, tiny_model, capsys):
    from in2.cli import main

    assert main(["export", str(tiny_model), "--output", str(tmp_path / "x")]) == 2
    assert "no adapter_config.json, so not a LoRA/QLoRA checkpoint" in capsys.readouterr().err


class StandInHub:
    """The HfApi call `--push-card` makes; `files` holds what upload_folder would send."""

    def __init__(self, *args, **kwargs):
        self.files: dict[str, bytes] = {}
        self.repo_id = None
        StandInHub.last = self

    def upload_folder(self, repo_id, folder_path, allow_patterns=(), commit_message=None):
        from fnmatch import fnmatch
        from pathlib import Path
        from types import SimpleNamespace

        self.repo_id, root = repo_id, Path(folder_path)
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and any(fnmatch(rel, pat) for pat in allow_patterns):
                self.files[rel] = p.read_bytes()
        return SimpleNamespace(oid="c0ffee" * 6 + "abcd")


def test_eval_of_a_served_export_writes_its_model_index_and_pushes_the_card(
    tmp_path, lora_checkpoint, monkeypatch, capsys
):
    """The lab's path: merge the LoRA checkpoint, serve the merged folder (a stand-in for vLLM), evaluate it,
    and the card's YAML carries a model-index the Hub parses (huggingface_hub's ModelCard); --push-card sends
    the card, its results and plots, and no weights."""
    import huggingface_hub
    import yaml
    from huggingface_hub import ModelCard

    from in2.cli import main
    from tests.test_eval_serve import _recipe, _served, write_probes

    merged = tmp_path / "merged"
    assert main(["export", str(lora_checkpoint), "--output", str(merged)]) == 0
    prebuilt = write_probes(tmp_path / "probes")
    model = _served(tmp_path, name="in2-lora-merged", model=str(merged))
    recipe = _recipe(tmp_path, prebuilt, [model], model_card=str(merged))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["eval", "--config", str(tmp_path / "eval.yaml"), "--push-card"]) == 2  # before anything runs
    assert "--push-card: give the model repo" in capsys.readouterr().err
    assert main(["eval", "--config", str(tmp_path / "eval.yaml"), "--push-card", "org/merged"]) == 2
    assert "--push-card: no Hugging Face token" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_stand_in")
    monkeypatch.setattr(huggingface_hub, "HfApi", StandInHub)
    assert main(["eval", "--config", str(tmp_path / "eval.yaml"), "--push-card", "org/merged"]) == 0
    card = ModelCard.load(merged / "README.md")
    results = {(r.dataset_name, r.metric_type): r for r in card.data.eval_results}
    assert card.data.model_name == "merged" and card.data.library_name == "transformers"
    avg = results[("VaL probing database_forward_512", "avg")]
    assert avg.metric_value == 100.0 and avg.task_type == "text-generation"
    assert results[("VaL probing All 512", "gap")].metric_value == 0.0, sorted(results)
    hub = StandInHub.last
    assert hub.repo_id == "org/merged" and set(hub.files) >= {"README.md", "eval_results.json"}
    assert not any(f.endswith(".safetensors") for f in hub.files)
    assert hub.files["README.md"] == (merged / "README.md").read_bytes()
    assert "card and results pushed to org/merged" in capsys.readouterr().out


def test_model_index_rows_for_longbench_and_short_tasks_name_their_datasets():
    from huggingface_hub import EvalResult, ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from in2.evaluation import suite

    data = {
        "config": {
            "probes": {"pools": "film"},
            "longbench": {"data_revision": "v1.0", "prompts_revision": "8ae23fd"},
            "short": {"tasks": [{"name": "gsm8k", "metric": "exact_match,strict-match"}]},
        },
        "probing": {"models": {"m": {"probes": {"code_backward_32k": {"avg": 83.31, "gap": 18.7}}, "all": {}}}},
        "longbench": {
            "scoring": "film",
            "models": {"m": {"tasks": {"qasper": {"metric": "qa_f1", "score": 42.234}}, "average": 42.234}},
        },
        "short": {
            "scores": {"m": {"gsm8k": 44.5}},
            "datasets": {"gsm8k": {"path": "openai/gsm8k", "name": "main", "revision": None}},
        },
        "versions": {"lm-eval": "0.4.13"},
        "ruler": {
            "limit": 5,
            "threshold": 85.6,
            "models": {
                "m": {
                    "tasks": {"ruler_cwe": {"4096": {"score": 92.5}, "8192": {"score": 80.0}}},
                    "per_length": {"4096": 92.5, "8192": 80.0},
                    "average": 86.25,
                    "effective_length": 4096,
                }
            },
        },
    }
    rows = suite.model_index(data, "m")
    yaml_data = ModelCardData(model_name="m", eval_results=[EvalResult(**r) for r in rows]).to_dict()
    name, back = model_index_to_eval_results(yaml_data["model-index"])
    got = {(r.dataset_name, r.metric_type): r for r in back}
    assert name == "m" and len(back) == len(rows) == 9  # 5 + RULER: 2 task rows and 2 per-length means
    cwe = [r for r in back if r.metric_name == "RULER ruler_cwe 8K"]
    assert len(cwe) == 1 and (cwe[0].metric_value, cwe[0].dataset_config) == (80.0, "ruler_cwe_8192")
    assert cwe[0].dataset_args == {"lm_eval": "0.4.13", "limit": 5}
    assert got[("RULER 4K", "recall")].metric_value == 92.5
    card = {r["task"]: r["value"] for r in suite.card_rows({"ruler": data["ruler"]}, "m")}
    assert (card["RULER 8K"], card["RULER average"], card["RULER effective length"]) == (80.0, 86.2, "4K")
    code = got[("VaL probing code_backward_32k", "avg")]
    assert code.metric_value == 83.31 and code.dataset_revision == "134c03b723f8373088ec7b899f5948f8e5cd474d"
    qasper = got[("LongBench qasper", "qa_f1")]
    assert (qasper.dataset_type, qasper.dataset_config, qasper.dataset_revision) == (
        "THUDM/LongBench",
        "qasper",
        "v1.0",
    )
    assert qasper.metric_value == 42.23 and qasper.dataset_args == {"prompts_revision": "8ae23fd", "scoring": "film"}
    gsm = got[("gsm8k (lm-evaluation-harness)", "exact_match")]
    assert (gsm.dataset_type, gsm.dataset_config, gsm.metric_value) == ("openai/gsm8k", "main", 44.5)


@pytest.mark.parametrize(
    ("every", "saves", "pushed"),
    [(1, (1, 2, 3, 4), [1, 2, 3, 4]), (2, (1, 2, 3, 4), [2, 4]), (0, (1, 2, 3, 4), []), (2, (2, 3, 4), [2, 4])],
)
def test_checkpoint_pushes_follow_the_cadence(tmp_path, every, saves, pushed):
    """push_checkpoints_every: every Nth save (by save number, so a run resumed after save 1 still pushes saves 2
    and 4, not its own 2nd save, 3), 0 the final only."""
    from types import SimpleNamespace

    from in2.train.hub import HubPublisher
    from tests.test_train import StandInHub as BranchHub

    hub = BranchHub()
    publisher = HubPublisher("org/tiny-in2", api=hub, every=every)
    args = SimpleNamespace(output_dir=str(tmp_path), save_strategy="steps", save_steps=0.25)  # a ratio: 5 steps
    for step in (5 * n for n in saves):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"w")
        state = SimpleNamespace(global_step=step, save_steps=5, is_world_process_zero=True)
        publisher.on_save(args, state, None)
    (tmp_path / "model.safetensors").write_bytes(b"final")
    publisher.finish(tmp_path)
    assert set(hub.branches) == {"main"} | {f"checkpoint-{5 * n}" for n in pushed}
    assert hub.branches["main"]["model.safetensors"] == b"final"
