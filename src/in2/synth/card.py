"""The data card: YAML header (huggingface_hub DatasetCardData), plots, and a body from the card template
data_cards/in2_dataset.md.j2 (shipped inside the wheel as the package data of in2.data_cards)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from in2 import cards
from in2.assets import packaged
from in2.synth.config import PARTS

CARD_TEMPLATE = ("in2.data_cards", "in2_dataset.md.j2")
PLOTS = ("rows_per_part.png", "context_lengths.png", "key_positions.png")


# Terms of the sources in2 knows; any other source is shown as needing a check.
KNOWN_LICENSES = {
    "allenai/c4": "ODC-BY",
    "Open-Orca/OpenOrca": "MIT",
    "builtin:pydoc": "PSF License (Python's documentation)",
    "builtin:instructions": "Apache-2.0 (written for in2)",
}


def licenses(manifest: dict) -> list[tuple[str, str]]:
    """(source, terms) of the texts a version holds: the corpus, and the instruction data when it has
    general rows (evaluation data used for decontamination is not in it)."""
    cfg = manifest["config"]
    used = [cfg["corpus"]["source"]]
    if manifest["counts"]["rows"].get("general", 0) > 0:
        used.append(cfg["general"]["source"])
    return [(s, KNOWN_LICENSES.get(s, "its own terms (not known to in2: check them)")) for s in dict.fromkeys(used)]


def size_category(n: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if n < limit:
            return name
    return "10M<n<100M"


def configs(layout: dict[str, list[str]]) -> list[dict]:
    """`all` (default) plus one config per part with rows; `layout` maps part -> its splits."""
    splits = [s for s in ("train", "validation") if any(s in v for v in layout.values())]
    out = [
        {
            "config_name": "all",
            "default": True,
            "data_files": [{"split": s, "path": f"data/*/{s}-*.parquet"} for s in splits],
        }
    ]
    out += [
        {"config_name": p, "data_files": [{"split": s, "path": f"data/{p}/{s}-*.parquet"} for s in layout[p]]}
        for p in PARTS
        if p in layout
    ]
    return out


def header(manifest: dict, layout: dict[str, list[str]]) -> str:
    from huggingface_hub import DatasetCardData

    n = sum(manifest["splits"].values())
    release = manifest["config"].get("release", {})
    data = DatasetCardData(
        license=release.get("license", "other"),
        language=["en"],
        task_categories=["question-answering", "text-generation"],
        size_categories=[size_category(n)],
        tags=["in2", "long-context", "synthetic", "film-7b", "lost-in-the-middle"],
        pretty_name=release.get("pretty_name", "IN2 training data"),
        configs=configs(layout),
    )
    return data.to_yaml()


class Stats:
    """What the plots show, gathered row by row: rows per part, long rows per context length (at most
    one entry per token count) and key positions in POSITION_BINS bins; never the rows themselves."""

    POSITION_BINS = 20

    def __init__(self):
        self.parts: Counter = Counter()
        self.lengths: Counter = Counter()
        self.positions = [0] * self.POSITION_BINS

    def add(self, row: dict) -> None:
        self.parts[row["type"]] += 1
        if row["type"] in ("fine_grained", "integration"):
            self.lengths[row["context_tokens"]] += 1
            for p in row["key_positions"]:
                self.positions[min(int(p * self.POSITION_BINS), self.POSITION_BINS - 1)] += 1


def plots(stats: Stats, folder: Path) -> list[str]:
    """Rows per part, context lengths (long rows) and key positions; PNGs under folder/plots/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = folder / "plots"
    out.mkdir(parents=True, exist_ok=True)
    n = Stats.POSITION_BINS
    figures = {
        "rows_per_part.png": (
            "rows per part",
            "rows",
            lambda ax: ax.bar(PARTS, [stats.parts[p] for p in PARTS], color="#4c72b0"),
        ),
        "context_lengths.png": (
            "context length of long rows",
            "target-model tokens",
            lambda ax: ax.hist(list(stats.lengths), weights=list(stats.lengths.values()), bins=20, color="#55a868"),
        ),
        "key_positions.png": (
            "key segment position in its context",
            "relative position (0 = start, 1 = end)",
            lambda ax: ax.hist(
                [(i + 0.5) / n for i in range(n)], weights=stats.positions, bins=n, range=(0, 1), color="#c44e52"
            ),
        ),
    }
    for name, (title, xlabel, draw) in figures.items():
        fig, ax = plt.subplots(figsize=(6, 3.2))
        draw(ax)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
    return [f"plots/{n}" for n in figures]


def shorten(text: str, keep: int = 160) -> str:
    return (
        text if len(text) <= 2 * keep else f"{text[:keep]} [... {len(text) - 2 * keep} characters ...] {text[-keep:]}"
    )


def sample_row(pick: dict | None) -> str:
    if pick is None:
        return "{}"
    row = {
        **pick,
        "prompt": [{**m, "content": shorten(m["content"])} for m in pick["prompt"]],
        "source_ids": pick["source_ids"][:3] + (["..."] if len(pick["source_ids"]) > 3 else []),
    }
    return json.dumps(row, indent=2, ensure_ascii=False)


def markdown(
    manifest: dict, sample: dict | None, layout: dict[str, list[str]], repo: str, version: str | None = None
) -> str:
    """The card of a dataset folder, from its manifest, a sample row and `layout` (part -> its splits)."""
    return cards.render(
        packaged(*CARD_TEMPLATE),
        header=header(manifest, layout).strip(),
        m=manifest,
        c=manifest["counts"],
        cfg=_Obj(manifest["config"]),
        pretty_name=manifest["config"].get("release", {}).get("pretty_name", "IN2 training data"),
        repo=repo,
        version=version,
        sample=sample_row(sample),
        licenses=licenses(manifest),
        rejected_total=sum(manifest["rejected"].values()),
    )


class _Obj(dict):
    """Attribute access to a nested dict in the card template (cfg.context.max_length)."""

    def __getattr__(self, key):
        value = self[key]
        return _Obj(value) if isinstance(value, dict) else value
