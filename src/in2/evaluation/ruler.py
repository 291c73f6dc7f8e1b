"""RULER (Hsieh et al., arXiv 2404.06654) through lm-evaluation-harness's `ruler` tasks, scored as RULER scores.

lm-eval builds each task's examples for a length with a tokenizer (`ruler.tokenizer`, else the model's own:
`generator.model`), one lm-eval run per length (so `ruler.limit` examples of every length), and sends them
to the model like the short tasks (`hf` locally, `local-completions` for a server: with
`ruler.apply_chat_template`, the default, rendered through the model's chat template by lm-eval with the
model's tokenizer and sent as token ids; without it, as text). in2 scores every answer again from lm-eval's
logged samples with RULER's rule (recall of the expected strings, case-insensitive, after stripping; `all`
for most tasks, best single answer for the QA tasks), records lm-eval's own number beside it, and reports:

- per task and length, in percent; per length the mean over the tasks run (RULER's score at that length);
- the average over the lengths run (RULER's `Avg.` when they are 4K-128K);
- the effective length: the longest length up to which every length run scores above `ruler.threshold`
  (85.6, Llama-2-7B-chat's score at 4K, RULER's threshold).

Downloads: the noise-haystack NIAH tasks (niah_single_1, niah_multikey_2, niah_multikey_3), variable tracking
and common/frequent word extraction are generated offline; the essay-haystack NIAH tasks read Paul Graham's
essays and NLTK's punkt_tab, the QA tasks SQuAD and HotpotQA: in2 downloads each once, checks its sha256 and
hands it to lm-eval (in2.evaluation.ruler_data).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from in2.errors import ConfigError
from in2.evaluation.config import EvalConfig
from in2.evaluation.tasks import RULER_OFFLINE, RULER_PART, RULER_TASKS
from in2.llm.config import GeneratorConfig


def run(
    cfg: EvalConfig, generator: GeneratorConfig, out_dir: str | Path, files: dict[str, dict]
) -> dict[str, dict[str, dict]]:
    """{task: {length: {"score", "lm_eval", "n"}}} for one model (scores in percent), the tasks reading `files`
    (`ruler_data.fetch_all`). Each length's scores are kept in `out_dir/ruler_<length>.json` with a fingerprint
    of what made them (model weights or name, tasks, limit, tokenizer, template, data files, lm-eval version): a
    rerun skips the lengths already done."""
    try:
        import lm_eval
        import wonderwords  # noqa: F401 (lm-eval's ruler extra)
    except ImportError:
        raise ConfigError(
            'suites: "ruler" needs lm-evaluation-harness with its ruler extra: pip install -e ".[short]"'
        ) from None
    import torch

    from in2.evaluation.ruler_data import lm_eval_reads
    from in2.evaluation.short import _api_key, lm_eval_model, model_id, request_cache

    r = cfg.ruler
    model, model_args = lm_eval_model(generator)
    tokenizer = r.tokenizer or (model_args.get("pretrained") if model == "hf" else generator.model)
    model_args = {**model_args, "max_length": max(r.lengths)}
    if model != "hf":  # with the chat template, lm-eval renders it with the model's tokenizer and sends token ids
        model_args.update(
            tokenizer=tokenizer, tokenized_requests=r.apply_chat_template, tokenizer_backend="huggingface"
        )
    from lm_eval.tasks import TaskManager

    folder = Path(lm_eval.__file__).parent / "tasks" / "ruler"  # index RULER's tasks only, not lm-eval's thousands
    out: dict[str, dict[str, dict]] = {t: {} for t in r.tasks}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_key = model_id(generator)
    with _api_key(generator), lm_eval_reads(files):
        for length in r.lengths:
            path = out_dir / f"ruler_{length}.json"
            key = fingerprint(cfg, model_key, tokenizer, length, files)
            if path.is_file() and (kept := json.loads(path.read_text())).get("fingerprint") == key:
                for task in r.tasks:
                    out[task][str(length)] = kept["scores"][task]
                continue
            manager = TaskManager(
                include_path=str(folder),
                include_defaults=False,
                metadata={"max_seq_lengths": [length], "tokenizer": tokenizer},
            )
            result = lm_eval.simple_evaluate(
                model=model,
                model_args=model_args,
                tasks=list(r.tasks),
                batch_size=r.batch_size,
                limit=r.limit,
                device="cuda" if torch.cuda.is_available() else "cpu",
                task_manager=manager,
                apply_chat_template=r.apply_chat_template,
                log_samples=True,
                use_cache=request_cache(out_dir, f"ruler-{length}", model_key),
            )
            scores = {task: score_samples(task, length, result) for task in r.tasks}
            for task in r.tasks:
                out[task][str(length)] = scores[task]
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"fingerprint": key, "scores": scores}, indent=1) + "\n")
            os.replace(tmp, path)
    return out


def fingerprint(cfg: EvalConfig, model: str, tokenizer: str | None, length: int, files: dict[str, dict]) -> str:
    """What one length's scores depend on: the answering `model` (`model_id`), the examples (and the data files
    they are made from) and lm-eval's version."""
    from in2.versions import versions

    r = cfg.ruler
    spec = {
        "model": model,
        "tasks": sorted(r.tasks),
        "limit": r.limit,
        "tokenizer": tokenizer,
        "chat": r.apply_chat_template,
        "length": length,
        "data": {name: f["sha256"] for name, f in files.items()},
        "lm_eval": versions(("lm-eval",)),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def score_samples(task: str, length: int, result: dict) -> dict:
    """One task at one length from an lm-eval result: in2's score from the logged answers and lm-eval's own."""
    samples = result.get("samples", {}).get(task, [])
    mine = [example_score(task, _answer(s), s["doc"]["outputs"]) for s in samples if s["doc"]["max_length"] == length]
    theirs = result.get("results", {}).get(task, {}).get(f"{length},none")
    return {
        "score": 100 * sum(mine) / len(mine) if mine else float("nan"),
        "lm_eval": None if theirs is None or theirs == -1 else 100 * float(theirs),
        "n": len(mine),
    }


def _answer(sample: dict) -> str:
    resps = sample.get("filtered_resps") or sample.get("resps") or [""]
    first = resps[0]
    return first[0] if isinstance(first, list) else first


_CONTROL = re.compile(r"[\x00-\x1f]")


def example_score(task: str, prediction: str, references: list[str]) -> float:
    """RULER's rule for one answer: the share of `references` found in it (`all`), or for the QA tasks whether
    any is (`part`); case-insensitive, control characters read as line breaks, ends stripped."""
    text = _CONTROL.sub("\n", prediction.strip()).strip().lower()
    found = [ref.lower() in text for ref in references]
    if task in RULER_PART:
        return float(any(found))
    return sum(found) / len(references) if references else 0.0


def per_length(results: dict[str, dict[str, dict]]) -> dict[str, float]:
    """The mean over the tasks run, per length (RULER's score at that length)."""
    lengths = sorted({n for per in results.values() for n in per}, key=int)
    return {n: sum(per[n]["score"] for per in results.values()) / len(results) for n in lengths}


def effective_length(scores: dict[str, float], threshold: float) -> int | None:
    """The longest length up to which every length run scores above `threshold`; None if the shortest does not."""
    best = None
    for n in sorted(scores, key=int):
        if not scores[n] > threshold:
            break
        best = int(n)
    return best


def summary(results: dict[str, dict[str, dict]], threshold: float, tasks: list[str]) -> dict:
    scores = per_length(results)
    return {
        "tasks": results,
        "per_length": scores,
        "average": sum(scores.values()) / len(scores) if scores else float("nan"),
        "effective_length": effective_length(scores, threshold),
        "all_13_tasks": set(tasks) == set(RULER_TASKS),
        "offline_tasks_only": set(tasks) <= set(RULER_OFFLINE),
    }


def length_label(n: int | str | None) -> str:
    if n is None:
        return "below the shortest"
    n = int(n)
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)
