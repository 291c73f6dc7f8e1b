"""LongBench's 9 English tasks as the paper (arXiv 2404.16811) reports them, run and scored
the way LongBench's own scripts do, so the numbers compare with LongBench's and the paper's.

- Prompts: LongBench's config/dataset2prompt.json at a pinned revision, downloaded once and checked
  against its sha256 (`longbench.prompts: official`), or in2's own wording (`in2`:
  in2/prompts/longbench_in2.json, same shape; marked not comparable), or a file of that shape.
- Truncation as LongBench's pred.py: the prompt is tokenized with the model's own tokenizer, special
  tokens (BOS) included; if that is more than `max_input_tokens`, the first and last
  max_input_tokens // 2 tokens are decoded (special tokens dropped) and joined.
- Greedy decoding with each task's max new tokens.
- Scoring (`longbench.scoring`): `longbench` is LongBench's official scorer, token F1 for QA and the
  `rouge` package's ROUGE-L F for summaries; `film` adds FILM's rules (QA predictions cut at their
  first blank line, null predictions skipped), the scorer behind the paper's table.

Data: a folder of LongBench's `<task>.jsonl` files, or a Hub dataset repo whose data.zip holds them
(THUDM/LongBench), downloaded once. Rows need `context`, `input` and `answers`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from in2.assets import jsonl_folder, packaged
from in2.errors import ConfigError
from in2.evaluation import metrics
from in2.evaluation.config import EvalConfig, EvalModelConfig, LongBenchConfig
from in2.evaluation.download import fetch_checked
from in2.evaluation.runner import predictions_path, run_named
from in2.evaluation.tasks import LONGBENCH_TASKS
from in2.jsonl import read_jsonl
from in2.llm import Engine, Request
from in2.prompts import IN2_LONGBENCH
from in2.tokenizer import TokenizerConfig, load_tokenizer

_FIELDS = re.compile(r"\{(context|input)\}")


def truncate_middle(ids: list[int], limit: int) -> list[int]:
    """LongBench's cut: more than `limit` ids keep the first and the last `limit // 2`."""
    if len(ids) <= limit:
        return ids
    half = limit // 2
    return ids[:half] + ids[len(ids) - half :]


def load_prompts(lb: LongBenchConfig) -> tuple[dict[str, str], dict]:
    """The prompts `lb.prompts` names, and where they come from: {"prompts", "sha256",
    "comparable"} (+ "url" for the official file). A file whose sha256 is `lb.prompts_sha256` is
    LongBench's official one, wherever it was read from."""
    source: dict = {"prompts": lb.prompts}
    if lb.prompts == "in2":
        path = packaged("in2.prompts", IN2_LONGBENCH)
    elif lb.prompts == "official":
        source["url"] = lb.prompts_url.replace("{revision}", lb.prompts_revision)
        path = Path.home() / ".cache" / "in2" / "longbench" / "prompts" / lb.prompts_revision / "dataset2prompt.json"
        fetch_checked(
            source["url"],
            path,
            "longbench.prompts",
            "LongBench's prompts",
            "put LongBench's config/dataset2prompt.json in a file and set longbench.prompts to its path",
            lb.prompts_sha256,
            "longbench.prompts_sha256",
        )
    else:
        path = Path(lb.prompts)
        if not path.is_file():
            raise FileNotFoundError(f"longbench.prompts: {path} does not exist (official, in2 or a JSON file)")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"longbench.prompts: {path} is not JSON ({e})") from None
    missing = [t for t in LONGBENCH_TASKS if not isinstance(data, dict) or not isinstance(data.get(t), str)]
    if missing:
        raise ConfigError(f"longbench.prompts: {path} has no prompt for {', '.join(missing)}")
    source["sha256"] = digest
    source["comparable"] = lb.prompts == "official" or (lb.prompts != "in2" and digest == lb.prompts_sha256)
    return data, source


def load_rows(source: str, task: str, max_samples: int | None, revision: str | None = None) -> list[dict]:
    """A task's rows from a folder of `<task>.jsonl` files (or a Hub repo's data.zip at `revision`, see
    in2.assets.jsonl_folder)."""
    path = jsonl_folder(source, revision=revision) / f"{task}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"longbench.data: {path} does not exist")
    rows = read_jsonl(path, required=("context", "input", "answers"))
    return rows[:max_samples] if max_samples else rows


class Prompter:
    """Render a row with its task's prompt and cut it in the middle as LongBench does (module docstring)."""

    def __init__(self, tokenizer, prompts: dict[str, str], max_input_tokens: int):
        self.tok, self.prompts, self.limit = tokenizer, prompts, max_input_tokens

    def __call__(self, task: str, row: dict) -> str:
        text = _FIELDS.sub(lambda m: row[m.group(1)], self.prompts[task])
        ids = self.tok(text)["input_ids"]  # with the special tokens the model's tokenizer adds, as LongBench counts
        if len(ids) <= self.limit:
            return text
        kept = truncate_middle(ids, self.limit)
        half = self.limit // 2
        return self.tok.decode(kept[:half], skip_special_tokens=True) + self.tok.decode(
            kept[half:], skip_special_tokens=True
        )


def model_tokenizer(cfg: EvalConfig, index: int):
    """The tokenizer that counts and cuts the prompts of `cfg.models[index]` (LongBenchConfig.tokenizer)."""
    if cfg.longbench.tokenizer == "eval":
        return load_tokenizer(cfg.tokenizer)
    model = cfg.models[index]
    if model.tokenizer is not None:
        return load_tokenizer(model.tokenizer, f"models[{index}].tokenizer", chat=False)
    own = TokenizerConfig(name_or_path=model.generator.model, gguf_file=model.generator.gguf_file, chat_template=None)
    try:
        return load_tokenizer(own, f"models[{index}].generator.model", chat=False)
    except ConfigError as e:
        raise ConfigError(
            f"{e}; LongBench cuts prompts with each model's own tokenizer: set models[{index}].tokenizer, "
            "or longbench.tokenizer: eval to use the recipe's tokenizer"
        ) from None


def run(cfg: EvalConfig, index: int, out_dir: str | Path, prompts: dict[str, str], tokenizer=None) -> dict[str, dict]:
    """Answer and score every configured task for `cfg.models[index]`; returns {task: score_task's dict}."""
    lb = cfg.longbench
    model: EvalModelConfig = cfg.models[index]
    prompter = Prompter(tokenizer or model_tokenizer(cfg, index), prompts, lb.max_input_tokens)
    jobs, refs = {}, {}
    for task in lb.tasks:
        rows = load_rows(lb.data, task, lb.max_samples, lb.data_revision)
        limit = LONGBENCH_TASKS[task][1]
        if lb.prompt_format == "raw":
            jobs[f"longbench_{task}"] = [
                Request.text(lb.raw_template.replace("{prompt}", prompter(task, r)), max_tokens=limit) for r in rows
            ]
        else:
            jobs[f"longbench_{task}"] = [Request.user(prompter(task, r), max_tokens=limit) for r in rows]
        refs[task] = [list(r["answers"]) for r in rows]
    engine = Engine(model.generator)
    try:
        run_named(jobs, out_dir, engine)
    finally:
        engine.close()
    return {task: score_task(task, out_dir, refs[task], lb.scoring) for task in lb.tasks}


def score_task(task: str, out_dir: str | Path, references: list[list[str]], scoring: str) -> dict:
    from in2.evaluation.probing.score import read_predictions

    predictions = read_predictions(predictions_path(out_dir, f"longbench_{task}"))
    if len(predictions) != len(references):
        raise ValueError(f"longbench {task}: {len(predictions)} predictions for {len(references)} rows")
    return score(task, predictions, references, scoring)


def score(task: str, predictions: list[str | None], references: list[list[str]], scoring: str) -> dict:
    """A task's score in percent under `scoring`: `longbench` (a null prediction scores as empty) or
    `film` (null predictions are skipped; a QA prediction is cut at its first blank line)."""
    name, size = LONGBENCH_TASKS[task]
    pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if p is not None or scoring != "film"]
    texts = [p or "" for p, _ in pairs]
    if scoring == "film" and name == "qa_f1":
        texts = [t.split("\n\n")[0] for t in texts]
    value = metrics.load(name).compute(predictions=texts, references=[r for _, r in pairs])[name] if pairs else 0.0
    return {
        "metric": name,
        "scoring": scoring,
        "max_new_tokens": size,
        "n": len(pairs),
        "skipped": len(predictions) - len(pairs),
        "score": 100 * value,
    }


def average(results: dict[str, dict]) -> float:
    return sum(r["score"] for r in results.values()) / len(results) if results else float("nan")


def not_comparable(scoring: str, prompts: dict) -> list[str]:
    """Why scores run with these prompts (load_prompts' source) and scoring cannot stand beside the
    paper's table; empty when they can."""
    why = []
    if scoring != "film":
        why.append(f"`{scoring}` scoring, not the `film` scoring of the paper's table")
    if not prompts["comparable"]:
        why.append("in2's own prompts" if prompts["prompts"] == "in2" else f"prompts from {prompts['prompts']}")
    return why


def describe(scoring: str, prompts: dict) -> str:
    """One line saying how the scores were made, for tables and cards."""
    if prompts["prompts"] == "official":
        shown = "LongBench's official prompts"
    elif prompts["prompts"] == "in2":
        shown = "in2's own prompts (not LongBench's: comparable with neither LongBench's nor the paper's numbers)"
    else:
        shown = f"prompts from {prompts['prompts']}" + (" (LongBench's official file)" if prompts["comparable"] else "")
    return f"scoring `{scoring}`, {shown}"
