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
    weights = (tiny_model / "model.safetensors").stat().st_size  # fp32 on disk; the recipes load bf16
    assert torch.cuda.max_memory_allocated() >= weights // 2  # the model's weights at least were on the GPU
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    card = (out / "README.md").read_text()
    method = "QLoRA (4-bit base)" if "qlora" in recipe else "LoRA"
    assert f"Method: **{method}**" in card and "finished after 2 optimizer steps" in card
    liger = find_spec("liger_kernel") is not None and find_spec("triton") is not None
    assert f"| Liger kernels | {'on' if liger else 'off'} |" in card


def test_tiled_mlp_on_the_gpu_wraps_liger_and_trains_to_the_untiled_losses(tmp_path, tiny_model, dataset_folder):
    """The Nemo recipes' tiled MLP (in2.train.tiling) on CUDA, over whatever forward Liger installed, LoRA
    dropout 0: the same logged losses as untiled (bf16 autocast in both: 1e-3 relative), and the card says
    what was tiled."""
    losses = {}
    for tokens in ("null", "32"):
        out = _train(
            tmp_path / tokens, tiny_model, dataset_folder, "sft_lora.yaml", "--tiled_mlp_tokens", tokens,
            "--lora_dropout", "0", "--save_strategy", "steps", "--save_steps", "2",
        )  # fmt: skip
        card = (out / "README.md").read_text()
        assert ("| tiled MLP | 2 MLPs over slices of 32 positions |" in card) == (tokens == "32")
        history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        losses[tokens] = [h["loss"] for h in history if "loss" in h]
    print(f"\nlosses untiled {losses['null']}, tiled {losses['32']}")
    assert len(losses["null"]) == 2 and losses["32"] == pytest.approx(losses["null"], rel=1e-3)


@pytest.mark.skipif(find_spec("liger_kernel") is None, reason="needs liger-kernel (pip install -e '.[gpu]')")
def test_liger_kernels_give_the_loss_of_the_eager_model(tmp_path, tiny_model, dataset_folder):
    """Same weights, same batch, first-step loss (learning rate 0) with and without Liger's RMSNorm, SwiGLU and
    RoPE kernels, each arm in a process of its own (tests/gpu/arms.py: Liger patches the whole process).
    Measured on an H200 (2026-12-04): Liger vs eager equal to the 4 decimals the Trainer logs a loss with, in
    fp32 and under bf16 autocast, where bf16 itself moves the eager loss 1.2e-5 relative from fp32. Tolerances:
    1e-4 relative (fp32) and 1e-3 (bf16, ~80x bf16's own spread): a kernel that changes the result fails."""
    arms = {}
    for liger in (False, True):
        cmd = [sys.executable, str(ROOT / "tests" / "gpu" / "arms.py"), "liger" if liger else "eager"]
        cmd += [str(tiny_model), str(dataset_folder), str(tmp_path / str(liger))]
        run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert run.returncode == 0, run.stderr[-4000:]
        arms[liger] = json.loads(run.stdout.strip().splitlines()[-1])
    eager, liger = arms[False], arms[True]
    assert eager["patched"] == [] and liger["patched"], arms  # Liger's forwards in the Liger arm only
    assert eager["device"].startswith("cuda") and liger["device"].startswith("cuda")
    print(
        f"\nLiger vs eager: fp32 {liger['fp32'] / eager['fp32'] - 1:+.2e} relative; bf16 "
        f"{liger['bf16'] / eager['bf16'] - 1:+.2e} relative, bf16's own spread (eager bf16 vs fp32) "
        f"{eager['bf16'] / eager['fp32'] - 1:+.2e}; Liger's patches: {liger['patched']}"
    )
    assert liger["fp32"] == pytest.approx(eager["fp32"], rel=1e-4)
    assert liger["bf16"] == pytest.approx(eager["bf16"], rel=1e-3)


def _env() -> dict:
    path = os.pathsep.join([str(ROOT), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path}


def test_probing_local_backend_generates_on_the_gpu_what_the_cpu_generates(tmp_path, tiny_model):
    """Probes built, answered greedily in fp32 by the transformers backend on the GPU and, in a process that
    sees no GPU, on the CPU: the answers agree (a padding or device bug changes nearly all of them; rare
    near-ties of the top two logits may flip a token, hence 90%), and both score alike."""
    from in2.evaluation.probing import build, run, score
    from in2.evaluation.suite import score_folder
    from in2.llm.local_backend import LocalBackend
    from tests.test_probing import _eval_config

    local = local_generator("tiny", tiny_model, tmp_path / "cache", dtype="float32", batch_size=8, max_tokens=8)
    cfg = _eval_config(tmp_path, [local], tasks=["database"], lengths=[512], prompt_format="raw")
    generator = cfg.models[0].generator
    assert LocalBackend(generator).model.device.type == "cuda"
    probe_dir, names = build.build_all(cfg)
    run.run(probe_dir, names, generator, tmp_path / "gpu", cfg.probes.prompt_format, cfg.probes.raw_template)
    cpu_cmd = [sys.executable, str(ROOT / "tests" / "gpu" / "arms.py"), "probes-cpu", str(tiny_model), str(probe_dir)]
    cpu_cmd += [str(tmp_path / "cpu-cache"), str(tmp_path / "cpu")]  # its own cache: the GPU's answers are cached
    cpu = subprocess.run(cpu_cmd, env={**_env(), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, cwd=ROOT)
    assert cpu.returncode == 0, cpu.stderr[-4000:]
    rows, _ = build.read(probe_dir, "database_forward_512")
    answers = {d: score.read_predictions(tmp_path / d / "sample_database_forward_512.jsonl") for d in ("gpu", "cpu")}
    assert len(answers["gpu"]) == len(answers["cpu"]) == len(rows) > 0
    same = sum(a == b for a, b in zip(answers["gpu"], answers["cpu"], strict=True))
    print(f"\n{same} of {len(rows)} probe answers equal on GPU and CPU")
    assert same >= 0.9 * len(rows)
    scores = {d: score_folder(probe_dir, tmp_path / d, names, cfg.probes.span_size, cfg.probes.parity) for d in answers}
    assert set(scores["gpu"]) == {"database_forward_512"}
    assert scores["gpu"]["database_forward_512"]["avg"] == pytest.approx(
        scores["cpu"]["database_forward_512"]["avg"], abs=10
    )


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
