"""evaluate module: ROUGE-L F of predictions against lists of references (best reference)."""

import datasets
import evaluate

from in2.evaluation.metrics.text import best, rouge_l


class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-L F-measure on lower-cased word tokens; best over references.",
            citation="",
            inputs_description="predictions: list of str; references: list of lists of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references):
        scores = [best(rouge_l, p, r) for p, r in zip(predictions, references, strict=True)]
        return {"rouge_l": sum(scores) / len(scores) if scores else 0.0, "scores": scores}
