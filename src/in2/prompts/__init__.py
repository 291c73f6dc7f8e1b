"""Prompts: the text files beside this module, read by name (or any path), with `{name}` fields to fill.

- `film_context.txt`, `film_no_context.txt`: FILM-7B's training format, the user turn of every row
  (context first, instruction last; the FILM paper's Section 2, arXiv 2404.16811). Training's model card
  and the VaL probes use it too.
- `fine_grained.txt`, `integration.txt`: in2's own requests to the generator for the paper's two kinds
  of QA pair (recipes choose them with `qa.prompt_fine_grained`, `qa.prompt_integration`).
- `longbench_in2.json`: in2's own wording of LongBench's nine task prompts, {task: prompt with {context}
  and {input}} (`longbench.prompts: in2`; LongBench's official file is downloaded, never shipped).
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path

from in2.assets import packaged

FILM_CONTEXT = "film_context.txt"
FILM_NO_CONTEXT = "film_no_context.txt"
IN2_LONGBENCH = "longbench_in2.json"
MISTRAL_INST = "[INST] {prompt} [/INST]"
"""Mistral's instruct format around a user turn, as a raw prompt (how FILM's released probes store theirs)."""


def find(name: str) -> Path | Traversable:
    """A prompt file: a path, else one of in2's own by name."""
    path = Path(name)
    if path.is_file():
        return path
    own = packaged(__name__, name)
    if not own.is_file():
        raise FileNotFoundError(f"prompt file not found: {name} (neither a path nor one of in2's prompts)")
    return own


@cache
def load(name: str) -> str:
    return find(name).read_text(encoding="utf-8").rstrip("\n")


def fill(prompt: str, **fields: str) -> str:
    """Replace each `{name}` once, in one pass, so braces inside values stay untouched."""
    wanted = set(re.findall(r"\{(\w+)\}", prompt))
    if wanted != set(fields):
        raise ValueError(f"prompt fields {sorted(wanted)} != given {sorted(fields)}")
    return re.sub(r"\{(\w+)\}", lambda m: fields[m.group(1)], prompt)


def film_user(context: str, question: str) -> str:
    """The FILM-7B user turn: context first, instruction last."""
    return fill(load(FILM_CONTEXT), context=context, question=question)


def film_user_no_context(instruction: str) -> str:
    return fill(load(FILM_NO_CONTEXT), instruction=instruction)


def hashes(names: list[str]) -> dict[str, str]:
    """sha256 of each prompt file, for the manifest."""
    return {name: hashlib.sha256(find(name).read_bytes()).hexdigest() for name in names}
