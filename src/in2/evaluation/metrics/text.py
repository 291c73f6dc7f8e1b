"""LongBench's answer metrics as plain functions: token F1 (QA) and ROUGE-L F (summaries), in [0, 1].

Normalisation for F1 as in SQuAD-style QA: lower-case, drop punctuation and the articles a/an/the,
collapse whitespace. A prediction is scored against each reference and the best score counts.
"""

from __future__ import annotations

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


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure on lower-cased word tokens (rouge-score's tokenizer, no stemming)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(reference, prediction)["rougeL"].fmeasure


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
