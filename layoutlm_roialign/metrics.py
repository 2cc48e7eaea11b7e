"""Word-level entity scores (seqeval's entity precision, recall and F1, overall and per type) and key-value pair scores,
for `Trainer`'s `compute_metrics`, `scripts/evaluate_checkpoint.py` and the model card, computed offline.

`entity_scores` scores label sequences; `WordLevelEntityMetrics` is `Trainer`'s `compute_metrics`: it turns the
token predictions of every window back into one label per word of each page before scoring, so that a word split
over two windows or into several sub-tokens counts once.

Key-value links (the linking head): `gold_links` reads a page's gold pairs, `link_scores` scores pairs with gold
entities (the common FUNSD "RE" setting: pair precision / recall / F1, micro over pages), `end_to_end_link_scores`
scores pairs between predicted entities (a predicted pair counts when each of its entities has exactly the words of
a gold entity and those two form a gold pair), and `LinkingMetrics` is the linking task's `compute_metrics`.

The scores themselves are computed by the package's `evaluate` metrics, `evaluate_metrics/entity_f1.py` (seqeval's
entity F1, with the defaults of the Hub's `seqeval` metric) and `evaluate_metrics/pair_f1.py`, loaded from their local
files by `load_metric` (offline: `evaluate.load("seqeval")` would fetch its script from the Hub). Those files hold the
one implementation; `entity_scores` and `link_scores` hand their inputs to them. Outside the package the same metrics
load by path: `evaluate.load(str(METRICS_FOLDER / "entity_f1.py"))`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import evaluate
import torch

from .processing_layoutlm_roialign import IGNORE_INDEX, merge_window_links, merge_window_predictions, select_links

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import EvalPrediction

__all__ = [
    "METRICS",
    "METRICS_FOLDER",
    "load_metric",
    "entity_scores",
    "flatten_entity_scores",
    "WordLevelEntityMetrics",
    "argmax_logits",
    "argmax_logits_keep_links",
    "gold_links",
    "link_scores",
    "end_to_end_link_scores",
    "LinkingMetrics",
]


METRICS = ("entity_f1", "pair_f1")  # the package's `evaluate` metrics, files in layoutlm_roialign/evaluate_metrics/
METRICS_FOLDER = Path(__file__).resolve().parent / "evaluate_metrics"


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """One of the package's `evaluate` metrics (`"entity_f1"`, `"pair_f1"`), loaded from its file in the package: no
    Hub. `kwargs` go to `evaluate.load` (e.g. `keep_in_memory=True`)."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}: the package's metrics are {', '.join(METRICS)}.")
    return evaluate.load(str(METRICS_FOLDER / f"{name}.py"), **kwargs)


@functools.cache
def _metric(name: str) -> evaluate.EvaluationModule:
    # Loaded once per process; kept in memory, so that no evaluation writes (or locks) a cache file.
    return load_metric(name, keep_in_memory=True)


def _compute(name: str, predictions: list, references: list) -> dict:
    try:
        return _metric(name).compute(predictions=predictions, references=references)
    except Exception:
        _metric.cache_clear()  # a failed compute can leave its inputs in the module: the next one starts afresh
        raise


def entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict:
    """Score BIO label sequences (one per page) at the entity level, with the `entity_f1` metric (seqeval).

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
    return _compute("entity_f1", predictions, references)


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


def argmax_logits_keep_links(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """`preprocess_logits_for_metrics` of the linking task: token label ids, and the link logits as they are."""
    return logits[0].argmax(-1), logits[1]


def gold_links(entities: Sequence[dict], links: Sequence[Sequence[int]], link_types: Sequence[Sequence[str]]) -> set:
    """A page's gold `(key, value)` pairs, entities by position in `entities` (FUNSD-schema records with `id` and
    `label`), kept where their types are a pair of `link_types` (a link listed value -> key is turned around)."""
    position = {int(e["id"]): i for i, e in enumerate(entities)}
    allowed = {tuple(pair) for pair in link_types}
    pairs = set()
    for a, b in links:
        if int(a) not in position or int(b) not in position:
            continue
        i, j = position[int(a)], position[int(b)]
        types = (entities[i]["label"], entities[j]["label"])
        if types in allowed:
            pairs.add((i, j))
        elif types[::-1] in allowed:
            pairs.add((j, i))
    return pairs


def link_scores(gold: Sequence[set], predicted: Sequence[set]) -> dict:
    """Pair precision, recall and F1 over pages (micro: every pair of every page counts once), with the counts
    (`predicted`, `gold`, `correct`), by the `pair_f1` metric.

    Args:
        gold: per page, the gold `(key, value)` pairs. predicted: per page, the predicted pairs.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold pages but {len(predicted)} predicted pages.")
    return _compute(
        "pair_f1", [sorted(map(list, page)) for page in predicted], [sorted(map(list, page)) for page in gold]
    )


def end_to_end_link_scores(
    gold_entities: Sequence[Sequence[Sequence[int]]],
    gold: Sequence[set],
    predicted_entities: Sequence[Sequence[Sequence[int]]],
    predicted: Sequence[set],
) -> dict:
    """Pair scores between predicted entities: a predicted `(key, value)` pair is correct when each predicted entity
    has exactly the words (`word_indices`) of a gold entity and those gold entities form a gold pair; types are not
    compared (the pair's types were predicted to be a candidate pair).

    Args:
        gold_entities: per page, each gold entity's word indices. gold: per page, gold pairs (positions in it).
        predicted_entities: per page, each predicted entity's word indices. predicted: per page, predicted pairs.
    """
    mapped = []
    for g_entities, p_entities, pairs in zip(gold_entities, predicted_entities, predicted, strict=True):
        by_words = {frozenset(map(int, words)): i for i, words in enumerate(g_entities)}
        to_gold = [by_words.get(frozenset(map(int, words)), -1) for words in p_entities]
        mapped.append({(to_gold[k], to_gold[v]) if to_gold[k] >= 0 and to_gold[v] >= 0 else (-1 - k, -1 - v)
                       for k, v in pairs})  # fmt: skip
    return link_scores(gold, mapped)


class LinkingMetrics:
    """`compute_metrics` for the linking task: the entity scores of `WordLevelEntityMetrics` (`f1`, ...), plus link
    scores with gold entities at the config's threshold (`link_precision`, `link_recall`, `link_f1`, ...), the F1 at
    other thresholds (`link_f1_at_0.3`, ...: how the threshold was chosen), `link_gold_unreachable` (gold pairs
    whose entities share no window, which count as missed) and `linking_f1`, the mean of entity F1 and link F1 (what
    pairs between predicted entities need).

    Args:
        encoded: the encoded evaluation dataset (`encode_dataset(..., entity_types=...)`), in evaluation order.
        pages: the evaluation pages (their `entities` and `links` are the references).
        config: the model's config (`id2label`, `link_types`, `link_threshold`, `link_one_value_key`).
    """

    THRESHOLDS = (0.1, 0.3, 0.5, 0.7)

    def __init__(self, encoded: Dataset, pages: Dataset, config: Any):
        self.entity_metrics = WordLevelEntityMetrics(encoded, pages, config.id2label)
        self.entity_index = [list(row) for row in encoded["entity_index"]]
        self.entity_spans = [list(row) for row in encoded["entity_spans"]]
        self.content = [sum(w >= 0 for w in row) for row in encoded["word_ids"]]
        self.page_of_row = list(encoded["page"])
        self.threshold, self.one_value_key = config.link_threshold, config.link_one_value_key
        self.gold = [gold_links(e, links, config.link_types) for e, links in zip(pages["entities"], pages["links"],
                                                                                 strict=True)]  # fmt: skip
        together = [set() for _ in self.gold]  # the pairs that some window holds both entities of
        for page, index in zip(self.page_of_row, self.entity_index, strict=True):
            present = set(index)
            together[page] |= {pair for pair in self.gold[page] if set(pair) <= present}
        self.unreachable = sum(len(g - t) for g, t in zip(self.gold, together, strict=True))
        self.last_scores: dict | None = None

    def predicted_pairs(self, link_logits: Any, threshold: float) -> list[set]:
        """Link logits of every window -> the predicted pairs of each page."""
        merged = merge_window_links(
            self.entity_index, self.entity_spans, link_logits, self.content, self.page_of_row, len(self.gold)
        )
        return [{(k, v) for k, v, _ in select_links(page, threshold, self.one_value_key)} for page in merged]

    def __call__(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        token_predictions, link_logits = eval_prediction.predictions[:2]
        flat = self.entity_metrics(type(eval_prediction)(predictions=token_predictions, label_ids=None))
        scores = link_scores(self.gold, self.predicted_pairs(link_logits, self.threshold))
        by_threshold = {t: link_scores(self.gold, self.predicted_pairs(link_logits, t)) for t in self.THRESHOLDS}
        self.last_scores = {"gold_entities": scores, "gold_entities_by_threshold": by_threshold,
                            "gold_unreachable": self.unreachable}  # fmt: skip
        flat.update({f"link_{key}": value for key, value in scores.items()})
        flat.update({f"link_f1_at_{t}": s["f1"] for t, s in by_threshold.items()})
        flat["link_gold_unreachable"] = self.unreachable
        # what end-to-end pairs need: entities found and linked (train.py keeps the best epoch by it)
        flat["linking_f1"] = (flat["f1"] + scores["f1"]) / 2
        return flat
