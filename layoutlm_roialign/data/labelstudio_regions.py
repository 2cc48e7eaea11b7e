"""The geometry and text of Label Studio regions: a region's rectangle on LayoutLM's 0-1000 grid, and its
transcription cut into words with boxes.

A rectangle's `x`, `y`, `width`, `height` are percentages of the page (`original_width` x `original_height` pixels);
`rotation` (degrees, clockwise, about the rectangle's top-left corner) turns it, and a turned rectangle becomes the
axis-aligned box enclosing its four corners. A box that crosses the page edge by more than `EDGE_TOLERANCE` of the
page is refused; a smaller overshoot (a drag that went a pixel too far) is pinned to the edge.

Words get their boxes by one of two rules (`region_words`): a region's words take the boxes of the page words
(text layer or OCR) whose centres lie inside it, in the page's reading order, when the transcription has exactly as
many words as there are such page words; otherwise the region's box is *apportioned*: each line of the transcription
gets an equal band of the region's height, and each word of a line a share of the band's width in proportion to its
characters (the space before it counted), so every word's box lies inside its region.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["EDGE_TOLERANCE", "region_box", "center_inside", "split_transcription", "apportion", "region_words"]

EDGE_TOLERANCE = 0.005  # share of the page a rectangle may cross the edge by before it is refused as outside


def region_box(value: dict, width: float, height: float) -> list[int]:
    """A rectangle's `value` (percent `x`, `y`, `width`, `height`, `rotation` in degrees) on a `width` x `height`
    pixel page -> its enclosing `[x0, y0, x1, y1]` on the 0-1000 grid (rounded outwards).

    Raises:
        ValueError: for missing or non-numeric coordinates, a negative size, or a box outside the page.
    """
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
        angle = math.radians(float(value.get("rotation") or 0.0))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"its rectangle needs numeric x, y, width and height (got {value!r})") from err
    if w < 0 or h < 0 or not all(math.isfinite(v) for v in (x, y, w, h, angle)):
        raise ValueError(f"its rectangle has a negative or non-finite size ({w} x {h} %)")
    px, py, pw, ph = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(px + dx * cos - dy * sin, py + dx * sin + dy * cos) for dx, dy in ((0, 0), (pw, 0), (pw, ph), (0, ph))]
    xs = [round(cx * 1000 / width, 6) for cx, _ in corners]  # rounded: cos(90 deg) is 6e-17, not 0
    ys = [round(cy * 1000 / height, 6) for _, cy in corners]
    slack = EDGE_TOLERANCE * 1000
    if min(xs) < -slack or min(ys) < -slack or max(xs) > 1000 + slack or max(ys) > 1000 + slack:
        raise ValueError(
            f"it lies outside the page: x {x:g} %, y {y:g} %, width {w:g} %, height {h:g} %, rotation "
            f"{math.degrees(angle):g} deg reach {min(xs) / 10:.1f}..{max(xs) / 10:.1f} % across and "
            f"{min(ys) / 10:.1f}..{max(ys) / 10:.1f} % down"
        )
    box = [math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys))]
    return [min(max(v, 0), 1000) for v in box]


def center_inside(box: Sequence[int], region: Sequence[int]) -> bool:
    """Whether `box`'s centre lies inside `region` (both 0-1000 `[x0, y0, x1, y1]`)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def split_transcription(text: str) -> list[list[str]]:
    """A transcription -> its lines' words (blank lines dropped)."""
    lines = [line.split() for line in str(text).splitlines()]
    return [line for line in lines if line]


def apportion(lines: Sequence[Sequence[str]], region: Sequence[int]) -> list[list[int]]:
    """Boxes for the words of `lines` inside `region`: an equal band of its height per line, and a share of the
    band's width per word in proportion to its characters (the space before it included)."""
    x0, y0, x1, y1 = region
    boxes = []
    for row, words in enumerate(lines):
        top = y0 + (y1 - y0) * row // len(lines)
        bottom = y0 + -(-(y1 - y0) * (row + 1) // len(lines))
        total = sum(len(word) for word in words) + len(words) - 1
        start = 0
        for word in words:
            end = start + len(word)
            left = x0 + (x1 - x0) * start // total
            right = x0 + -(-(x1 - x0) * end // total)
            boxes.append([left, top, max(left, min(right, x1)), max(top, min(bottom, y1))])
            start = end + 1
    return boxes


def region_words(
    transcription: str | None, region: Sequence[int], page_words: Sequence[str], page_boxes: Sequence[Sequence[int]]
) -> tuple[list[str], list[list[int]], str]:
    """A region's words and 0-1000 boxes, and the rule that boxed them (module docstring).

    Args:
        transcription: the region's text (`None` or blank: the page words inside it are its words).
        region: the region's 0-1000 box.
        page_words, page_boxes: the page words whose centres lie inside the region, in reading order.

    Returns:
        `(words, boxes, rule)`, `rule` being `"page_words"` or `"apportioned"` (`"none"` when there are no words).
    """
    lines = split_transcription(transcription or "")
    words = [word for line in lines for word in line]
    if not words:
        return list(page_words), [list(b) for b in page_boxes], "page_words" if page_words else "none"
    if len(words) == len(page_words):
        return words, [list(b) for b in page_boxes], "page_words"
    return words, apportion(lines, region), "apportioned"
