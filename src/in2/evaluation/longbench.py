"""LongBench's 9 English tasks as the paper reports them: prompts with the context first and the
question last, inputs truncated in the middle to a token limit, greedy decoding with each task's
max new tokens, token F1 or ROUGE-L (local evaluate modules), scores in percent.

Data: a folder of LongBench's `<task>.jsonl` files, or a Hub dataset repo whose data.zip holds them
(THUDM/LongBench), downloaded once. Rows need `context`, `input` and `answers`. Prompts: ours (evaluation/longbench_prompts.json,
same shape as LongBench's), or LongBench's own `dataset2prompt.json` via `longbench.prompts`.
"""

from __future__ import annotations

import json
from pathlib import Path

from in2.config import ConfigError, EvalConfig, GeneratorConfig
from in2.evaluation import metrics
from in2.evaluation.runner import predictions_path, run_named
from in2.jsonl import read_jsonl
from in2.llm import Engine, Request

# task -> (metric, max new tokens): paper-notes section 6
TASKS = {
    "narrativeqa": ("qa_f1", 128),
    "qasper": ("qa_f1", 128),
    "multifieldqa_en": ("qa_f1", 64),
    "hotpotqa": ("qa_f1", 32),
    "2wikimqa": ("qa_f1", 32),
    "musique": ("qa_f1", 32),
    "gov_report": ("rouge_l", 512),
    "qmsum": ("rouge_l", 512),
    "multi_news": ("rouge_l", 512),
}
PROMPTS = Path(__file__).parent / "longbench_prompts.json"


def truncate_middle(ids: list[int], limit: int) -> list[int]:
    """Keep the first half and the last half of `limit` tokens (the question sits at the end)."""
    if len(ids) <= limit:
        return ids
    head = limit // 2
    return ids[:head] + ids[len(ids) - (limit - head) :]


def load_prompts(path: str | None) -> dict[str, str]:
    data = json.loads(Path(path or PROMPTS).read_text(encoding="utf-8"))
    missing = [t for t in TASKS if t not in data]
    if missing:
        raise ConfigError(f"longbench.prompts: {path or PROMPTS} has no prompt for {', '.join(missing)}")
    return data


def data_folder(source: str) -> Path:
    """A folder of `<task>.jsonl` files: `source` itself, or a Hub dataset repo's data.zip (LongBench's
    release format) downloaded and unpacked once under ~/.cache/in2/longbench/."""
    folder = Path(source)
    if folder.is_dir():
        return folder
    import zipfile

    from huggingface_hub import hf_hub_download

    target = Path.home() / ".cache" / "in2" / "longbench" / source.replace("/", "--")
    if not target.is_dir():
        archive = hf_hub_download(source, "data.zip", repo_type="dataset")
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(archive) as z:
            z.extractall(partial)
        partial.rename(target)
    inner = [p.parent for p in target.rglob("*.jsonl")]
    return inner[0] if inner else target


def load_rows(source: str, task: str, max_samples: int | None) -> list[dict]:
    """A task's rows from a folder of `<task>.jsonl` files (or a Hub repo's data.zip, see data_folder)."""
    path = data_folder(source) / f"{task}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"longbench.data: {path} does not exist")
    rows = read_jsonl(path, required=("context", "input", "answers"))
    return rows[:max_samples] if max_samples else rows


class Prompter:
    """Render a row with its task's prompt and truncate it in the middle to `max_input_tokens`."""

    def __init__(self, tokenizer, prompts: dict[str, str], max_input_tokens: int):
        self.tok, self.prompts, self.limit = tokenizer, prompts, max_input_tokens

    def __call__(self, task: str, row: dict) -> str:
        text = self.prompts[task].replace("{context}", row["context"]).replace("{input}", row["input"])
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.limit:
            return text
        kept = truncate_middle(ids, self.limit)
        head = self.limit // 2
        return self.tok.decode(kept[:head], skip_special_tokens=True) + self.tok.decode(
            kept[head:], skip_special_tokens=True
        )


def run(cfg: EvalConfig, generator: GeneratorConfig, out_dir: str | Path, tokenizer=None) -> dict[str, dict]:
    """Answer and score every configured task for one model; returns {task: {score, metric, n}}."""
    lb = cfg.longbench
    if tokenizer is None:
        from in2.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    prompter = Prompter(tokenizer, load_prompts(lb.prompts), lb.max_input_tokens)
    jobs, refs = {}, {}
    for task in lb.tasks:
        rows = load_rows(lb.data, task, lb.max_samples)
        limit = TASKS[task][1]
        if lb.prompt_format == "raw":
            jobs[f"longbench_{task}"] = [
                Request.text(lb.raw_template.replace("{prompt}", prompter(task, r)), max_tokens=limit) for r in rows
            ]
        else:
            jobs[f"longbench_{task}"] = [Request.user(prompter(task, r), max_tokens=limit) for r in rows]
        refs[task] = [list(r["answers"]) for r in rows]
    engine = Engine(generator)
    try:
        run_named(jobs, out_dir, engine)
    finally:
        engine.close()
    return {task: score_task(task, out_dir, refs[task]) for task in lb.tasks}


def score_task(task: str, out_dir: str | Path, references: list[list[str]]) -> dict:
    from in2.evaluation.probing.score import read_predictions

    name, size = TASKS[task]
    predictions = read_predictions(predictions_path(out_dir, f"longbench_{task}"))
    if len(predictions) != len(references):
        raise ValueError(f"longbench {task}: {len(predictions)} predictions for {len(references)} rows")
    result = metrics.load(name).compute(predictions=predictions, references=references)
    return {"metric": name, "max_new_tokens": size, "n": len(predictions), "score": 100 * result[name]}


def average(results: dict[str, dict]) -> float:
    return sum(r["score"] for r in results.values()) / len(results) if results else float("nan")
