"""bf16 weights at the paper's LR 1e-6: plain AdamW rounds the updates away, Kahan-compensated AdamW (the
optimizer `kahan_summation: true` selects) tracks AdamW on fp32 master weights."""

import copy
from types import SimpleNamespace

import pytest
import torch

from in2.cli import main
from in2.errors import ConfigError
from in2.train import optim
from tests.conftest import tiny_mistral, write_recipe

STEPS, LR = 100, 1e-6


def _tiny():
    torch.manual_seed(0)
    return tiny_mistral(256, hidden_size=32, heads=4, kv_heads=2).to(torch.bfloat16)


def _backward(model, batch):
    model.zero_grad()
    model(input_ids=batch, labels=batch).loss.backward()


def test_kahan_adamw_tracks_fp32_master_adamw_where_plain_bf16_adamw_does_not_move():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small is slower on more threads
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, (2, 32), generator=gen) for _ in range(8)]
    start = _tiny()
    w0 = {n: p.detach().clone() for n, p in start.named_parameters()}
    args = SimpleNamespace(learning_rate=LR, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0)
    cls, kwargs = optim.optimizer_cls_and_kwargs(SimpleNamespace(kahan_summation=True), args)

    # reference: fp32 master weights, bf16 forward/backward on their rounding (mixed precision)
    ref_model = copy.deepcopy(start)
    master = {n: p.detach().float() for n, p in ref_model.named_parameters()}
    ref_opt = torch.optim.AdamW(master.values(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    plain = copy.deepcopy(start)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    kahan = copy.deepcopy(start)
    kahan_opt = cls(kahan.parameters(), **kwargs)
    try:
        for step in range(STEPS):
            batch = batches[step % len(batches)]
            with torch.no_grad():
                for n, p in ref_model.named_parameters():
                    p.copy_(master[n])
            _backward(ref_model, batch)
            for n, p in ref_model.named_parameters():
                master[n].grad = p.grad.float()
            ref_opt.step()
            for model, opt in ((plain, plain_opt), (kahan, kahan_opt)):
                _backward(model, batch)
                opt.step()
    finally:
        torch.set_num_threads(threads)

    def total(pairs):
        return sum(float(x.pow(2).sum()) for x in pairs) ** 0.5

    ref_moved = [master[n] - w0[n].float() for n in w0]
    rms = total(ref_moved) / sum(x.numel() for x in ref_moved) ** 0.5
    assert rms > 0.2 * STEPS * LR  # the reference moved (3.5e-5 rms here; AdamW steps are ~LR, signs vary)

    # plain AdamW on bf16 weights: the updates are rounded away, except on weights within ~3e-4 of zero
    unchanged = sum(int((p.detach() == w0[n]).sum()) for n, p in plain.named_parameters())
    assert unchanged / sum(p.numel() for p in plain.parameters()) >= 0.97
    plain_moved = [p.detach().float() - w0[n].float() for n, p in plain.named_parameters()]
    assert total(plain_moved) <= 0.2 * total(ref_moved)

    # Kahan: the bf16 weight plus its bf16 compensation follows the fp32 master weights within 3% of the
    # distance they moved, and the bf16 weights the model computes with are the master's rounding in >= 98%
    # of the entries
    errors, same = [], 0
    for n, p in kahan.named_parameters():
        effective = p.detach().float() + kahan_opt.state[p]["kahan_comp"].float()
        errors.append(effective - master[n])
        same += int((p.detach() == master[n].to(torch.bfloat16)).sum())
    assert total(errors) <= 0.03 * total(ref_moved)
    assert same / sum(p.numel() for p in kahan.parameters()) >= 0.98


def _checked(**script):
    training = SimpleNamespace(
        optim="adamw_torch_fused", deepspeed=None, fsdp=[], fsdp_config={}, bf16=True, fp16=False
    )
    model = SimpleNamespace(dtype="bfloat16")
    for k, v in script.pop("training", {}).items():
        setattr(training, k, v)
    for k, v in script.pop("model", {}).items():
        setattr(model, k, v)
    optim.check(SimpleNamespace(kahan_summation=True, **script), training, model)


def test_kahan_summation_needs_an_adamw_and_low_precision_weights():
    _checked()
    with pytest.raises(ConfigError, match="^kahan_summation: replaces AdamW, but optim is 'sgd'"):
        _checked(training={"optim": "sgd"})
    with pytest.raises(
        ConfigError, match="^kahan_summation: needs bfloat16 or float16 weights, but dtype is 'float32'"
    ):
        _checked(model={"dtype": "float32"})


def test_kahan_summation_is_refused_where_fp32_master_weights_make_it_a_no_op(monkeypatch):
    for var in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP", "ACCELERATE_MIXED_PRECISION", "FSDP_VERSION"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="^kahan_summation: does nothing under DeepSpeed ZeRO"):
        _checked(training={"deepspeed": "ds.json"})
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    _checked()  # FSDP1 keeps the loaded bf16 weights in its flat parameters
    monkeypatch.setenv("FSDP_VERSION", "2")
    with pytest.raises(ConfigError, match="^kahan_summation: does nothing under FSDP2 under mixed precision"):
        _checked()
    _checked(training={"bf16": False})  # FSDP without mixed precision updates the bf16 weights themselves
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    with pytest.raises(ConfigError, match="^kahan_summation: does nothing under DeepSpeed ZeRO"):
        _checked(training={"bf16": False})


def test_recipe_field_selects_kahan_adamw_in_in2_train(tmp_path, tiny_model, dataset_folder):
    """The card names the optimizer the trainer built (a trainer that built plain AdamW while handed optimi's
    would show), and the saved optimizer state is optimi's, with its Kahan compensation buffers."""
    from optimi import AdamW

    recipe = write_recipe(
        tmp_path,
        tiny_model,
        dataset_folder,
        dtype="bfloat16",
        kahan_summation=True,
        optim="adamw_torch",
        learning_rate=1e-6,
        max_steps=1,
    )
    from in2.train import sft

    script_args, training_args, model_args, _ = sft.parse(["--config", str(recipe)])
    assert optim.optimizer_cls_and_kwargs(script_args, training_args)[0] is AdamW
    assert main(["train", "--config", str(recipe)]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| optimizer | optimi.AdamW, Kahan-compensated bf16 weights, weight decay 0, grad clip 1 |" in card
    assert "| precision | bfloat16 weights, no autocast |" in card
    state = torch.load(tmp_path / "out" / "checkpoint-1" / "optimizer.pt", weights_only=True)
    assert state["param_groups"][0]["kahan_sum"] is True
    assert all("kahan_comp" in s and s["kahan_comp"].dtype == torch.bfloat16 for s in state["state"].values())
