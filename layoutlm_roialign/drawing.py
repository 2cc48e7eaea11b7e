"""Pictures of a prediction: each entity's box in its type's colour with a legend (`draw_entities`), and an arrow
from each key to its value where the prediction has key-value pairs (`draw_pairs`)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from .pages_layoutlm_roialign import load_page, page_to_rgb_image

__all__ = ["KNOWN_COLOURS", "PAIR_COLOUR", "label_colours", "draw_entities", "draw_pairs", "draw_prediction"]

# Colours of FUNSD's entity types; other types get evenly spaced hues.
KNOWN_COLOURS = {"QUESTION": (31, 119, 180), "ANSWER": (44, 160, 44), "HEADER": (214, 39, 40), "O": (150, 150, 150)}
PAIR_COLOUR = (230, 120, 0)


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
        image: the page (anything `pages_layoutlm_roialign.load_page` takes).
        prediction: `predict_page` output.
        labels: every label of the model (so the legend lists every type, found or not); default: the types found.
        line_width: box outline width in pixels (default: scaled to the page).
    """
    page = page_to_rgb_image(image)
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


def draw_prediction(
    image: Any, prediction: dict, labels: Sequence[str] | None = None, line_width: int | None = None
) -> PIL.Image.Image:
    """`draw_pairs` for a prediction with `"pairs"`, else `draw_entities`."""
    draw = draw_pairs if "pairs" in prediction else draw_entities
    return draw(image, prediction, labels, line_width)
