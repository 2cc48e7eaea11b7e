"""One way to open a document page and read its words, for every entry point (the pipeline, predict, the demo, the
labeller, evaluate, the dataset loaders).

`read_page` is the page reader: an image file (any frame of a multi-page TIFF), a PDF page (rendered, with its text
layer), an image in memory or a `datasets` image -> the page as an RGB image, its words and their 0-1000 boxes, and
where the words came from (given, the PDF's text layer, or Tesseract OCR).

`load_page` returns the page as PIL opened it, in its own mode: 16-bit greyscale, alpha and palette pages are left to
the image processor, which converts them without loss (PIL's `convert("RGB")` clips 16-bit pages to white and turns
transparent backgrounds black). Pixels are read here, so a truncated or corrupt file fails here, with its name.

A page file is read at most `MAX_PAGE_PIXELS` pixels big: a larger one (a 12000 x 12000 TIFF) is shrunk by the
smallest whole factor that fits it (a JPEG decoded at that scale, any other file decoded then shrunk with a box
filter), because every later step (RGB conversion, OCR, the image processor) holds several float copies of the page.
Its words, boxes and size are then those of the shrunk page. PDF pages are rendered within the same budget
(`pdf.page_dpi`).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image

from .image_processing_layoutlm_roialign import apply_tesseract, normalize_box, normalize_boxes, page_to_rgb
from .pdf import DEFAULT_DPI, is_pdf, read_pdf_page
from .processing_layoutlm_roialign import box_problem

__all__ = [
    "load_page",
    "page_to_rgb_image",
    "read_page",
    "load_words_json",
    "PageNotFound",
    "MAX_PAGE_PIXELS",
    "WORDS_FROM",
    "DEFAULT_DPI",
]

# A pixel box may cross the page edge by this fraction of the page side (at least `BOX_TOLERANCE_PX` pixels) before
# `load_words_json` refuses it: OCR and annotation boxes often overshoot by a few pixels, while boxes measured on a
# different size of the image overshoot by far more.
BOX_TOLERANCE = 0.02
BOX_TOLERANCE_PX = 2.0

WORDS_FROM = ("auto", "text", "ocr")
MAX_PAGE_PIXELS = 25_000_000  # 5000 x 5000: an A3 page at 400 dpi; larger page files are shrunk (module docstring)


def _shrink_factor(size: tuple[int, int]) -> int:
    """The smallest whole factor that brings a page of `size` within `MAX_PAGE_PIXELS` (1: it fits)."""
    return max(1, math.ceil(math.sqrt(size[0] * size[1] / MAX_PAGE_PIXELS)))


def _within_budget(image: PIL.Image.Image) -> PIL.Image.Image:
    """`image` (pixels read) shrunk by `_shrink_factor` with a box filter, in its own mode where PIL can average it."""
    factor = _shrink_factor(image.size)
    if factor == 1:
        return image
    if image.mode == "1":
        image = image.convert("L")  # averaging bilevel pixels keeps thin strokes as grey
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    size = (math.ceil(image.width / factor), math.ceil(image.height / factor))
    return image.resize(size, PIL.Image.Resampling.BOX)


class PageNotFound(ValueError):
    """A page number past a document's pages (`count` of them)."""

    def __init__(self, what: str, page: int, count: int) -> None:
        super().__init__(f"`page` {page}: {what!r} has {count} page(s); choose a page from 1 to {count}.")
        self.page, self.count = page, count


def _describe(source: Any, name: str | None) -> str:
    if name is not None:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, dict) and source.get("path"):
        return str(source["path"])
    return f"<{type(source).__name__}>"


def _bomb_message(what: str, err: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    limit = 2 * PIL.Image.MAX_IMAGE_PIXELS if PIL.Image.MAX_IMAGE_PIXELS else 0
    return (
        f"The page {what!r} has {pixels}, more than PIL's limit of {limit:,} (2 x PIL.Image.MAX_IMAGE_PIXELS), "
        "which guards against decompression bombs. If you trust the file, raise the limit before loading it "
        "(`PIL.Image.MAX_IMAGE_PIXELS = None` in Python, or a larger number); otherwise downscale the page."
    )


def _open(file: Any, what: str, frame: int = 0) -> tuple[PIL.Image.Image, int]:
    """Frame `frame` (0-based) of an image file, pixels read, and the file's number of frames."""
    try:
        image = PIL.Image.open(file)
        frames = getattr(image, "n_frames", 1)
        if not 0 <= frame < frames:
            image.close()
            raise IndexError(frame)
        if frame:
            image.seek(frame)
        factor = _shrink_factor(image.size)
        if factor > 1 and image.format == "JPEG":
            image.draft(image.mode, (image.width // factor, image.height // factor))  # decoded at 1/2, 1/4 or 1/8
        image.load()  # read every pixel now: a truncated file fails here, not later inside the model
    except IndexError:
        raise PageNotFound(what, frame + 1, frames) from None
    except PIL.Image.DecompressionBombError as err:
        raise ValueError(_bomb_message(what, err)) from err
    except FileNotFoundError as err:
        raise ValueError(f"The page {what!r} does not exist; check the path.") from err
    except IsADirectoryError as err:
        raise ValueError(f"The page {what!r} is a folder; give an image file.") from err
    except PIL.UnidentifiedImageError as err:
        raise ValueError(
            f"The page {what!r} is not an image PIL can read (PNG, JPEG, TIFF, ...); give an image file."
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # PIL raises OSError ("image file is truncated", "broken data stream"), SyntaxError or ValueError for
        # damaged files.
        raise ValueError(
            f"The page {what!r} is damaged or incomplete ({err}); re-export or re-download the image."
        ) from err
    if frames > 1:
        # Multi-page files (TIFF) keep their file open for the other frames; keep this page and close it.
        page = image.copy()
        image.close()
        return _within_budget(page), frames
    return _within_budget(image), frames


def _from_array(array: np.ndarray, what: str) -> PIL.Image.Image:
    # Arrays PIL holds without loss become images of their own mode; any other array (floats 0..1, 16-bit colour,
    # channels first) goes through the image processor's conversion, which knows those conventions.
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        return PIL.Image.fromarray(array)
    if array.dtype == np.uint16 and array.ndim == 2:
        return PIL.Image.fromarray(array)
    try:
        rgb = page_to_rgb(array)
    except ValueError as err:
        raise ValueError(f"The page {what!r}: {err}") from err
    return PIL.Image.fromarray(np.rint(rgb).astype(np.uint8))


def load_page(source: Any, *, name: str | None = None, frame: int = 0) -> PIL.Image.Image:
    """Open one page, with its pixels read, in its own mode (no `convert("RGB")`: see the module docstring).

    Args:
        source: a path (str or `os.PathLike`), a PIL image (returned as is), a numpy array ((H, W), (H, W, C) or
            (C, H, W), as the image processor reads them), or an undecoded `datasets` image (`{"bytes", "path"}`).
        name: what to call the page in error messages (default: its path).
        frame: which page of a multi-page file (a TIFF's or a GIF's frames), from 0.

    Raises:
        ValueError: naming the page, when it does not exist, is not an image, is damaged or truncated, or has more
            pixels than `PIL.Image.MAX_IMAGE_PIXELS` allows (the message says how to raise the limit).
    """
    what = _describe(source, name)
    if isinstance(source, PIL.Image.Image):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _open(source, what, frame)[0]
    if isinstance(source, np.ndarray):
        return _from_array(source, what)
    if isinstance(source, dict) and ("bytes" in source or "path" in source):
        if source.get("bytes") is not None:
            return _open(io.BytesIO(source["bytes"]), what, frame)[0]
        if source.get("path"):
            return _open(source["path"], what, frame)[0]
        raise ValueError(f"The page {what!r} is a `datasets` image with neither `bytes` nor `path`.")
    raise ValueError(
        f"The page {what!r} must be a path, a PIL image, a numpy array or a `datasets` image dict "
        f"(`{{'bytes': ..., 'path': ...}}`); got {type(source).__name__}."
    )


def page_to_rgb_image(page: Any) -> PIL.Image.Image:
    """A page (anything `load_page` takes) as an 8-bit RGB image for drawing on, converted as the image processor
    converts it (16-bit scaled, transparency on white paper) rather than by PIL's `convert("RGB")`."""
    page = load_page(page)
    if page.mode == "RGB":
        return page
    return PIL.Image.fromarray(np.rint(page_to_rgb(page)).astype(np.uint8))


def read_page(
    source: Any,
    page: int = 1,
    words: Sequence[str] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    *,
    pixel_boxes: Sequence[Sequence[float]] | None = None,
    words_from: str = "auto",
    dpi: float = DEFAULT_DPI,
    ocr_lang: str | None = None,
    name: str | None = None,
) -> dict:
    """Read one page and its words: the one page reader of the package.

    Args:
        source: a PDF or image file path (told apart by their first bytes), a PIL image, a numpy array or a
            `datasets` image (anything `load_page` takes).
        page: the page number, from 1: a PDF's page or a multi-page image's frame; 1 for a page in memory.
        words, boxes: the page's words and their 0-1000 boxes, when they are known (then nothing is OCR'd);
            `pixel_boxes` instead of `boxes` gives them in the page's pixels.
        words_from: without `words`, `"auto"` reads a PDF page's text layer and OCRs pages without one (images,
            scans), `"text"` never OCRs (such pages get no words), `"ocr"` OCRs every page.
        dpi: resolution PDF pages are rendered at.
        ocr_lang: Tesseract language(s), e.g. `"eng"`.
        name: what to call the page in messages (default: its path).

    Returns:
        `{"image": the page as 8-bit RGB, "width", "height", "words", "boxes" (0-1000 ints), "words_from"
        ("given", "text", "ocr" or "none": no words), "num_pages"}`. Given words are kept as they are (the
        processor refuses empty ones); of the words read, empty ones and text-layer words whose box lies off the
        page are left out.

    Raises:
        PageNotFound: (a `ValueError`) naming `page` and the page count, for a page past the document's pages.
        ValueError: naming the argument, for an unreadable or
            damaged file, words and boxes of different lengths or boxes that are not 4 numbers, an unknown
            `words_from`. ImportError: naming the extra to install, for a PDF without pypdfium2 or OCR without
            pytesseract (OSError: without the tesseract binary).
    """
    page = _check_read_arguments(page, words, boxes, pixel_boxes, words_from)
    image, text_words, num_pages = _open_document_page(
        source, page, dpi, _describe(source, name), name, text_layer=words is None and words_from != "ocr"
    )
    rgb = page_to_rgb_image(image)
    width, height = rgb.size
    if words is not None:
        field = "boxes" if boxes is not None else "pixel_boxes"
        words, given_boxes = _check_words(words, boxes if boxes is not None else pixel_boxes, field)
        if pixel_boxes is not None:
            given_boxes = normalize_boxes(given_boxes, width, height)
        read_words, source_of_words = (words, given_boxes), "given"
    elif text_words is not None and text_words[0]:
        read_words, source_of_words = text_words, "text"
    elif words_from != "text":
        read_words, source_of_words = apply_tesseract(rgb, ocr_lang), "ocr"
    else:
        read_words, source_of_words = ([], []), "none"
    if source_of_words == "given":  # kept as given, so that they align with the caller's labels and entities
        kept = list(zip(*read_words, strict=True))
    else:
        kept = [(w.strip(), b) for w, b in zip(*read_words, strict=True) if w.strip()]
    return {
        "image": rgb,
        "width": width,
        "height": height,
        "words": [w for w, _ in kept],
        "boxes": [[int(round(v)) for v in b] for _, b in kept],
        "words_from": source_of_words if kept or source_of_words == "given" else "none",
        "num_pages": num_pages,
    }


def _check_read_arguments(
    page: Any,
    words: Sequence[str] | None,
    boxes: Sequence[Sequence[float]] | None,
    pixel_boxes: Sequence[Sequence[float]] | None,
    words_from: str,
) -> int:
    """`read_page`'s arguments checked (as it takes them); returns `page` as an int.

    Raises:
        ValueError: naming the argument, for an unknown `words_from`, both `boxes` and `pixel_boxes`, words without
            boxes or boxes without words, or a `page` that is not a page number from 1.
    """
    if words_from not in WORDS_FROM:
        raise ValueError(f"`words_from` must be one of {WORDS_FROM}, got {words_from!r}.")
    if boxes is not None and pixel_boxes is not None:
        raise ValueError("Give the words' `boxes` (0-1000) or their `pixel_boxes`, not both.")
    if (words is None) != (boxes is None and pixel_boxes is None):
        raise ValueError("Give `words` with their `boxes` (or `pixel_boxes`), or neither to read the page's words.")
    if isinstance(page, bool) or not isinstance(page, (int, np.integer)) or page < 1:
        raise ValueError(f"`page` is a page number from 1, got {page!r}.")
    return int(page)


def _open_document_page(
    source: Any, page: int, dpi: float, what: str, name: str | None, text_layer: bool
) -> tuple[PIL.Image.Image, tuple[list[str], list[list[int]]] | None, int]:
    """Page `page` (from 1) of `source` (anything `read_page` takes) as it was opened, the words of a PDF page's text
    layer with their 0-1000 boxes (`None` for other pages, for a PDF page without a text layer and when not
    `text_layer`), and the document's number of pages. `what` names the page in messages, `name` is passed on to
    `load_page`, and `dpi` is the resolution of a rendered PDF page.

    Raises:
        PageNotFound: for a page past the document's pages.
    """
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source) and is_pdf(source):
        try:
            image, pdf_words, pdf_boxes, num_pages = read_pdf_page(source, page - 1, dpi, text_layer=text_layer)
        except IndexError as err:
            from .pdf import pdf_page_count

            raise PageNotFound(what, page, pdf_page_count(source)) from err
        if not pdf_words:
            return image, None, num_pages
        # Text placed off the page comes back inverted from the clamp: it is not on the page the model sees.
        kept = [(w, b) for w, b in zip(pdf_words, pdf_boxes, strict=True) if b[0] <= b[2] and b[1] <= b[3]]
        return image, ([w for w, _ in kept], normalize_boxes([b for _, b in kept], *image.size)), num_pages
    if isinstance(source, (str, os.PathLike)):
        image, num_pages = _open(source, what, page - 1)
        return image, None, num_pages
    if page != 1:
        raise PageNotFound(what, page, 1)
    return load_page(source, name=name), None, 1


def _check_words(words: Any, boxes: Any, field: str) -> tuple[list[str], list[list[float]]]:
    """Given words and boxes as lists of the same length, each word a string and each box 4 numbers, not inverted."""
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


def load_words_json(path: str, width: int, height: int, clamp: bool = False) -> tuple[list[str], list[list[int]]]:
    """Read a `--words` file: `{"words": [...], "boxes": [...]}` (0-1000 boxes) or `{"words": [...],
    "pixel_boxes": [...]}` (page pixels, normalized here with the page's `width` and `height`).

    A pixel box may cross the page edge by `BOX_TOLERANCE` of the page side (at least `BOX_TOLERANCE_PX` pixels) and
    is then clamped to it; a box past that, or a 0-1000 box outside 0..1000, is an error (boxes measured on another
    size of the image would otherwise be pinned to the page edge), unless `clamp` is set.

    Raises:
        ValueError: naming the file, the field and the word, for unreadable JSON, a missing field, `words` that are
            not a list of non-empty strings, boxes that are not 4 numbers or are inverted, lengths that differ, and
            boxes that do not fit the page.
    """
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
    if field == "boxes":
        limits, unit = (1000, 1000, 0.0, 0.0), "the 0-1000 grid"
    else:
        tolerance = (max(BOX_TOLERANCE_PX, BOX_TOLERANCE * width), max(BOX_TOLERANCE_PX, BOX_TOLERANCE * height))
        limits, unit = (width, height, *tolerance), f"the {width} x {height} page"
    if not clamp:
        _check_boxes_fit(path, field, words, boxes, *limits, unit)
    if field == "pixel_boxes":
        boxes = [normalize_box(box, width, height) for box in boxes]  # clamps to the page
    return list(words), [[min(1000, max(0, int(round(v)))) for v in box] for box in boxes]


def _check_boxes_fit(
    path: str, field: str, words: list, boxes: list, width: float, height: float, tol_x: float, tol_y: float, unit: str
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
        f"--words {path}: word {i} ({words[i]!r}) has `{field}` {boxes[i]} outside {unit}{slack}.{more} {hint}, "
        "or pass --clamp_boxes (`clamp=True`) to pin them to the page edge."
    )
