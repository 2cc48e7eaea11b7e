"""pages.load_page: one way to open a page, keeping its mode for the image processor, and clear errors for files
that are missing, damaged, truncated or over PIL's pixel limit."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest
import torch

from layoutlm_roialign.image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor
from layoutlm_roialign.pages_layoutlm_roialign import load_page, page_to_rgb_image, read_page


def ink_page(width: int = 240, height: int = 160) -> np.ndarray:
    """An 8-bit grey page with black text and a grey bar: (H, W) uint8."""
    page = PIL.Image.new("L", (width, height), 255)
    draw = PIL.ImageDraw.Draw(page)
    draw.text((10, 20), "INVOICE 42", fill=0, font=PIL.ImageFont.load_default(size=30))
    draw.rectangle([10, 100, 200, 130], fill=128)
    return np.asarray(page)


def sixteen_bit(grey: np.ndarray) -> PIL.Image.Image:
    image = PIL.Image.fromarray(grey.astype(np.uint16) * 257)
    assert image.mode == "I;16"
    return image


def ink_on_transparent(grey: np.ndarray) -> PIL.Image.Image:
    """Black ink whose coverage is the alpha channel, on a fully transparent page (as vector exports write it)."""
    rgba = np.zeros((*grey.shape, 4), dtype=np.uint8)
    rgba[..., 3] = 255 - grey
    return PIL.Image.fromarray(rgba, "RGBA")


@pytest.fixture(scope="module")
def processor() -> LayoutLMRoIAlignImageProcessor:
    return LayoutLMRoIAlignImageProcessor(size=64)


@pytest.mark.parametrize("variant", ["16-bit", "transparent"])
def test_16_bit_and_transparent_files_give_the_8_bit_pixels(tmp_path, processor, variant):
    grey = ink_page()
    PIL.Image.fromarray(grey).save(tmp_path / "page8.png")
    image = sixteen_bit(grey) if variant == "16-bit" else ink_on_transparent(grey)
    image.save(tmp_path / "page.png")

    page = load_page(tmp_path / "page.png")
    assert page.mode == image.mode  # not converted: the image processor reads 16 bits and alpha itself
    expected = processor(load_page(tmp_path / "page8.png"), return_tensors="pt")["pixel_values"]
    got = processor(page, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # PIL's convert("RGB"), which predict.py used, loses the page: 16-bit clips to white, transparent turns black.
    converted = processor(page.convert("RGB"), return_tensors="pt")["pixel_values"]
    assert (converted - expected).abs().max() > 1.0
    # The drawing of the page is the 8-bit page too.
    drawn = np.asarray(page_to_rgb_image(tmp_path / "page.png"))
    assert drawn.shape == (*grey.shape, 3) and np.abs(drawn[..., 0].astype(int) - grey).max() <= 1


def test_every_source_kind(tmp_path):
    grey = ink_page(40, 30)
    path = tmp_path / "page.png"
    PIL.Image.fromarray(grey).save(path)
    image = PIL.Image.fromarray(grey)
    assert load_page(image) is image
    for source in (str(path), path, {"bytes": path.read_bytes(), "path": "page.png"}, {"bytes": None, "path": path}):
        page = load_page(source)
        assert page.mode == "L" and np.array_equal(np.asarray(page), grey)
    assert load_page(grey.astype(np.uint16) * 257).mode == "I;16"  # (H, W) uint16 stays 16-bit
    floats = load_page(np.stack([grey] * 3).astype(np.float32) / 255.0)  # (3, H, W) floats 0..1
    assert floats.mode == "RGB" and np.abs(np.asarray(floats)[..., 1].astype(int) - grey).max() <= 1


def test_multi_page_tiff_gives_its_first_page(tmp_path):
    first, second = PIL.Image.new("L", (20, 10), 0), PIL.Image.new("L", (20, 10), 255)
    first.save(tmp_path / "pages.tif", save_all=True, append_images=[second])
    page = load_page(tmp_path / "pages.tif")
    assert np.asarray(page).max() == 0


def test_unreadable_pages_name_the_file(tmp_path):
    good = io.BytesIO()
    PIL.Image.fromarray(ink_page()).save(good, "PNG")
    (tmp_path / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (tmp_path / "notes.png").write_text("not an image")
    cases = [
        (tmp_path / "truncated.png", r"truncated\.png.*damaged or incomplete"),
        (tmp_path / "missing.png", r"missing\.png.*does not exist"),
        (tmp_path / "notes.png", r"notes\.png.*not an image"),
        (tmp_path, r"is a folder"),
        ({"bytes": good.getvalue()[:100], "path": "rows/17.png"}, r"rows/17\.png.*damaged or incomplete"),
        ({"bytes": None, "path": None}, r"neither `bytes` nor `path`"),
        (3, r"must be a path, a PIL image"),
    ]
    for source, match in cases:
        with pytest.raises(ValueError, match=match):
            load_page(source)
    with pytest.raises(ValueError, match=r"'scan 4'.*damaged"):
        load_page(tmp_path / "truncated.png", name="scan 4")


def test_decompression_bomb_says_the_pixels_and_how_to_raise_the_limit(tmp_path, monkeypatch):
    PIL.Image.new("L", (100, 50), 255).save(tmp_path / "big.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 2000)  # PIL refuses pages over twice this
    with pytest.raises(ValueError, match=r"big\.png.*5,000 pixels.*4,000.*PIL\.Image\.MAX_IMAGE_PIXELS") as info:
        load_page(tmp_path / "big.png")
    assert isinstance(info.value.__cause__, PIL.Image.DecompressionBombError)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", None)  # what the message tells a user who trusts the file
    assert load_page(tmp_path / "big.png").size == (100, 50)


def test_a_page_over_the_pixel_budget_is_shrunk_before_the_float_copies(tmp_path, monkeypatch):
    monkeypatch.setattr("layoutlm_roialign.pages_layoutlm_roialign.MAX_PAGE_PIXELS", 10_000)
    grey = ink_page(300, 200)  # 60,000 pixels: shrunk 3 times to 100 x 67
    for name, image in (
        ("grey.png", PIL.Image.fromarray(grey)),
        ("bilevel.tif", PIL.Image.fromarray(grey).convert("1")),
        ("palette.png", PIL.Image.fromarray(grey).convert("RGB").convert("P")),
        ("sixteen.png", sixteen_bit(grey)),
        ("photo.jpg", PIL.Image.fromarray(grey).convert("RGB")),
    ):
        image.save(tmp_path / name)
        page = load_page(tmp_path / name)
        assert page.width * page.height <= 10_000 and page.width >= 75, (name, page.size)
        rgb = np.asarray(page_to_rgb_image(page)).astype(float).mean(-1)
        assert rgb.min() < 100 and rgb.max() > 200, name  # the ink survives the shrinking


def test_a_frame_of_a_multi_page_file_is_read_or_named_missing(tmp_path):
    frames = [PIL.Image.fromarray(ink_page(120 + 10 * i, 80)) for i in range(3)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    assert [load_page(tmp_path / "pages.tif", frame=i).width for i in range(3)] == [120, 130, 140]
    with pytest.raises(ValueError, match=r"`page` 4: '.*pages.tif' has 3 page\(s\); choose a page from 1 to 3"):
        load_page(tmp_path / "pages.tif", frame=3)


@pytest.mark.slow
def test_a_12000_pixel_square_tiff_is_read_in_bounded_memory(tmp_path):
    """Peak memory of reading, converting and preprocessing a 144-megapixel scan (it was 4.5 GB)."""
    import subprocess
    import sys

    PIL.Image.new("L", (12000, 12000), 255).save(tmp_path / "huge.tif", compression="tiff_deflate")
    code = f"""
import resource
from layoutlm_roialign.image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor
from layoutlm_roialign.pages_layoutlm_roialign import load_page, page_to_rgb_image, read_page
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
page = page_to_rgb_image(load_page({str(tmp_path / "huge.tif")!r}))
LayoutLMRoIAlignImageProcessor(size=64)(page, return_tensors="pt")
print(page.size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    size, grown_mib = out.stdout.rsplit(")", 1)
    assert size == "(4000, 4000" and int(grown_mib) < 700, out.stdout


def test_page_arrays_and_wide_pil_pages_are_read_by_where_their_white_is():
    """Float pages on 0..255 and 8-bit values held in 16- or 32-bit integers read as the 8-bit page (they read as an
    all-white and an all-black page); values that have no reading are refused, naming the page."""
    grey = ink_page()
    expected = np.asarray(page_to_rgb_image(grey))
    pages = {
        "float64 0..255": grey.astype(np.float64),
        "float32 0..1": grey.astype(np.float32) / 255.0,
        "uint16 8-bit values": grey.astype(np.uint16),
        "int64 8-bit values (H, W, 3)": np.stack([grey] * 3, axis=-1).astype(np.int64),
        "uint16 16-bit": grey.astype(np.uint16) * 257,
        'PIL "I" 8-bit values': PIL.Image.fromarray(grey).convert("I"),
        'PIL "F" 0..255': PIL.Image.fromarray(grey).convert("F"),
    }
    for name, page in pages.items():
        got = np.asarray(page_to_rgb_image(page))
        assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() <= 1, name
    assert expected.min() == 0 and expected.max() == 255  # black ink on white paper: a flat page would not tell
    refused = {
        "float above 255": (grey.astype(np.float32) * 2, r"reach 510.*rescale the page to 0\.\.1"),
        "negative": (grey.astype(np.int16) - 5, r"negative pixel values \(down to -5\)"),
        "NaN": (np.full((4, 4), np.nan), "NaN or infinite"),
        "past 16 bits": (grey.astype(np.int32) * 1000, r"reach 255000.*astype\(np.uint8\)"),
        "0 x 0 array": (np.zeros((0, 0), np.uint8), r"has no pixels"),
        "0 x 5 RGB array": (np.zeros((0, 5, 3), np.float32), r"has no pixels"),
    }
    for page, match in refused.values():
        with pytest.raises(ValueError, match=r"The page 'x': .*" + match):
            read_page(page, words=[], boxes=[], name="x")
        with pytest.raises(ValueError, match=match):
            page_to_rgb_image(page)  # the drawing reads the page by the same rule
    with pytest.raises(ValueError, match=r"The page '<Image>' has no pixels \(0 x 0\)"):
        read_page(PIL.Image.new("L", (0, 0)), words=[], boxes=[])


def test_pages_in_memory_keep_to_the_pixel_budget_and_pixel_boxes_to_their_own_pixels(monkeypatch, tmp_path):
    monkeypatch.setattr("layoutlm_roialign.pages_layoutlm_roialign.MAX_PAGE_PIXELS", 10_000)
    grey = ink_page(300, 200)  # 60,000 pixels: shrunk 3 times to 100 x 67 (a JPEG decoded at 1/2, then shrunk)
    jpeg = str(tmp_path / "photo.jpg")
    PIL.Image.fromarray(grey).save(jpeg, quality=95)
    for page in (PIL.Image.fromarray(grey), grey, grey.astype(np.float32) / 255, np.stack([grey] * 3), jpeg):
        read = read_page(page, words=["INVOICE"], pixel_boxes=[[10, 20, 150, 60]])
        assert (
            read["image"].size == (read["width"], read["height"]) == ((75, 50) if isinstance(page, str) else (100, 67))
        )
        assert read["boxes"] == [[33, 100, 500, 300]]  # the box on the page's own 300 x 200 pixels
        rgb = np.asarray(read["image"]).astype(float).mean(-1)
        assert rgb.min() < 100 and rgb.max() > 200  # the ink survives the shrinking
