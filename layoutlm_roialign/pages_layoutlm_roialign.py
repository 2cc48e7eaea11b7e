"""One way to open a document page and read its words, for every entry point (the pipeline, predict, the demo, the
labeller, evaluate, the dataset loaders).

`read_page` is the page reader: an image file (any frame of a multi-page TIFF), a PDF page (rendered, with its text
layer), an image in memory or a `datasets` image -> the page as an RGB image, its words and their 0-1000 boxes, and
where the words came from (given, the PDF's text layer, or Tesseract OCR).

`load_page` returns the page as PIL opened it, in its own mode: 16-bit greyscale, alpha and palette pages are left to
the image processor, which converts them without loss (PIL's `convert("RGB")` clips 16-bit pages to white and turns
transparent backgrounds black). Pixels are read here, so a truncated or corrupt file fails here, with its name.

A page is read at most `MAX_PAGE_PIXELS` pixels big: a larger one (a 12000 x 12000 TIFF, a 10000 x 10000 PIL image or
array in memory) is shrunk by the smallest whole factor that fits it (a JPEG decoded at that scale, anything else
shrunk with a box filter), because every later step (RGB conversion, OCR, the image processor) holds several float
copies of the page. Its words, boxes and size are then those of the shrunk page (given `pixel_boxes` are in the page's
own pixels). PDF pages are rendered within the same budget (`pdf_layoutlm_roialign.page_dpi`). A file past PIL's
decompression-bomb limit is refused, naming the file.

Arrays and 16-bit / 32-bit / float PIL pages are read by where their white is (`page_white`: uint8 0..255, other
integers 0..255 or 0..65535 by their largest value, floats 0..1 or 0..255); values with no such reading are refused.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import PIL.Image

from .image_processing_layoutlm_roialign import (
    apply_tesseract,
    normalize_boxes,
    page_channels_last,
    page_to_rgb,
    page_white,
)
from .page_words_layoutlm_roialign import (
    BOX_TOLERANCE,
    BOX_TOLERANCE_PX,
    check_given_words,
    check_ocr_lang,
    fit_boxes,
    load_words_json,
)
from .pdf_layoutlm_roialign import DEFAULT_DPI, MAX_PAGE_PIXELS, is_pdf, read_pdf_page

__all__ = [
    "check_ocr_lang",
    "count_frames",
    "load_page",
    "page_to_rgb_image",
    "read_page",
    "load_words_json",
    "PageNotFound",
    "MAX_PAGE_PIXELS",
    "BOX_TOLERANCE",
    "BOX_TOLERANCE_PX",
    "WORDS_FROM",
    "DEFAULT_DPI",
]

WORDS_FROM = ("auto", "text", "ocr")
FULL_SIZE = "layoutlm_roialign.full_size"  # `info` key of a shrunk page: the size it was read from


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
    shrunk = image.resize(
        (math.ceil(image.width / factor), math.ceil(image.height / factor)), PIL.Image.Resampling.BOX
    )
    shrunk.info[FULL_SIZE] = image.info.get(FULL_SIZE, image.size)
    return shrunk


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
        "which guards against decompression bombs: downscale the file, or, if you trust it, raise the limit before "
        "loading it (`PIL.Image.MAX_IMAGE_PIXELS = None` in Python, or a larger number)."
    )


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """PIL's errors on opening and reading an image file, as `ValueError`s naming the page `what`."""
    try:
        yield
    except PageNotFound:
        raise
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


def count_frames(file: Any, name: str | None = None) -> int:
    """The pages (frames) of an image file, from its header alone.

    Raises:
        ValueError: naming the file, as `load_page` does, for a file that cannot be opened or is past PIL's
            decompression-bomb limit.
    """
    with _reading(_describe(file, name)), PIL.Image.open(file) as image:
        return int(getattr(image, "n_frames", 1))


def _open(file: Any, what: str, frame: int = 0) -> tuple[PIL.Image.Image, int]:
    """Frame `frame` (0-based) of an image file, pixels read, and the file's number of frames."""
    with _reading(what):
        image = PIL.Image.open(file)
        frames = getattr(image, "n_frames", 1)
        if not 0 <= frame < frames:
            image.close()
            raise PageNotFound(what, frame + 1, frames)
        if frame:
            image.seek(frame)
        factor = _shrink_factor(image.size)
        if factor > 1 and image.format == "JPEG":
            full_size = image.size
            image.draft(image.mode, (image.width // factor, image.height // factor))  # decoded at 1/2, 1/4 or 1/8
            image.info[FULL_SIZE] = full_size
        image.load()  # read every pixel now: a truncated file fails here, not later inside the model
    if frames > 1:
        # Multi-page files (TIFF) keep their file open for the other frames; keep this page and close it.
        page = image.copy()
        image.close()
        return _within_budget(page), frames
    return _within_budget(image), frames


def _from_array(array: np.ndarray, what: str) -> PIL.Image.Image:
    """A page array as a PIL image within the pixel budget: 16-bit greyscale as 16-bit (`"I;16"`), anything else
    as 8-bit L / RGB / RGBA by where its white is (`page_white`), converted a band of rows at a time."""
    try:
        array = page_channels_last(array)
        white = page_white(array)
    except ValueError as err:
        raise ValueError(f"The page {what!r}: {err}.") from err
    if array.shape[-1] == 1 and white == 65535.0 and array.dtype == np.uint16:
        return _within_budget(PIL.Image.fromarray(np.ascontiguousarray(array[..., 0])))
    if array.dtype != np.uint8:
        eight = np.empty(array.shape, np.uint8)
        for row in range(0, array.shape[0], 512):  # bounded float copies however big the page
            eight[row : row + 512] = np.rint(array[row : row + 512].astype(np.float32) * np.float32(255.0 / white))
        array = eight
    return _within_budget(PIL.Image.fromarray(np.ascontiguousarray(array[..., 0] if array.shape[-1] == 1 else array)))


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
        if 0 in source.size:
            raise ValueError(f"The page {what!r} has no pixels ({source.width} x {source.height}); give a real page.")
        return _within_budget(source)
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
    clamp_boxes: bool = False,
) -> dict:
    """Read one page and its words: the one page reader of the package.

    Args:
        source: a PDF or image file path (told apart by their first bytes), a PIL image, a numpy array or a
            `datasets` image (anything `load_page` takes).
        page: the page number, from 1: a PDF's page or a multi-page image's frame; 1 for a page in memory.
        words, boxes: the page's words (a list of strings) and their 0-1000 boxes, when they are known (then
            nothing is OCR'd); `pixel_boxes` instead of `boxes` gives them in the page's own pixels (those of the
            file or array, before any shrinking). Boxes must fit the page (`page_words_layoutlm_roialign.fit_boxes`).
        words_from: without `words`, `"auto"` reads a PDF page's text layer and OCRs pages without one (images,
            scans), `"text"` never OCRs (such pages get no words), `"ocr"` OCRs every page.
        dpi: resolution PDF pages are rendered at.
        ocr_lang: Tesseract language(s), e.g. `"eng"` (checked against the installed ones before reading).
        name: what to call the page in messages (default: its path).
        clamp_boxes: pin given boxes that do not fit the page to its edge instead of refusing them.

    Returns:
        `{"image": the page as 8-bit RGB, "width", "height", "words", "boxes" (0-1000 ints), "words_from"
        ("given", "text", "ocr" or "none": no words), "num_pages"}`. Given words are kept as they are (the
        processor refuses empty ones); of the words read, empty ones and text-layer words whose box lies off the
        page are left out.

    Raises:
        PageNotFound: (a `ValueError`) naming `page` and the page count, for a page past the document's pages.
        ValueError: naming the argument, for an unreadable or damaged file, a page without pixels or with pixel
            values that have no reading (`page_white`), words that are not a list of strings, words and boxes of
            different lengths, boxes that are not 4 numbers or do not fit the page, an unknown `words_from` or an
            `ocr_lang` Tesseract does not have. ImportError: naming the extra to install, for a PDF without
            pypdfium2 or OCR without pytesseract (OSError: without the tesseract binary).
    """
    page = _check_read_arguments(page, words, boxes, pixel_boxes, words_from)
    if words is None and words_from != "text":
        check_ocr_lang(ocr_lang)
    image, text_words, num_pages = _open_document_page(
        source, page, dpi, _describe(source, name), name, text_layer=words is None and words_from != "ocr"
    )
    rgb = page_to_rgb_image(image)
    width, height = rgb.size
    if words is not None:
        field = "boxes" if boxes is not None else "pixel_boxes"
        words, given_boxes = check_given_words(words, boxes if boxes is not None else pixel_boxes, field)
        where = f"The page {_describe(source, name)!r}: "
        given_boxes = fit_boxes(words, given_boxes, field, *image.info.get(FULL_SIZE, image.size), clamp_boxes, where)
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
            from .pdf_layoutlm_roialign import pdf_page_count

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
