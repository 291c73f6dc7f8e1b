"""What only a CUDA GPU can check, on tiny or random-init models, offline: `make test-gpu` (`-m gpu`).

Each test names what it guards; none asserts a speed (benchmarks/gpu_check.sh prints the figures).
"""

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from tests.conftest import local_generator
from tests.launch import eval_save_resume

ROOT = Path(__file__).resolve().parents[2]
FILM = ROOT / "recipes" / "film-7b"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("config", ["fsdp", "fsdp_offload", "deepspeed_zero3"])
def test_full_recipe_survives_evaluation_and_a_checkpoint_on_one_step_and_resumes(
    config, tmp_path, tiny_model, dataset_folder
):
    """The H200 failure (torch 2.11): under FSDP2, step 3 died after step 2 evaluated and saved
    (in2.train.fsdp). Through `accelerate launch` with our config and `-m in2.train.sft`."""
    if config.startswith("deepspeed") and find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install -e '.[deepspeed]')")
    # bf16 on a GPU: a resumed step recomputes in the same kernels, but reductions may order differently
    eval_save_resume(tmp_path, tiny_model, dataset_folder, config, cpu=False, rel=1e-3)


def _train(tmp_path, tiny_model, dataset_folder, recipe: str, *flags: str) -> Path:
    from in2.train import sft

    args = ["--config", str(FILM / recipe), "--model_name_or_path", str(tiny_model)]
    args += [
        "--dataset_name",
        str(dataset_folder),
        "--dataset_config",
        "default",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    args += ["--global_batch_size", "2", "--max_steps", "2", "--max_length", "256", "--eval_strategy", "no"]
    args += ["--save_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0", *flags]
    return sft.train(*sft.parse(args)[:3])


@pytest.mark.parametrize("recipe", ["sft_lora.yaml", "sft_qlora.yaml"])
def test_lora_and_qlora_recipes_train_an_adapter_on_the_gpu(recipe, tmp_path, tiny_model, dataset_folder):
    if "qlora" in recipe and find_spec("bitsandbytes") is None:
        pytest.skip("QLoRA needs bitsandbytes (pip install bitsandbytes)")
    torch.cuda.reset_peak_memory_stats()
    out = _train(tmp_path, tiny_model, dataset_folder, recipe)
    assert torch.cuda.max_memory_allocated() > 0  # the model trained on the GPU
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    card = (out / "README.md").read_text()
    method = "QLoRA (4-bit base)" if "qlora" in recipe else "LoRA"
    assert f"Method: **{method}**" in card and "finished after 2 optimizer steps" in card
    liger = find_spec("liger_kernel") is not None and find_spec("triton") is not None
    assert f"| Liger kernels | {'on' if liger else 'off'} |" in card


@pytest.mark.skipif(find_spec("liger_kernel") is None, reason="needs liger-kernel (pip install -e '.[gpu]')")
@pytest.mark.parametrize(("bf16", "rel"), [(False, 1e-4), (True, 1e-2)], ids=["fp32", "bf16-autocast"])
def test_liger_kernels_give_the_loss_of_the_eager_model(bf16, rel, tmp_path, tiny_model, dataset_folder):
    """Same weights, same batch, first-step loss (before any update) with and without Liger's RMSNorm,
    SwiGLU and RoPE kernels. Tolerance: 1e-4 relative in fp32 (elementwise kernels, different
    summation order), 1e-2 under bf16 autocast (bf16 rounding of intermediate activations)."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from in2.train.args import In2ModelConfig
    from in2.train.model import load_model

    rows = load_dataset(str(dataset_folder), split="train")
    losses, patched = {}, {}
    for liger in (False, True):
        model, tokenizer, _ = load_model(In2ModelConfig(model_name_or_path=str(tiny_model), attn_implementation="sdpa"))
        args = SFTConfig(
            output_dir=str(tmp_path / f"liger-{liger}"),
            use_liger_kernel=liger,
            bf16=bf16,
            per_device_train_batch_size=4,
            max_steps=1,
            learning_rate=0.0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=0,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
        trainer.train()
        losses[liger] = trainer.state.log_history[0]["loss"]
        patched[liger] = any("liger" in getattr(m.forward, "__module__", "") for m in trainer.model.modules())
    assert patched == {False: False, True: True}  # the kernels were in the second forward only
    assert losses[True] == pytest.approx(losses[False], rel=rel)


def test_probing_local_backend_generates_on_the_gpu(tmp_path, tiny_model):
    """Probes built, answered by the transformers backend and scored (the suite minus its plots)."""
    from in2.evaluation.probing import build, run, score
    from in2.evaluation.suite import score_folder
    from in2.llm.local_backend import LocalBackend
    from tests.test_probing import _eval_config

    local = local_generator("tiny", tiny_model, tmp_path / "cache", dtype="bfloat16", batch_size=8, max_tokens=8)
    cfg = _eval_config(tmp_path, [local], tasks=["database"], lengths=[512], prompt_format="raw")
    generator = cfg.models[0].generator
    assert LocalBackend(generator).model.device.type == "cuda"
    probe_dir, names = build.build_all(cfg)
    torch.cuda.reset_peak_memory_stats()
    run.run(probe_dir, names, generator, tmp_path / "pred", cfg.probes.prompt_format, cfg.probes.raw_template)
    assert torch.cuda.max_memory_allocated() > 0  # generated on the GPU
    rows, _ = build.read(probe_dir, "database_forward_512")
    assert len(score.read_predictions(tmp_path / "pred" / "sample_database_forward_512.jsonl")) == len(rows)
    assert score_folder(probe_dir, tmp_path / "pred", names, cfg.probes.span_size, cfg.probes.parity)


def test_train_throughput_benchmark_runs_mistral_7b_at_8k(tmp_path):
    """Random Mistral-7B weights, the LoRA recipe (fits an 80 GB GPU), one measured step at 8,192 tokens."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--config", str(FILM / "sft_lora.yaml")]
    cmd += ["--arch", "mistral-7b", "--seq-len", "8192", "--steps", "1", "--json", str(report)]
    path = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    run = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-4000:]
    figures = json.loads(report.read_text())
    assert figures["device"] != "cpu" and figures["params"] > 7e9 and figures["lora"]
    assert figures["tokens_per_s_per_device"] > 0 and figures["peak_memory_gib"] > 14  # bf16 weights alone: 13.5 GiB
