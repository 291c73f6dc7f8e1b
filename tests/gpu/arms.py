"""Arms of tests/gpu/test_gpu.py's comparisons, each in a process of its own.

python tests/gpu/arms.py liger|eager MODEL DATASET OUT   # Liger patches transformers for the whole process,
    # so an eager arm after a Liger arm in one process is patched too. Prints JSON: the first-step loss
    # (learning rate 0) in fp32 and under bf16 autocast, and what was patched.
python tests/gpu/arms.py probes-cpu MODEL PROBE_DIR CACHE OUT   # greedy fp32 probe answers on the CPU
    # (run with CUDA_VISIBLE_DEVICES empty), to set beside the GPU's
"""

import json
import os
import sys

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ[var] = "1"


def patched(model) -> list[str]:
    """Module forwards and the Mistral RoPE function that are Liger's."""
    from transformers.models.mistral import modeling_mistral

    found = [n for n, m in model.named_modules() if "liger" in getattr(m.forward, "__module__", "")]
    found += [f"{type(m).__name__} (class)" for m in model.modules() if "liger" in type(m).forward.__module__]
    if "liger" in modeling_mistral.apply_rotary_pos_emb.__module__:
        found.append("modeling_mistral.apply_rotary_pos_emb")
    return sorted(set(found))


def liger_arm(liger: bool, model_dir: str, dataset_dir: str, out_dir: str) -> None:
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from in2.train.args import In2ModelConfig
    from in2.train.model import load_model

    rows = load_dataset(dataset_dir, split="train")
    result = {"liger": liger}
    for precision in ("fp32", "bf16"):
        model, tokenizer, _ = load_model(In2ModelConfig(model_name_or_path=model_dir, attn_implementation="sdpa"))
        args = SFTConfig(
            output_dir=f"{out_dir}/{precision}",
            use_liger_kernel=liger,
            bf16=precision == "bf16",
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
        result[precision] = trainer.state.log_history[0]["loss"]
        result["patched"] = patched(trainer.model)
        result["device"] = str(next(trainer.model.parameters()).device)
    print(json.dumps(result))


def probes_cpu(model_dir: str, probe_dir: str, cache: str, out_dir: str) -> None:
    import torch

    from in2.evaluation.probing import run
    from in2.llm.config import GeneratorConfig
    from in2.prompts import MISTRAL_INST
    from in2.recipes import from_dict
    from tests.conftest import local_generator

    assert not torch.cuda.is_available(), "run with CUDA_VISIBLE_DEVICES="
    entry = local_generator("tiny", model_dir, cache, dtype="float32", batch_size=8, max_tokens=8)
    run.run(
        probe_dir,
        ["database_forward_512"],
        from_dict(GeneratorConfig, entry["generator"]),
        out_dir,
        "raw",
        MISTRAL_INST,
    )


if __name__ == "__main__":
    if sys.argv[1] == "probes-cpu":
        probes_cpu(*sys.argv[2:])
    else:
        liger_arm(sys.argv[1] == "liger", *sys.argv[2:])
