"""Predict the entities of a page and draw them: the logic behind `scripts/predict.py`.

`predict_page` runs a token-classification checkpoint over a page (words and 0-1000 boxes given, or read by OCR),
splitting long pages into overlapping windows and reading each word once (its first sub-token, in the window where
it has the most context: `merge_window_predictions`). It returns every word with its box, label and score, and the
entities: runs of words joined by the BIO labels. `draw_entities` draws each entity's box in its label's colour on
the page, with a legend.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

from .processing_layoutlm_roialign import merge_window_predictions

__all__ = ["predict_page", "group_entities", "draw_entities", "label_colours", "load_words_json"]

MODEL_INPUTS = ("input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values")
# Colours of FUNSD's entity types; other types get evenly spaced hues.
KNOWN_COLOURS = {"QUESTION": (31, 119, 180), "ANSWER": (44, 160, 44), "HEADER": (214, 39, 40), "O": (150, 150, 150)}


def _load_page(image: Any) -> PIL.Image.Image:
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")
    return PIL.Image.open(image).convert("RGB")


@torch.inference_mode()
def predict_page(
    model: torch.nn.Module,
    processor: Any,
    image: Any,
    words: Sequence[str] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    max_length: int = 512,
    stride: int = 128,
    batch_size: int = 8,
    ocr_lang: str | None = None,
) -> dict:
    """Label the words of one page.

    Args:
        model: a LayoutLM-RoIAlign token-classification model (any device; put in eval mode here).
        processor: its processor.
        image: the page (PIL image or path).
        words, boxes: the page's words and their 0-1000 boxes; both `None` to OCR the page with Tesseract.
        max_length, stride: window size and overlap in tokens for pages longer than one window.
        batch_size: windows per forward pass.
        ocr_lang: Tesseract language for OCR.

    Returns:
        `{"width", "height", "words": [{"text", "box", "pixel_box", "label", "score"}], "entities": [...]}`; `box` is
        on the 0-1000 grid, `pixel_box` in page pixels, `score` the softmax probability of the label; entities are
        described in `group_entities`.
    """
    if (words is None) != (boxes is None):
        raise ValueError("Give both `words` and `boxes` (0-1000), or neither to OCR the page.")
    page = _load_page(image)
    width, height = page.size
    if words is None:
        ocr = processor.image_processor(page, apply_ocr=True, ocr_lang=ocr_lang)
        words, boxes = list(ocr["words"][0]), [list(b) for b in ocr["boxes"][0]]
    words, boxes = list(words), [[int(round(v)) for v in box] for box in boxes]
    result = {"width": width, "height": height, "words": [], "entities": []}
    if not words:
        return result

    encoding = processor(
        page,
        words,
        boxes,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        padding="longest",
        return_tensors="pt",
    )
    model.eval()
    device = next(model.parameters()).device
    probabilities = []
    for start in range(0, len(encoding["input_ids"]), batch_size):
        inputs = {k: encoding[k][start : start + batch_size].to(device) for k in MODEL_INPUTS if k in encoding}
        logits = model(**inputs).logits  # (windows, L, num_labels)
        probabilities.append(logits.float().softmax(-1).cpu())
    probabilities = torch.cat(probabilities)  # (num_windows, L, num_labels)
    num_windows, seq_len, _ = probabilities.shape
    # Merge windows on flat token positions, then read label and score at the position chosen for each word: the
    # same rule as `merge_window_predictions` on label ids, with the score coming from the same window.
    flat_positions = torch.arange(num_windows * seq_len).view(num_windows, seq_len)
    chosen = merge_window_predictions(
        [encoding.word_ids(i) for i in range(num_windows)],
        flat_positions,
        encoding["overflow_to_sample_mapping"],
        [len(words)],
        fill_value=-1,
    )[0]
    flat = probabilities.view(num_windows * seq_len, -1)
    id2label = model.config.id2label
    for word, box, position in zip(words, boxes, chosen, strict=True):
        if position < 0:  # no window holds the word (the tokenizer dropped it)
            label, score = "O", 0.0
        else:
            score, label_id = flat[position].max(-1)
            label, score = id2label[int(label_id)], float(score)
        pixel_box = [
            round(box[0] * width / 1000, 1),
            round(box[1] * height / 1000, 1),
            round(box[2] * width / 1000, 1),
            round(box[3] * height / 1000, 1),
        ]
        result["words"].append({"text": word, "box": box, "pixel_box": pixel_box, "label": label, "score": score})
    result["entities"] = group_entities(result["words"])
    return result


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


def label_colours(labels: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """One distinct RGB colour per entity type (FUNSD's types keep fixed colours)."""
    types = sorted({label.split("-", 1)[-1] for label in labels if label != "O"})
    others = [t for t in types if t not in KNOWN_COLOURS]
    colours = {t: KNOWN_COLOURS[t] for t in types if t in KNOWN_COLOURS}
    for i, t in enumerate(others):
        r, g, b = colorsys.hsv_to_rgb((0.1 + i / max(1, len(others))) % 1.0, 0.85, 0.85)
        colours[t] = (int(r * 255), int(g * 255), int(b * 255))
    return colours


def draw_entities(
    image: Any, prediction: dict, labels: Sequence[str] | None = None, line_width: int | None = None
) -> PIL.Image.Image:
    """Draw each entity's box in its type's colour on the page, with a legend panel on the right.

    Args:
        image: the page (PIL image or path).
        prediction: `predict_page` output.
        labels: every label of the model (so the legend lists every type, found or not); default: the types found.
        line_width: box outline width in pixels (default: scaled to the page).
    """
    page = _load_page(image)
    width, height = page.size
    types = labels if labels is not None else [e["label"] for e in prediction["entities"]]
    colours = label_colours(list(types))
    line_width = line_width or max(2, round(min(width, height) / 400))
    font = PIL.ImageFont.load_default(size=max(12, height // 60))

    legend_rows = sorted(colours)
    row_height = font.size + 10
    text_width = max([round(font.getlength(f"{t} (00)")) for t in legend_rows] + [round(font.getlength("Legend"))])
    panel = text_width + 3 * row_height
    canvas = PIL.Image.new("RGB", (width + panel, max(height, (len(legend_rows) + 2) * row_height)), "white")
    canvas.paste(page, (0, 0))
    draw = PIL.ImageDraw.Draw(canvas)
    counts = {t: 0 for t in colours}
    for entity in prediction["entities"]:
        colour = colours.get(entity["label"], (0, 0, 0))
        counts[entity["label"]] = counts.get(entity["label"], 0) + 1
        x0, y0, x1, y1 = entity.get("pixel_box") or [
            entity["box"][0] * width / 1000,
            entity["box"][1] * height / 1000,
            entity["box"][2] * width / 1000,
            entity["box"][3] * height / 1000,
        ]
        draw.rectangle([x0 - 2, y0 - 2, x1 + 2, y1 + 2], outline=colour, width=line_width)

    x = width + row_height // 2
    draw.text((x, row_height // 2), "Legend", fill="black", font=font)
    for i, name in enumerate(legend_rows, start=1):
        y = row_height // 2 + i * row_height
        draw.rectangle([x, y, x + row_height - 8, y + row_height - 8], fill=colours[name], outline="black")
        draw.text((x + row_height, y), f"{name} ({counts.get(name, 0)})", fill="black", font=font)
    return canvas


def load_words_json(path: str, width: int, height: int) -> tuple[list[str], list[list[int]]]:
    """Read `{"words": [...], "boxes": [...]}` (0-1000 boxes) or `{"words": [...], "pixel_boxes": [...]}` (page
    pixels, normalized here with the page's `width` and `height`)."""
    import json

    from .image_processing_layoutlm_roialign import normalize_boxes

    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "words" not in data or ("boxes" in data) == ("pixel_boxes" in data):
        raise ValueError(
            f"--words {path}: expected a JSON object with `words` and either `boxes` (0-1000) or `pixel_boxes`."
        )
    words = list(data["words"])
    boxes = normalize_boxes(data["pixel_boxes"], width, height) if "pixel_boxes" in data else data["boxes"]
    if len(boxes) != len(words):
        raise ValueError(f"--words {path}: {len(words)} words but {len(boxes)} boxes.")
    return words, [list(b) for b in boxes]
