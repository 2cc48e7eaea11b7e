"""PDF pages: rendering, the text layer's words in the rendered page's pixels (also on rotated pages), and errors."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("pypdfium2", reason="the PDF reader needs pypdfium2 (the `pdf` extra)")

from layoutlm_roialign.data import render_synthetic_form  # noqa: E402
from layoutlm_roialign.pdf_layoutlm_roialign import (  # noqa: E402
    _word_break,
    pdf_page_count,
    pdf_page_words,
    render_pdf_page,
    write_pdf,
)


@pytest.fixture(scope="module")
def form(tmp_path_factory):
    """A synthetic form written as a PDF at 72 dpi (1 pixel = 1 point), with its words and pixel boxes."""
    image, words, boxes, _ = render_synthetic_form(seed=3, index=1)
    width, height = image.size
    pixel_boxes = [
        [b[0] * width / 1000, b[1] * height / 1000, b[2] * width / 1000, b[3] * height / 1000] for b in boxes
    ]
    path = tmp_path_factory.mktemp("pdf") / "form.pdf"
    write_pdf(path, image, words, pixel_boxes, dpi=72)
    return path, image, words, np.array(pixel_boxes)


@pytest.mark.parametrize("dpi", [72, 150])
def test_words_come_back_with_boxes_in_the_rendered_pixels(form, dpi):
    path, image, words, pixel_boxes = form
    page = render_pdf_page(path, 0, dpi=dpi)
    scale = dpi / 72
    assert page.mode == "RGB" and page.size == (math.ceil(image.width * scale), math.ceil(image.height * scale))
    read, boxes = pdf_page_words(path, 0, dpi=dpi)
    assert read == words
    boxes = np.array(boxes)
    # Left and right edges within 2 px; top and bottom within a quarter of the line height (tight glyph boxes of the
    # PDF font against the box of the font the page was drawn with).
    line_height = (pixel_boxes[:, 3] - pixel_boxes[:, 1]).max() * scale
    assert np.abs(boxes[:, [0, 2]] - pixel_boxes[:, [0, 2]] * scale).max() <= 2 + scale
    assert np.abs(boxes[:, [1, 3]] - pixel_boxes[:, [1, 3]] * scale).max() <= line_height / 4
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # The picture is the page: the rendered page matches the source image.
    small = np.asarray(page.convert("L").resize(image.size), dtype=float)
    assert np.abs(small - np.asarray(image.convert("L"), dtype=float)).mean() < 12


def test_rotated_page_boxes_follow_the_rotation(form, tmp_path):
    import pypdfium2

    path, image, words, pixel_boxes = form
    document = pypdfium2.PdfDocument(str(path))
    document[0].set_rotation(90)  # shown turned a quarter clockwise
    document.save(str(tmp_path / "rotated.pdf"))
    document.close()
    page = render_pdf_page(tmp_path / "rotated.pdf", 0, dpi=72)
    assert page.size == (image.height, image.width)
    read, boxes = pdf_page_words(tmp_path / "rotated.pdf", 0, dpi=72)
    assert sorted(read) == sorted(words)  # the reading order may change with the rotation
    upright = np.array(pdf_page_words(path, 0, dpi=72)[1])
    # Clockwise quarter turn: (x, y) -> (H - y, x).
    expected = np.stack([image.height - upright[:, 3], upright[:, 0], image.height - upright[:, 1], upright[:, 2]], 1)
    boxes = np.array(boxes)
    assert np.abs(boxes[np.lexsort(boxes.T[::-1])] - expected[np.lexsort(expected.T[::-1])]).max() <= 2


def test_a_scan_without_text_layer_has_no_words(tmp_path):
    write_pdf(tmp_path / "scan.pdf", PIL.Image.new("RGB", (200, 300), "white"))
    assert pdf_page_words(tmp_path / "scan.pdf") == ([], [])
    assert pdf_page_count(tmp_path / "scan.pdf") == 1


def test_unreadable_file_and_missing_page_raise_clear_errors(form, tmp_path):
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7 this is not a PDF")
    with pytest.raises(ValueError, match="bad.pdf is not a readable PDF"):
        pdf_page_count(tmp_path / "bad.pdf")
    with pytest.raises(FileNotFoundError):
        pdf_page_words(tmp_path / "missing.pdf")
    with pytest.raises(IndexError, match="has 1 page"):
        render_pdf_page(form[0], 1)


def test_word_break_without_a_space_character():
    # (left, bottom, right, top) font boxes of 10 pt letters: touching -> same word; a gap of a third of the
    # height, or another line -> a new word.
    letter = (0.0, 0.0, 6.0, 12.0)
    assert not _word_break(letter, (6.0, 0.0, 12.0, 12.0))
    assert _word_break(letter, (10.0, 0.0, 16.0, 12.0))
    assert _word_break(letter, (6.0, -14.0, 12.0, -2.0))
    assert _word_break(letter, (-40.0, 0.0, -34.0, 12.0))  # back to the left: a new column or line


def test_dpi_is_bounded_and_a_page_over_the_pixel_budget_renders_at_the_dpi_that_fits(form, monkeypatch):
    path, image, words, _ = form
    for dpi in (0, -5, 10_000, float("nan"), "150"):
        with pytest.raises(ValueError, match=r"--dpi must be a number of dots per inch above 0 and at most 1200"):
            render_pdf_page(path, 0, dpi=dpi)
        with pytest.raises(ValueError, match="--dpi"):
            pdf_page_words(path, 0, dpi=dpi)
    budget = image.width * image.height * 4  # what 144 dpi gives this page (drawn at 72 dpi): 300 dpi is over it
    monkeypatch.setattr("layoutlm_roialign.pdf_layoutlm_roialign.MAX_PAGE_PIXELS", budget)
    page = render_pdf_page(path, 0, dpi=300)
    assert page.width * page.height <= budget and page.width >= 2 * image.width - 2
    found, boxes = pdf_page_words(path, 0, dpi=300)
    assert found == words
    assert max(b[2] for b in boxes) <= page.width and max(b[3] for b in boxes) <= page.height
    scale = page.width / image.width  # the boxes are in the pixels of the page as rendered, not of 300 dpi
    assert min(b[0] for b in boxes) < 0.6 * scale * image.width
