"""Word-level entity metrics: precision, recall and F1 (seqeval), overall and per entity type, computed offline.

`entity_scores` scores label sequences; `WordLevelEntityMetrics` is `Trainer`'s `compute_metrics`: it turns the
token predictions of every window back into one label per word of each page before scoring, so that a word split
over two windows or into several sub-tokens counts once.

`evaluate.load("seqeval")` fetches its script from the Hub, which is not always reachable; this module calls the
`seqeval` package directly with the same defaults as that metric (conlleval-style chunking, not strict IOB2 mode),
so the numbers are the ones the Hub metric would report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

from .processing_layoutlm_roialign import IGNORE_INDEX, merge_window_predictions

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import EvalPrediction

__all__ = ["entity_scores", "flatten_entity_scores", "WordLevelEntityMetrics", "argmax_logits"]


def entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict:
    """Score BIO label sequences (one per page) at the entity level.

    Args:
        references: gold labels, e.g. `[["B-QUESTION", "I-QUESTION", "O", ...], ...]`.
        predictions: predicted labels, same nesting and lengths.

    Returns:
        `{"precision", "recall", "f1", "accuracy", "per_type": {type: {"precision", "recall", "f1", "number"}}}`:
        micro-averaged entity scores, word accuracy, and the scores of each entity type (`number` is its gold count).

    Raises:
        ValueError: if the two nestings differ in length.
    """
    references = [list(page) for page in references]
    predictions = [list(page) for page in predictions]
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} reference pages but {len(predictions)} predicted pages.")
    for p, (ref, pred) in enumerate(zip(references, predictions, strict=True)):
        if len(ref) != len(pred):
            raise ValueError(f"page {p}: {len(ref)} reference labels but {len(pred)} predicted labels.")
    report = classification_report(references, predictions, output_dict=True, zero_division=0)
    per_type = {
        name: {
            "precision": float(values["precision"]),
            "recall": float(values["recall"]),
            "f1": float(values["f1-score"]),
            "number": int(values["support"]),
        }
        for name, values in report.items()
        if name not in ("micro avg", "macro avg", "weighted avg")
    }
    return {
        "precision": float(precision_score(references, predictions, zero_division=0)),
        "recall": float(recall_score(references, predictions, zero_division=0)),
        "f1": float(f1_score(references, predictions, zero_division=0)),
        "accuracy": float(accuracy_score(references, predictions)) if any(references) else 0.0,
        "per_type": per_type,
    }


def flatten_entity_scores(scores: dict) -> dict[str, float]:
    """`entity_scores` output as flat keys for `Trainer` logs: `precision`, `recall`, `f1`, `accuracy`,
    `<TYPE>_precision`, `<TYPE>_recall`, `<TYPE>_f1`, `<TYPE>_number`."""
    flat = {key: scores[key] for key in ("precision", "recall", "f1", "accuracy")}
    for name, values in sorted(scores["per_type"].items()):
        for key, value in values.items():
            flat[f"{name}_{key}"] = value
    return flat


def argmax_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: keep label ids, not logits, across evaluation batches."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


class WordLevelEntityMetrics:
    """`compute_metrics` for `Trainer`: token predictions of every window -> one label per word of each page (read
    on the word's first sub-token, from the window where it has the most context, as `merge_window_predictions`
    does) -> seqeval entity precision/recall/F1, overall and per type.

    Args:
        encoded: the encoded evaluation dataset (`encode_dataset` output), in evaluation order.
        pages: the evaluation pages it came from (their `ner_tags` are the references).
        id2label: the model's label names.
    """

    def __init__(self, encoded: Dataset, pages: Dataset, id2label: dict[int, str]):
        self.word_ids = [[None if w < 0 else w for w in row] for row in encoded["word_ids"]]
        self.page_of_row = list(encoded["page"])
        self.id2label = {int(k): v for k, v in id2label.items()}
        self.references = [[self.id2label[int(t)] for t in tags] for tags in pages["ner_tags"]]
        self.last_scores: dict | None = None

    def word_predictions(self, token_predictions: Any) -> list[list[str]]:
        """Token label ids (or logits) of every window -> label names per word of each page (uncovered words
        count as O)."""
        merged = merge_window_predictions(
            self.word_ids,
            token_predictions,
            self.page_of_row,
            [len(page) for page in self.references],
            fill_value=IGNORE_INDEX,
        )
        return [[self.id2label.get(i, "O") if i != IGNORE_INDEX else "O" for i in page] for page in merged]

    def __call__(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        if len(predictions) != len(self.word_ids):
            raise ValueError(
                f"Got predictions for {len(predictions)} windows, the evaluation set has {len(self.word_ids)}."
            )
        self.last_scores = entity_scores(self.references, self.word_predictions(predictions))
        return flatten_entity_scores(self.last_scores)
