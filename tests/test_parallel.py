"""Ulysses sequence parallelism: recipe validation, the 8-GPU accelerate config, and a 2-process CPU run whose
loss and update equal one process's on the same batch."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from in2.errors import ConfigError
from in2.train import parallel, sft
from tests.conftest import write_recipe

ROOT = Path(__file__).resolve().parents[1]
SP8 = ROOT / "accelerate_configs" / "deepspeed_zero3_sp8.yaml"


def _args(sp=None, world=8, pad=None, deepspeed=None, packing=False):
    script = SimpleNamespace(sequence_parallel_size=sp)
    training = SimpleNamespace(world_size=world, pad_to_multiple_of=pad, deepspeed=deepspeed, packing=packing)
    return script, training


@pytest.fixture
def launched(monkeypatch):
    """The environment `accelerate launch` sets for a DeepSpeed config (no parallelism_config section)."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.delenv("ACCELERATE_USE_PARALLELISM_CONFIG", raising=False)
    monkeypatch.delenv(parallel.ACCELERATE_SP, raising=False)


def test_sequence_parallel_size_is_validated_with_errors_naming_the_field(launched, monkeypatch):
    script, training = _args(sp=8, world=8)
    assert parallel.check(script, training) == 8 and training.pad_to_multiple_of == 8  # padded to 8 equal parts
    assert parallel.check(*_args(sp=None)) == 1 and parallel.check(*_args(sp=1)) == 1
    for args, field, words in [
        (_args(sp=0), "sequence_parallel_size", "must be >= 1"),
        (_args(sp=8, world=12), "sequence_parallel_size", "must divide the number of processes (12)"),
        (_args(sp=4, pad=6), "pad_to_multiple_of", "multiple of sequence_parallel_size (4)"),
    ]:
        with pytest.raises(ConfigError, match=f"^{field}: .*{re.escape(words)}"):
            parallel.check(*args)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    with pytest.raises(ConfigError, match="^sequence_parallel_size: 8 needs DeepSpeed.*deepspeed_zero3_sp8.yaml"):
        parallel.check(*_args(sp=8))
    assert parallel.check(*_args(sp=8, deepspeed="ds.json")) == 8  # a DeepSpeed JSON given to the trainer


def test_the_accelerate_configs_sp_size_is_used_or_must_agree(launched, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_PARALLELISM_CONFIG", "true")
    monkeypatch.setenv(parallel.ACCELERATE_SP, "8")
    assert parallel.check(*_args(sp=None)) == 8 and parallel.check(*_args(sp=8)) == 8
    with pytest.raises(ConfigError, match="recipe says 4, the accelerate config's parallelism_config_sp_size says 8"):
        parallel.check(*_args(sp=4))


def test_heads_attention_and_packing_are_checked_once_the_model_is_known():
    from accelerate import ParallelismConfig
    from transformers import MistralConfig

    nemo_like = MistralConfig(num_attention_heads=32, num_key_value_heads=8, hidden_size=64, head_dim=8)
    _, training = _args()
    training.parallelism_config = None
    parallel.configure(training, 8, nemo_like, "flash_attention_2")
    pc = training.parallelism_config
    assert isinstance(pc, ParallelismConfig) and (pc.sp_size, pc.sp_backend, pc.cp_size) == (8, "deepspeed", 1)
    assert pc.sp_handler.sp_attn_implementation == "flash_attention_2" and pc.sp_handler.sp_seq_length_is_variable
    assert pc.dp_shard_size == 1  # 8 processes, 8 per sequence: one data-parallel group
    _, training = _args(world=32)
    parallel.configure(training, 16, nemo_like, "sdpa")  # 16 GPUs: each KV head is shared by 2 of them
    assert training.parallelism_config.dp_shard_size == 2
    for sp, attention, packing, words in [
        (3, "sdpa", False, "sequence_parallel_size: 3 must divide the model's 32 attention heads"),
        (8, "eager", False, "attn_implementation: sequence_parallel_size 8 needs one of sdpa"),
        (8, "sdpa", True, "packing: with sequence_parallel_size > 1, SDPA"),
    ]:
        _, training = _args(packing=packing)
        with pytest.raises(ConfigError, match=f"^{re.escape(words)}"):
            parallel.configure(training, sp, nemo_like, attention)
    _, training = _args(packing=True)
    parallel.configure(training, 8, nemo_like, "flash_attention_2")  # FlashAttention keeps packed rows apart


def test_sp8_accelerate_config_parses_and_matches_the_128k_recipe():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    cfg = load_config_from_file(str(SP8))  # accelerate's own loader
    known = {a.dest for a in launch_command_parser()._actions}
    raw = yaml.safe_load(SP8.read_text())
    assert set(raw["parallelism_config"]) <= known and set(raw["deepspeed_config"]) <= known
    assert cfg.distributed_type == "DEEPSPEED" and raw["deepspeed_config"]["zero_stage"] == 3
    sp = raw["parallelism_config"]["parallelism_config_sp_size"]
    assert sp == cfg.num_processes == 8 and raw["parallelism_config"]["parallelism_config_sp_backend"] == "deepspeed"
    script_args, *_ = sft.parse(["--config", "recipes/mistral-nemo-12b/sft_full.yaml", "--use_cpu", "true"])
    assert script_args.sequence_parallel_size == sp


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(folder) / "model.safetensors")


def _logged(checkpoint: Path) -> dict[int, dict]:
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h for h in history if "loss" in h}


def _launch_sp(recipe: Path, *flags: str, port: int):
    env = {**os.environ, "DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(SP8)),
        *("--num_processes", "2", "--parallelism_config_sp_size", "2", "--mixed_precision", "no"),
        *("--main_process_port", str(port), "-m", "in2.train.sft", "--config", str(recipe), *flags),
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]


def test_two_process_sequence_parallel_steps_equal_one_process_and_resume(tmp_path, tiny_model, dataset_folder):
    """Two CPU processes (DeepSpeed ZeRO-3, gloo) share each row through Ulysses. Two optimizer steps of two rows
    whose answers differ in length: the loss (token mean over the step, as every recipe), the gradient norm and
    the weights after step 1 equal a plain one-process run's; a rerun resumed from checkpoint-1, mid-epoch,
    skips the rows trained and logs the same step 2."""
    from datasets import load_dataset

    rows = tmp_path / "rows"
    (rows / "data").mkdir(parents=True)

    # answers of 1x to 7x the tokens: a mean of per-row means would weigh them unlike the token mean
    def lengthen(row, i):
        return {"completion": [{"role": "assistant", "content": row["completion"][0]["content"] * (2 * i + 1)}]}

    train = load_dataset(str(dataset_folder), split="train").select(range(4)).map(lengthen, with_indices=True)
    train.to_parquet(rows / "data" / "train-0.parquet")
    for name in ("1", "2", "2-resumed"):
        (tmp_path / name).mkdir()
    common = dict(per_device_train_batch_size=1, global_batch_size=2, max_steps=2, optim="sgd", learning_rate=0.5)
    single = write_recipe(tmp_path / "1", tiny_model, rows, **common, max_grad_norm=1.0)
    # pad_to_multiple_of 1024: every row the same length, as gloo's all_gather needs (NCCL's takes uneven sizes)
    sp = dict(sequence_parallel_size=2, pad_to_multiple_of=1024)
    shared = write_recipe(tmp_path / "2", tiny_model, rows, **common, max_grad_norm=1.0, **sp)
    # accelerate only counts DeepSpeed's CPU processes with an explicit backend; gloo is the CPU one
    shared.write_text(shared.read_text().replace("use_cpu: true", "use_cpu: false") + "ddp_backend: gloo\n")
    sft.train(*sft.parse(["--config", str(single)])[:3])
    _launch_sp(shared, port=29519)
    one, two = tmp_path / "1" / "out", tmp_path / "2" / "out"
    log_1, log_2 = _logged(one / "checkpoint-2"), _logged(two / "checkpoint-2")
    for step in (1, 2):
        assert log_2[step]["loss"] == pytest.approx(log_1[step]["loss"], rel=1e-5), step
        assert log_2[step]["grad_norm"] == pytest.approx(log_1[step]["grad_norm"], rel=1e-4), step
    weights_1, weights_2 = _weights(one / "checkpoint-1"), _weights(two / "checkpoint-1")
    assert set(weights_1) == set(weights_2)
    before = _weights(tiny_model)
    for name, w in weights_1.items():
        torch.testing.assert_close(weights_2[name], w, rtol=1e-4, atol=1e-6, msg=name)
    moved = max(float((w - before[name]).abs().max()) for name, w in weights_1.items())
    assert moved > 1e-3  # the step changed the weights, so equal weights mean equal gradients
    card = (two / "README.md").read_text()
    assert "| distributed | DEEPSPEED, ZeRO stage 3, Ulysses sequence parallel over 2 GPUs |" in card
    loss = "| loss | negative log-likelihood, mean over the answer tokens of each optimizer step (all its rows and"
    assert loss in card and loss in (one / "README.md").read_text()
    resumed = tmp_path / "2-resumed" / "out"
    _launch_sp(shared, "--resume_from_checkpoint", str(two / "checkpoint-1"), "--output_dir", str(resumed), port=29521)
    log_r = _logged(resumed / "checkpoint-2")
    assert log_r[2]["loss"] == pytest.approx(log_2[2]["loss"], rel=1e-5)
    assert log_r[2]["grad_norm"] == pytest.approx(log_2[2]["grad_norm"], rel=1e-4)


NEMO = ROOT / "recipes" / "mistral-nemo-12b" / "sft_full.yaml"


@pytest.mark.parametrize("world", [16, 32])
def test_multi_node_sequence_parallel_batch_passes_deepspeeds_check(world, monkeypatch, tiny_model, request):
    """The Nemo 128K recipe under deepspeed_zero3_sp8.yaml on world/8 nodes, built as the real path builds it:
    accelerate's launch environment, in2's recipe settling, transformers' DeepSpeed propagation and accelerate's
    _prepare_deepspeed, up to the DeepSpeedConfig that deepspeed.initialize builds first, with `world` mocked ranks.
    DeepSpeed counts world / 8 data-parallel ranks; the train_batch_size accelerate hands it must agree."""
    import deepspeed
    import deepspeed.comm
    import deepspeed.runtime.sequence_parallel.parallel_state_sp as mpu
    from accelerate import Accelerator
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DynamoBackend
    from accelerate.utils.launch import prepare_deepspeed_cmd_env
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF
    from transformers import AutoModelForCausalLM, MistralConfig, TrainingArguments
    from transformers.integrations.deepspeed import propagate_args_to_deepspeed, unset_hf_deepspeed_config

    model = AutoModelForCausalLM.from_pretrained(tiny_model)  # before the plugin: no ZeRO-3 init with 16 ranks
    request.addfinalizer(unset_hf_deepspeed_config)  # the plugin leaves transformers' ZeRO-3 flag set
    launch = launch_command_parser().parse_args(
        [*("--config_file", str(SP8), "--num_machines", str(world // 8), "--num_processes", str(world)), "x.py"]
    )
    launch, defaults, _ = _validate_launch_command(launch)
    launch.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command sets it
    _, env = prepare_deepspeed_cmd_env(launch)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "PARALLELISM_CONFIG_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: world))
    script_args, training_args, *_ = sft.parse(
        ["--config", str(NEMO), "--bf16", "false", "--attn_implementation", "sdpa"]
    )
    sp = parallel.check(script_args, training_args)
    parallel.settle_batch(script_args, training_args, sp)
    assert (sp, training_args.gradient_accumulation_steps) == (8, 128 // (world // 8))
    nemo_heads = MistralConfig(num_attention_heads=32, num_key_value_heads=8, hidden_size=64, head_dim=8)
    parallel.configure(training_args, sp, nemo_heads, "flash_attention_2")
    plugin = training_args.deepspeed_plugin
    propagate_args_to_deepspeed(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)), training_args)

    built = {}

    def initialize(model, config_params, mpu, **kwargs):  # deepspeed.initialize's first step, then stop
        built["config"] = DeepSpeedConfig(config_params, mpu=mpu)
        raise StopIteration

    monkeypatch.setattr(deepspeed, "initialize", initialize)
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(deepspeed.comm, "get_world_size", lambda group=None: world)
    monkeypatch.setattr(mpu, "get_sequence_parallel_world_size", lambda: sp)
    monkeypatch.setattr(UlyssesSPAttentionHF, "register_with_transformers", staticmethod(lambda **kwargs: mpu))
    accelerator = SimpleNamespace(
        fp8_backend=None,
        deepspeed_plugin=plugin,
        parallelism_config=training_args.parallelism_config,
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        num_processes=world,
        device=torch.device("cpu"),
        state=SimpleNamespace(dynamo_plugin=SimpleNamespace(backend=DynamoBackend.NO)),
        _prepare_one=lambda obj, first_pass=False: obj,
    )
    with pytest.raises(StopIteration):
        Accelerator._prepare_deepspeed(accelerator, model, torch.optim.AdamW(model.parameters()))
    config = built["config"]
    assert config.world_size == world // sp
    assert (
        config.train_batch_size
        == 128
        == config.train_micro_batch_size_per_gpu * config.gradient_accumulation_steps * (world // sp)
    )


def test_a_deepspeed_json_gets_the_derived_accumulation(tmp_path, tiny_model, dataset_folder, request):
    """`deepspeed: ds.json` with "auto" accumulation: TrainingArguments fills it when built, before in2 derives
    gradient_accumulation_steps from global_batch_size; DeepSpeed must get the derived value."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    request.addfinalizer(unset_hf_deepspeed_config)
    ds = tmp_path / "ds.json"
    auto = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, **dict.fromkeys(auto, "auto")}))
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, deepspeed=str(ds), global_batch_size=8)
    script_args, training_args, *_ = sft.parse(["--config", str(recipe)])
    parallel.settle_batch(script_args, training_args, parallel.check(script_args, training_args))
    assert training_args.gradient_accumulation_steps == 4  # 8 / (2 per device x 1 process)
    config = training_args.deepspeed_plugin.deepspeed_config
    assert (config["gradient_accumulation_steps"], config["train_batch_size"]) == (4, 8)
