"""A checkpoint's predictions over a labelled dataset, for its scores: `predict_dataset` drives the engine
(`engine_layoutlm_roialign.Engine`) over FUNSD-schema rows, one encoder and one backbone pass per page;
`end_to_end_scores` scores the pairs a linking checkpoint finds between the entities it predicts against the rows'
gold links.

For a linking checkpoint each page's pass gives the token labels and the probability of every candidate pair among
its predicted entities and among its gold entities (`Engine.label_batch(..., pair_scores=True, gold_entities=...)`:
the link head runs on the states kept from the one pass), so that pairs are scored at any threshold afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from .engine_layoutlm_roialign import Engine
from .options_layoutlm_roialign import WindowOptions
from .road_layoutlm_roialign import group_pages, is_linking_model

__all__ = ["predict_dataset", "end_to_end_scores", "link_scores_of"]


def _encoded_rows(engine: Engine, rows: Iterable[dict]) -> Iterator[dict]:
    for index, row in enumerate(rows):
        encoded = engine.encode_page(row["image"], 1, row["words"], row["bboxes"], name=f"row {index}")
        encoded.update(index=index, gold_entities=row.get("entities"))
        del encoded["image"]
        yield encoded


@torch.inference_mode()
def predict_dataset(
    model: torch.nn.Module,
    processor: Any,
    rows: Iterable[dict],
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    dtype: str = "auto",
) -> list[dict]:
    """Label (and link) every row of a FUNSD-schema dataset (`image`, `words`, `bboxes`[, `entities`]), pages of
    similar lengths batched together (`group_pages`), one encoder and backbone pass per page, in windows of
    `max_length` tokens overlapping by `stride` (`None`: the checkpoint's, `window_sizes`), in `dtype`
    (`compute_layoutlm_roialign.DTYPES`).

    Returns:
        Per row, in order, `decode_page`'s result; for a linking model also `"pair_scores"`: every scored
        candidate pair among the predicted entities as `(key, value, probability)` (not thresholded, each value's
        best key), and for a row with gold `entities` `"gold_pair_scores"`, the same among the gold entities.
    """
    engine = Engine(model, processor, windows=WindowOptions(max_length, stride), batch_size=batch_size, dtype=dtype)
    linking = is_linking_model(model)
    results: list[dict | None] = []
    for group in group_pages(_encoded_rows(engine, rows), batch_size):
        gold = [page["gold_entities"] for page in group] if linking else None
        labelled = engine.label_batch(group, pair_scores=linking, gold_entities=gold)
        for page, result in zip(group, labelled, strict=True):
            results.extend([None] * (page["index"] + 1 - len(results)))
            results[page["index"]] = result
    return results


def link_scores_of(
    predictions: Sequence[dict], rows: Sequence[dict], link_types: Any, thresholds: Sequence[float]
) -> dict:
    """Pair precision / recall / F1 at each of `thresholds`, with gold entities (`gold_entities`) and end to end
    (`end_to_end`: both predicted entities must have exactly a gold entity's words), from `predict_dataset`'s
    predictions of a linking checkpoint on `rows` (their `entities` and `links` are the references)."""
    from .metrics import end_to_end_link_scores, gold_links, link_scores  # evaluate, seqeval (the train extra)

    gold = [gold_links(row["entities"], row["links"], link_types) for row in rows]
    gold_words = [[e["word_indices"] for e in row["entities"]] for row in rows]
    predicted_words = [[e["word_indices"] for e in p["entities"]] for p in predictions]
    out: dict = {"gold_entities": {}, "end_to_end": {}}
    for t in thresholds:
        if all("gold_pair_scores" in p for p in predictions):
            chosen = [{(k, v) for k, v, s in p["gold_pair_scores"] if s > t} for p in predictions]
            out["gold_entities"][float(t)] = link_scores(gold, chosen)
        chosen = [{(k, v) for k, v, s in p["pair_scores"] if s > t} for p in predictions]
        out["end_to_end"][float(t)] = end_to_end_link_scores(gold_words, gold, predicted_words, chosen)
    return out


def end_to_end_scores(
    model: torch.nn.Module,
    processor: Any,
    pages: Any,
    max_length: int | None = None,
    stride: int | None = None,
    thresholds: Sequence[float] | None = None,
    dtype: str = "auto",
) -> dict:
    """Pairs predicted from predicted entities against the pages' gold links (`metrics.end_to_end_link_scores`:
    both entities must have exactly a gold entity's words), the model computing in `dtype`. `pages`: a FUNSD-schema
    dataset with `entities` and `links`. With `thresholds`, returns `{threshold: scores}` instead, from one pass."""
    predictions = predict_dataset(model, processor, pages, max_length, stride, dtype=dtype)
    wanted = [model.config.link_threshold] if thresholds is None else list(thresholds)
    scores = link_scores_of(predictions, list(pages), model.config.link_types, wanted)["end_to_end"]
    return scores[float(model.config.link_threshold)] if thresholds is None else scores
