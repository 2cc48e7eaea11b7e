"""Pair F1: precision, recall and F1 of predicted (key, value) pairs against gold pairs, micro over pages (every pair
of every page counts once), with the counts, as an `evaluate` metric: the FUNSD relation-extraction score.

    metric = evaluate.load("<site-packages>/layoutlm_roialign/evaluate_metrics/pair_f1.py")  # a local file: no Hub
    metric.compute(predictions=[[[0, 1], [3, 2]], []], references=[[[0, 1], [2, 3]], [[0, 1]]])

A page's pairs are `[key, value]` entity indices (any integers that name the page's entities: positions, or ids); a
pair listed twice counts once. `layoutlm_roialign.metrics.load_metric("pair_f1")` loads it without the path, and this
file computes the package's pair scores: `layoutlm_roialign.metrics.link_scores` (the linking
task's `compute_metrics`, `scripts/evaluate_checkpoint.py`, the model card) computes through it. `evaluate.load` imports it alone,
outside the package, so it imports only datasets and evaluate.
"""

import datasets
import evaluate

_DESCRIPTION = """Pair precision, recall and F1 over pages (micro-averaged: every pair of every page counts once)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per page, the predicted pairs, each `[key, value]` (two integers naming the page's entities).
    references: per page, the gold pairs.
Returns:
    `precision`, `recall`, `f1` (0 where undefined), and the counts `predicted`, `gold` and `correct`.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PairF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        pairs = datasets.Sequence(datasets.Sequence(datasets.Value("int64"), length=2))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": pairs, "references": pairs}),
        )

    def _compute(self, predictions: list[list[list[int]]], references: list[list[list[int]]]) -> dict:
        predicted = [{tuple(pair) for pair in page} for page in predictions]
        gold = [{tuple(pair) for pair in page} for page in references]
        correct = sum(len(g & p) for g, p in zip(gold, predicted, strict=True))
        n_predicted, n_gold = sum(map(len, predicted)), sum(map(len, gold))
        precision = correct / n_predicted if n_predicted else 0.0
        recall = correct / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "predicted": n_predicted, "gold": n_gold,
                "correct": correct}  # fmt: skip
