"""LongBench's answer metrics as plain functions: token F1 (QA) and ROUGE-L F (summaries), in [0, 1].

Normalisation for F1 as in SQuAD-style QA: lower-case, drop punctuation and the articles a/an/the,
collapse whitespace. A prediction is scored against each reference and the best score counts.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter

_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@functools.lru_cache(maxsize=8192)  # a summary is scored once per scoring mode
def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F of the `rouge` package as LongBench scores summaries (`get_scores(...)["rouge-l"]["f"]`):
    sentences split on '.', case-sensitive words, summary-level union LCS; 0.0 when the package raises
    (an empty text, or an LCS deeper than Python's recursion limit: long text without a full stop).
    The package is called at the stack depth of LongBench's script, so where it runs out of recursion
    does not depend on the caller; its LCS table is computed by `_LcsTable` (same values, much faster)."""
    import sys

    from rouge import Rouge

    _install_lcs_table()
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + LONGBENCH_RECURSION_LIMIT - LONGBENCH_CALLER_DEPTH)
    try:
        return Rouge(metrics=["rouge-l"]).get_scores([prediction], [reference], avg=True)["rouge-l"]["f"]
    except Exception:  # LongBench: a bare except, scored 0
        return 0.0
    finally:
        sys.setrecursionlimit(limit)


# LongBench's eval.py calls the package three frames deep (module, scorer, rouge_score), under Python's
# default recursion limit
LONGBENCH_CALLER_DEPTH = 3
LONGBENCH_RECURSION_LIMIT = 1000


class _LcsTable:
    """The `rouge` package's LCS table (`table[i, j]`: LCS length of x[:i] and y[:j]) without filling
    all n x m cells: bit-parallel rows (Allison-Dix / Hyyro), a zero bit marking where the row grows."""

    def __init__(self, x: list[str], y: list[str]):
        masks: dict[str, int] = {}
        for j, word in enumerate(y):
            masks[word] = masks.get(word, 0) | (1 << j)
        full = (1 << len(y)) - 1
        rows = [full]
        for word in x:
            v = rows[-1]
            u = v & masks.get(word, 0)
            rows.append(((v + u) | (v - u)) & full)
        self.rows = rows

    def __getitem__(self, key: tuple[int, int]) -> int:
        i, j = key
        return j - (self.rows[i] & ((1 << j) - 1)).bit_count()


def _install_lcs_table() -> None:
    """Make the `rouge` package build `_LcsTable`s instead of its dict of n x m cells (its O(nm) Python
    loop takes ~0.2 s per summary); tests check that every cell and score is unchanged."""
    from rouge import rouge_score

    rouge_score._lcs = _LcsTable


def best(metric, prediction: str, references: list[str]) -> float:
    return max((metric(prediction, r) for r in references), default=0.0)


def metric_info(description: str):
    """The evaluate.MetricInfo shared by in2's metric modules: strings against lists of references."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description="predictions: list of str; references: list of lists of str",
        features=datasets.Features(
            {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
        ),
    )
