"""Run a model over probe files and write FILM-format predictions, resumably.

Backends are in2's LLM engine: local transformers (batched greedy) or any OpenAI-compatible server
(bounded concurrency). Prompts go either through the model's chat template (`chat`: the FILM user turn
is taken out of the stored raw prompt) or as FILM's raw prompt text (`raw`). Predictions are appended
to `sample_<name>.jsonl` as `{"samples": [text]}` lines in row order, a chunk at a time; a rerun
continues after the last written line, and the engine's request cache answers anything already asked.
"""

from __future__ import annotations

import json
from pathlib import Path

from in2.config import ConfigError, GeneratorConfig
from in2.evaluation.probing.build import RAW_TEMPLATE, read
from in2.llm import Engine, Request

FORMATS = ("chat", "raw")


def user_turn(prompt: str, template: str = RAW_TEMPLATE) -> str:
    """The user message inside a raw prompt rendered with `template` (FILM's rows are rendered)."""
    head, _, tail = template.partition("{prompt}")
    text = prompt.removeprefix("<s>")
    if text.startswith(head) and text.endswith(tail):
        return text[len(head) : len(text) - len(tail) if tail else None]
    return prompt


def request(prompt: str, prompt_format: str, template: str = RAW_TEMPLATE) -> Request:
    if prompt_format == "raw":
        return Request.text(prompt)
    if prompt_format == "chat":
        return Request.user(user_turn(prompt, template))
    raise ConfigError(f"probes.prompt_format: {prompt_format!r} is not one of {', '.join(FORMATS)}")


def predictions_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"sample_{name}.jsonl"


def _written(path: Path) -> int:
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] != "":  # a line cut short by a crash: drop it
        path.write_text("\n".join(lines[:-1]) + ("\n" if len(lines) > 1 else ""), encoding="utf-8")
        lines = lines[:-1] + [""]
    return len(lines) - 1


def run(
    probe_dir: str | Path,
    names: list[str],
    generator: GeneratorConfig,
    out_dir: str | Path,
    prompt_format: str = "chat",
    template: str = RAW_TEMPLATE,
    chunk: int = 64,
    engine: Engine | None = None,
) -> dict[str, Path]:
    """Predictions for each probe file `name` under `probe_dir`; returns their paths.

    Skip-listed rows are not sent (their line holds an empty sample), since they are never scored.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, todo = {}, []
    for name in names:
        rows, skip = read(probe_dir, name)
        path = predictions_path(out, name)
        files[name] = (rows, set(skip), path)
        todo += [(name, i) for i in range(_written(path), len(rows))]
    engine = engine or Engine(generator)
    handles = {name: open(files[name][2], "a", encoding="utf-8") for name in names}  # noqa: SIM115
    try:
        # one request stream over all files, so the local backend fills its batches across tasks
        for lo in range(0, len(todo), chunk):
            part = todo[lo : lo + chunk]
            send = [(n, i) for n, i in part if i not in files[n][1]]
            responses = engine.generate(
                [request(files[n][0][i]["prompt"], prompt_format, template) for n, i in send],
                desc=f"probing {lo + len(part)}/{len(todo)}",
            )
            failed = [r.error for r in responses if r.error is not None]
            if failed:
                raise RuntimeError(f"{len(failed)} probe requests failed ({failed[0]}); rerun to retry them")
            text = dict(zip(send, (r.text or "" for r in responses), strict=True))
            for n, i in part:
                line = {"samples": [text.get((n, i), "")]}
                if i in files[n][1]:
                    line["skipped"] = True
                handles[n].write(json.dumps(line, ensure_ascii=False) + "\n")
            for n in {n for n, _ in part}:
                handles[n].flush()
    finally:
        for h in handles.values():
            h.close()
        engine.close()
    return {name: files[name][2] for name in names}
