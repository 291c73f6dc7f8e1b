"""Item pools for the three VaL probing tasks: FILM's released pools, or pools built offline.

A pool is a list of items; each task renders its items into the context and asks about one of them:

- document: {"sentence", "piece"}: the piece is 8 consecutive words of the sentence
- code: {"name", "body", "piece"}: the body is 3 lines, the piece one of them
- database: {"id", "label", "description"}
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
from pathlib import Path

from in2.jsonl import read_jsonl
from in2.seeding import rng

FILM_FILES = {
    "document": "document_sentences.jsonl",
    "code": "code_functions.jsonl",
    "database": "database_entities.jsonl",
}
FILM_FIELDS = {  # our item field -> FILM's pool field
    "document": {"sentence": "sentence", "piece": "piece"},
    "code": {"name": "function_name", "body": "function_define", "piece": "piece"},
    "database": {"id": "id", "label": "label", "description": "dcpt"},
}
FILM_REVISION = "134c03b723f8373088ec7b899f5948f8e5cd474d"
"""The microsoft/FILM commit FILM's pools are downloaded at (`probes.pools: film`)."""
FILM_URL = "https://raw.githubusercontent.com/microsoft/FILM/{revision}/VaLProbing/pieces/"
FILM_SHA256 = {
    "document_sentences.jsonl": "9970b18b6ebedbef18cf3870b5dbc5a4d82a8c8b245c60a564e5a1a1d92fad73",
    "code_functions.jsonl": "06efc99bf274eba23be55325da349652e55f87c603aa52381b57ef871c060431",
    "database_entities.jsonl": "cad506afa64bafa3e37e3be39f2d6153e9e0d6005d6fdfded4fe6b86d682310b",
}
"""sha256 of each pool file at FILM_REVISION, computed from a stored copy of the files at that commit (not
from a download from GitHub)."""
PIECE_WORDS = 8


def load_film(folder: str | Path, task: str) -> list[dict]:
    """FILM's released pool for `task` from a folder holding its `pieces/*.jsonl` files."""
    path = Path(folder) / FILM_FILES[task]
    if not path.is_file():
        raise FileNotFoundError(f"probing pool: {path} does not exist (FILM's VaLProbing/pieces/{FILM_FILES[task]})")
    fields = FILM_FIELDS[task]  # ours -> FILM's
    return [{ours: r[film] for ours, film in fields.items()} for r in read_jsonl(path, required=fields.values())]


def is_film(path: Path) -> bool:
    """Whether `path` is byte for byte FILM's released pool file of its name (at FILM_REVISION)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() == FILM_SHA256.get(path.name)


def download_film(
    folder: str | Path, url: str = FILM_URL, revision: str = FILM_REVISION, sha256: dict[str, str] = FILM_SHA256
) -> Path:
    """Fetch FILM's three pool files at `revision` into `folder` (needs network; skipped for files already
    there) and check each against its `sha256`."""
    from in2.evaluation.download import fetch_checked

    for name in FILM_FILES.values():
        fetch_checked(
            url.replace("{revision}", revision) + name,
            Path(folder) / name,
            "probes.pools",
            "FILM's pool",
            "put FILM's VaLProbing/pieces files in a folder and set probes.pools to it",
            sha256[name],
            "probes.pools",
            f" (FILM's file at microsoft/FILM@{revision[:7]})",
        )
    return Path(folder)


def sentences(texts: list[str], seed: int = 0, min_words: int = 12, max_words: int = 40) -> list[dict]:
    """Document items from plain texts: distinct sentences of 12-40 words, each with an 8-word piece."""
    seen, items = set(), []
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.replace("\n", " ")):
            sentence = sentence.strip()
            words = sentence.split()
            if not (min_words <= len(words) <= max_words) or sentence in seen or not sentence.endswith((".", "!", "?")):
                continue
            seen.add(sentence)
            start = rng(seed, "piece", sentence).randrange(0, len(words) - PIECE_WORDS + 1)
            items.append({"sentence": sentence, "piece": " ".join(words[start : start + PIECE_WORDS])})
    return items


def _body_lines(source: str, node: ast.FunctionDef) -> list[str]:
    """The first three code lines of a function body, docstring and blank lines dropped, flattened."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    if not body:
        return []
    lines = source.splitlines()[body[0].lineno - 1 : node.end_lineno]
    code = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    return code[:3]


def functions(seed: int = 0, limit: int = 20000) -> list[dict]:
    """Code items from the standard library's own Python files: real functions, 3 body lines each."""
    root = Path(sysconfig.get_paths()["stdlib"])
    items, seen = [], set()
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts or path.name.startswith("test"):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("__"):
                continue
            lines = _body_lines(source, node)
            if len(lines) < 3 or any(len(ln) > 100 for ln in lines):
                continue
            body = "\n".join("    " + ln for ln in lines)
            if (node.name, body) in seen:
                continue
            seen.add((node.name, body))
            candidates = [ln for ln in lines if len(ln) >= 12]
            if not candidates:
                continue
            piece = rng(seed, "code", path.name, node.name, node.lineno).choice(candidates)
            items.append({"name": node.name, "body": body, "piece": piece})
            if len(items) >= limit:
                return items
    return items


def entities(seed: int = 0) -> list[dict]:
    """Database items: the standard library's public callables as an entity table.

    Label: the qualified name; description: the first line of its docstring; id: a seeded Q-number.
    Modules are read from source with ast (nothing is imported).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    items, seen_ids, seen = [], set(), set()
    for path in sorted(root.glob("*.py")):
        if path.name.startswith(("_", "test")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.ClassDef) or node.name.startswith("_"):
                continue
            doc = (ast.get_docstring(node) or "").strip().split("\n")[0].strip()
            if len(doc.split()) < 3 or len(doc) > 120:
                continue
            label = f"{path.stem}.{node.name}"
            if label in seen:
                continue
            seen.add(label)
            r = rng(seed, "entity", label)
            qid = f"Q{r.randrange(10**5, 10**8)}"
            while qid in seen_ids:
                qid = f"Q{r.randrange(10**5, 10**8)}"
            seen_ids.add(qid)
            items.append({"id": qid, "label": label, "description": doc.rstrip(".")})
    return items
