"""Run a model over probe files and write FILM-format predictions, resumably.

Backends are in2's LLM engine: local transformers (batched greedy) or any OpenAI-compatible server
(bounded concurrency). Prompts go either through the model's chat template (`chat`: the FILM user turn
is taken out of the stored raw prompt) or as FILM's raw prompt text (`raw`). Writing and resuming:
in2.evaluation.runner.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from in2.errors import ConfigError
from in2.evaluation.probing.build import iter_rows, skip_list
from in2.evaluation.runner import run_named
from in2.llm import Engine, Request
from in2.llm.config import GeneratorConfig
from in2.prompts import MISTRAL_INST

FORMATS = ("chat", "raw")


def user_turn(prompt: str, raw_template: str = MISTRAL_INST) -> str:
    """The user message inside a raw prompt made with `raw_template` (FILM's rows are made so)."""
    head, _, tail = raw_template.partition("{prompt}")
    text = prompt.removeprefix("<s>")
    if text.startswith(head) and text.endswith(tail):
        return text[len(head) : len(text) - len(tail) if tail else None]
    return prompt


def request(prompt: str, prompt_format: str, raw_template: str = MISTRAL_INST) -> Request:
    if prompt_format == "raw":
        return Request.text(prompt)
    if prompt_format == "chat":
        return Request.user(user_turn(prompt, raw_template))
    raise ConfigError(f"probes.prompt_format: {prompt_format!r} is not one of {', '.join(FORMATS)}")


class ProbeRequests:
    """A probe file's requests, skip-listed rows as None, read from disk again each time they are gone over
    (the runner goes over them twice, first for the fingerprint, so a bad file or format stops it before any
    request is sent; a 128K probe file is GiBs)."""

    def __init__(self, probe_dir: str | Path, name: str, prompt_format: str, raw_template: str = MISTRAL_INST):
        self.probe_dir, self.name, self.format, self.template = probe_dir, name, prompt_format, raw_template
        self.skip = set(skip_list(probe_dir, name))

    def __iter__(self) -> Iterator[Request | None]:
        for i, row in enumerate(iter_rows(self.probe_dir, self.name)):
            yield None if i in self.skip else request(row["prompt"], self.format, self.template)


def run(
    probe_dir: str | Path,
    names: list[str],
    generator: GeneratorConfig,
    out_dir: str | Path,
    prompt_format: str = "chat",
    raw_template: str = MISTRAL_INST,
    engine: Engine | None = None,
) -> dict[str, Path]:
    """Predictions for each probe file `name` under `probe_dir`; skip-listed rows are never sent."""
    jobs = {name: ProbeRequests(probe_dir, name, prompt_format, raw_template) for name in names}
    engine = engine or Engine(generator)
    try:
        return run_named(jobs, out_dir, engine)
    finally:
        engine.close()
