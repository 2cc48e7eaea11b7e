"""Entity F1: seqeval's entity precision, recall and F1 of BIO label sequences, overall and per entity type, with word
accuracy, as an `evaluate` metric.

    metric = evaluate.load("<site-packages>/layoutlm_roialign/evaluate_metrics/entity_f1.py")  # a local file: no Hub
    metric.compute(predictions=[["B-QUESTION", "I-QUESTION", "O"]], references=[["B-QUESTION", "I-QUESTION", "O"]])

`layoutlm_roialign.metrics.load_metric("entity_f1")` does the same without the path. This file computes
the package's entity scores: `layoutlm_roialign.metrics.entity_scores` (hence `Trainer`'s
`compute_metrics`, `scripts/evaluate_checkpoint.py` and the model card) computes through it. It is not a module of the package:
`evaluate.load` copies it into its modules cache and imports it alone, so it imports only seqeval, datasets and
evaluate (one import per line: `evaluate` reads the file's imports to check they are installed).

The scores are those of the Hub's `seqeval` metric (`evaluate.load("seqeval")`, which needs the Hub): conlleval-style
chunking, not strict IOB2 mode; a type or total without predictions or gold entities scores 0 (`zero_division=0`).
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

_DESCRIPTION = """Entity-level precision, recall and F1 of BIO label sequences (seqeval, micro-averaged over entities),
the same per entity type with its gold count, and word accuracy."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per page (or sentence), the predicted label of each word, e.g. `["B-QUESTION", "I-QUESTION", "O"]`.
    references: the gold labels, same nesting and lengths.
Returns:
    `precision`, `recall`, `f1`: entity scores over all types; `accuracy`: word accuracy (0 without words);
    `per_type`: `{type: {"precision", "recall", "f1", "number"}}`, `number` being the type's gold entity count.
"""

_CITATION = """@misc{seqeval, title={seqeval: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval}, author={Hiroki Nakayama}, year={2018}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EntityF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions: list[list[str]], references: list[list[str]]) -> dict:
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
