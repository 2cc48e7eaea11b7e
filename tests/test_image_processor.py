"""LayoutLMRoIAlignImageProcessor: any page -> RGB -> square -> ImageNet-normalized `pixel_values`; optional OCR."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest
import torch

from layoutlm_roialign import LayoutLMRoIAlignConfig
from layoutlm_roialign.image_processing_layoutlm_roialign import (
    LayoutLMRoIAlignImageProcessor,
    normalize_box,
    normalize_boxes,
)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def grey_page(width: int = 96, height: int = 64) -> PIL.Image.Image:
    """A white 'L' page with a black block and a mid-grey block: every pixel is black, white or grey 128."""
    page = PIL.Image.new("L", (width, height), 255)
    draw = PIL.ImageDraw.Draw(page)
    draw.rectangle([8, 8, 40, 30], fill=0)
    draw.rectangle([50, 20, 90, 60], fill=128)
    return page


@pytest.fixture(scope="module")
def processor() -> LayoutLMRoIAlignImageProcessor:
    return LayoutLMRoIAlignImageProcessor(size=32)


def test_defaults_match_model_config():
    processor = LayoutLMRoIAlignImageProcessor()
    assert processor.size == LayoutLMRoIAlignConfig().image_size == 224
    assert processor.image_mean == [0.485, 0.456, 0.406] and processor.image_std == [0.229, 0.224, 0.225]
    assert processor.apply_ocr is False


def test_white_and_black_pages_are_imagenet_normalized(processor):
    white = PIL.Image.new("RGB", (50, 70), "white")
    black = PIL.Image.new("RGB", (70, 50), "black")
    pixel_values = processor([white, black], return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (2, 3, 32, 32) and pixel_values.dtype == torch.float32
    torch.testing.assert_close(pixel_values[0], ((1 - MEAN) / STD).expand(3, 32, 32))
    torch.testing.assert_close(pixel_values[1], (-MEAN / STD).expand(3, 32, 32))


def test_every_pil_mode_gives_the_rgb_result(processor):
    grey = grey_page()
    rgb = grey.convert("RGB")
    sixteen_bit = PIL.Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # 16-bit grey, same content
    assert sixteen_bit.mode.startswith("I;16")
    int32 = sixteen_bit.convert("I")
    pages = [
        grey,
        rgb.convert("RGBA"),
        rgb.convert("P", palette=PIL.Image.Palette.ADAPTIVE),
        grey.convert("LA"),
        rgb.convert("CMYK"),
        sixteen_bit,
        int32,
    ]
    expected = processor(rgb, return_tensors="pt")["pixel_values"][0]
    pixel_values = processor(pages, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (len(pages), 3, 32, 32)
    for mode, values in zip([p.mode for p in pages], pixel_values, strict=True):
        torch.testing.assert_close(values, expected, atol=1e-5, rtol=0, msg=f"mode {mode}")
    # the page is not constant: the test would pass vacuously otherwise
    assert expected.amin() < -1.5 and expected.amax() > 2.0


def test_transparent_pixels_become_white_paper(processor):
    transparent = PIL.Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    palette = PIL.Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    keyed_grey = PIL.Image.new("L", (40, 40), 0)  # a PNG colour key (tRNS): black is transparent
    keyed_grey.info["transparency"] = 0
    keyed_rgb = PIL.Image.new("RGB", (40, 40), (0, 0, 0))
    keyed_rgb.info["transparency"] = (0, 0, 0)
    white = processor(PIL.Image.new("RGB", (40, 40), "white"), return_tensors="pt")["pixel_values"]
    for page in (transparent, palette, keyed_grey, keyed_rgb):
        torch.testing.assert_close(processor(page, return_tensors="pt")["pixel_values"], white)


def test_numpy_and_torch_pages(processor):
    grey = grey_page()
    expected = processor(grey, return_tensors="pt")["pixel_values"][0]
    array = np.asarray(grey)  # (H, W) uint8
    pages = [
        array,
        np.stack([array] * 3, axis=-1),  # (H, W, 3)
        np.stack([array] * 3, axis=0),  # (3, H, W)
        array.astype(np.float32) / 255.0,  # float pages are 0..1
        array.astype(np.uint16) * 257,  # 16-bit
        torch.from_numpy(np.stack([array] * 3, axis=0)),  # (3, H, W) tensor
    ]
    for i, values in enumerate(processor(pages, return_tensors="pt")["pixel_values"]):
        torch.testing.assert_close(values, expected, atol=1e-5, rtol=0, msg=f"page {i}")


def test_return_types_and_resizing_switches():
    page = grey_page(96, 64)
    processor = LayoutLMRoIAlignImageProcessor(size=16)
    as_list = processor(page)["pixel_values"]
    assert isinstance(as_list, list) and as_list[0].shape == (3, 16, 16) and as_list[0].dtype == np.float32
    assert processor(page, return_tensors="np")["pixel_values"].shape == (1, 3, 16, 16)
    assert processor(page, size=24, return_tensors="pt")["pixel_values"].shape == (1, 3, 24, 24)
    raw = processor(page, do_resize=False, do_normalize=False, do_rescale=False, return_tensors="pt")
    torch.testing.assert_close(raw["pixel_values"][0, 0], torch.from_numpy(np.array(page)).float())


def test_path_pages_and_unreadable_files(tmp_path, processor):
    path = tmp_path / "page.png"
    grey_page().save(path)
    from_path = processor(str(path), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_path, processor(grey_page(), return_tensors="pt")["pixel_values"])
    torch.testing.assert_close(processor(path, return_tensors="pt")["pixel_values"], from_path)  # PathLike too

    with pytest.raises(ValueError, match=r"`images`.*missing\.png"):
        processor(str(tmp_path / "missing.png"))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"`images`.*corrupt\.png"):
        processor([str(path), str(corrupt)])


def test_bad_pages_and_settings(processor):
    with pytest.raises(ValueError, match="`images`"):
        processor(np.zeros((5, 5, 2), dtype=np.uint8))  # 2 channels
    with pytest.raises(ValueError, match="`images`"):
        processor({"not": "an image"})
    with pytest.raises(ValueError, match="`images` is empty"):
        processor([])
    with pytest.raises(ValueError, match="`images` differ in size"):
        processor([grey_page(96, 64), grey_page(64, 64)], do_resize=False, return_tensors="pt")
    with pytest.raises(ValueError, match="`size`"):
        LayoutLMRoIAlignImageProcessor(size={"height": 224, "width": 160})
    with pytest.raises(ValueError, match="`size`"):
        LayoutLMRoIAlignImageProcessor(size=0)


def test_normalize_box_rounds_and_clamps():
    assert normalize_box([10, 20, 30, 40], width=200, height=100) == [50, 200, 150, 400]
    assert normalize_box([0.3, 0, 199.9, 100], 200, 100) == [2, 0, 1000, 1000]  # rounded, not truncated
    assert normalize_box([-5, -1, 250, 120], 200, 100) == [0, 0, 1000, 1000]  # boxes crossing the page edge
    assert normalize_boxes([[0, 0, 100, 50], [100, 50, 200, 100]], 200, 100) == [
        [0, 0, 500, 500],
        [500, 500, 1000, 1000],
    ]
    with pytest.raises(ValueError, match="inverted"):
        normalize_box([30, 20, 10, 40], 200, 100)
    with pytest.raises(ValueError, match="`width` and `height`"):
        normalize_box([0, 0, 1, 1], 0, 100)


def test_save_load_round_trip(tmp_path):
    processor = LayoutLMRoIAlignImageProcessor(size=48, image_mean=[0.5, 0.5, 0.5], apply_ocr=True, ocr_lang="eng")
    processor.save_pretrained(tmp_path)
    loaded = LayoutLMRoIAlignImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert (loaded.size, loaded.image_mean, loaded.apply_ocr, loaded.ocr_lang) == (48, [0.5, 0.5, 0.5], True, "eng")
    page = grey_page()
    torch.testing.assert_close(
        loaded(page, apply_ocr=False, return_tensors="pt")["pixel_values"],
        processor(page, apply_ocr=False, return_tensors="pt")["pixel_values"],
    )


def test_missing_pytesseract_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytesseract", None)  # makes `import pytesseract` raise ImportError
    processor = LayoutLMRoIAlignImageProcessor(size=32, apply_ocr=True)
    with pytest.raises(ImportError, match=r'pip install "layoutlm-roialign\[ocr\]".*apt-get install tesseract-ocr'):
        processor(grey_page())


OCR_WORDS = ["INVOICE", "NUMBER", "TOTAL", "AMOUNT", "CUSTOMER", "ADDRESS", "PAYMENT", "SIGNATURE"]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="the tesseract binary is not installed")
def test_ocr_reads_back_a_rendered_page():
    pytest.importorskip("pytesseract", reason="pytesseract is not installed")
    font = PIL.ImageFont.load_default(size=40)
    page = PIL.Image.new("RGB", (900, 360), "white")
    draw = PIL.ImageDraw.Draw(page)
    drawn = {}  # word -> its pixel box
    for i, word in enumerate(OCR_WORDS):
        xy = (40 + 440 * (i % 2), 30 + 80 * (i // 2))
        draw.text(xy, word, fill="black", font=font)
        drawn[word] = draw.textbbox(xy, word, font=font)

    out = LayoutLMRoIAlignImageProcessor(size=32, apply_ocr=True)(page, return_tensors="pt")
    words, boxes = out["words"][0], out["boxes"][0]
    assert out["pixel_values"].shape == (1, 3, 32, 32)
    assert len(words) == len(boxes)
    found = [w for w in OCR_WORDS if w in words]
    assert len(found) >= 6, f"OCR read {words}"
    for box in boxes:
        assert all(0 <= v <= 1000 for v in box) and box[2] >= box[0] and box[3] >= box[1]
    for word in found:  # each box lies where the word was drawn
        assert box_iou(boxes[words.index(word)], normalize_box(drawn[word], *page.size)) > 0.5, word


def box_iou(a: list[int], b: list[int]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
