"""`in2 doctor --config RECIPE`: check, before anything runs or is paid for, what a recipe needs on this machine.

One row per check: packages and kernels, CUDA and GPU memory against the recipe's measured need
(in2.measured), the tokenizer, the dataset at its revision, the generator endpoint and its model, free disk
against the run's size, a Hub token that can write where the recipe pushes, and the output folder. A row is
`ok`, `warn` (runs, but slower or without a feature), `BLOCKER` (the run would fail) or `skip` (not needed
by this recipe). Network checks name what they reached; none sends a paid request."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from in2 import measured, redact

OK, WARN, BLOCKER, SKIP = "ok", "warn", "BLOCKER", "skip"
GIB = 2**30


@dataclass
class Row:
    check: str
    status: str
    detail: str


def recipe_key(path: str | Path) -> str:
    """`<recipe folder>/<file>`, the key of in2.measured's tables."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def recipe_kind(raw: dict) -> str:
    """`synth`, `eval` or `train`, from the recipe's top-level fields."""
    if "corpus" in raw or "mixture" in raw:
        return "synth"
    if "suites" in raw or "models" in raw or "probes" in raw:
        return "eval"
    return "train"


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


FILM_INSTALL = 'pip install -e ".[film]"'
INSTALL = {"flash-attn": "pip install flash-attn --no-build-isolation", "bitsandbytes": "pip install bitsandbytes"}
"""How to install what `pip install -e ".[film]"` leaves out."""


def package(dist: str, needed: str | None, missing: str = BLOCKER) -> Row:
    """A distribution's row: its version, or `missing` when it is absent and `needed` says why; `skip` when
    it is absent and not needed."""
    v = version(dist)
    if v:
        return Row(dist, OK, v + (f" ({needed})" if needed else ""))
    if needed:
        how = INSTALL.get(dist, FILM_INSTALL)
        return Row(dist, missing, f"not installed; needed: {needed} ({how})")
    return Row(dist, SKIP, "not installed; not needed by this recipe")


def cuda_rows(key: str, need_gpu: bool) -> list[Row]:
    """CUDA, and each GPU's memory against the recipe's figure."""
    import torch

    if not torch.cuda.is_available():
        if need_gpu:
            return [Row("CUDA", BLOCKER, f"no CUDA device (torch {torch.__version__}); this recipe trains on GPUs")]
        return [Row("CUDA", SKIP, f"no CUDA device; this recipe runs on CPU (torch {torch.__version__})")]
    n = torch.cuda.device_count()
    props = [torch.cuda.get_device_properties(i) for i in range(n)]
    rows = [Row("CUDA", OK, f"torch {torch.__version__}, CUDA {torch.version.cuda}; {n} x {props[0].name}")]
    rows.append(memory_row(key, [p.total_memory / GIB for p in props]))
    return rows


def memory_row(key: str, totals_gib: list[float]) -> Row:
    """The smallest GPU's memory against the recipe's peak per GPU (in2.measured.GPU_MEMORY_GIB)."""
    have = min(totals_gib)
    need = measured.GPU_MEMORY_GIB.get(key)
    if need is None:
        return Row(
            "GPU memory", WARN if key in measured.GPU_MEMORY_GIB else SKIP, f"{have:.1f} GiB; no figure for {key}"
        )
    detail = f"{have:.1f} GiB per GPU, recipe needs {need.value:.1f} GiB ({need.label()})"
    return Row("GPU memory", OK if have >= need.value else BLOCKER, detail)


def tokenizer_row(name_or_path: str, gguf_file: str | None, chat_template: str | None) -> Row:
    from in2.tokenizer import TokenizerConfig, load_tokenizer

    try:
        tok = load_tokenizer(TokenizerConfig(name_or_path, gguf_file, chat_template), chat=False)
    except Exception as e:  # noqa: BLE001 (any failure to load is the finding)
        return Row("tokenizer", BLOCKER, f"{name_or_path}: {first_line(e)}")
    return Row("tokenizer", OK, f"{name_or_path}: {type(tok).__name__}, {len(tok):,} tokens")


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return redact.text(f"{type(e).__name__}: {text[0] if text else ''}")


def dataset_row(check: str, source: str, revision: str | None = None) -> Row:
    """A local dataset path exists, or the Hub dataset resolves at `revision`."""
    if source.startswith("builtin:"):
        return Row(check, OK, f"{source} (ships with in2)")
    p = Path(source)
    if p.exists() or any(c in source for c in "*?") or source.startswith((".", "/")):
        if not p.exists() and not list(Path().glob(source)):
            return Row(check, BLOCKER, f"{source}: no such file or folder")
        return Row(check, OK, f"{source} (local)")
    from huggingface_hub import HfApi

    try:
        info = HfApi().dataset_info(source, revision=revision)
    except Exception as e:  # noqa: BLE001
        return Row(
            check, BLOCKER, f"{source}: no such local folder, and @{revision or 'main'} not on the Hub: {first_line(e)}"
        )
    return Row(check, OK, f"{source}@{revision or 'main'} -> commit {info.sha[:10]}")


def endpoint_row(check: str, gen) -> Row:
    """An OpenAI-compatible generator answers /models and lists its model (no completion is requested)."""
    if gen.backend != "openai":
        return Row(check, SKIP, f"backend {gen.backend}: the model runs in this process")
    import openai

    key = os.environ.get(gen.api_key_env)
    if not key and gen.base_url is None:
        return Row(check, BLOCKER, f"${gen.api_key_env} is not set (needed for the OpenAI API)")
    where = redact.url(gen.base_url) or "the OpenAI API"
    try:
        client = openai.OpenAI(api_key=key or "EMPTY", base_url=gen.base_url, timeout=20, max_retries=0)
        ids = [m.id for m in client.models.list()]
    except Exception as e:  # noqa: BLE001
        return Row(check, BLOCKER, f"{where} does not answer /models: {first_line(e)}")
    if gen.model not in ids:
        return Row(check, BLOCKER, f"{where} answers but does not list {gen.model!r} ({', '.join(ids[:5])})")
    return Row(check, OK, f"{where} lists {gen.model!r}")


def disk_row(folder: str, need_bytes: float | None, what: str) -> Row:
    """Free space where `folder` will be written against the run's size."""
    p = Path(folder).absolute()
    while not p.exists():
        p = p.parent
    free = shutil.disk_usage(p).free
    if need_bytes is None:
        return Row("disk", SKIP, f"{free / 1e9:,.0f} GB free at {p}; no size figure for this recipe")
    detail = f"{free / 1e9:,.0f} GB free at {p}, the run writes ~{need_bytes / 1e9:,.0f} GB ({what})"
    return Row("disk", OK if free >= need_bytes else BLOCKER, detail)


def output_row(folder: str) -> Row:
    """The folder, or the nearest folder above it that exists, takes a file (nothing is left behind)."""
    p = Path(folder).absolute()
    while not p.exists():
        p = p.parent
    try:
        with tempfile.NamedTemporaryFile(dir=p):
            pass
    except OSError as e:
        return Row("output folder", BLOCKER, f"{folder}: cannot write in {p} ({e.strerror or e})")
    return Row("output folder", OK, f"{folder}: writable" + ("" if p == Path(folder).absolute() else f" (in {p})"))


def hub_token_row(pushes: bool, repo: str | None) -> Row:
    """A Hub token that may write, where the recipe pushes."""
    if not pushes:
        return Row("HF token", SKIP, "the recipe does not push to the Hub")
    from huggingface_hub import HfApi

    try:
        who = HfApi().whoami()
    except Exception as e:  # noqa: BLE001
        return Row(
            "HF token", BLOCKER, f"push_to_hub is on but no usable token (HF_TOKEN or `hf auth login`): {first_line(e)}"
        )
    token = who.get("auth", {}).get("accessToken", {})
    role = token.get("role")
    scoped = [s for p in token.get("fineGrained", {}).get("scoped", []) for s in p.get("permissions", [])]
    can_write = role == "write" or (role == "fineGrained" and any(s.endswith(".write") for s in scoped))
    where = f" for {repo}" if repo else ""
    if not can_write:
        return Row("HF token", BLOCKER, f"user {who.get('name')}'s token is {role!r}: it cannot write{where}")
    return Row("HF token", OK, f"user {who.get('name')}, {role} token{where}")


def accelerate_rows(accelerate_config: str | None) -> list[Row]:
    if accelerate_config is None:
        return [package("deepspeed", None)]
    raw = yaml.safe_load(Path(accelerate_config).read_text()) or {}
    deepspeed = raw.get("distributed_type") == "DEEPSPEED" or "deepspeed_config" in raw
    return [package("deepspeed", f"{accelerate_config} launches DeepSpeed" if deepspeed else None)]


def train_rows(path: str, raw: dict, accelerate_config: str | None) -> list[Row]:
    from in2 import budget

    key = recipe_key(path)
    need_gpu = not raw.get("use_cpu", False)
    rows = [package(d, "the training stack") for d in ("torch", "transformers", "trl", "peft", "accelerate")]
    rows += cuda_rows(key, need_gpu)
    liger = "use_liger_kernel: true (without it: slower, more memory)" if raw.get("use_liger_kernel") else None
    rows.append(package("liger-kernel", liger, WARN if need_gpu else SKIP))
    flash = raw.get("attn_implementation") == "flash_attention_2"
    rows.append(package("flash-attn", "attn_implementation: flash_attention_2 (else SDPA)" if flash else None, WARN))
    rows += accelerate_rows(accelerate_config)
    rows.append(package("torch-optimi", "kahan_summation: true" if raw.get("kahan_summation") else None))
    rows.append(package("bitsandbytes", "load_in_4bit: true (QLoRA)" if raw.get("load_in_4bit") else None))
    model = str(raw.get("model_name_or_path", ""))
    rows.append(tokenizer_row(model, raw.get("gguf_file"), None))
    rows.append(dataset_row("dataset", str(raw.get("dataset_name", "")), raw.get("dataset_revision")))
    out = str(raw.get("output_dir", "trainer_output"))
    disk = budget.train_disk_bytes(key, raw.get("save_total_limit"))
    rows.append(disk_row(out, disk.value if disk else None, disk.label() if disk else ""))
    rows.append(hub_token_row(bool(raw.get("push_to_hub")), raw.get("hub_model_id")))
    rows.append(output_row(out))
    return rows


def synth_rows(path: str) -> list[Row]:
    from in2.recipes import load_config
    from in2.synth.config import SynthConfig

    cfg = load_config(SynthConfig, path, [])
    t = cfg.tokenizer
    mistral = "the recipe's Mistral tokenizer" if "mistral_common" in t.name_or_path else None
    rows = [
        package("mistral-common", mistral),
        package("openai", "the generator" if cfg.generator.backend == "openai" else None),
    ]
    rows.append(tokenizer_row(t.name_or_path, t.gguf_file, t.chat_template))
    rows.append(dataset_row("corpus", cfg.corpus.source))
    if cfg.mixture.general:
        rows.append(dataset_row("general data", cfg.general.source))
    rows.append(endpoint_row("generator", cfg.generator))
    rows_total = sum(getattr(cfg.mixture, p) for p in ("fine_grained", "integration", "short", "general"))
    per_row = measured.RELEASE_BYTES_PER_ROW
    sharded = cfg.num_shards > 1 or rows_total > 100_000
    need = rows_total * per_row.value * (2 if sharded else 1)
    what = f"{rows_total:,} rows{', shards and release' if sharded else ''}; {per_row.label()}"
    rows.append(disk_row(cfg.output_dir, need, what))
    rows.append(output_row(str(Path(cfg.output_dir).parent)))
    return rows


def serve_row(check: str, serve) -> Row:
    """A model whose server `in2 eval` starts (serve:): its executable is on PATH."""
    import shutil

    exe = (serve.command or ["vllm"])[0]
    if shutil.which(exe) is None:
        return Row(check, BLOCKER, f"in2 eval starts it with `{exe}`, which is not on PATH (pip install vllm)")
    return Row(check, OK, f"in2 eval starts it with {exe} ({shutil.which(exe)})")


def eval_rows(path: str) -> list[Row]:
    from in2.evaluation.config import EvalConfig
    from in2.recipes import load_config

    cfg = load_config(EvalConfig, path, [])
    rows = [package("lm-eval", 'suites: "short"' if "short" in cfg.suites else None)]
    for m in cfg.models:
        check = f"model {m.name}"
        rows.append(endpoint_row(check, m.generator) if m.serve is None else serve_row(check, m.serve))
    rows.append(output_row(cfg.output_dir))
    return rows


def diagnose(path: str, accelerate_config: str | None = None) -> list[Row]:
    """Every check `path` (a synth, train or eval recipe) needs, in table order."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    kind = recipe_kind(raw)
    if kind == "synth":
        return synth_rows(path)
    if kind == "eval":
        return eval_rows(path)
    return train_rows(path, raw, accelerate_config)


def table(rows: list[Row]) -> str:
    lines = ["| check | status | detail |", "|---|---|---|"]
    lines += [f"| {r.check} | {r.status} | {r.detail.replace('|', '/')} |" for r in rows]
    return "\n".join(lines)
