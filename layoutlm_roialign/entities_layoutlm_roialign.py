"""Entities on a page and the key-value pairs among them: words grouped into entities by their BIO labels
(`group_entities`) or given entities checked (`given_entities`), the pairs among them scored by a linking model's
head from the states the road's window loop kept (`link_pages`), and the pairs written out (`pair_records`). This
module travels with every checkpoint beside the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .options_layoutlm_roialign import link_rules
from .windowing_layoutlm_roialign import IGNORE_INDEX, merge_window_links, select_links, word_index_list

__all__ = ["NOT_LINKED", "given_entities", "group_entities", "link_pages", "pair_records"]

NOT_LINKED = ("O", "OTHER")  # labels of given entities that are no type: kept, never linked


def group_entities(words: Sequence[dict]) -> list[dict]:
    """Join consecutive words into entities by their BIO labels (seqeval's reading: `B-X` starts an entity, `I-X`
    continues an entity of type X or starts one after anything else; `O` words belong to none).

    Returns:
        One dict per entity: `label` (the type, e.g. `"QUESTION"`), `text`, `word_indices`, `box` and `pixel_box`
        (the union of its words' boxes) and `score` (the mean of its words' scores).
    """
    entities: list[dict] = []
    current: dict | None = None
    for i, word in enumerate(words):
        label = word["label"]
        prefix, _, kind = label.partition("-") if "-" in label else ("", "", label)
        if label == "O" or not kind:
            current = None
            continue
        if prefix == "I" and current is not None and current["label"] == kind:
            current["word_indices"].append(i)
        else:
            current = {"label": kind, "word_indices": [i]}
            entities.append(current)
    for entity in entities:
        members = [words[i] for i in entity["word_indices"]]
        entity["text"] = " ".join(w["text"] for w in members)
        for key in ("box", "pixel_box"):
            if all(key in w for w in members):
                entity[key] = [
                    min(w[key][0] for w in members),
                    min(w[key][1] for w in members),
                    max(w[key][2] for w in members),
                    max(w[key][3] for w in members),
                ]
        entity["score"] = float(np.mean([w["score"] for w in members]))
    return entities


def given_entities(entities: Sequence[Any], words: Sequence[dict], entity_types: Sequence[str]) -> list[dict]:
    """Entities given to link instead of the predicted ones (e.g. gold ones), checked and described as
    `group_entities` describes predicted ones (`label`, `word_indices`, `text`, `box`, `pixel_box`, `score`).

    A label is a type of `entity_types` in any case, with or without a `B-`/`I-` prefix (FUNSD's files say
    `"question"`), a type's index, or one of `NOT_LINKED` (FUNSD's `"other"`: kept, never a candidate);
    `word_indices` are consecutive integer word indices, no word in two entities.

    Raises:
        ValueError: naming `entities` and the entity, for a label that is not one of the model's types (they are
            listed), missing, non-integer, out-of-range or non-consecutive word indices, or an entity that repeats
            or overlaps another.
    """
    types = {t.upper(): t for t in entity_types}
    owner: dict[int, int] = {}
    out = []
    for e, entity in enumerate(entities):
        where = f"`entities`[{e}]"
        if not isinstance(entity, Mapping) or "word_indices" not in entity:
            raise ValueError(f"{where} is {entity!r}: expected a dict with `word_indices` and `label`.")
        label = entity.get("label")
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(entity_types):
            name = entity_types[int(label)].upper()
        else:
            name = re.sub(r"^[BIES]-", "", label.strip().upper()) if isinstance(label, str) else None
        if name not in types and name not in NOT_LINKED:
            raise ValueError(
                f"{where} has the label {label!r}: a label is one of the model's entity types {list(entity_types)} "
                f"(any case, with or without a B-/I- prefix, or its index), or {' / '.join(NOT_LINKED)} for an entity "
                "never linked."
            )
        raw = entity["word_indices"]
        indices = word_index_list(raw, where)
        if not indices or indices != list(range(indices[0], indices[0] + len(indices))):
            raise ValueError(f"{where}: `word_indices` {indices} must be consecutive word indices in order.")
        if indices[0] < 0 or indices[-1] >= len(words):
            raise ValueError(f"{where}: `word_indices` {indices} do not index the page's {len(words)} words.")
        for i in indices:
            if i in owner:
                other = owner[i]
                same = list(entities[other]["word_indices"]) == list(raw)
                relation = "repeats" if same else f"overlaps (word {i}, {words[i]['text']!r})"
                raise ValueError(
                    f"{where} {relation} `entities`[{other}]: an entity's words belong to it alone (drop duplicates, "
                    "split overlapping entities)."
                )
            owner[i] = e
        members = [words[i] for i in indices]
        described = {
            "label": types.get(name, name),
            "word_indices": indices,
            "text": " ".join(w["text"] for w in members),
        }
        for key in ("box", "pixel_box"):
            described[key] = [min(w[key][0] for w in members), min(w[key][1] for w in members),
                              max(w[key][2] for w in members), max(w[key][3] for w in members)]  # fmt: skip
        described["score"] = float(np.mean([w["score"] for w in members]))
        out.append(described)
    return out


@torch.inference_mode()
def link_pages(
    model: torch.nn.Module,
    processor: Any,
    pages: Sequence[Mapping[str, Any]],
    kept: Sequence[Mapping[str, Any]],
    entities: Sequence[Sequence[dict]],
    batch_size: int = 8,
    threshold: float | None = None,
    one_value_key: bool | None = None,
) -> list[list[dict]]:
    """Decide the key-value pairs among `entities` of each page from the states `predict_windows` kept, with no
    other encoder or backbone pass; windows of several pages share a pass of the link head.

    Args:
        model: the linking model `predict_windows` ran.
        processor: its processor (which windows hold which entities: `encode_entities`).
        pages: the encoded pages (`word_ids`).
        kept: `predict_windows(..., keep_link_states=True)`'s result for `pages`.
        entities: per page, the entities to link (`word_indices`, `label` a type name).
        batch_size: windows per pass of the link head.
        threshold, one_value_key: override `config.link_threshold` / `config.link_one_value_key`.

    Returns:
        Per page, `[{"key": entity position, "value": entity position, "score": probability}]`, sorted by key.
    """
    config = model.config
    threshold, one_value_key = link_rules(config, threshold, one_value_key)
    encoded = [
        processor.encode_entities(page["word_ids"], page_entities, config.resolved_entity_types)
        if page.get("word_ids") and page_entities
        else None
        for page, page_entities in zip(pages, entities, strict=True)
    ]
    link_logits = _link_logits(model, kept, encoded, batch_size)
    out = []
    for p, (page, page_encoded) in enumerate(zip(pages, encoded, strict=True)):
        if page_encoded is None:  # no words, or no entities
            out.append([])
            continue
        windows = range(len(page["word_ids"]))
        scores = merge_window_links(
            page_encoded["entity_index"],
            page_encoded["entity_spans"],
            [link_logits.get((p, w), torch.empty(0, 0)) for w in windows],
            [sum(i is not None for i in page["word_ids"][w]) for w in windows],
            [0] * len(windows),
            num_pages=1,
        )[0]
        out.append([{"key": k, "value": v, "score": s} for k, v, s in select_links(scores, threshold, one_value_key)])
    return out


def _link_logits(
    model: torch.nn.Module, kept: Sequence[Mapping[str, Any]], encoded: Sequence[dict | None], batch_size: int
) -> dict[tuple[int, int], torch.Tensor]:
    """`{(page, window): (E, E) link logits}` for every window holding two entities or more (`encoded`: per page,
    `encode_entities`' result or `None`), from the states `kept` by the window loop, `batch_size` windows per pass of
    the link head."""
    rows = [
        (p, w, spans, labels)
        for p, page in enumerate(encoded)
        if page is not None
        for w, (spans, labels) in enumerate(zip(page["entity_spans"], page["entity_labels"], strict=True))
        if len(spans) > 1
    ]
    link_logits: dict[tuple[int, int], torch.Tensor] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(kept[p]["states"][w].shape[0] for p, w, _, _ in chunk)
        count = max(len(spans) for *_, spans, _ in chunk)
        states = torch.stack([F.pad(kept[p]["states"][w], (0, 0, 0, length - kept[p]["states"][w].shape[0]))
                              for p, w, _, _ in chunk])  # fmt: skip
        bbox = torch.stack([F.pad(kept[p]["bbox"][w], (0, 0, 0, length - kept[p]["bbox"][w].shape[0]))
                            for p, w, _, _ in chunk])  # fmt: skip
        spans = torch.tensor([list(s) + [[0, 0]] * (count - len(s)) for *_, s, _ in chunk], dtype=torch.long)
        labels = torch.tensor([list(t) + [IGNORE_INDEX] * (count - len(t)) for *_, t in chunk], dtype=torch.long)
        chunk_pages = list(dict.fromkeys(p for p, *_ in chunk))
        feature_map = image_index = None
        if kept[chunk_pages[0]].get("feature_map") is not None:
            feature_map = torch.stack([kept[p]["feature_map"] for p in chunk_pages])
            image_index = torch.tensor([chunk_pages.index(p) for p, *_ in chunk], device=feature_map.device)
        device = states.device
        logits = (
            model.link_logits_from_states(states, bbox, spans.to(device), labels.to(device), feature_map, image_index)
            .float()
            .cpu()
        )  # (B, E, E)
        for i, (p, w, s, _) in enumerate(chunk):
            link_logits[p, w] = logits[i, : len(s), : len(s)]
    return link_logits


def pair_records(entities: Sequence[dict], pairs: Sequence[dict]) -> list[dict]:
    """Decided pairs as the road writes them: each end `{"entity": its index in `entities`, "label", "text", "box",
    "pixel_box"}`, and the score rounded."""
    return [
        {"key": _end(entities[p["key"]], p["key"]), "value": _end(entities[p["value"]], p["value"]),
         "score": round(float(p["score"]), 4)}
        for p in pairs
    ]  # fmt: skip


def _end(entity: dict, index: int) -> dict:
    return {"entity": index, **{k: entity[k] for k in ("label", "text", "box", "pixel_box") if k in entity}}
