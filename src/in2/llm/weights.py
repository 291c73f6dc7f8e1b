"""What a generator answers with, as one fingerprint: request cache keys and prediction files carry it,
so a model retrained at the same path is asked afresh while an unchanged one is answered from the cache.

- local folder: name and sha256 of every top-level file that can change an answer (weights, config,
  generation config, tokenizer, chat template, custom code), skipping what training and evaluation
  write beside them (cards, eval results, optimizer and trainer states); a PEFT adapter adds its base
  model's fingerprint. Hashes are computed once per file version (Cache.digest).
- `gguf_file`: that file's sha256.
- Hub id: the commit the Hub (or, offline, the local cache) has for it.

A server's model (in2.llm.openai_backend) is known by the same fingerprint when `model` is the local
folder the server serves, else by its name and the server's URL.
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatch
from pathlib import Path

from in2.assets import resolve
from in2.llm.cache import Cache
from in2.llm.config import GeneratorConfig

# Files that never change an answer: cards and evaluation output, training and resume states.
IGNORED = (
    "*.md",
    ".*",
    "LICENSE*",
    "eval_results.json",
    "in2_card.json",
    "in2_recipe.yaml",
    "trainer_state.json",
    "training_args.bin",
    "optimizer*",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*",
)


def hub_revision(repo_id: str, repo_type: str = "model", revision: str | None = None) -> str | None:
    """The commit of a Hub repo (at `revision`, None: main) that loading would use: asked from the Hub, or
    offline the one the local cache's ref points at; None when neither knows."""
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision).sha
        except Exception:  # unreachable, unknown or gated: fall back to the cache
            pass
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    folder = f"{repo_type}s--{repo_id.replace('/', '--')}"
    ref = Path(constants.HF_HUB_CACHE) / folder / "refs" / (revision or "main")
    return ref.read_text().strip() if ref.is_file() else None


def describe(ref: str, gguf_file: str | None, cache: Cache) -> dict:
    """What identifies the weights at `ref` (a folder, a file or a Hub id)."""
    path = Path(resolve(ref))
    if path.is_dir() and gguf_file:
        return {"gguf": gguf_file, "sha256": cache.digest(path / gguf_file) if (path / gguf_file).is_file() else None}
    if path.is_file():
        return {"file": path.name, "sha256": cache.digest(path)}
    if not path.is_dir():
        return {"hub": ref, "gguf": gguf_file, "revision": hub_revision(ref)}
    files = {
        p.name: cache.digest(p)
        for p in sorted(path.iterdir())
        if p.is_file() and not any(fnmatch(p.name, pattern) for pattern in IGNORED)
    }
    out: dict = {"files": files}
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base:
            out["base"] = describe(base, None, cache)
    return out


def compute_dtype(cfg: GeneratorConfig) -> str:
    """The dtype the local backend loads the weights in: `cfg.dtype`, except GGUF weights, which load in float32.
    transformers' GGUF kernels compute in float32 (in another dtype every matmul casts its input and output);
    files it dequantizes at load instead, such as SmolLM2's, took half the CPU time in float32 as in bfloat16
    for a 4K-token prompt on an AVX512-BF16 CPU (benchmarks/RESULTS.md), and their 4-bit weights gain nothing
    from bfloat16's range."""
    return "float32" if cfg.gguf_file else cfg.dtype


def fingerprint(cfg: GeneratorConfig, cache: Cache) -> str:
    """The model part of a local model's request cache keys: a hash of the weights and the dtype they run in."""
    blob = json.dumps(
        {"weights": describe(cfg.model, cfg.gguf_file, cache), "dtype": compute_dtype(cfg)}, sort_keys=True
    )
    return "weights-sha256:" + hashlib.sha256(blob.encode()).hexdigest()
