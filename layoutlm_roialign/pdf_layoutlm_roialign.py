"""PDF pages as the model's input: a rendered page image and the words of the page's text layer, with boxes in that
image's pixels.

Built on pypdfium2 (PDFium's bindings; BSD-3-Clause / Apache-2.0; `pip install "layoutlm-roialign[pdf]"`). PDFium
reads the text layer as characters with boxes in PDF points (origin bottom left); `pdf_page_words` joins them into
words (a word ends at a space, a line break or a jump to another line) and maps each box into the pixels of
`render_pdf_page(path, index, dpi)` with PDFium's own page-to-device transform, so page rotation and crop boxes are
handled the way the renderer handles them. `write_pdf` makes the reverse, a page image with an invisible text
layer (what a scanner's OCR produces), for examples and tests.

A scanned PDF without a text layer gives no words: OCR its rendered page instead.

`dpi` must lie in (0, `MAX_DPI`]; a page that would render larger than `MAX_PAGE_PIXELS` at `dpi` (a poster, a
large dpi) is rendered at the largest dpi that fits (`page_dpi`), and its words' boxes are in that image's pixels.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Sequence

import PIL.Image

__all__ = [
    "pdf_page_count",
    "read_pdf_page",
    "render_pdf_page",
    "pdf_page_words",
    "write_pdf",
    "is_pdf",
    "check_dpi",
    "page_dpi",
    "MAX_DPI",
    "MAX_PAGE_PIXELS",
]

DEFAULT_DPI = 150  # PDF pages are sized in points (1/72 in); 150 dpi turns a Letter page into 1275x1650 pixels
MAX_DPI = 1200  # scanners' top optical resolution; more only costs memory
# 5000 x 5000: an A3 page at 400 dpi. Every page is read within it: PDF pages here, images by
# `pages_layoutlm_roialign` (which shrinks a larger one; see its module docstring).
MAX_PAGE_PIXELS = 25_000_000


def check_dpi(dpi: float) -> float:
    """`dpi` if it is a number in (0, MAX_DPI]; else a `ValueError` naming `--dpi`."""
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 0 < dpi <= MAX_DPI:
        raise ValueError(
            f"--dpi must be a number of dots per inch above 0 and at most {MAX_DPI} ({DEFAULT_DPI} by default: "
            f"a Letter page of 1275 x 1650 pixels), got {dpi!r}."
        )
    return float(dpi)


def page_dpi(page, dpi: float) -> float:
    """The dpi a PDF page is rendered at: `dpi` (checked by `check_dpi`), or less for a page that would have more
    than `MAX_PAGE_PIXELS` pixels at `dpi`: the largest dpi that keeps it within them."""
    dpi = check_dpi(dpi)
    area = max(page.get_width() * page.get_height(), 1e-6)  # in points squared
    fits = 72 * math.sqrt(MAX_PAGE_PIXELS / area) * 0.999  # margin for `_pixel_size`'s rounding up
    return min(dpi, fits)


def is_pdf(path: str | os.PathLike) -> bool:
    """Whether the file at `path` is a PDF (by its first bytes, whatever its name)."""
    with open(path, "rb") as f:
        return f.read(5) == b"%PDF-"


def _pdfium():
    try:
        import pypdfium2
    except ImportError as err:
        raise ImportError('Reading PDFs needs pypdfium2: pip install "layoutlm-roialign[pdf]".') from err
    return pypdfium2


def _open(path: str | os.PathLike):
    """Open a PDF; any unreadable file raises `ValueError` naming it."""
    pdfium = _pdfium()
    try:
        return pdfium.PdfDocument(os.fspath(path))
    except pdfium.PdfiumError as err:
        raise ValueError(f"{os.fspath(path)} is not a readable PDF ({err}).") from err


def _page(document, path, index: int):
    if not 0 <= index < len(document):
        raise IndexError(f"{os.fspath(path)} has {len(document)} page(s); page index {index} does not exist.")
    return document[index]


def pdf_page_count(path: str | os.PathLike) -> int:
    """Number of pages of the PDF at `path` (`ValueError` if it is not a readable PDF)."""
    document = _open(path)
    try:
        return len(document)
    finally:
        document.close()


def _pixel_size(page, dpi: float) -> tuple[int, int]:
    # The size `PdfPage.render(scale=dpi / 72)` gives its bitmap (rotation already applied by get_width/height).
    return math.ceil(page.get_width() * dpi / 72), math.ceil(page.get_height() * dpi / 72)


def render_pdf_page(path: str | os.PathLike, index: int = 0, dpi: float = DEFAULT_DPI) -> PIL.Image.Image:
    """Page `index` (0-based) of the PDF at `path` as an RGB image at `dpi` dots per inch.

    Raises:
        ValueError: the file is not a readable PDF. IndexError: no such page.
    """
    return read_pdf_page(path, index, dpi, text_layer=False)[0]


def pdf_page_words(
    path: str | os.PathLike, index: int = 0, dpi: float = DEFAULT_DPI
) -> tuple[list[str], list[list[int]]]:
    """The words of page `index`'s text layer and their boxes in the pixels of `render_pdf_page(path, index, dpi)`.

    Returns:
        `(words, pixel_boxes)`, in the text layer's reading order; boxes are `[x0, y0, x1, y1]`, top left origin,
        clamped to the page. Both lists are empty for a page without a text layer (a scan).
    """
    document = _open(path)
    try:
        page = _page(document, path, index)
        return _page_words(page, *_pixel_size(page, page_dpi(page, dpi)))
    finally:
        document.close()


def read_pdf_page(
    path: str | os.PathLike, index: int = 0, dpi: float = DEFAULT_DPI, text_layer: bool = True
) -> tuple[PIL.Image.Image, list[str], list[list[float]], int]:
    """Page `index` of the PDF at `path`, opened once: `(image, words, pixel_boxes, num_pages)`, the page rendered
    as `render_pdf_page` renders it and its text layer as `pdf_page_words` reads it (empty without `text_layer`).

    Raises:
        ValueError: the file is not a readable PDF, or `dpi` is not in (0, MAX_DPI]. IndexError: no such page.
    """
    document = _open(path)
    try:
        page = _page(document, path, index)
        dpi = page_dpi(page, dpi)
        image = page.render(scale=dpi / 72).to_pil().convert("RGB")
        words, boxes = _page_words(page, *_pixel_size(page, dpi)) if text_layer else ([], [])
        return image, words, boxes, len(document)
    finally:
        document.close()


def _page_words(page, width: int, height: int) -> tuple[list[str], list[list[float]]]:
    """The words of an open PDFium page's text layer and their boxes in a `width` x `height` rendering."""
    pdfium = _pdfium()
    to_pixels = pdfium.PdfPosConv(page, (0, 0, width, height, 0))
    text_page = page.get_textpage()
    words: list[str] = []
    boxes: list[list[int]] = []
    current: list[str] = []
    box: list[float] = []

    def flush() -> None:
        if current:
            words.append("".join(current))
            boxes.append([max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])])
        current.clear()

    last_loose = None  # the previous character's font box (PDF points): where a word may end without a space
    for i in range(text_page.count_chars()):
        char = text_page.get_text_range(i, 1)
        if not char or char.isspace() or char == "\x00":
            flush()
            continue
        try:
            left, bottom, right, top = text_page.get_charbox(i)
            loose = text_page.get_charbox(i, loose=True)
        except pdfium.PdfiumError:
            continue
        xs, ys = zip(to_pixels.to_bitmap(left, top), to_pixels.to_bitmap(right, bottom), strict=True)
        char_box = [min(xs), min(ys), max(xs), max(ys)]
        if current and last_loose is not None and _word_break(last_loose, loose):
            flush()
        last_loose = loose
        if current:
            box = [
                min(box[0], char_box[0]),
                min(box[1], char_box[1]),
                max(box[2], char_box[2]),
                max(box[3], char_box[3]),
            ]
        else:
            box = char_box
        current.append(char)
    flush()
    text_page.close()
    return words, boxes


def _word_break(previous: Sequence[float], char: Sequence[float]) -> bool:
    """Whether `char` starts a new word after `previous` although no space lies between them (separate text objects
    often carry no space): it is on another line (vertical overlap under half the smaller font box) or a gap wider
    than a sixth of the font height separates them (font boxes of neighbouring letters touch; a space is about a
    quarter of the height). Boxes are PDFium's `(left, bottom, right, top)` in points."""
    height = max(1e-3, min(previous[3] - previous[1], char[3] - char[1]))
    overlap = min(previous[3], char[3]) - max(previous[1], char[1])
    return overlap < height / 2 or not -height < char[0] - previous[2] < height / 6


def write_pdf(
    path: str | os.PathLike,
    image: PIL.Image.Image,
    words: Sequence[str] = (),
    pixel_boxes: Sequence[Sequence[float]] = (),
    dpi: float = DEFAULT_DPI,
) -> None:
    """Write a one-page PDF showing `image` at `dpi`, with each word as invisible text over its pixel box (the
    text layer of an OCR'd scan), so that `pdf_page_words(path, 0, dpi)` reads the words back at about their boxes.
    Words are written in the PDF standard font Helvetica: characters outside Latin-1 may not survive."""
    pdfium = _pdfium()
    raw = pdfium.raw
    if len(words) != len(pixel_boxes):
        raise ValueError(f"{len(words)} words but {len(pixel_boxes)} boxes.")
    points = 72 / dpi
    page_width, page_height = image.width * points, image.height * points
    document = pdfium.PdfDocument.new()
    try:
        page = document.new_page(page_width, page_height)
        picture = pdfium.PdfImage.new(document)
        picture.set_bitmap(pdfium.PdfBitmap.from_pil(image.convert("RGB")))
        picture.set_matrix(pdfium.PdfMatrix().scale(page_width, page_height))
        page.insert_obj(picture)
        for word, (x0, y0, x1, y1) in zip(words, pixel_boxes, strict=True):
            size = max(1.0, (y1 - y0) * points)
            text = raw.FPDFPageObj_NewTextObj(document, b"Helvetica", ctypes.c_float(size))
            _set_text(raw, text, word)
            raw.FPDFTextObj_SetTextRenderMode(text, raw.FPDF_TEXTRENDERMODE_INVISIBLE)
            left, bottom, right, _ = (ctypes.c_float(), ctypes.c_float(), ctypes.c_float(), ctypes.c_float())
            raw.FPDFPageObj_GetBounds(text, left, bottom, right, _)
            stretch = (x1 - x0) * points / max(1e-3, right.value - left.value)
            _set_text(raw, text, word + " ")  # an explicit space after each word, as OCR text layers have
            # Put the glyphs' left edge at x0 and the baseline about a fifth of the height above the box's bottom.
            raw.FPDFPageObj_Transform(
                text, stretch, 0, 0, 1, x0 * points - left.value * stretch, page_height - y1 * points + 0.2 * size
            )
            raw.FPDFPage_InsertObject(page, text)
        page.gen_content()
        document.save(os.fspath(path))
    finally:
        document.close()


def _set_text(raw, text_object, text: str) -> None:
    buffer = (text + "\x00").encode("utf-16-le")  # FPDF_WIDESTRING: NUL-terminated UTF-16LE
    raw.FPDFText_SetText(text_object, ctypes.cast(ctypes.c_char_p(buffer), ctypes.POINTER(ctypes.c_ushort)))
