"""Entity-level precision, recall and F1 (seqeval), overall and per entity type, computed offline.

`evaluate.load("seqeval")` fetches its script from the Hub, which is not always reachable; this module calls the
`seqeval` package directly with the same defaults as that metric (conlleval-style chunking, not strict IOB2 mode),
so the numbers are the ones the Hub metric would report.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

__all__ = ["entity_scores", "flatten_entity_scores"]


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
