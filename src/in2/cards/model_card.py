"""The model card: YAML header (huggingface_hub ModelCardData) and a body from the card template beside this
module; written by training (in2.train.sft), refreshed with results by evaluation (in2.evaluation.suite)."""

from __future__ import annotations

import json
from pathlib import Path

from in2 import cards
from in2.assets import packaged
from in2.versions import versions

CARD_TEMPLATE = "model_card.md.j2"
EVAL_RESULTS = "eval_results.json"
CONTEXT = "in2_card.json"  # what the card was rendered from, so evaluation can render it again
PACKAGES = ("in2", "trl", "transformers", "torch", "datasets", "peft", "accelerate", "deepspeed")


def read_eval_results(folder: str | Path) -> dict | None:
    """`eval_results.json` of a checkpoint folder: {"results": [{"task", "metric", "value"}], "plots": [...]}."""
    path = Path(folder) / EVAL_RESULTS
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    rows = data.get("results")
    if not isinstance(rows, list) or any(not {"task", "metric", "value"} <= set(r) for r in rows):
        raise ValueError(f"{path}: 'results' must be a list of objects with task, metric and value")
    return {
        "summary": data.get("summary"),
        "results": rows,
        "plots": list(data.get("plots", [])),
        "model_index": list(data.get("model_index", [])),
    }


def header(ctx: dict) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    tags = ["in2", "film-7b", "long-context", "lost-in-the-middle", "trl", "sft"]
    adapter = ctx["method"] != "full fine-tune" and not ctx.get("merged_from")  # in2 export merges LoRA
    if ctx["method"] != "full fine-tune":
        tags.append("lora")
    dataset = ctx["dataset"]["name"]
    data = ModelCardData(
        base_model=ctx.get("base_model"),
        datasets=[dataset] if dataset and not Path(dataset).exists() else None,
        license=ctx.get("license"),
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        model_name=ctx["model_name"],
        tags=tags,
        eval_results=[EvalResult(**r) for r in (ctx.get("evaluation") or {}).get("model_index", [])] or None,
    )
    return data.to_yaml()


def markdown(ctx: dict) -> str:
    """The card's markdown for `ctx` (built by in2.train.sft)."""
    ctx = {**ctx, "evaluation": read_eval_results(ctx["output_dir"]), "versions": versions(PACKAGES)}
    return cards.render(packaged(__package__, CARD_TEMPLATE), header=header(ctx), **ctx)


def write(folder: str | Path, ctx: dict) -> Path:
    """Render the card into `folder`/README.md and keep its inputs in `folder`/in2_card.json."""
    from in2 import redact

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = redact.data({**ctx, "output_dir": str(folder)})
    (folder / CONTEXT).write_text(json.dumps(ctx, indent=2, ensure_ascii=False) + "\n")
    path = folder / "README.md"
    path.write_text(markdown(ctx))
    return path


def refresh(folder: str | Path) -> Path:
    """Render the card of a trained folder again, e.g. after evaluation wrote eval_results.json."""
    path = Path(folder) / CONTEXT
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a folder written by `in2 train` (no card context to render from)")
    return write(folder, json.loads(path.read_text()))


PUSHED = ["README.md", EVAL_RESULTS, "plots/*"]
"""What `in2 eval --push-card` uploads from a model folder: the card and what it shows, never weights."""


def check_folder(folder: str | Path) -> Path:
    """The card context of `folder`, a folder `in2 train` or `in2 export` wrote; a ConfigError naming model_card
    if it is not one (checked before an evaluation runs, not after its suites)."""
    from in2.errors import ConfigError

    path = Path(folder) / CONTEXT
    if not path.is_file():
        raise ConfigError(f"model_card: {folder} has no {CONTEXT}: not a folder written by `in2 train` or `in2 export`")
    return path


def push_target(folder: str | Path | None, repo_id: str | None = None, api=None) -> str:
    """The model repo the card of `folder` goes to (`repo_id`, else the hub_model_id it was trained with),
    checked before an evaluation runs: a folder with a card, a repo id, a Hub token."""
    from in2.errors import ConfigError

    if folder is None:
        raise ConfigError("--push-card: set model_card to the evaluated model's folder (its card is what is pushed)")
    path = check_folder(folder)
    repo_id = repo_id or json.loads(path.read_text()).get("hub_model_id")
    if not repo_id or "/" not in repo_id:
        raise ConfigError(f"--push-card: give the model repo, --push-card org/name ({folder} names none)")
    if api is None:
        from huggingface_hub import get_token

        if not get_token():
            raise ConfigError("--push-card: no Hugging Face token; set HF_TOKEN or run `hf auth login`")
    return repo_id


def push(folder: str | Path, repo_id: str, api=None) -> str:
    """Upload the card of `folder` (README.md with its model-index), eval_results.json and plots to `repo_id`'s
    main branch; returns the commit id."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        allow_patterns=PUSHED,
        commit_message="in2 eval: scores in the model card",
    )
    return getattr(commit, "oid", "")
