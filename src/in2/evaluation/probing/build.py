"""Build VaL probe sets at any length, in FILM's released layout.

One set is a context of pool items that fits in the length (measured with the target tokenizer);
every set of a task and length holds the same whole number of spans of items (the most that fit in
every set), as FILM's files do (800 sentences, 800 functions, 750 entities at 32K), so the scorer's
spans are all whole. One query per item position (or a seeded sample of positions per span) asks
about that item. A query whose key occurs more than once in its context is listed in the skip list,
as FILM does.

Files, per task and length (`document_bi_1k`, `code_backward_32k`, ...):
`<name>.jsonl` rows {prompt, completion | label + description, position_id, set_id, ...} and
`<name>_skip_list.json` (row indices), plus `manifest.json` for the whole build.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from in2 import redact
from in2.errors import ConfigError
from in2.evaluation.tasks import PROBE_SEPARATORS, PROBE_TASKS
from in2.jsonl import iter_jsonl
from in2.prompts import MISTRAL_INST, film_user
from in2.seeding import rng

logger = logging.getLogger(__name__)
FILE_NAMES = {"document": "document_bi", "code": "code_backward", "database": "database_forward"}
"""What a task's probe files are named: `<this>_<length>` (FILM's names; the retrieval pattern after the task)."""
# The paper's question formats (the FILM paper's Section 3, arXiv 2404.16811), spacing included
QUESTIONS = {
    "document": 'In above context, which sentence contains the piece "{key}"?',
    "code": 'In above context, which function contains the code snip "{key}" ?',
    "database": "In above context , what is the label and description for the query where the id is {key} ?",
}


def item_text(task: str, item: dict) -> str:
    """How an item appears in the context."""
    if task == "document":
        return item["sentence"]
    if task == "code":
        return f"def {item['name']}:\n{item['body']}"
    return f"<id: {item['id']}, label: {item['label']}, description: {item['description']}>"


def key(task: str, item: dict) -> str:
    """What the question quotes."""
    return item["id"] if task == "database" else item["piece"]


def occurrences(task: str, item: dict, context: str) -> int:
    """How often the query's key occurs in the context (more than once: the query is skipped)."""
    if task == "database":
        return context.count(f"<id: {item['id']},")
    return context.count(item["piece"])


def gold(task: str, item: dict) -> dict:
    if task == "document":
        return {"completion": item["sentence"]}
    if task == "code":
        return {"completion": item["name"]}
    return {"label": item["label"], "description": item["description"]}


def length_tag(tokens: int) -> str:
    """32768 -> "32k", 1536 -> "1.5k"."""
    k = tokens / 1024
    return f"{k:g}k" if k >= 1 else str(tokens)


def task_of_name(name: str) -> str:
    """`document_bi_32k` -> `document`; other names are an error."""
    task = name.split("_")[0]
    if task not in FILE_NAMES:
        raise ValueError(f"{name}: probe file names start with {', '.join(t + '_' for t in PROBE_TASKS)}")
    return task


def task_name(task: str, tokens: int) -> str:
    return f"{FILE_NAMES[task]}_{length_tag(tokens)}"


class Builder:
    """Probe sets for one task from one pool, measured with `tokenizer` (prompt as the model sees it)."""

    def __init__(
        self,
        task: str,
        pool: list[dict],
        tokenizer,
        raw_template: str = MISTRAL_INST,
        seed: int = 0,
        separator: str | None = None,
    ):
        if task not in PROBE_TASKS:
            raise ValueError(f"probing task {task!r}: one of {', '.join(PROBE_TASKS)}")
        if not pool:
            raise ValueError(f"probing pool for {task} is empty")
        self.task, self.pool, self.tok, self.template, self.seed = task, pool, tokenizer, raw_template, seed
        self.sep = PROBE_SEPARATORS[task] if separator is None else separator
        self._fits: dict[tuple[int, int], list[int]] = {}
        texts = [item_text(task, it) for it in pool]
        self.item_tokens = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def prompt(self, context: str, item: dict) -> str:
        user = film_user(context, QUESTIONS[self.task].format(key=key(self.task, item)))
        return self.template.replace("{prompt}", user)

    def count(self, text: str) -> int:
        return len(self.tok(text)["input_ids"])

    def question_tokens(self, items: list[int]) -> list[int]:
        questions = ["\n" + QUESTIONS[self.task].format(key=key(self.task, self.pool[i])) for i in items]
        return [len(ids) for ids in self.tok(questions, add_special_tokens=False)["input_ids"]]

    def measure(self, chosen: list[int]) -> int:
        """Prompt tokens of the longest query over the context made of `chosen` items (the three
        items with the longest questions are measured exactly)."""
        context = self.sep.join(item_text(self.task, self.pool[i]) for i in chosen)
        q = self.question_tokens(chosen)
        longest = sorted(range(len(chosen)), key=lambda j: -q[j])[:3]
        return max(self.count(self.prompt(context, self.pool[chosen[j]])) for j in longest)

    def fill(self, order: list[int], length: int) -> list[int]:
        """The longest prefix of `order` whose prompts fit in `length` tokens: estimated from per-item
        counts, then settled with exact counts of the joined context, by galloping from the estimate and
        bisecting (a dozen exact counts at 128K instead of one per item the estimate is off)."""
        overhead = self.measure(order[:1]) - self.item_tokens[order[0]]
        n, total = 0, overhead
        while n < len(order) and total + self.item_tokens[order[n]] + 1 <= length:
            total += self.item_tokens[order[n]] + 1
            n += 1

        def fits(k: int) -> bool:
            return self.measure(order[:k]) <= length

        lo, hi, step = 0, len(order) + 1, max(1, n // 64)  # order[:lo] fits (0: nothing), order[:hi] does not
        if n and fits(n):
            lo = n
            while lo + step < hi and fits(lo + step):
                lo, step = lo + step, step * 2
            hi = min(hi, lo + step)
        elif n:
            hi = n
            while hi - step > 0 and not fits(hi - step):
                hi, step = hi - step, step * 2
            lo = max(0, hi - step)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        if lo == 0:
            raise ValueError(f"{self.task}: no item fits in {length} tokens")
        return order[:lo]

    def fitting(self, length: int, set_id: int):
        """The seeded random generator of one set and the items that fit in its context (in order)."""
        r = rng(self.seed, "probe", self.task, length, set_id)
        order = list(range(len(self.pool)))
        r.shuffle(order)
        if (length, set_id) not in self._fits:
            self._fits[(length, set_id)] = self.fill(order, length)
        return r, self._fits[(length, set_id)]

    def items_per_set(self, length: int, sets: int, span_size: int) -> int:
        """Items in every set of this length: the most that fit in all `sets` sets, rounded down to a
        whole number of spans."""
        fits = min(len(self.fitting(length, s)[1]) for s in range(sets))
        if fits < span_size:
            raise ConfigError(
                f"probes.span_size: only {fits} {self.task} items fit in {length} tokens, fewer than one span "
                f"of {span_size}; use a smaller span_size or a longer length"
            )
        return fits - fits % span_size

    def build_set(self, *args, **kwargs) -> tuple[list[dict], list[int]]:
        """`rows(...)` as a list, and the skipped row numbers."""
        rows, skipped = [], []
        for row, skip in self.rows(*args, **kwargs):
            if skip:
                skipped.append(len(rows))
            rows.append(row)
        return rows, skipped

    def rows(
        self,
        length: int,
        set_id: int,
        span_size: int = 50,
        positions_per_span: int | None = None,
        num_items: int | None = None,
    ) -> Iterator[tuple[dict, bool]]:
        """Rows for one context of at most `length` prompt tokens, one at a time (a set of 128K rows is
        GiBs), each with whether it is skipped (its key occurs more than once in the context). With
        `num_items`, the context holds exactly that many items (see items_per_set); otherwise as many
        as fit."""
        r, chosen = self.fitting(length, set_id)
        if num_items is not None:
            if num_items > len(chosen):
                raise ValueError(f"{self.task}: {num_items} items do not fit in {length} tokens (set {set_id})")
            chosen = chosen[:num_items]
        context = self.sep.join(item_text(self.task, self.pool[i]) for i in chosen)
        positions = list(range(len(chosen)))
        if positions_per_span is not None:
            picked = []
            for start in range(0, len(chosen), span_size):
                span = positions[start : start + span_size]
                picked += sorted(r.sample(span, min(positions_per_span, len(span))))
            positions = picked
        for position in positions:
            item = self.pool[chosen[position]]
            row = {
                "prompt": self.prompt(context, item),
                **gold(self.task, item),
                "position_id": position,
                "set_id": set_id,
                "num_items": len(chosen),
            }
            yield row, occurrences(self.task, item, context) != 1


def write(folder: str | Path, name: str, rows: Iterable[tuple[dict, bool]]) -> tuple[int, int]:
    """A probe file in FILM's layout, written as its rows come, with its skip list; (rows, skipped)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    skipped: list[int] = []
    count = 0
    with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for count, (row, skip) in enumerate(rows, 1):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            if skip:
                skipped.append(count - 1)
    (folder / f"{name}_skip_list.json").write_text(json.dumps(skipped))
    return count, len(skipped)


def read(folder: str | Path, name: str, prompts: bool = True) -> tuple[list[dict], list[int]]:
    """Rows and skip list of a probe file in FILM's layout (FILM's own VaLProbing-32K included); without
    `prompts`, each row's prompt is dropped as it is read (what scoring needs of a 128K file fits in memory)."""
    return list(iter_rows(folder, name, prompts)), skip_list(folder, name)


def iter_rows(folder: str | Path, name: str, prompts: bool = True) -> Iterator[dict]:
    """A probe file's rows one at a time (see `read`); a missing file is an error now, not at the first row."""
    path = Path(folder) / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"probe file {path} does not exist")
    rows = iter_jsonl(path, required=("prompt", "position_id", "set_id"))
    return rows if prompts else ({k: v for k, v in row.items() if k != "prompt"} for row in rows)


def skip_list(folder: str | Path, name: str) -> list[int]:
    """Row numbers FILM leaves out of a probe file (`<name>_skip_list.json`; none when it is absent)."""
    skip = Path(folder) / f"{name}_skip_list.json"
    return json.loads(skip.read_text()) if skip.is_file() else []


def recorded_span_size(folder: str | Path) -> int | None:
    """The span size a probe folder was built for (its manifest.json); None for other folders, such as
    FILM's VaLProbing-32K files (FILM's span: 50)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        size = json.loads(path.read_text())["spec"]["probes"]["span_size"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) and size >= 1 else None


def pool_hash(pool: list[dict]) -> str:
    return hashlib.sha256(json.dumps(pool, sort_keys=True).encode()).hexdigest()[:16]


def load_pool(task: str, source: str, document_source: str = "builtin:pydoc", seed: int = 0) -> tuple[list, str]:
    """(items, description) for `task` from `source`: builtin, film (download) or a FILM pieces folder."""
    from in2.evaluation.probing import pools

    if source == "builtin":
        if task == "document":
            from in2.synth.config import CorpusConfig
            from in2.synth.corpus import iter_texts

            texts = [t.text for t in iter_texts(CorpusConfig(source=document_source))]
            return pools.sentences(texts, seed), f"sentences of {document_source}"
        if task == "code":
            return pools.functions(seed), "functions of the Python standard library"
        return pools.entities(seed), "the Python standard library's public callables"
    if source == "film":
        folder = pools.download_film(Path.home() / ".cache" / "in2" / "film" / pools.FILM_REVISION)
    else:
        folder = Path(source)
    items = pools.load_film(folder, task)
    if pools.is_film(folder / pools.FILM_FILES[task]):
        return items, f"FILM's released pool (microsoft/FILM@{pools.FILM_REVISION[:7]}, sha256 checked; {folder})"
    return items, f"a pool in FILM's layout from {folder} (not FILM's file at microsoft/FILM@{pools.FILM_REVISION[:7]})"


def build_all(cfg) -> tuple[Path, list[str]]:
    """Every probe file of an EvalConfig under cfg.probes.output_dir; reused when the spec is unchanged."""
    from in2.recipes import to_dict
    from in2.tokenizer import load_tokenizer

    p = cfg.probes
    if p.prebuilt:
        folder = Path(p.prebuilt)
        names = sorted(f.stem for f in folder.glob("*.jsonl"))
        if not names:
            raise FileNotFoundError(f"probes.prebuilt: no <name>.jsonl probe files in {folder}")
        for name in names:
            task_of_name(name)
        return folder, names
    out = Path(p.output_dir)
    spec = redact.data(  # as stored: a pool or tokenizer URL may carry credentials
        {
            "probes": {k: v for k, v in to_dict(p).items() if k not in ("output_dir", "prompt_format", "parity")},
            "tokenizer": to_dict(cfg.tokenizer),
            "seed": cfg.seed,
        }
    )
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("spec") == spec:
            return out, manifest["names"]
    tok = load_tokenizer(cfg.tokenizer)
    names, files = [], {}
    for task in p.tasks:
        pool, described = load_pool(task, p.pools, p.document_source, cfg.seed)
        builder = Builder(task, pool, tok, p.raw_template, cfg.seed, p.separators.get(task))
        for named in p.lengths:
            name, length = task_name(task, named), named - p.reserved_tokens
            items = builder.items_per_set(length, p.sets, p.span_size)
            sets = (builder.rows(length, s, p.span_size, p.positions_per_span, items) for s in range(p.sets))
            rows, skipped = write(out, name, itertools.chain.from_iterable(sets))
            names.append(name)
            too_short = any(len(builder.fitting(length, s)[1]) == len(pool) for s in range(p.sets))
            if too_short:
                logger.warning(
                    "%s: the whole %s pool (%d items) is shorter than %d tokens, so its contexts are too; "
                    "FILM's pools (probes.pools: film) fill 128K",
                    name,
                    task,
                    len(pool),
                    length,
                )
            files[name] = {
                "rows": rows,
                "skipped": skipped,
                "items_per_set": items,
                "prompt_tokens_at_most": length,
                "span_size": p.span_size,
                "pool": described,
                "pool_items": len(pool),
                "pool_too_short": too_short,
                "pool_hash": pool_hash(pool),
            }
    manifest = {"spec": spec, "names": names, "files": files}
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return out, names
