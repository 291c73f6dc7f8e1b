"""Training throughput and peak memory of a recipe, on randomly initialised weights of its architecture.

    python benchmarks/train_throughput.py --config recipes/film-7b/sft_lora.yaml --seq-len 32768 --steps 4
    python benchmarks/train_throughput.py --config recipes/demo/sft.yaml --seq-len 1024 --steps 2   # CPU
    python benchmarks/train_throughput.py --config recipes/mistral-nemo-12b/sft_lora.yaml \
        --arch mistral-nemo-12b --seq-len 131072 --steps 0 --out results.jsonl   # memory and one step

The recipe supplies everything TrlParser reads (precision, checkpointing, LoRA, attention, Liger
kernels), settled as `in2 train` settles it (in2.train.sft.resolve_recipe); the architecture comes
from the model's config.json, or is built in (`--arch mistral-7b` / `mistral-nemo-12b` for machines
without the Hub, `--arch tiny-mistral` for a quick check on CPU), the weights are random, and each row
is exactly `--seq-len` tokens with a 64-token answer. Prints tokens/s per device, peak accelerator memory
(allocated and reserved; `--steps 0`: memory and the first step's time only, an out-of-memory step
reported as such) and, for full fine-tunes on CUDA, model FLOPs utilisation by llm-foundry's formula:

    MFU = tokens/s x (6 N + 12 L d S) / peak,  N parameters, L layers, d hidden size, S = --seq-len,
    peak = --peak-tflops (989 TFLOP/s: H100/H200 SXM dense bf16)

(LoRA computes no weight gradients for the base, so 6 N overstates its work: no MFU for LoRA.) A
QLoRA recipe is measured on an unquantized base: bitsandbytes quantizes weights only when it loads
them. Figures, not asserts; benchmarks/gpu_long_context.sh runs the long-context set on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

# Mistral-7B-v0.2's published architecture (32K window, no sliding window)
MISTRAL_7B = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=32768,
    rope_theta=1e6,
    sliding_window=None,
)
# Mistral's layout at toy size, with its 32K vocabulary (the Mistral tokenizer pads the batches)
TINY_MISTRAL = dict(MISTRAL_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
TINY_MISTRAL.update(num_key_value_heads=2)
# Mistral-Nemo-Base/Instruct-2407's published architecture (12.2B parameters, 128K-token training window)
MISTRAL_NEMO_12B = dict(
    vocab_size=131072,
    hidden_size=5120,
    intermediate_size=14336,
    num_hidden_layers=40,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=1024000,
    rope_theta=1e6,
    rms_norm_eps=1e-5,
    sliding_window=None,
    tie_word_embeddings=False,
)
ARCHS = {"mistral-7b": MISTRAL_7B, "tiny-mistral": TINY_MISTRAL, "mistral-nemo-12b": MISTRAL_NEMO_12B}
# the tokenizer file the trainer needs for its pad token, per built-in architecture (default: Mistral-7B's)
TOKENIZERS = {"mistral-nemo-12b": "pkg://mistral_common/data/tekken_240718.json"}
MISTRAL_TOKENIZER = "pkg://mistral_common/data/tokenizer.model.v1"


def rows(n: int, seq_len: int, vocab: int, answer: int = 64) -> list[dict]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        ids = [rng.randrange(100, vocab) for _ in range(seq_len)]
        out.append({"input_ids": ids, "completion_mask": [0] * (seq_len - answer) + [1] * answer})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--arch", choices=["from-config", *ARCHS], default="from-config")
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument(
        "--steps", type=int, default=4, help="optimizer steps measured after one warm-up step (0: memory only)"
    )
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument("--out", help="also append the report as one JSON line to this file")
    parser.add_argument("--name", help="a label for the report")
    args, rest = parser.parse_known_args()

    from in2.train.allocator import expandable_segments

    expandable_segments()  # as `in2 train` does, before anything touches the GPU
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, MistralConfig
    from trl import SFTTrainer, get_peft_config

    from in2.train import optim, sft, tiling
    from in2.train.model import attention_implementation, model_path, set_rope_theta

    script_args, training_args, model_args, _ = sft.parse(["--config", args.config, *rest])
    sft.resolve_recipe(training_args)
    optim.check(script_args, training_args, model_args)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        print("random weights are not quantized: measuring on an unquantized base", file=sys.stderr)
    if args.arch in ARCHS:
        config = MistralConfig(**ARCHS[args.arch])
    else:
        config = AutoConfig.from_pretrained(model_path(model_args))
    if model_args.rope_theta is not None:
        set_rope_theta(config, model_args.rope_theta)
    config.use_cache = False
    attn = attention_implementation(model_args.attn_implementation) or "sdpa"
    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    params = model.num_parameters()  # before LoRA adds its adapters to the same modules

    training_args.max_steps = args.steps + 1
    training_args.gradient_accumulation_steps = args.accumulation
    training_args.per_device_train_batch_size = 1
    training_args.max_length = args.seq_len
    training_args.packing = training_args.padding_free = False
    training_args.eval_strategy = "no"
    training_args.save_strategy = "no"
    training_args.logging_steps = 1
    training_args.report_to = []
    training_args.output_dir = "/tmp/in2-bench"
    n = (args.steps + 1) * args.accumulation
    data = Dataset.from_list(rows(n, args.seq_len, config.vocab_size))

    timer = Timer(device)
    cls_and_kwargs = optim.optimizer_cls_and_kwargs(script_args, training_args)
    tokenizer = model_path(model_args) if args.arch == "from-config" else TOKENIZERS.get(args.arch, MISTRAL_TOKENIZER)
    tiling.check(script_args.tiled_mlp_tokens, "NO")
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=data,
        peft_config=get_peft_config(model_args),
        callbacks=[timer, *tiling.callbacks(script_args.tiled_mlp_tokens)],
        processing_class=_tokenizer(tokenizer),
        optimizer_cls_and_kwargs=cls_and_kwargs,
    )
    report = {
        "name": args.name,
        "recipe": args.config,
        "arch": args.arch,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "device_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if device == "cuda"
        else None,
        "attention": attn,
        "seq_len": args.seq_len,
        "params": params,
        "dtype": str(model.dtype).removeprefix("torch."),
        "lora": bool(model_args.use_peft),
        "optimizer": optim.describe(training_args, cls_and_kwargs),
        "liger_kernels": bool(training_args.use_liger_kernel),
        "activation_checkpointing": bool(training_args.activation_checkpointing),
        "activation_offloading": bool(training_args.activation_offloading),
        "tiled_mlp_tokens": script_args.tiled_mlp_tokens,
        "allocator": os.environ.get("PYTORCH_ALLOC_CONF") or os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.train()
        if device == "cuda":
            torch.cuda.synchronize()
        report["oom"] = False
    except torch.OutOfMemoryError as e:
        report["oom"] = True
        report["error"] = str(e).splitlines()[0]
    report["tiled_mlp"] = tiling.describe(trainer)  # what the callback tiled, not what was asked
    if not report["oom"]:
        report["first_step_s"] = round(timer.first, 2)
    if not report["oom"] and args.steps:
        elapsed = time.perf_counter() - timer.started
        tokens = args.steps * args.accumulation * args.seq_len
        flops_per_token = 6 * params + 12 * config.num_hidden_layers * config.hidden_size * args.seq_len
        mfu = tokens / elapsed * flops_per_token / (args.peak_tflops * 1e12)
        report["tokens_per_s_per_device"] = round(tokens / elapsed, 1)
        report["s_per_micro_step"] = round(elapsed / (args.steps * args.accumulation), 3)
        report["mfu"] = round(mfu, 4) if device == "cuda" and not model_args.use_peft else None
    if device == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        report["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    report["command"] = " ".join(sys.argv)
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(report) + "\n")
    if report["oom"]:
        sys.exit(1)  # no --json report: a run that did not fit has no throughput to read
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


class Timer(TrainerCallback):
    """Times the first optimizer step (kernel compilation, allocator growth, optimizer states) on its own
    and starts the clock for the measured steps after it."""

    def __init__(self, device: str):
        self.device, self.started, self.first = device, None, None

    def _now(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.started = self._now()
            self.first = self.started - self.began


def _tokenizer(path: str):
    """A tokenizer only for the trainer's pad token; the rows are already token ids."""
    from transformers import AutoTokenizer

    from in2.assets import resolve
    from in2.tokenizer import staged

    tok = AutoTokenizer.from_pretrained(str(staged(Path(resolve(path)))))
    tok.pad_token = tok.pad_token or tok.unk_token or tok.eos_token
    return tok


if __name__ == "__main__":
    main()
