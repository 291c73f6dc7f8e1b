"""Prompt files: loading, rendering `{name}` fields, hashing; the FILM training templates."""

from __future__ import annotations

import hashlib
import re
from functools import cache

from in2.assets import prompt_path

FILM_CONTEXT = "film_context.txt"
FILM_NO_CONTEXT = "film_no_context.txt"


@cache
def load(name: str) -> str:
    return prompt_path(name).read_text().rstrip("\n")


def render(template: str, **fields: str) -> str:
    """Replace each `{name}` once, in one pass, so braces inside values stay untouched."""
    wanted = set(re.findall(r"\{(\w+)\}", template))
    if wanted != set(fields):
        raise ValueError(f"template fields {sorted(wanted)} != given {sorted(fields)}")
    return re.sub(r"\{(\w+)\}", lambda m: fields[m.group(1)], template)


def film_user(context: str, question: str) -> str:
    """The FILM-7B user turn: context first, instruction last (paper-notes section 3)."""
    return render(load(FILM_CONTEXT), context=context, question=question)


def film_user_no_context(instruction: str) -> str:
    return render(load(FILM_NO_CONTEXT), instruction=instruction)


def file_hash(name: str) -> str:
    return hashlib.sha256(prompt_path(name).read_bytes()).hexdigest()


def hashes(names: list[str]) -> dict[str, str]:
    """sha256 of each prompt file, for the manifest."""
    return {name: file_hash(name) for name in names}
