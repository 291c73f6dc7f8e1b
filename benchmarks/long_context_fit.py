"""Peak GPU memory of long-context training as a straight line per setup, and the longest sequence it allows.

    python benchmarks/long_context_fit.py results.jsonl            # every run, the lines, their check
    python benchmarks/long_context_fit.py results.jsonl --predict lora12b_tiled --capacity 79.1   # one length

Reads the JSON lines benchmarks/train_throughput.py appends (`--out`). With FlashAttention/SDPA,
activation checkpointing and a loss that never materializes the logits, every tensor that grows with the
sequence grows linearly, so the peak reserved memory of one setup (method, offload, tiling) is
a + b x tokens: a is the weights and optimizer states, b what each token keeps (the checkpointed layer
inputs, layers x hidden x 2 bytes, unless offloaded) plus one layer's recomputation and backward. The check:
each point is predicted from the line through the setup's other points (leave one out), with its error;
the line is trusted where those errors are within 10%. The longest sequence is where the line meets the
GPU's memory less 1 GiB (CUDA context); with activation offloading the saved activations must also fit in
host RAM. A prediction is a prediction: train one step at it before relying on it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

GPUS = {"80 GB (H100/A100)": 79.1, "141 GB (H200)": 139.8}  # GiB that torch sees on each card
HEADROOM_GIB = 1.0
HIDDEN = {"mistral-7b": (32, 4096), "mistral-nemo-12b": (40, 5120)}  # layers, hidden size


def setup(r: dict) -> str:
    """Runs that share everything but the sequence length."""
    kind = "lora" if r["lora"] else "full"
    size = {"mistral-7b": "7b", "mistral-nemo-12b": "12b"}.get(r["arch"], r["arch"])
    name = f"{kind}{size}" + ("_offload" if r["activation_offloading"] else "")
    return name + ("_tiled" if r.get("tiled_mlp") else "")


def load(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def fit(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares line (a, b) through (tokens, GiB); None with fewer than two lengths."""
    if len({s for s, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(s for s, _ in points) / n
    my = sum(m for _, m in points) / n
    b = sum((s - mx) * (m - my) for s, m in points) / sum((s - mx) ** 2 for s, _ in points)
    return my - b * mx, b


def longest(a: float, b: float, capacity_gib: float) -> int:
    return int((capacity_gib - HEADROOM_GIB - a) / b) // 1024 * 1024


def points(runs: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(tokens, peak reserved GiB) of the runs that fitted, per setup."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in runs:
        if r.get("oom") is False and r.get("peak_reserved_gib") is not None:
            out[setup(r)].append((r["seq_len"], r["peak_reserved_gib"]))
    return out


def fits(runs: list[dict]) -> dict[str, tuple[float, float]]:
    return {name: line for name, pts in points(runs).items() if (line := fit(pts)) is not None}


def kept_gib_per_token(r: dict) -> float:
    """What activation checkpointing keeps per token (each layer's input, bf16), whether or not it is offloaded."""
    layers, hidden = HIDDEN[r["arch"]]
    return layers * hidden * 2 / 2**30


def predicted(runs: list[dict], r: dict) -> tuple[float, str] | None:
    """`r`'s peak reserved GiB predicted without `r`: from the line of its sibling setup (the same but for
    activation offload) and the kept activations that offloading moves off the GPU, else from the line
    through its own setup's other lengths; None where neither has two lengths."""
    lines, name = fits(runs), setup(r)
    sibling = setup({**r, "activation_offloading": not r["activation_offloading"]})
    if sibling in lines and r["arch"] in HIDDEN:
        a, b = lines[sibling]
        kept = kept_gib_per_token(r) * (-1 if r["activation_offloading"] else 1)
        return a + (b + kept) * r["seq_len"], f"from {sibling}"
    line = fit([(s, m) for s, m in points(runs)[name] if s != r["seq_len"]])
    return None if line is None else (line[0] + line[1] * r["seq_len"], "from the other lengths")


def host_limit(r: dict, host_gib: float) -> int | None:
    """Tokens whose offloaded activations fill 80% of host RAM."""
    layers, hidden = HIDDEN.get(r["arch"], (None, None))
    if not r["activation_offloading"] or layers is None:
        return None
    return int(0.8 * host_gib * 2**30 / (layers * hidden * 2)) // 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--predict", help="print only the longest sequence for this setup (e.g. lora12b)")
    parser.add_argument("--capacity", type=float, default=79.1, help="GiB of the GPU for --predict")
    parser.add_argument("--host-gib", type=float, default=128.0, help="host RAM, for activation offloading")
    args = parser.parse_args()
    runs = [r for r in load(args.results) if "seq_len" in r]
    lines = fits(runs)
    if args.predict:
        a, b = lines[args.predict]
        example = next(r for r in runs if setup(r) == args.predict)
        limit = host_limit(example, args.host_gib)
        print(min(longest(a, b, args.capacity), limit or 10**9))
        return
    print("| run | setup | tokens | tokens/s | s/step (first step) | peak allocated / reserved GiB | predicted |")
    print("|---|---|---|---|---|---|---|")
    for r in load(args.results):
        if "seq_len" not in r:
            why = "; ".join(f"{k} {v}" for k, v in r.items() if k != "name")
            print(f"| {r.get('name')} | | | {why} | | | |")
            continue
        speed = r.get("tokens_per_s_per_device", "")
        step = f"{r.get('s_per_micro_step', '')} ({r.get('first_step_s', '')})"
        memory = "out of memory" if r["oom"] else f"{r.get('peak_memory_gib')} / {r.get('peak_reserved_gib')}"
        guess = None if r["oom"] else predicted(runs, r)
        error = "" if guess is None else f"{guess[0]:.1f} ({guess[0] / r['peak_reserved_gib'] - 1:+.1%}, {guess[1]})"
        print(f"| {r.get('name')} | {setup(r)} | {r['seq_len']:,} | {speed} | {step} | {memory} | {error} |")
    print(
        "\npredicted: the run's reserved GiB without the run itself: the line of the same setup with the other\n"
        "offload setting, plus or minus the layer inputs checkpointing keeps (layers x hidden x 2 bytes per token),\n"
        "else the line through the setup's other lengths"
    )
    print("\n| setup | GiB = a + b x tokens | " + " | ".join(f"longest on {g}" for g in GPUS) + " |")
    print("|---|---|" + "---|" * len(GPUS))
    for name, (a, b) in sorted(lines.items()):
        example = next(r for r in runs if setup(r) == name)
        limit = host_limit(example, args.host_gib)
        cells = []
        for capacity in GPUS.values():
            n = longest(a, b, capacity)
            cells.append(f"{min(n, limit):,} (host RAM)" if limit is not None and limit < n else f"{n:,}")
        print(f"| {name} | {a:.1f} + {b * 1024:.4f} x K tokens | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
