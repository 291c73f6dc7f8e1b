"""What a FILM-7B run costs in GPU-hours and disk, computed from in2.measured's figures and the recipes' own
fields (benchmarks/budget.py prints the sheet in docs/reproducing-film-7b.md; `in2 doctor` checks disk)."""

from __future__ import annotations

import math

from in2.measured import MEAN_LONG_CONTEXT_TOKENS, REPLY_TOKENS, TOKENS_PER_S_PER_GPU, Figure

MISTRAL_7B = {"params": 7.24e9, "layers": 32, "hidden": 4096, "kv": 1024, "intermediate": 14336}
"""Mistral-7B-v0.2's shape (its config.json): the parameter count the MFU figures in RESULTS.md use."""


def lora_params(shape: dict, r: int = 64) -> float:
    """Adapter parameters of LoRA rank `r` on every linear layer (q, k, v, o, gate, up, down) of each block."""
    h, kv, i = shape["hidden"], shape["kv"], shape["intermediate"]
    per_block = r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)
    return per_block * shape["layers"]


BYTES_PER_PARAM = {
    # a checkpoint: weights + AdamW's two moments (what Trainer saves to resume), then the final weights alone
    "full": (4 + 8, 4, "fp32 weights + fp32 AdamW moments"),
    "full_1gpu": (2 + 4 + 2, 2, "bf16 weights + bf16 AdamW moments + bf16 Kahan buffer"),
    "lora": (4 + 8, 4, "fp32 adapter + fp32 AdamW moments"),
}
RECIPES = {
    "film-7b/sft_full.yaml": "full",
    "film-7b/sft_full_1gpu.yaml": "full_1gpu",
    "film-7b/sft_lora.yaml": "lora",
    "film-7b/sft_qlora.yaml": "lora",
}


def checkpoint_bytes(key: str) -> tuple[float, float, str] | None:
    """(bytes of one resumable checkpoint, bytes of the final weights, what they hold) of a FILM-7B recipe."""
    kind = RECIPES.get(key)
    if kind is None:
        return None
    n = lora_params(MISTRAL_7B) if kind == "lora" else MISTRAL_7B["params"]
    per_ckpt, final, what = BYTES_PER_PARAM[kind]
    return n * per_ckpt, n * final, what


def train_disk_bytes(key: str, save_total_limit: int | None) -> Figure | None:
    """Disk a training run's output_dir reaches: `save_total_limit` checkpoints (all of them when None: not
    bounded, so not computed) plus the final weights."""
    sizes = checkpoint_bytes(key)
    if sizes is None or save_total_limit is None:
        return None
    ckpt, final, what = sizes
    total = ckpt * save_total_limit + final
    return Figure(total, f"{save_total_limit} checkpoints of {ckpt / 1e9:.1f} GB ({what}) + final weights", False)


# --- the budget sheet of docs/reproducing-film-7b.md ---------------------------------------------------------

SHORT_ROW_TOKENS = Figure(2_000, "a short-context row: its source text alone, capped at 4,096 tokens", False)
GENERAL_ROW_TOKENS = Figure(400, "an OpenOrca instruction and response", False)
RATE_LIMITS = ((800_000, 10_000), (2_000_000, 10_000))
"""(tokens per minute, requests per minute) assumed for GPT-4-Turbo: an account's own limits replace them."""
PREFILL_TOKENS_PER_S = Figure(
    20_000, "vLLM serving a 7B model at 32K on one 80 GB GPU, prefill-bound; not measured", False
)
PROBE_ITEMS = {"document": 900, "code": 900, "database": 700}
"""Items (positions) per 32K set that `recipes/film-7b/eval.yaml` builds from FILM's pools (measured: the probe build
in benchmarks/RESULTS.md, Evaluation; FILM's own files hold 800 / 800 / 750)."""
PROBE_PROMPTS = 4 * sum(PROBE_ITEMS.values())
"""VaL probing at 32K, every position of 4 sets per task."""
LONGBENCH_ROWS = 1_750
"""LongBench's 9 English tasks: 200 rows each but multifieldqa_en's 150."""
RULER_PROMPTS = {4096: 13 * 500, 8192: 13 * 500, 16384: 13 * 500, 32768: 13 * 500}
"""RULER in `recipes/film-7b/eval.yaml`: 13 tasks x 500 examples at each of its lengths."""
SHORT_TASK_GPU_HOURS = Figure(1.0, "MMLU 5-shot and HellaSwag dominate", False)
"""The short tasks' GPU time per model."""
VARIANTS = (  # (what, recipe, GPUs)
    ("full fine-tune, FILM-7B's scale (FSDP)", "film-7b/sft_full.yaml", 128),
    ("full fine-tune, one node (FSDP)", "film-7b/sft_full.yaml", 8),
    ("full fine-tune, one GPU (bf16 + Kahan)", "film-7b/sft_full_1gpu.yaml", 1),
    ("LoRA, one node (DDP)", "film-7b/sft_lora.yaml", 8),
    ("LoRA, one GPU", "film-7b/sft_lora.yaml", 1),
    ("QLoRA, one GPU", "film-7b/sft_qlora.yaml", 1),
)
SHORT_TASK_ITEMS = {  # test items per task (the evaluation split lm-eval scores)
    "mmlu": 14_042,
    "boolq": 3_270,
    "race": 1_045,
    "commonsense_qa": 1_221,
    "arc_challenge": 1_172,
    "hellaswag": 10_042,
    "gsm8k": 1_319,
    "minerva_math": 5_000,
}


def tolerance(score: float, n: int) -> float:
    """3 standard errors of the difference of two independent accuracies of `score` percent over `n` items."""
    p = score / 100
    return 300 * math.sqrt(2 * p * (1 - p) / n)


def money(x: float) -> str:
    return f"${x:,.0f}"


def sheet(dry_run: dict, synth: dict, train: dict) -> str:
    """The budget sheet (markdown) from a dry run's report and the FILM-7B synth and full-training recipes."""
    from in2.evaluation.published import LONGBENCH, PROBING_32K, SHORT

    g, m = synth["generator"], synth["mixture"]
    price_in, price_out = g["price_input_per_1m"] / 1e6, g["price_output_per_1m"] / 1e6
    requests, prompt = dry_run["requests"], dry_run["prompt_tokens"]
    cap = dry_run["completion_tokens_at_most"]
    typical = requests * REPLY_TOKENS.value
    out = [
        "Computed by `python benchmarks/budget.py --write` from `benchmarks/film-7b-dry-run.json` (the dry run of "
        "`recipes/film-7b/in2_data.yaml`, Python's documentation standing in for C4), the recipes' fields and "
        "`src/in2/measured.py`; every row not measured says estimate.",
        "",
        f"**API** ({g['model']} at ${g['price_input_per_1m']:g} / ${g['price_output_per_1m']:g} per 1M input / output "
        f"tokens; {requests:,} requests, {prompt:,} prompt tokens, scaled from {dry_run['sampled_requests']:,} "
        "prompts built and counted):",
        "",
        "| | completion tokens | USD |",
        "|---|---|---|",
        f"| bound (estimate: the dry run's prompt tokens, every reply at its {g['max_tokens']}-token cap) | {cap:,} | {money(prompt * price_in + cap * price_out)} |",
        f"| realistic (estimate: {REPLY_TOKENS.value:,.0f} tokens per reply, {REPLY_TOKENS.source}) | {typical:,.0f} | "
        f"{money(prompt * price_in + typical * price_out)} |",
    ]
    if batch := dry_run.get("batch"):
        factor = batch["price_factor"]
        out += [
            f"| realistic through the Batch API (estimate: the realistic row at x{factor:g} the price, "
            f"`generator.backend: openai_batch`; answers "
            f"within 24 hours; {batch['batches']:,} batch files of at most {g.get('batch_max_requests', 50_000):,} "
            f"requests in {batch['waves']} rounds) | {typical:,.0f} | "
            f"{money(factor * (prompt * price_in + typical * price_out))} |",
        ]
    out += [
        "",
        "**Generation time under rate limits** (estimate: the slower of requests and tokens per minute, realistic "
        "replies; limits assumed, your account's replace them):",
        "",
        "| tokens / min | requests / min | hours |",
        "|---|---|---|",
    ]
    for tpm, rpm in RATE_LIMITS:
        hours = max(requests / rpm, (prompt + typical) / tpm) / 60
        out.append(f"| {tpm:,} | {rpm:,} | {hours:,.0f} |")
    long_rows = m["fine_grained"] + m["integration"]
    tokens = (
        long_rows * MEAN_LONG_CONTEXT_TOKENS.value
        + m["short"] * SHORT_ROW_TOKENS.value
        + m["general"] * GENERAL_ROW_TOKENS.value
    )
    out += [
        "",
        f"**Training tokens** (estimate): {tokens / 1e9:.1f}B = {long_rows:,} long rows x "
        f"{MEAN_LONG_CONTEXT_TOKENS.value:,.0f} (measured on an offline corpus, not C4: {MEAN_LONG_CONTEXT_TOKENS.source}) "
        f"+ {m['short']:,} short rows x {SHORT_ROW_TOKENS.value:,.0f} "
        f"(estimate) + {m['general']:,} OpenOrca rows x {GENERAL_ROW_TOKENS.value:,.0f} (estimate).",
        "",
        "**GPU-hours per training variant** (one epoch; tokens/s per GPU measured on one H200 at 32K with random "
        "weights; for more than one GPU the one-GPU rate is assumed, so those rows are estimates: sharding traffic "
        "only lowers it; the paper: about 300 GPU-days on A100-80GB with CPU offload):",
        "",
        "| variant | recipe | GPUs | tokens/s per GPU | GPU-hours | wall-clock |",
        "|---|---|---|---|---|---|",
    ]
    for what, key, gpus in VARIANTS:
        rate = TOKENS_PER_S_PER_GPU[key]
        hours = tokens / rate.value / 3600
        wall = hours / gpus
        wall_s = f"{wall:,.0f} h" if wall < 48 else f"{wall / 24:,.0f} days"
        kind = "measured" if rate.measured and gpus == 1 else "estimate"
        out.append(
            f"| {what} | `{key.split('/')[1]}` | {gpus} | {rate.value:,.0f} ({kind}) | {hours:,.0f} | {wall_s} |"
        )
    train_rows = sum(m[p] for p in ("fine_grained", "integration", "short", "general")) - m["validation_rows"]
    steps = math.ceil(train_rows / train["global_batch_size"])
    saves = steps // train["save_steps"]
    ckpt, final, what = checkpoint_bytes("film-7b/sft_full.yaml")
    local = ckpt * train["save_total_limit"] + final
    out += [
        "",
        f"**Checkpoints** (`sft_full.yaml`: {train_rows:,} training rows / global batch {train['global_batch_size']} = "
        f"{steps:,} steps, a checkpoint every {train['save_steps']} = {saves} checkpoints; estimate from the "
        f"parameter count, {MISTRAL_7B['params'] / 1e9:.2f}B): each holds {ckpt / 1e9:.0f} GB ({what}); "
        f"`save_total_limit: {train['save_total_limit']}` keeps {local / 1e9:.0f} GB on disk with the final "
        f"{final / 1e9:.0f} GB of weights. With `--push_to_hub true` every checkpoint's weights go to their own Hub "
        f"branch (optimizer states stay local): {(saves * final + final) / 1e12:.2f} TB of Hub storage. LoRA "
        f"checkpoints are {checkpoint_bytes('film-7b/sft_lora.yaml')[0] / 1e9:.1f} GB.",
    ]
    rate = PREFILL_TOKENS_PER_S.value * 3600  # prompt tokens per GPU-hour
    probe_tokens = PROBE_PROMPTS * 32_000
    lb_tokens = LONGBENCH_ROWS * 31_500
    ruler_prompts = sum(RULER_PROMPTS.values())
    ruler_tokens = sum(length * n for length, n in RULER_PROMPTS.items())
    eval_hours = (probe_tokens + lb_tokens + ruler_tokens) / rate + SHORT_TASK_GPU_HOURS.value
    out += [
        "",
        f"**Evaluation** (estimate: {PREFILL_TOKENS_PER_S.value:,.0f} prompt tokens/s, {PREFILL_TOKENS_PER_S.source}): "
        f"VaL probing {PROBE_PROMPTS:,} prompts of ~32K tokens, {probe_tokens / 1e6:,.0f}M tokens, ~"
        f"{probe_tokens / rate:.1f} GPU-hours (at most: vLLM's prefix caching computes a set's shared context once); "
        f"LongBench at most {LONGBENCH_ROWS:,} prompts of 31.5K, {lb_tokens / 1e6:,.0f}M, ~{lb_tokens / rate:.1f} at "
        f"most; RULER {ruler_prompts:,} prompts (13 tasks x 500 at 4K, 8K, 16K and 32K), {ruler_tokens / 1e6:,.0f}M, ~"
        f"{ruler_tokens / rate:.1f}; the short tasks ~{SHORT_TASK_GPU_HOURS.value:.0f} ({SHORT_TASK_GPU_HOURS.source}): "
        f"~{eval_hours:.0f} GPU-hours per model; `eval.yaml` scores FILM-7B, Mistral-7B-Instruct-v0.2 and your "
        f"checkpoint: ~{3 * eval_hours:.0f} GPU-hours.",
        "",
        '**What "reproduced" means**: serve FILM-7B\'s released weights (`In2Training/FILM-7B`) beside your checkpoint '
        "and score both with the same `in2 eval --config recipes/film-7b/eval.yaml` on the same servers; yours "
        "reproduces FILM-7B when every metric is within its tolerance of FILM-7B's score there (not of the paper's "
        "table, which other code and servers produced). Tolerance: 3 standard errors of the difference of two "
        "accuracies over the metric's items, at FILM-7B's published score; LongBench's F1 and ROUGE-L are not "
        "accuracies: 2 points per task, 1 on the average (our choice).",
        "",
        "| metric | items | FILM-7B (paper) | tolerance (points) |",
        "|---|---|---|---|",
    ]
    film = PROBING_32K["FILM-7B"]
    for task in ("document", "code", "database"):
        n = 4 * PROBE_ITEMS[task]
        out.append(f"| VaL probing {task}, Avg | {n:,} | {film[task][0]} | {tolerance(film[task][0], n):.1f} |")
    out.append(
        f"| VaL probing All, Avg | {PROBE_PROMPTS:,} | {film['all'][0]} | {tolerance(film['all'][0], PROBE_PROMPTS):.1f} |"
    )
    out.append(
        f"| LongBench, each of 9 tasks | 150-200 | {min(LONGBENCH['FILM-7B'][:-1])}-{max(LONGBENCH['FILM-7B'][:-1])} | 2.0 |"
    )
    out.append(f"| LongBench average | {LONGBENCH_ROWS:,} | {LONGBENCH['FILM-7B'][-1]} | 1.0 |")
    for task, score in SHORT["FILM-7B"].items():
        n = SHORT_TASK_ITEMS[task]
        out.append(f"| {task} | {n:,} | {score} | {tolerance(score, n):.1f} |")
    return "\n".join(out) + "\n"
