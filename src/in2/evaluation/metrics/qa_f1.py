"""evaluate module: token F1 of predictions against lists of reference answers (best reference)."""

import evaluate

from in2.evaluation.metrics.text import best, metric_info, token_f1


class QaF1(evaluate.Metric):
    def _info(self):
        return metric_info("Token F1 after lower-casing and removing punctuation and articles; best over references.")

    def _compute(self, predictions, references):
        scores = [best(token_f1, p, r) for p, r in zip(predictions, references, strict=True)]
        return {"qa_f1": sum(scores) / len(scores) if scores else 0.0, "scores": scores}
