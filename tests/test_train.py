"""Training: recipes parse into TRL's configs, the loss mask, packing, LoRA, cards, publishing, launchers."""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from in2 import redact
from in2.cards import model_card
from in2.cli import main
from in2.errors import ConfigError
from in2.train import card, sft
from in2.train.args import gradient_accumulation
from in2.train.hub import IGNORE, HubPublisher
from in2.train.model import attention_implementation, liger_kernels, load_model
from tests.conftest import write_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(ROOT.glob("recipes/*/sft*.yaml"))


# --- recipes and launchers -----------------------------------------------------------------------


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_parses_into_trl_configs(path):
    from peft import LoraConfig
    from trl import ModelConfig, ScriptArguments, SFTConfig, get_peft_config, get_quantization_config

    # GPU recipes ask for bf16, which TrainingArguments validates against the device: use_cpu is the one override
    script_args, training_args, model_args, recipe = sft.parse(["--config", str(path), "--use_cpu", "true"])
    assert isinstance(script_args, ScriptArguments) and isinstance(training_args, SFTConfig)
    assert isinstance(model_args, ModelConfig)
    assert recipe.startswith(path.read_text()) and recipe.endswith("# command-line overrides: --use_cpu true\n")
    assert script_args.dataset_name and model_args.model_name_or_path and training_args.output_dir
    if "film-7b" in str(path):  # the paper's hyperparameters (the FILM paper's Section 2, training details)
        assert script_args.global_batch_size == 128 and training_args.per_device_train_batch_size == 1
        assert training_args.lr_scheduler_type == "cosine" and training_args.warmup_steps == 0.03
        assert training_args.num_train_epochs == 1 and training_args.max_length == 32768
        assert model_args.attn_implementation == "flash_attention_2" and model_args.rope_theta == 1e6
        assert training_args.bf16 and training_args.activation_checkpointing and training_args.use_liger_kernel
        sft.resolve_recipe(training_args)  # the built-in FILM template, shipped with the package
        assert "[/INST]" in Path(training_args.chat_template_path).read_text()
        assert not training_args.use_liger_kernel  # no CUDA here: Liger falls back
        if path.name == "sft_full.yaml":
            assert training_args.learning_rate == 1e-6 and not model_args.use_peft
            assert model_args.dtype == "float32"  # fp32 master weights: 1e-6 updates vanish in bf16 weights
    peft = get_peft_config(model_args)
    assert (peft is not None) == ("lora" in path.name)
    if peft is not None:
        assert isinstance(peft, LoraConfig) and peft.r > 0
    quant = get_quantization_config(model_args)
    assert (quant is not None) == ("qlora" in path.name)
    if quant is not None:
        assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4"


def test_an_unknown_recipe_key_is_an_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: x\nlearnig_rate: 1.0e-6\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "learnig_rate" in err and str(bad) in err


def test_gradient_accumulation_is_derived_from_the_global_batch():
    assert gradient_accumulation(128, 1, 16 * 8) == 1  # FILM-7B: 16 nodes x 8 GPUs
    assert gradient_accumulation(128, 1, 8) == 16
    assert gradient_accumulation(128, 2, 1) == 64
    with pytest.raises(ValueError, match="global_batch_size=128"):
        gradient_accumulation(128, 3, 8)


def test_accelerate_configs_use_only_keys_accelerate_launch_knows():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    known = {a.dest for a in launch_command_parser()._actions}
    configs = {p.stem: p for p in (ROOT / "accelerate_configs").glob("*.yaml")}
    assert set(configs) == {"fsdp", "fsdp_offload", "deepspeed_zero3", "deepspeed_zero3_sp8", "multi_gpu"}
    for path in configs.values():
        cfg = load_config_from_file(str(path))  # accelerate's own loader: valid enum values and fields
        raw = yaml.safe_load(path.read_text())
        for section in ("fsdp_config", "deepspeed_config", "parallelism_config"):
            unknown = set(raw.get(section, {})) - known
            assert not unknown, f"{path.name}: {unknown}"
        assert cfg.mixed_precision == "bf16"
    fsdp = yaml.safe_load(configs["fsdp"].read_text())["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] and not fsdp["fsdp_offload_params"]
    assert yaml.safe_load(configs["fsdp_offload"].read_text())["fsdp_config"]["fsdp_offload_params"]
    assert yaml.safe_load(configs["deepspeed_zero3"].read_text())["deepspeed_config"]["zero_stage"] == 3


# --- model loading --------------------------------------------------------------------------------


def test_rope_theta_reaches_the_rotary_embedding(tiny_model):
    from in2.train.args import In2ModelConfig

    model, tokenizer, attn = load_model(
        In2ModelConfig(model_name_or_path=str(tiny_model), rope_theta=1e7, attn_implementation="flash_attention_2")
    )
    head_dim = 32 // 4
    expected = 1.0 / (1e7 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, expected)
    assert model.config.use_cache is False
    assert attn == "sdpa"  # no CUDA here: flash-attention falls back
    assert tokenizer.chat_template


def test_attention_implementation_keeps_non_flash_choices():
    assert attention_implementation("eager") == "eager"
    assert attention_implementation(None) is None
    assert attention_implementation("flash_attention_3") == "sdpa"


def test_liger_kernels_fall_back_with_one_warning_where_they_cannot_run(caplog):
    assert liger_kernels(False) is False and not caplog.records
    assert liger_kernels(True) is False  # this machine has no CUDA
    (record,) = caplog.records
    assert record.levelname == "WARNING" and record.getMessage().startswith("use_liger_kernel: no CUDA")
    assert record.getMessage().endswith("; training without Liger kernels")


# --- what training sees ---------------------------------------------------------------------------


def _trainer(tmp_path, tiny_model, dataset_folder, **config):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from in2.train.args import In2ModelConfig

    model, tokenizer, _ = load_model(In2ModelConfig(model_name_or_path=str(tiny_model), attn_implementation="sdpa"))
    args = SFTConfig(
        output_dir=str(tmp_path / "t"),
        bf16=False,
        use_cpu=True,
        activation_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        **config,
    )
    train = load_dataset(str(dataset_folder), split="train")
    return SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer), train


def test_loss_mask_covers_exactly_the_answer_tokens(tmp_path, tiny_model, dataset_folder):
    trainer, rows = _trainer(tmp_path, tiny_model, dataset_folder, max_length=None, per_device_train_batch_size=4)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for i in range(4):
        labels = batch["labels"][i]
        trained = tok.decode(labels[labels != -100])
        assert trained == rows[i]["completion"][0]["content"] + "</s>"
        # everything before the answer, the whole FILM prompt, is masked
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        start = int((labels != -100).nonzero()[0])
        assert tok.decode(ids[:start]).endswith("[/INST]")
        assert rows[i]["prompt"][0]["content"].split("### Instruction:\n")[1] in tok.decode(ids[:start])


def test_packed_and_unpacked_training_give_the_same_loss_and_update(tmp_path, tiny_model, dataset_folder, caplog):
    """`in2 train` twice, one SGD step (lr 1: the update is the gradient) over the same 8 rows: a packed recipe
    on FlashAttention, which in2 trains unpacked here (no CUDA: sdpa), and a packed recipe on sdpa, whose 8 rows
    become one sequence. Catches in2 packing where it cannot keep documents apart, or never packing."""
    from datasets import load_from_disk
    from safetensors.torch import load_file

    def run(name: str, **fields) -> tuple[Path, list]:
        (tmp_path / name).mkdir()
        recipe = write_recipe(tmp_path / name, tiny_model, dataset_folder, max_steps=1, optim="sgd", **fields)
        out = sft.train(*sft.parse(["--config", str(recipe), "--learning_rate", "1.0"])[:3])
        (prepared,) = (out / "prepared-data").iterdir()
        return out, load_from_disk(str(prepared / "train"))

    pack = dict(packing=True, packing_strategy="bfd")
    unpacked, rows = run("fallback", **pack, attn_implementation="flash_attention_2", per_device_train_batch_size=8)
    assert "packing needs flash_attention_2 to keep documents apart; training unpacked" in caplog.text
    assert len(rows) == 8 and "seq_lengths" not in rows.column_names
    assert "| packing | off |" in (unpacked / "README.md").read_text()
    total = sum(len(x) for x in rows["input_ids"])
    packed, sequences = run("packed", **pack, max_length=total, per_device_train_batch_size=1)
    assert len(sequences) == 1 and sorted(sequences["seq_lengths"][0]) == sorted(len(x) for x in rows["input_ids"])
    assert "| packing | bfd |" in (packed / "README.md").read_text()
    loss_u, loss_p = (logged_losses(out / "checkpoint-1") for out in (unpacked, packed))
    assert len(loss_u) == 1 and loss_u == pytest.approx(loss_p, rel=1e-5)
    a, b = load_file(unpacked / "model.safetensors"), load_file(packed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # equal parameters after one plain SGD step mean equal gradients
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)


def logged_losses(checkpoint: Path) -> list[float]:
    return [
        h["loss"] for h in json.loads((checkpoint / "trainer_state.json").read_text())["log_history"] if "loss" in h
    ]


# --- end to end -----------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_follow_the_umask(tmp_path):
    from safetensors.torch import save_file

    from in2.files import follow_umask

    for mask, mode in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(mask)
        try:
            save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")  # written 0600 whatever the umask
            follow_umask(tmp_path)
        finally:
            os.umask(old)
        assert oct((tmp_path / "model.safetensors").stat().st_mode & 0o777) == oct(mode)
        (tmp_path / "model.safetensors").unlink()


def test_train_writes_model_card_recipe_and_per_checkpoint_cards(
    tmp_path, tiny_model, dataset_folder, capsys, umask_022
):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, eval_strategy="steps", eval_steps=2)
    assert main(["train", "--config", str(recipe), "--learning_rate", "5e-4"]) == 0
    assert f"model and card written to {out}" in capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", sft.RECIPE_COPY):
        assert (out / name).is_file(), name
    # a teammate can read the model and every checkpoint (safetensors alone would write 0600)
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()} == {"0o644"}
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["base_model"] == "in2-tests/tiny-mistral" and header["license"] == "apache-2.0"
    assert header["library_name"] == "transformers" and "in2" in header["tags"]
    assert "**Status:** finished after 2 optimizer steps" in card  # the last write wins over checkpoint-time cards
    assert "| learning rate | 0.0005 |" in card and "| max length | 1024 |" in card
    assert "| global batch | 2 = 2 per device x 1 accumulation x 1 processes |" in card
    assert "| distributed | NO |" in card
    assert "| content hash | `feedc0ffee` |" in card and "| rows per part | fine_grained 8 |" in card
    assert "| mean training loss |" in card and "| eval loss |" in card
    assert "# command-line overrides: --learning_rate 5e-4" in card
    assert "### Context:\n{context}\n\n### Instruction:\n{question}" in card
    assert "Not evaluated yet" in card
    assert "https://arxiv.org/abs/2404.16811" in card and "https://github.com/microsoft/FILM" in card
    assert "@inproceedings{an2024make," in card and "NeurIPS 2024" in card
    # the card's prompt snippet runs as written, against the model it describes
    snippet = card.split("## How to prompt it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    ran: dict = {}
    exec(compile(snippet, "README.md", "exec"), ran)
    printed = capsys.readouterr().out
    assert ran["model_id"] == str(out) and "harbour bridge opened in 1932" in ran["user"]
    assert ran["user"].endswith("### Instruction:\nWhen did the harbour bridge open?")  # FILM's shape: context first
    reply = ran["output"][0, ran["inputs"]["input_ids"].shape[1] :]
    assert len(reply) > 0 and printed == ran["tokenizer"].decode(reply, skip_special_tokens=True) + "\n"
    assert "harbour" not in printed  # the reply only, not the prompt again
    # evaluation writes its results next to the card and renders it again
    results = {"results": [{"task": "VaL document", "metric": "avg", "value": 85.4}], "plots": ["plots/val.png"]}
    (out / "eval_results.json").write_text(json.dumps(results))
    model_card.refresh(out)
    card = (out / "README.md").read_text()
    assert "| VaL document | avg | 85.4 |" in card and "![plots/val.png](plots/val.png)" in card
    assert "**Status:** finished after 2 optimizer steps" in card and "Not evaluated yet" not in card
    for step in (1, 2):
        ckpt = (out / f"checkpoint-{step}" / "README.md").read_text()
        assert f"**Status:** checkpoint at step {step} of 2" in ckpt
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_lora_trains_only_an_adapter_that_changes_the_model(tmp_path, tiny_model, dataset_folder):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe = write_recipe(
        tmp_path,
        tiny_model,
        dataset_folder,
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
        learning_rate=1e-2,
        save_strategy="no",
    )
    out = sft.train(*sft.parse(["--config", str(recipe)])[:3])
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    card = (out / "README.md").read_text()
    assert "Method: **LoRA**" in card and "library_name: peft" in card and "| LoRA | r 4, alpha 8" in card
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.tensor([[1, 733, 16289, 28793, 22557]])
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, out)(ids).logits
    assert not torch.allclose(before, tuned)


class StandInHub:
    """The HfApi calls the publisher makes; branches hold the files upload_folder would send."""

    def __init__(self):
        self.branches: dict[str, dict[str, bytes]] = {}
        self.calls: list[str] = []

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(f"create_repo {repo_id}")
        self.branches.setdefault("main", {})

    def create_branch(self, repo_id, branch, exist_ok=False):
        self.branches.setdefault(branch, {})

    def upload_folder(self, repo_id, folder_path, revision=None, ignore_patterns=(), commit_message=None):
        root = Path(folder_path)
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and not any(fnmatch(rel, pat) for pat in ignore_patterns):
                self.branches[revision or "main"][rel] = p.read_bytes()
        return SimpleNamespace(oid="c0ffee" * 6 + "abcd")


def test_push_sends_checkpoints_to_branches_and_never_optimizer_states(tmp_path, tiny_model, dataset_folder):
    hub = StandInHub()
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, push_to_hub=True, hub_model_id="org/tiny-in2")
    out = sft.train(*sft.parse(["--config", str(recipe)])[:3], hub_api=hub)
    assert set(hub.branches) == {"main", "checkpoint-1", "checkpoint-2"}
    assert (out / "checkpoint-1" / "optimizer.pt").is_file()  # kept locally for resuming
    for branch, files in hub.branches.items():
        assert "model.safetensors" in files and "README.md" in files, branch
        leaked = [f for f in files if "optimizer" in f or "scheduler" in f or "rng_state" in f or f.endswith(".bin")]
        assert not leaked, (branch, leaked)
    assert not any(f.startswith("checkpoint-") for f in hub.branches["main"])
    assert b"finished after 2 optimizer steps" in hub.branches["main"]["README.md"]
    assert b"checkpoint at step 1" in hub.branches["checkpoint-1"]["README.md"]
    assert 'model_id = "org/tiny-in2"' in hub.branches["main"]["README.md"].decode()


def test_a_failed_checkpoint_upload_does_not_stop_the_final_push(tmp_path, caplog):
    class FlakyHub(StandInHub):
        def upload_folder(self, repo_id, folder_path, revision=None, **kwargs):
            if revision == "checkpoint-1":
                raise ConnectionError("503 from the Hub")
            return super().upload_folder(repo_id, folder_path, revision=revision, **kwargs)

    for folder in ("checkpoint-1", "checkpoint-2", "."):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "model.safetensors").write_bytes(b"weights")
    hub, args = FlakyHub(), SimpleNamespace(output_dir=str(tmp_path))
    publisher = HubPublisher("org/tiny-in2", api=hub)
    for step in (1, 2):
        publisher.on_save(args, SimpleNamespace(is_world_process_zero=True, global_step=step), None)
    assert publisher.finish(tmp_path)
    assert publisher.failed == [1] and set(hub.branches) == {"main", "checkpoint-1", "checkpoint-2"}
    assert "model.safetensors" in hub.branches["main"] and "model.safetensors" in hub.branches["checkpoint-2"]
    assert not hub.branches["checkpoint-1"]
    assert "could not upload checkpoint-1 to org/tiny-in2" in caplog.text and "503 from the Hub" in caplog.text


def test_ignore_patterns_cover_trainer_fsdp_and_deepspeed_states():
    states = [
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "rng_state_3.pth",
        "scaler.pt",
        "training_args.bin",
        "optimizer_0/__0_0.distcp",
        "pytorch_model_fsdp.bin",  # FSDP FULL_STATE_DICT: a pickled second copy of the weights
        "pytorch_model_fsdp_0/__0_0.distcp",  # FSDP SHARDED_STATE_DICT
        "pytorch_model_fsdp_0/.metadata",
        "global_step500/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "latest",
        "checkpoint-500/model.safetensors",
    ]
    kept = [
        "model.safetensors",
        "model-00001-of-00003.safetensors",
        "adapter_model.safetensors",
        "README.md",
        "trainer_state.json",
        "tokenizer.json",
        "config.json",
    ]
    assert all(any(fnmatch(s, p) for p in IGNORE) for s in states)
    assert not any(fnmatch(k, p) for k in kept for p in IGNORE)


def test_push_without_a_token_fails_before_training(tmp_path, tiny_model, dataset_folder, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, push_to_hub=True, hub_model_id="org/x")
    assert main(["train", "--config", str(recipe)]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_refresh_needs_a_trained_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="in2_card.json"):
        model_card.refresh(tmp_path)


def test_tokens_never_reach_recipes_or_cards(tmp_path, tiny_model, dataset_folder, capsys):
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, hub_token="hf_very_secret")
    assert main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "hub_token" in err and "hf_very_secret" not in err
    text = "hub_token: hf_abc\n  wandb_api_key: k123\nlearning_rate: 1e-6\n- my_secret: s\n"
    red = redact.text(text)
    assert "hf_abc" not in red and "k123" not in red and " s\n" not in red and "learning_rate: 1e-6" in red


def test_a_missing_split_is_named(tmp_path, tiny_model, dataset_folder, capsys):
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, dataset_train_split="training")
    assert main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "dataset_train_split" in err and "'training'" in err and "['train', 'validation']" in err


def files_of(folder: Path) -> dict[str, tuple[int, str]]:
    """(mtime, sha256) of every file under `folder`: a checkpoint written again changes its mtimes."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def steps_this_session(monkeypatch) -> list[int]:
    """The optimizer step of every loss the trainer logs from now on, in this process (a resumed run logs
    only steps after its checkpoint; training from scratch again logs them all)."""
    steps: list[int] = []
    log = sft.In2SFTTrainer.log

    def recording(self, logs, *args, **kwargs):
        if "loss" in logs:
            steps.append(self.state.global_step)
        return log(self, logs, *args, **kwargs)

    monkeypatch.setattr(sft.In2SFTTrainer, "log", recording)
    return steps


def test_rerun_resumes_from_the_last_checkpoint(tmp_path, tiny_model, dataset_folder, caplog, monkeypatch):
    """Catches a rerun that trains from step 0 again (same end state on CPU, where training is deterministic):
    the rerun must log step 2 only and leave checkpoint-1 as the first run wrote it."""
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, max_steps=1)
    assert main(["train", "--config", str(recipe)]) == 0
    first = files_of(tmp_path / "out" / "checkpoint-1")
    steps = steps_this_session(monkeypatch)
    assert main(["train", "--config", str(recipe), "--max_steps", "2"]) == 0
    assert f"resuming from {tmp_path / 'out' / 'checkpoint-1'}" in caplog.text
    assert steps == [2]  # global_step restored from the checkpoint: the rerun's first optimizer step is 2
    assert files_of(tmp_path / "out" / "checkpoint-1") == first  # read, never written again
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    losses = [h["step"] for h in state["log_history"] if "loss" in h]
    assert losses == [1, 2]


def test_deepspeed_zero3_step_through_accelerate_launch(tmp_path, tiny_model, dataset_folder):
    """Our ZeRO-3 accelerate config, one CPU process: the launcher, the plugin and our script together."""
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, save_strategy="no", max_steps=1)
    # use_cpu would make accelerate wrap the model in DDP instead of the DeepSpeed engine
    env = {**os.environ, "DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "accelerate_configs" / "deepspeed_zero3.yaml"),
        "--num_processes",
        "1",
        "--mixed_precision",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "in2.train.sft",
        "--config",
        str(recipe),
        "--use_cpu",
        "false",
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "finished after 1 optimizer steps" in card and "| distributed | DEEPSPEED, ZeRO stage 3 |" in card
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize(("version", "offload"), [(1, True), (2, True), (2, False)])
def test_card_names_fsdp_version_and_offload(version, offload):
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=version, cpu_offload=offload)
    state = SimpleNamespace(distributed_type=SimpleNamespace(value="FSDP"), deepspeed_plugin=None, fsdp_plugin=plugin)
    trainer = SimpleNamespace(accelerator=SimpleNamespace(state=state))
    assert card.distributed(trainer) == f"FSDP, FSDP{version}, CPU offload {'on' if offload else 'off'}"


def test_demo_recipe_trains_smollm2_from_its_gguf_weights(tmp_path, dataset_folder):
    """recipes/demo/sft.yaml as `make train` runs it, on the tiny set and for one step."""
    out = tmp_path / "demo"
    args = [
        "--config",
        str(ROOT / "recipes" / "demo" / "sft.yaml"),
        "--dataset_name",
        str(dataset_folder),
        "--dataset_config",
        "default",
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--eval_strategy",
        "no",
    ]
    assert main(["train", *args]) == 0
    card = (out / "README.md").read_text()
    assert (
        "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
        and "| precision | float32 weights, bf16 autocast |" in card
    )
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama" and model.num_parameters() > 100_000_000


# --- interrupted runs ------------------------------------------------------------------------------


def _three_steps(tmp_path, tiny_model, dataset_folder):
    """3 steps, a checkpoint after each; loss logged by logging_steps only at the end (in2 adds a log
    entry at every checkpoint, which the card's whole-run figures rely on)."""
    return write_recipe(tmp_path, tiny_model, dataset_folder, max_steps=3, logging_steps=3)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model, dataset_folder):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    assert main(["train", "--config", str(_three_steps(tmp, tiny_model, dataset_folder))]) == 0
    return tmp / "out"


def test_trainer_state_is_the_last_file_of_every_checkpoint(uninterrupted):
    for step in (1, 2, 3):
        folder = uninterrupted / f"checkpoint-{step}"
        mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        assert {"model.safetensors", "optimizer.pt", "rng_state.pth", "README.md"} <= set(mtimes)
        assert mtimes["trainer_state.json"] == max(mtimes.values()), sorted(mtimes, key=mtimes.get)
        state = json.loads((folder / "trainer_state.json").read_text())
        assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, step + 1))


def test_a_checkpoint_torn_at_any_file_is_skipped_and_moved_aside(tmp_path, uninterrupted, caplog):
    """For each file of a save (in write order), a checkpoint-3 holding the files before it and that one
    cut in half: resuming picks checkpoint-2 and moves checkpoint-3 aside, deleting nothing."""
    from in2.train import checkpoints

    files = sorted((uninterrupted / "checkpoint-3").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    for i, cut in enumerate(files):
        out = tmp_path / f"torn-at-{cut.name}"
        for step in (1, 2):
            shutil.copytree(uninterrupted / f"checkpoint-{step}", out / f"checkpoint-{step}", copy_function=os.link)
        torn = out / "checkpoint-3"
        torn.mkdir()
        for done in files[:i]:
            os.link(done, torn / done.name)
        (torn / cut.name).write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
        caplog.clear()
        assert checkpoints.resume_point(out, None, main_process=True) == out / "checkpoint-2", cut.name
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1", "checkpoint-2", checkpoints.ASIDE]
        assert (out / checkpoints.ASIDE / "checkpoint-3" / cut.name).stat().st_size == cut.stat().st_size // 2
        assert "skipped incomplete checkpoint(s) checkpoint-3" in caplog.text
    # an explicit resume_from_checkpoint must be complete too
    with pytest.raises(ConfigError, match="resume_from_checkpoint: .* not a complete checkpoint"):
        checkpoints.resume_point(tmp_path, str(out / checkpoints.ASIDE / "checkpoint-3"), main_process=True)


def test_a_checkpoint_whose_state_names_another_step_is_not_resumed_from(tmp_path, uninterrupted, caplog):
    """A whole trainer_state.json is not enough: it must name its folder's step (a checkpoint-3 holding
    checkpoint-2's state, as a copy or a save into a reused folder would leave, is not step 3)."""
    from in2.train import checkpoints

    for step in (1, 2, 3):
        shutil.copytree(uninterrupted / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}", copy_function=os.link)
    (tmp_path / "checkpoint-3" / "trainer_state.json").unlink()
    shutil.copy(uninterrupted / "checkpoint-2" / "trainer_state.json", tmp_path / "checkpoint-3")
    assert checkpoints.saved_step(tmp_path / "checkpoint-2") == 2
    assert checkpoints.saved_step(tmp_path / "checkpoint-3") is None
    assert checkpoints.resume_point(tmp_path, None, main_process=True) == tmp_path / "checkpoint-2"
    assert "skipped incomplete checkpoint(s) checkpoint-3" in caplog.text


def test_whole_run_loss_weights_each_log_by_its_steps():
    from in2.train.checkpoints import whole_run_loss

    # logs at steps 2 (mean of 1-2) and 3, resumed at 3, then 2 more steps averaging 1.0
    history = [
        {"loss": 4.0, "step": 2},
        {"eval_loss": 9.0, "step": 2},
        {"loss": 1.0, "step": 3},
        {"loss": 7, "step": 4},
    ]
    assert whole_run_loss(history, resumed_at=3, global_step=5, session_loss=1.0) == pytest.approx((8 + 1 + 2) / 5)
    assert whole_run_loss([], resumed_at=0, global_step=5, session_loss=2.5) == 2.5  # a fresh run: its own mean
    # history short of the resume step (a checkpoint not written by in2): the mean of the steps it knows
    assert whole_run_loss(history[:2], resumed_at=3, global_step=5, session_loss=1.0) == pytest.approx(10 / 4)


def _card_without_resume_line(folder: Path, run_dir: Path, reference_dir: Path) -> str:
    card = (folder / "README.md").read_text().replace(str(run_dir), str(reference_dir))
    lines = re.findall(r"\n\*\*Resumed\*\* from the checkpoint at step \d+ on [^\n]+\n", card)
    assert len(lines) == 1, lines
    return card.replace(lines[0], "")


def test_killed_during_a_save_the_rerun_ends_like_an_uninterrupted_run(
    tmp_path, uninterrupted, tiny_model, dataset_folder, caplog, monkeypatch
):
    """kill -9 at a seeded file of checkpoint-3's save; the rerun resumes from checkpoint-2 and ends with
    the uninterrupted run's weights and, apart from the line saying it resumed, its model card."""
    from safetensors.torch import load_file

    from in2.train import checkpoints
    from tests.kill_in_save import kill_in_save

    recipe = _three_steps(tmp_path, tiny_model, dataset_folder)
    out = tmp_path / "out"
    writes = [p.name for p in (uninterrupted / "checkpoint-3").iterdir() if p.name != "tokenizer.json"]  # Rust-written
    point = random.Random(16).randint(1, len(writes))  # seeded
    proc = kill_in_save(3, point, "train", "--config", str(recipe))
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == -signal.SIGKILL, log[-3000:]
    assert checkpoints.complete(out / "checkpoint-2") and not checkpoints.complete(out / "checkpoint-3")

    earlier = {step: files_of(out / f"checkpoint-{step}") for step in (1, 2)}
    steps = steps_this_session(monkeypatch)
    assert main(["train", "--config", str(recipe)]) == 0
    assert f"resuming from {out / 'checkpoint-2'} (step 2)" in caplog.text
    # only resuming gives these (training from scratch again ends with the same weights and card):
    assert steps == [3]  # optimizer step and data position from checkpoint-2: step 3 is the rerun's only step
    assert {step: files_of(out / f"checkpoint-{step}") for step in (1, 2)} == earlier  # not written again
    assert "skipped incomplete checkpoint(s) checkpoint-3" in caplog.text
    assert (out / checkpoints.ASIDE / "checkpoint-3").is_dir() and checkpoints.complete(out / "checkpoint-3")
    final, reference = load_file(out / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert final.keys() == reference.keys()
    for name in final:
        assert torch.equal(final[name], reference[name]), name
    card = (out / "README.md").read_text()
    assert "**Resumed** from the checkpoint at step 2 on " in card
    assert _card_without_resume_line(out, out, uninterrupted) == (uninterrupted / "README.md").read_text()
    assert "| training tokens |" in card and "| mean training loss |" in card


def test_prepare_only_tokenizes_once_what_trl_would_and_training_loads_it(
    tmp_path, tiny_model, dataset_folder, capsys, caplog
):
    """`in2 train --prepare_only true` writes TRL's own prepared rows (the in-trainer preparation's, row for row)
    into a folder keyed by dataset, tokenizer, template and preparation settings; a rerun and the training run
    reuse it, and a changed setting gets its own folder."""
    from datasets import load_from_disk

    recipe = write_recipe(tmp_path, tiny_model, dataset_folder)
    assert main(["train", "--config", str(recipe), "--prepare_only", "true"]) == 0
    folders = list((tmp_path / "out" / "prepared-data").iterdir())
    assert len(folders) == 1 and f"prepared dataset in {folders[0]}" in capsys.readouterr().out
    record = json.loads((folders[0] / "prepared.json").read_text())
    assert record["rows"] == {"train": 8} and record["tokens"]["train"] > 8 * 100 and record["bytes"] > 0
    prepared = load_from_disk(str(folders[0] / "train"))
    assert prepared.column_names == ["input_ids", "labels"]  # not the raw text a second time
    trl_own, _ = _trainer(tmp_path, tiny_model, dataset_folder, max_length=1024)
    assert prepared["input_ids"] == trl_own.train_dataset["input_ids"]
    assert prepared["labels"] == trl_own.train_dataset["labels"]

    stamp = (folders[0] / "prepared.json").stat().st_mtime_ns
    caplog.clear()
    assert main(["train", "--config", str(recipe), "--prepare_only", "true"]) == 0
    assert (folders[0] / "prepared.json").stat().st_mtime_ns == stamp and "prepared 8 rows" not in caplog.text
    out = sft.train(*sft.parse(["--config", str(recipe), "--max_steps", "1"])[:3])
    assert list((out / "prepared-data").iterdir()) == folders  # training loaded it
    assert "TRL tokenizes the dataset inside the training job" not in caplog.text
    main(["train", "--config", str(recipe), "--prepare_only", "true", "--max_length", "128"])
    assert len(list((tmp_path / "out" / "prepared-data").iterdir())) == 2


def test_prepare_throughput_benchmark_runs_at_toy_size(monkeypatch, capsys):
    import runpy

    argv = ["prepare_throughput.py", "--rows", "6", "--context-tokens", "400", "--procs", "1", "--no-write"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "benchmarks" / "prepare_throughput.py"), run_name="__main__")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("| prepare (tokenize, labels, truncate, save) |") and "6 rows" in line
    per_token = float(re.search(r"\(([\d.]+) bytes per token\)", line).group(1))
    assert 8 <= per_token < 10  # int32 ids and labels (int64 labels alone make 12), plus Arrow's offsets


def test_a_packed_recipe_prepares_trls_packed_sequences_and_trains_on_them(tmp_path, tiny_model, dataset_folder):
    from datasets import load_from_disk

    # BFD packs within each worker's shard: the same dataset_num_proc for both
    pack = dict(packing=True, packing_strategy="bfd", dataset_num_proc=2)
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, **pack, max_steps=1)
    out = sft.train(*sft.parse(["--config", str(recipe)])[:3])
    (folder,) = (out / "prepared-data").iterdir()
    prepared = load_from_disk(str(folder / "train"))
    trl_own, _ = _trainer(tmp_path, tiny_model, dataset_folder, **pack, max_length=1024)
    assert "seq_lengths" in prepared.column_names and len(prepared) < 8  # several rows per sequence
    assert list(prepared["input_ids"]) == list(trl_own.train_dataset["input_ids"])
    assert list(prepared["seq_lengths"]) == list(trl_own.train_dataset["seq_lengths"])
    assert "finished after 1 optimizer steps" in (out / "README.md").read_text()


def test_a_finished_rank_of_a_multi_process_launch_skips_the_interpreters_teardown():
    """`python -m in2.train.sft` under a launcher (WORLD_SIZE > 1) leaves at once after its work, its output
    flushed: catches a rank that goes through the teardown that aborted finished gloo ranks (an atexit hook
    stands for it here), and a single process or a failed rank that does not end as usual."""
    import subprocess
    import sys

    code = (
        "import atexit, sys; from in2.train.sft import leave; atexit.register(print, 'teardown'); "
        "print('done'); leave(int(sys.argv[1]))"
    )

    cases = {("2", "0"): (0, ["done"]), ("1", "0"): (0, ["done", "teardown"]), ("2", "3"): (3, ["done", "teardown"])}
    procs = {
        case: subprocess.Popen(
            [sys.executable, "-c", code, case[1]],
            env={**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, "WORLD_SIZE": case[0]},
            stdout=subprocess.PIPE,
            text=True,
        )
        for case in cases
    }  # at once: each imports torch and TRL
    ran = {case: (p.wait(timeout=120), p.stdout.read().split()) for case, p in procs.items()}
    assert ran == cases  # finished rank: flushed, no teardown; a single process and a failed rank as usual
