"""One way to open a document page, for every entry point (predict, evaluate, the dataset loaders).

`load_page` returns the page as PIL opened it, in its own mode: 16-bit greyscale, alpha and palette pages are left to
the image processor, which converts them without loss (PIL's `convert("RGB")` clips 16-bit pages to white and turns
transparent backgrounds black). Pixels are read here, so a truncated or corrupt file fails here, with its name.

A page file is read at most `MAX_PAGE_PIXELS` pixels big: a larger one (a 12000 x 12000 TIFF) is shrunk by the
smallest whole factor that fits it (a JPEG decoded at that scale, any other file decoded then shrunk with a box
filter), because every later step (RGB conversion, OCR, the image processor) holds several float copies of the page.
Its words, boxes and size are then those of the shrunk page.
"""

from __future__ import annotations

import io
import math
import os
import re
from typing import Any

import numpy as np
import PIL.Image

from .image_processing_layoutlm_roialign import page_to_rgb

__all__ = ["load_page", "page_to_rgb_image", "MAX_PAGE_PIXELS", "NoSuchPage"]

MAX_PAGE_PIXELS = 25_000_000  # 5000 x 5000: an A3 page at 400 dpi; larger page files are shrunk (module docstring)


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


class NoSuchPage(ValueError):
    """`load_page(frame=...)` asked for a page that a multi-page file does not have; `pages` is how many it has."""

    def __init__(self, message: str, pages: int) -> None:
        super().__init__(message)
        self.pages = pages


def _open(file: Any, what: str, frame: int = 0) -> PIL.Image.Image:
    try:
        image = PIL.Image.open(file)
        if frame:
            frames = getattr(image, "n_frames", 1)
            if not 0 <= frame < frames:
                raise NoSuchPage(f"The file {what!r} has {frames} page(s); page {frame + 1} does not exist.", frames)
            image.seek(frame)
        factor = _shrink_factor(image.size)
        if factor > 1 and image.format == "JPEG":
            image.draft(image.mode, (image.width // factor, image.height // factor))  # decoded at 1/2, 1/4 or 1/8
        image.load()  # read every pixel now: a truncated file fails here, not later inside the model
    except NoSuchPage:
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
    if getattr(image, "n_frames", 1) > 1:
        # Multi-page files (TIFF) keep their file open for the other frames; keep this page and close it.
        page = image.copy()
        image.close()
        return _within_budget(page)
    return _within_budget(image)


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
        return _open(source, what, frame)
    if isinstance(source, np.ndarray):
        return _from_array(source, what)
    if isinstance(source, dict) and ("bytes" in source or "path" in source):
        if source.get("bytes") is not None:
            return _open(io.BytesIO(source["bytes"]), what, frame)
        if source.get("path"):
            return _open(source["path"], what, frame)
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
