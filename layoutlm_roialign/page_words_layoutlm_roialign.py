"""A page's given words and boxes and its OCR language, checked the same way for every entry point: the page reader
(`pages_layoutlm_roialign.read_page`: the pipeline, the road, the labeller, and `scripts/predict.py` and the demo,
which read a `--words` file with `read_words_json`; `load_words_json` also fits a file's boxes to a page size).

Boxes come on LayoutLM's 0-1000 grid (`boxes`) or in the page's own pixels (`pixel_boxes`). A pixel box may cross the
page edge by `BOX_TOLERANCE` of the page side (at least `BOX_TOLERANCE_PX` pixels) and is then clamped to it: OCR and
annotation boxes often overshoot by a few pixels, while boxes measured on another size of the image overshoot by far
more. Those, and 0-1000 boxes outside 0..1000, are refused unless `clamp` is set (they are then pinned to the edge).
"""

from __future__ import annotations

import json
from typing import Any

from .image_processing_layoutlm_roialign import normalize_box
from .processing_layoutlm_roialign import box_problem

__all__ = ["BOX_TOLERANCE", "BOX_TOLERANCE_PX", "check_given_words", "check_ocr_lang", "fit_boxes", "load_words_json"]

BOX_TOLERANCE = 0.02
BOX_TOLERANCE_PX = 2.0


def check_given_words(words: Any, boxes: Any, field: str) -> tuple[list[str], list[list[float]]]:
    """Given words and boxes as lists of the same length, each word a string and each box 4 numbers, not inverted.

    Raises:
        ValueError: naming `words` or `field` and the word, for a string or mapping instead of a list, lengths that
            differ, a word that is not a string and a box that is not 4 numbers or is inverted.
    """
    for name, values in (("words", words), (field, boxes)):
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
            raise ValueError(
                f"`{name}` must be a list, one entry per word; got {type(values).__name__} {values!r:.60}"
                + (" (split a text into its words first, e.g. `text.split()`)." if isinstance(values, str) else ".")
            )
    words, boxes = list(words), [b.tolist() if hasattr(b, "tolist") else b for b in boxes]
    if len(words) != len(boxes):
        raise ValueError(f"`words` has {len(words)} entries but `{field}` has {len(boxes)}: give one box per word.")
    for i, (word, box) in enumerate(zip(words, boxes, strict=True)):
        if not isinstance(word, str):
            raise ValueError(f"`words`[{i}] is {word!r}: every word must be a string.")
        problem = box_problem(list(box) if isinstance(box, tuple) else box)
        if problem:
            raise ValueError(f"`{field}`[{i}] (word {word!r}): {problem}.")
    return words, [list(b) for b in boxes]


def fit_boxes(
    words: list[str], boxes: list, field: str, width: int, height: int, clamp: bool = False, where: str = ""
) -> list[list[int]]:
    """The 0-1000 boxes of `words` given as `field` (`"boxes"` or `"pixel_boxes"` of a `width` x `height` page),
    checked to fit the page and clamped to it (module docstring).

    Raises:
        ValueError: starting with `where`, naming the first word whose box does not fit and how many more do not.
    """
    if field == "boxes":
        limits, unit = (1000, 1000, 0.0, 0.0), "the 0-1000 grid"
    else:
        tolerance = (max(BOX_TOLERANCE_PX, BOX_TOLERANCE * width), max(BOX_TOLERANCE_PX, BOX_TOLERANCE * height))
        limits, unit = (width, height, *tolerance), f"the {width} x {height} page"
    if not clamp:
        _check_boxes_fit(where, field, words, boxes, *limits, unit)
    if field == "pixel_boxes":
        boxes = [normalize_box(box, width, height) for box in boxes]  # clamps to the page
    return [[min(1000, max(0, int(round(v)))) for v in box] for box in boxes]


def _check_boxes_fit(
    where: str,
    field: str,
    words: list,
    boxes: list,
    width: float,
    height: float,
    tol_x: float,
    tol_y: float,
    unit: str,
) -> None:
    def outside(box: list) -> bool:
        x0, y0, x1, y1 = box
        return x0 < -tol_x or y0 < -tol_y or x1 > width + tol_x or y1 > height + tol_y

    bad = [i for i, box in enumerate(boxes) if outside(box)]
    if not bad:
        return
    i = bad[0]
    slack = f" (by more than {tol_x:g} x {tol_y:g} px)" if field == "pixel_boxes" else ""
    more = f" {len(bad) - 1} more of the {len(words)} words do too." if len(bad) > 1 else ""
    hint = (
        "Were the boxes measured on another size of this image? Give boxes of this image's pixels"
        if field == "pixel_boxes"
        else "Give boxes on the 0-1000 grid (or page pixels under `pixel_boxes`)"
    )
    raise ValueError(
        f"{where}word {i} ({words[i]!r}) has `{field}` {list(boxes[i])} outside {unit}{slack}.{more} {hint}, or pass "
        "--clamp_boxes (`clamp_boxes=True`) to pin them to the page edge."
    )


def load_words_json(path: str, width: int, height: int, clamp: bool = False) -> tuple[list[str], list[list[int]]]:
    """Read a `--words` file: `{"words": [...], "boxes": [...]}` (0-1000 boxes) or `{"words": [...],
    "pixel_boxes": [...]}` (page pixels, normalized here with the page's `width` and `height`); the boxes must fit
    the page unless `clamp` (module docstring).

    Raises:
        ValueError: naming the file, the field and the word, for unreadable JSON, a missing field, `words` that are
            not a list of non-empty strings, boxes that are not 4 numbers or are inverted, lengths that differ, and
            boxes that do not fit the page.
    """
    words, field, boxes = read_words_json(path)
    return words, fit_boxes(words, boxes, field, width, height, clamp, f"--words {path}: ")


def read_words_json(path: str) -> tuple[list[str], str, list]:
    """A `--words` file's words, which field holds their boxes (`"boxes"` or `"pixel_boxes"`) and the boxes, as
    given (checked as `load_words_json` checks them, except for fitting the page)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as err:
        raise ValueError(f"--words {path}: cannot read the file ({err.strerror or err}).") from err
    except ValueError as err:
        raise ValueError(f"--words {path}: not valid JSON ({err}).") from err
    if not isinstance(data, dict) or "words" not in data or ("boxes" in data) == ("pixel_boxes" in data):
        raise ValueError(
            f"--words {path}: expected a JSON object with `words` and either `boxes` (0-1000) or `pixel_boxes`."
        )
    field = "pixel_boxes" if "pixel_boxes" in data else "boxes"
    words, boxes = data["words"], data[field]
    for name, values in (("words", words), (field, boxes)):
        if not isinstance(values, list):
            raise ValueError(
                f"--words {path}: `{name}` must be a list, one entry per word; got {type(values).__name__}."
            )
    if len(boxes) != len(words):
        raise ValueError(f"--words {path}: {len(words)} `words` but {len(boxes)} `{field}`: give one box per word.")
    for i, word in enumerate(words):
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"--words {path}: `words`[{i}] is {word!r}; every word must be a non-empty string.")
    for i, box in enumerate(boxes):
        problem = box_problem(box)
        if problem:
            raise ValueError(f"--words {path}: `{field}`[{i}] (word {i}, {words[i]!r}): {problem}.")
    return list(words), field, boxes


_LANGUAGES: list[tuple[str, ...] | None] = []  # Tesseract's installed languages, once asked (None: no Tesseract)


def _installed_languages() -> tuple[str, ...] | None:
    if not _LANGUAGES:
        try:
            import pytesseract

            _LANGUAGES.append(tuple(pytesseract.get_languages(config="")))
        except Exception:  # noqa: BLE001 (no pytesseract or no tesseract: the OCR step says so itself)
            _LANGUAGES.append(None)
    return _LANGUAGES[0]


def check_ocr_lang(ocr_lang: Any, flag: str = "`ocr_lang`") -> None:
    """Check that Tesseract has every language of `ocr_lang` (`"eng"`, `"eng+deu"`; `None`: Tesseract's default)
    before any page is OCR'd. Nothing is checked where Tesseract is not installed (OCR then says that itself).

    Raises:
        ValueError: naming `flag` and listing the installed languages, for a language Tesseract does not have.
    """
    if ocr_lang is None:
        return
    if not isinstance(ocr_lang, str) or not ocr_lang.strip():
        raise ValueError(f"{flag} is Tesseract language names such as 'eng' or 'eng+deu'; got {ocr_lang!r}.")
    installed = _installed_languages()
    missing = [lang for lang in ocr_lang.split("+") if installed is not None and lang not in installed]
    if missing:
        raise ValueError(
            f"{flag} {ocr_lang!r}: Tesseract has no {' / '.join(map(repr, missing))} language; installed: "
            f"{', '.join(sorted(installed)) or 'none'} (more come as packages, e.g. apt-get install tesseract-ocr-deu)."
        )
