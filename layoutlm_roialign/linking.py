"""Key-value pairs of a page: the logic behind `scripts/predict.py`'s `"pairs"` and the arrows it draws.

One checkpoint does both tasks (`LayoutLMRoIAlignForRelationExtraction`): `predict_pairs` labels the words and groups
them into entities (`inference.predict_page`), then scores the candidate (key, value) pairs among those entities
(or among entities you give, e.g. gold ones) window by window, merges the windows (`merge_window_links`: each pair
from the window where it has the most context) and keeps the pairs above `config.link_threshold` (with
`config.link_one_value_key`, only each value's best key). `draw_pairs` draws the entities as `draw_entities` does and
an arrow from each key to its value. `load_linking_model` loads a checkpoint with its link head;
`end_to_end_scores` scores the pairs predicted from predicted entities against a dataset's gold links.

Cost: labelling and linking are two passes of the encoder over the page (the entities are only known after the
first).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from .inference import draw_entities, load_model_and_processor, predict_page
from .pages import load_page

__all__ = [
    "LINKING_ARCHITECTURE",
    "PAIR_COLOUR",
    "has_link_head",
    "is_linking_checkpoint",
    "load_linking_model",
    "with_link_head",
    "predict_pairs",
    "link_entities",
    "pair_records",
    "draw_pairs",
    "end_to_end_scores",
]

LINKING_ARCHITECTURE = "LayoutLMRoIAlignForRelationExtraction"
PAIR_COLOUR = (230, 120, 0)
ENTITY_INPUTS = ("entity_spans", "entity_labels")


def has_link_head(model: torch.nn.Module) -> bool:
    """Whether `model` scores key-value pairs (a `LayoutLMRoIAlignForRelationExtraction`, local or remote code)."""
    return hasattr(model, "link_head") and hasattr(model, "candidate_mask")


def is_linking_checkpoint(path: str | os.PathLike) -> bool:
    """Whether the checkpoint at `path` (a folder or Hub id) was saved by the linking model (`config.architectures`);
    `False` when its config cannot be read (the regular loader then says why)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(os.fspath(path))
    except (OSError, ValueError):
        return False
    return LINKING_ARCHITECTURE in (getattr(config, "architectures", None) or [])


def with_link_head(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """The checkpoint at `path` with its link head when it has one: `model` itself if it already has it, else the
    joint class loaded from `path` (where this package is imported, `AutoModelForTokenClassification` gives its own
    token classifier, without the link head, even with `trust_remote_code=True`); `model` for checkpoints without
    one."""
    if has_link_head(model) or LINKING_ARCHITECTURE not in (getattr(model.config, "architectures", None) or []):
        return model
    from .modeling_layoutlm_roialign import LayoutLMRoIAlignForRelationExtraction

    return LayoutLMRoIAlignForRelationExtraction.from_pretrained(os.fspath(path)).to(next(model.parameters()).device)


def load_linking_model(path: str | os.PathLike, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load a linking checkpoint (the joint class, link head included) and its processor.

    Raises:
        ValueError: naming `--model`, with `load_model_and_processor`'s messages for a missing, damaged or
            incomplete checkpoint, or for a checkpoint without a link head (a token-classification one).
    """
    from transformers import AutoProcessor

    from .modeling_layoutlm_roialign import LayoutLMRoIAlignForRelationExtraction

    if not is_linking_checkpoint(path):
        model, _ = load_model_and_processor(path, trust_remote_code)  # its errors name what is wrong
        raise ValueError(
            f"--model {os.fspath(path)!r} has no link head (it is a {type(model).__name__}): train one with "
            "`scripts/train.py --task linking`."
        )
    try:
        model = LayoutLMRoIAlignForRelationExtraction.from_pretrained(os.fspath(path))
        processor = AutoProcessor.from_pretrained(os.fspath(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError):
        load_model_and_processor(path, trust_remote_code)  # raises its message naming the damaged or missing part
        raise
    return model, processor


@torch.inference_mode()
def link_entities(
    model: torch.nn.Module,
    processor: Any,
    image: Any,
    words: Sequence[str],
    boxes: Sequence[Sequence[int]],
    entities: Sequence[dict],
    max_length: int = 512,
    stride: int = 128,
    batch_size: int = 8,
    threshold: float | None = None,
    one_value_key: bool | None = None,
    *,
    pixel_values: torch.Tensor | None = None,
) -> list[dict]:
    """Score the candidate pairs among `entities` of one page (`word_indices` and `label`, a type name) and decide
    them. Returns `[{"key": entity position, "value": entity position, "score": probability}]` (empty without
    entities or candidates).

    The page's pixels are prepared once (`pixel_values` `(3, size, size)` when the caller already has them, as the
    labeller does; else from `image`) and every window reads them through `image_index`: one backbone run per page.
    """
    config = model.config
    threshold = config.link_threshold if threshold is None else threshold
    one_value_key = config.link_one_value_key if one_value_key is None else one_value_key
    if not words or not entities:
        return []
    encoding = processor(
        None,
        list(words),
        [list(b) for b in boxes],
        entities=[{"word_indices": e["word_indices"], "label": e.get("label")} for e in entities],
        entity_types=config.resolved_entity_types,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        padding="longest",
        return_tensors="pt",
    )
    uses_pixels = getattr(config, "use_visual_features", True)
    if uses_pixels and pixel_values is None:
        pixel_values = processor.image_processor(load_page(image), return_tensors="pt")["pixel_values"][0]
    model.eval()
    device = next(model.parameters()).device
    names = [n for n in (*processor.model_input_names, *ENTITY_INPUTS) if n != "pixel_values"]
    num_windows = len(encoding["input_ids"])
    link_logits = []
    for start in range(0, num_windows, batch_size):
        rows = min(batch_size, num_windows - start)
        batch = {k: encoding[k][start : start + rows].to(device) for k in names if k in encoding}
        if uses_pixels:
            batch["pixel_values"] = pixel_values[None].to(device)  # the page once, read by every window
            batch["image_index"] = torch.zeros(rows, dtype=torch.long, device=device)
        link_logits.extend(model(**batch).link_logits.float().cpu())
    return processor.post_process_relation_extraction(encoding, link_logits, threshold, one_value_key, 1)[0]


def pair_records(entities: Sequence[dict], pairs: Sequence[dict]) -> list[dict]:
    """`link_entities`'s pairs as `predict.py` writes them: each end `{"entity": its index in `entities`, "label",
    "text", "box", "pixel_box"}`, and the score rounded."""
    return [
        {"key": _end(entities[p["key"]], p["key"]), "value": _end(entities[p["value"]], p["value"]),
         "score": round(float(p["score"]), 4)}
        for p in pairs
    ]  # fmt: skip


def _end(entity: dict, index: int) -> dict:
    return {"entity": index, **{k: entity[k] for k in ("label", "text", "box", "pixel_box") if k in entity}}


def predict_pairs(
    model: torch.nn.Module,
    processor: Any,
    image: Any,
    words: Sequence[str] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    max_length: int = 512,
    stride: int = 128,
    batch_size: int = 8,
    ocr_lang: str | None = None,
    *,
    entities: Sequence[dict] | None = None,
    threshold: float | None = None,
    one_value_key: bool | None = None,
) -> dict:
    """Label the words of a page, group them into entities and link them.

    Args:
        model: a `LayoutLMRoIAlignForRelationExtraction` (token classifier + link head).
        processor: its processor.
        image, words, boxes, max_length, stride, batch_size, ocr_lang: as `inference.predict_page` takes them (the
            same positions, so the two are interchangeable).
        entities: link these entities (`word_indices`, `label`) instead of the predicted ones (e.g. gold entities);
            `"entities"` of the result are then these, with `text` and boxes filled in. Labels are the model's
            entity types in any case, with or without a B-/I- prefix ("question", "B-QUESTION"), or "other".

    Raises:
        ValueError: naming `entities`, for a label that is none of the model's types, non-integer word indices,
            or an entity that repeats or overlaps another.
        threshold, one_value_key: override `config.link_threshold` / `config.link_one_value_key`.

    Returns:
        `predict_page`'s result plus `"pairs"`: `[{"key": {...}, "value": {...}, "score": float}]`, each end an
        entity as `{"entity": its index in "entities", "label", "text", "box", "pixel_box"}`, sorted by key.
    """
    if not has_link_head(model):
        raise ValueError(f"`model` ({type(model).__name__}) has no link head; load it with `load_linking_model`.")
    prediction = predict_page(model, processor, image, words, boxes, max_length, stride, batch_size, ocr_lang)
    words = [w["text"] for w in prediction["words"]]
    boxes = [w["box"] for w in prediction["words"]]
    if entities is not None:
        prediction["entities"] = _given_entities(entities, prediction["words"], model.config.resolved_entity_types)
    pairs = link_entities(
        model, processor, image, words, boxes, prediction["entities"], max_length, stride, batch_size, threshold,
        one_value_key,
    )  # fmt: skip
    prediction["pairs"] = pair_records(prediction["entities"], pairs)
    return prediction


def _entity_type(label: Any, types: Sequence[str], where: str) -> str:
    """A given entity's label as one of the model's entity `types` (case and a B-/I-/E-/S- prefix ignored, a type id
    taken), or `"OTHER"` (FUNSD's "other": an entity that is never linked)."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(types):
        return types[int(label)]
    if isinstance(label, str):
        name = label.strip().upper()
        name = name[2:] if name[:2] in ("B-", "I-", "E-", "S-") else name
        if name in types:
            return name
        if name in ("O", "OTHER"):
            return "OTHER"
    raise ValueError(
        f"{where} has the label {label!r}, which is not one of the model's entity types {list(types)} (case and B-/I- "
        "prefixes are ignored; 'other' marks an entity that is never linked): give each entity one of them."
    )


def _given_entities(entities: Sequence[dict], words: Sequence[dict], types: Sequence[str]) -> list[dict]:
    """The entities given to `predict_pairs`, checked (labels normalized by `_entity_type`; integer word indices; no
    entity sharing a word with another) and with their text and boxes filled in from the page's words."""
    owner: dict[int, int] = {}
    described = []
    for n, entity in enumerate(entities):
        where = f"`entities`[{n}]"
        if not isinstance(entity, dict) or "word_indices" not in entity:
            raise ValueError(f"{where} is {entity!r}: expected a dict with `word_indices` and `label`.")
        raw = list(entity["word_indices"])
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in raw):
            raise ValueError(f"{where}: `word_indices` {raw!r} must be integers (positions of the page's words).")
        indices = [int(i) for i in raw]
        for i in indices:
            if i in owner:
                same = [int(j) for j in entities[owner[i]]["word_indices"]] == indices
                raise ValueError(
                    f"{where} {'repeats' if same else 'overlaps'} `entities`[{owner[i]}] (word {i}): each word "
                    "belongs to at most one entity; drop the duplicate or split the spans."
                )
            owner[i] = n
        described.append(_describe({**entity, "label": _entity_type(entity.get("label"), types, where)}, words))
    return described


def _describe(entity: dict, words: Sequence[dict]) -> dict:
    """A given entity with its text and boxes filled in from the page's words."""
    indices = [int(i) for i in entity["word_indices"]]
    if not indices or min(indices) < 0 or max(indices) >= len(words):
        raise ValueError(f"`entities`: word_indices {indices} do not index the page's {len(words)} words.")
    members = [words[i] for i in indices]
    out = {"label": entity.get("label"), "word_indices": indices, "text": " ".join(w["text"] for w in members)}
    for key in ("box", "pixel_box"):
        out[key] = [min(w[key][0] for w in members), min(w[key][1] for w in members),
                    max(w[key][2] for w in members), max(w[key][3] for w in members)]  # fmt: skip
    return out


def draw_pairs(
    image: Any, prediction: dict, labels: Sequence[str] | None = None, line_width: int | None = None
) -> PIL.Image.Image:
    """The entities as `draw_entities` draws them, and an arrow from the centre of each pair's key to its value.

    `prediction["pairs"]` ends are entity indices or entity-like dicts with `pixel_box` (or a 0-1000 `box`)."""
    picture = draw_entities(image, prediction, labels, line_width)
    page = load_page(image)
    width, height = page.size
    draw = PIL.ImageDraw.Draw(picture)
    line = line_width or max(2, round(min(width, height) / 300))
    for pair in prediction.get("pairs") or []:
        ends = []
        for end in (pair["key"], pair["value"]):
            entity = prediction["entities"][end] if isinstance(end, int) else end
            box = entity.get("pixel_box") or [v * s / 1000 for v, s in zip(entity["box"], (width, height) * 2,
                                                                             strict=True)]  # fmt: skip
            ends.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        (x0, y0), (x1, y1) = ends
        draw.line([x0, y0, x1, y1], fill=PAIR_COLOUR, width=line)
        angle, size = np.arctan2(y1 - y0, x1 - x0), 4 * line
        head = [(x1 - size * np.cos(angle + s), y1 - size * np.sin(angle + s)) for s in (0.45, -0.45)]
        draw.polygon([(x1, y1), *head], fill=PAIR_COLOUR)
    return picture


def end_to_end_scores(
    model: torch.nn.Module,
    processor: Any,
    pages: Any,
    max_length: int = 512,
    stride: int = 128,
    thresholds: Sequence[float] | None = None,
) -> dict:
    """Pairs predicted from predicted entities (`predict_pairs` on each page) against the pages' gold links
    (`metrics.end_to_end_link_scores`: both entities must have exactly a gold entity's words). `pages`: a
    FUNSD-schema dataset with `entities` and `links`.

    With `thresholds`, returns `{threshold: scores}` instead, from one pass (each value's best key, kept when its
    probability exceeds the threshold: `select_links` with one key per value)."""
    from .metrics import end_to_end_link_scores, gold_links  # seqeval (the train extra): not needed to predict

    config = model.config
    floor = min([config.link_threshold, *(thresholds or [])])
    gold_entities, gold, predicted_entities, scored = [], [], [], []
    for row in pages:
        prediction = predict_pairs(model, processor, row["image"], row["words"], row["bboxes"], max_length, stride,
                                   threshold=floor * 0.999, one_value_key=True)  # fmt: skip
        gold_entities.append([e["word_indices"] for e in row["entities"]])
        gold.append(gold_links(row["entities"], row["links"], config.link_types))
        predicted_entities.append([e["word_indices"] for e in prediction["entities"]])
        scored.append([(p["key"]["entity"], p["value"]["entity"], p["score"]) for p in prediction["pairs"]])

    def at(threshold: float) -> dict:
        predicted = [{(k, v) for k, v, p in page if p > threshold} for page in scored]
        return end_to_end_link_scores(gold_entities, gold, predicted_entities, predicted)

    if thresholds is None:
        return at(config.link_threshold)
    return {float(t): at(t) for t in thresholds}
