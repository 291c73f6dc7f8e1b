"""evaluate module: ROUGE-L F of predictions against lists of references (best reference), as LongBench scores it."""

import evaluate

from in2.evaluation.metrics.text import best, metric_info, rouge_l


class RougeL(evaluate.Metric):
    def _info(self):
        return metric_info(
            "ROUGE-L F of the `rouge` package (sentences split on '.', case-sensitive words; 0 when it fails); "
            "best over references."
        )

    def _compute(self, predictions, references):
        scores = [best(rouge_l, p, r) for p, r in zip(predictions, references, strict=True)]
        return {"rouge_l": sum(scores) / len(scores) if scores else 0.0, "scores": scores}
