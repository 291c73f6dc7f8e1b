"""The sequence-tiled MLP (in2.train.tiling): the same loss and gradients as the untiled MLP, the same dropout
masks in the backward recomputation as in the forward, under activation checkpointing, and through `in2 train`."""

import json

import pytest
import torch

from in2.errors import ConfigError
from in2.train import tiling
from tests.conftest import tiny_mistral, write_recipe


def _lora_model(dropout: float, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = tiny_mistral(128, hidden_size=32, layers=2, heads=4, kv_heads=2)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, config)


def _loss_and_grads(model, ids, checkpointing: bool):
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(1)  # dropout's masks
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_tiled_mlp_gives_the_untiled_loss_and_gradients(checkpointing):
    """Slices of 16 over 45 positions (the last one short): a wrong offset, a lost slice or a missing
    parameter gradient changes the gradients."""
    ids = torch.randint(0, 128, (2, 45), generator=torch.Generator().manual_seed(0))
    plain = _loss_and_grads(_lora_model(0.0), ids, checkpointing)
    model = _lora_model(0.0)
    assert tiling.tile(model, 16) == 2
    tiled = _loss_and_grads(model, ids, checkpointing)
    assert tiled[0] == pytest.approx(plain[0], rel=1e-6)
    assert tiled[1].keys() == plain[1].keys() and any("mlp" in n for n in plain[1])
    for name, grad in plain[1].items():
        torch.testing.assert_close(tiled[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("input_grad", [True, False], ids=["input-grad", "frozen-input"])
def test_recomputed_slices_draw_the_forward_dropout_masks(input_grad):
    """With LoRA dropout, the tiled MLP's gradients equal those of a reference that runs the same slices one
    after another with ordinary autograd (the same random draws, nothing recomputed). Recomputing a slice
    under a fresh random state would draw other masks and other gradients. With an input that needs no
    gradient (a frozen embedding), the adapters still get theirs."""
    x = torch.randn(1, 40, 32, generator=torch.Generator().manual_seed(2))
    grads = {}
    for kind in ("reference", "tiled"):
        mlp = _lora_model(0.5).base_model.model.model.layers[0].mlp
        inp = x.clone().requires_grad_(input_grad)
        torch.manual_seed(3)
        if kind == "tiled":
            tiling.tile(torch.nn.ModuleDict({"block": torch.nn.ModuleDict({"mlp": mlp})}), 16)
            out = mlp(inp)
        else:
            out = torch.cat([mlp(piece) for piece in inp.split(16, dim=-2)], dim=-2)
        torch.manual_seed(4)  # whatever runs next draws from another state
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[kind] = {
            "input": inp.grad if input_grad else torch.zeros(()),
            **{n: p.grad for n, p in mlp.named_parameters() if p.requires_grad},
        }
    for name, grad in grads["reference"].items():
        torch.testing.assert_close(grads["tiled"][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_the_backward_recomputation_is_out_of_reach_of_outer_saved_tensor_hooks():
    """TRL's activation offloading holds saved-tensor hooks over forward and backward; the slices recomputed in
    backward must keep their tensors to themselves (found on an H200: offloaded, they piled up on the copy
    stream). The forward's own saved input still goes through the outer hooks."""
    mlp = _lora_model(0.0).base_model.model.model.layers[0].mlp
    tiling.tile(torch.nn.ModuleDict({"block": torch.nn.ModuleDict({"mlp": mlp})}), 8)
    packed, phase = {"forward": 0, "backward": 0}, ["forward"]

    def pack(t):
        packed[phase[0]] += 1
        return t

    x = torch.randn(1, 32, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = mlp(x)
        phase[0] = "backward"
        out.sum().backward()
    assert packed == {"forward": 1, "backward": 0}


def test_tiling_is_refused_where_it_cannot_be_right():
    with pytest.raises(ConfigError, match="tiled_mlp_tokens: must be a positive"):
        tiling.check(0, "NO")
    with pytest.raises(ConfigError, match=r"tiled_mlp_tokens: single-process .*\(this run: FSDP\)"):
        tiling.check(8192, "FSDP")
    tiling.check(None, "DEEPSPEED")
    with pytest.raises(ConfigError, match="no decoder MLP"):
        tiling.tile(torch.nn.Linear(2, 2), 16)


def test_in2_train_tiles_the_mlps_and_trains_to_the_same_losses(tmp_path, tiny_model, dataset_folder):
    """Through `in2 train` (Trainer, PEFT, the callback): the card reports the MLPs the callback tiled, and the
    logged losses equal an untiled run's (LoRA dropout 0, so both runs compute the same function)."""
    from in2.train import sft

    losses = {}
    for tokens in (None, 32):
        out = tmp_path / f"tiled-{tokens}"
        fields = dict(output_dir=str(out), save_steps=2, use_peft=True, lora_r=4, lora_dropout=0.0)
        fields.update(lora_target_modules=["gate_proj", "up_proj", "down_proj", "q_proj"], max_length=256)
        (tmp_path / str(tokens)).mkdir()
        recipe = write_recipe(tmp_path / str(tokens), tiny_model, dataset_folder, **fields, tiled_mlp_tokens=tokens)
        sft.main(["--config", str(recipe)])
        card = (out / "README.md").read_text()
        assert ("| tiled MLP | 2 MLPs over slices of 32 positions |" in card) == (tokens is not None)
        assert json.loads((out / "in2_card.json").read_text())["method"] == "LoRA"
        history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        losses[tokens] = [h["loss"] for h in history if "loss" in h]
    assert len(losses[None]) == 2
    assert losses[32] == pytest.approx(losses[None], rel=1e-5)
