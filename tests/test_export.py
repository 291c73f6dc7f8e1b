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
