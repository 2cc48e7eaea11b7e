"""Image processor for LayoutLM-RoIAlign: any document page -> ImageNet-normalized square `pixel_values`.

The ResNet backbone is ImageNet-trained, so pages are normalized with ImageNet mean/std (the FUNSD image-embedding
tutorial this model comes from skipped that step). Token boxes are 0-1000 page coordinates, independent of the pixel
size, so the page is resized to a square without keeping its aspect ratio: box `b` on the page maps to
`b * size / 1000` in `pixel_values`, which is what the model's RoIAlign assumes.

Optional OCR with Tesseract (as `LayoutLMv3ImageProcessor` does) returns each page's words and 0-1000 boxes.
This file is copied into every checkpoint as remote code: it imports only numpy, PIL, torch and transformers, and
`pytesseract` only at call time inside a `try` block (transformers' `check_imports` skips imports in `try` blocks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import TensorType, logging

__all__ = [
    "LayoutLMRoIAlignImageProcessor",
    "apply_tesseract",
    "normalize_box",
    "normalize_boxes",
    "page_channels_last",
    "page_to_rgb",
    "page_white",
]

logger = logging.get_logger(__name__)

OCR_INSTALL_HINT = 'pip install "layoutlm-roialign[ocr]" (pytesseract) and apt-get install tesseract-ocr (the binary)'

# PIL resampling filter -> torch interpolation mode; antialiasing keeps thin strokes of a large page visible.
_INTERPOLATION = {
    PILImageResampling.NEAREST: "nearest",
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
}


class LayoutLMRoIAlignImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    apply_ocr (`bool`, *optional*, defaults to `False`):
        Whether to run Tesseract on each page and return its `words` and 0-1000 `boxes`.
    ocr_lang (`str`, *optional*):
        Tesseract language code(s), e.g. `"eng"` or `"eng+deu"`; Tesseract's default (English) when `None`.
    tesseract_config (`str`, *optional*, defaults to `""`):
        Extra Tesseract flags, e.g. `"--psm 6"`.
    """

    apply_ocr: bool
    ocr_lang: str | None
    tesseract_config: str | None


def normalize_box(box: Sequence[float], width: int, height: int) -> list[int]:
    """Map a pixel box `(x0, y0, x1, y1)` on a `width` x `height` page to LayoutLM's 0-1000 grid.

    Coordinates are rounded and clamped to 0..1000 (OCR and annotation boxes often touch or cross the page edge;
    LayoutLM's position embeddings crash on values outside 0..1000).

    Raises:
        ValueError: if `width`/`height` are not positive, `box` does not hold 4 numbers or is inverted.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"`width` and `height` must be positive, got {width} x {height}.")
    if len(box) != 4:
        raise ValueError(f"`box` must be (x0, y0, x1, y1), got {box!r}.")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"`box` {list(box)!r} is inverted: it needs x1 >= x0 and y1 >= y0.")

    def scale(value: float, extent: int) -> int:
        return min(1000, max(0, round(1000 * value / extent)))

    return [scale(x0, width), scale(y0, height), scale(x1, width), scale(y1, height)]


def normalize_boxes(boxes: Sequence[Sequence[float]], width: int, height: int) -> list[list[int]]:
    """`normalize_box` for every box of one page."""
    return [normalize_box(box, width, height) for box in boxes]


def page_channels_last(array: np.ndarray) -> np.ndarray:
    """An (H, W), (H, W, C) or (C, H, W) page array as (H, W, C), C in 1, 3, 4 (a view, no copy).

    Raises:
        ValueError: for another shape, or a page without pixels (a side of 0).
    """
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first -> channels-last
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, C) or (C, H, W) page with C in 1, 3, 4; got {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"the page has no pixels (shape {array.shape}); give a page at least 1 x 1 pixel big")
    return array


def page_white(array: np.ndarray) -> float:
    """The value of white in a page array, by its dtype and, where the dtype leaves it open, its largest value.

    uint8 pages are 0..255 and bool pages 0/1. Other integer pages (uint16, int32, a PIL "I" page) are 0..255 when
    no value exceeds 255 (8-bit values in a wider type) and 0..65535 (16-bit) when one does. Float pages are 0..1
    when no value exceeds 1, else 0..255. Anything else (negative values, NaN, integers past 65535, floats past
    255) has no reading and is refused rather than shown as a white or black page.

    Raises:
        ValueError: saying how to convert the page, for values outside every reading or an unsupported dtype.
    """
    if array.dtype == np.bool_:
        return 1.0
    if array.dtype == np.uint8:
        return 255.0
    floating = np.issubdtype(array.dtype, np.floating)
    if not (floating or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"unsupported pixel dtype {array.dtype}; give uint8 (0..255) or float (0..1) pixels")
    low, high = array.min(), array.max()
    if floating and not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("the page holds NaN or infinite pixel values; give finite values in 0..1 or 0..255")
    if low < 0:
        raise ValueError(
            f"the page holds negative pixel values (down to {low}); pixels are 0 (black) to 1, 255 or 65535 (white): "
            "rescale it, e.g. `(array - array.min()) / (array.max() - array.min())`"
        )
    for white in (1.0, 255.0) if floating else (255.0, 65535.0):
        if high <= white:
            return white
    if floating:
        raise ValueError(
            f"float pixels are read as 0..1 or 0..255, but these reach {high:g}; rescale the page to 0..1 "
            "(e.g. `array / array.max()`)"
        )
    raise ValueError(
        f"integer pixels are read as 0..255 or 0..65535 (16-bit), but these reach {high}; convert the page, e.g. "
        "`(array / array.max() * 255).astype(np.uint8)`"
    )


def _array_to_float_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) array -> (H, W, 3) float32 on the 8-bit 0..255 scale.

    White is `page_white(array)` (uint8 0..255, bool 0/1, other integers 0..255 or 0..65535 and floats 0..1 or
    0..255 by their largest value). A fourth channel is alpha and is composited on white, since a transparent page
    background is paper.
    """
    array = page_channels_last(array)
    array = array.astype(np.float32) * np.float32(255.0 / page_white(array))
    if array.shape[-1] == 4:
        alpha = array[..., 3:] / 255.0
        array = array[..., :3] * alpha + 255.0 * (1.0 - alpha)
    elif array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array, 0.0, 255.0)


def _pil_to_float_rgb(image: PIL.Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) float32 on the 0..255 scale, without losing 16-bit precision."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit greyscale (PNG/TIFF scans), 32-bit integer and float pages: PIL's convert("RGB") would clip them to
        # 255 instead of scaling them; `page_white` says where white is.
        return _array_to_float_rgb(np.asarray(image))
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        # a palette entry or a colour key (PNG tRNS) marks transparent pixels: composite them on white like alpha
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _array_to_float_rgb(np.asarray(image.convert("RGBA")))
    return _array_to_float_rgb(np.asarray(image.convert("RGB")))


def page_to_rgb(image: Any) -> np.ndarray:
    """One page (path, PIL image, numpy array or torch tensor) -> (H, W, 3) float32 RGB on the 0..255 scale.

    Raises:
        ValueError: naming `images` when the page cannot be read or has an unsupported shape or type.
    """
    if isinstance(image, (str, os.PathLike)):
        try:
            with PIL.Image.open(image) as opened:
                opened.load()
                return _pil_to_float_rgb(opened)
        except (OSError, SyntaxError, PIL.Image.DecompressionBombError) as err:
            # PIL raises OSError for missing and truncated files, UnidentifiedImageError (an OSError) for non-images.
            raise ValueError(f"`images`: cannot read the image file {os.fspath(image)!r} ({err}).") from err
    if isinstance(image, PIL.Image.Image):
        return _pil_to_float_rgb(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        try:
            return _array_to_float_rgb(image)
        except ValueError as err:
            raise ValueError(f"`images`: {err}.") from err
    raise ValueError(
        f"`images` must hold PIL images, numpy arrays, torch tensors or paths to image files; got {type(image)}."
    )


def apply_tesseract(
    image: PIL.Image.Image, lang: str | None = None, tesseract_config: str | None = None
) -> tuple[list[str], list[list[int]]]:
    """Run Tesseract on an RGB page and return its words and their 0-1000 boxes (as `LayoutLMv3ImageProcessor`).

    Raises:
        ImportError: if `pytesseract` is not installed; `OSError` if the `tesseract` binary is missing.
    """
    try:
        import pytesseract
    except ImportError as err:
        raise ImportError(f"OCR (`apply_ocr=True`) needs pytesseract and Tesseract: {OCR_INSTALL_HINT}.") from err
    try:
        data = pytesseract.image_to_data(image, lang=lang, output_type="dict", config=tesseract_config or "")
    except pytesseract.TesseractNotFoundError as err:
        raise OSError(f"OCR (`apply_ocr=True`) could not find the tesseract binary: {OCR_INSTALL_HINT}.") from err
    width, height = image.size
    words, boxes = [], []
    for text, left, top, w, h in zip(
        data["text"], data["left"], data["top"], data["width"], data["height"], strict=True
    ):
        if not text.strip():  # Tesseract also reports blocks, lines and empty detections
            continue
        words.append(text.strip())
        boxes.append(normalize_box([left, top, left + max(w, 0), top + max(h, 0)], width, height))
    return words, boxes


class LayoutLMRoIAlignImageProcessor(BaseImageProcessor):
    r"""
    Turns document pages into the `pixel_values` that `LayoutLMRoIAlignModel` pools per token box, and optionally
    OCRs them.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize each page to `size` x `size` (aspect ratio is not kept: boxes are page-relative).
        size (`int`, *optional*, defaults to 224):
            Side of the square output; should equal the model config's `image_size`.
        resample (`PILImageResampling`, *optional*, defaults to `BILINEAR`):
            Interpolation filter: `NEAREST`, `BILINEAR` or `BICUBIC` (antialiased when downscaling).
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply 0..255 pixel values by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Scale applied when `do_rescale`.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalize with `image_mean`/`image_std` (ImageNet's, which the ResNet backbone expects).
        image_mean (`list[float]`, *optional*, defaults to ImageNet's mean):
            Per-channel mean.
        image_std (`list[float]`, *optional*, defaults to ImageNet's std):
            Per-channel standard deviation.
        apply_ocr (`bool`, *optional*, defaults to `False`):
            Whether to OCR each page with Tesseract and return `words` and `boxes` (0-1000) per page.
        ocr_lang (`str`, *optional*):
            Tesseract language, e.g. `"eng"`.
        tesseract_config (`str`, *optional*, defaults to `""`):
            Extra Tesseract flags, e.g. `"--psm 6"`.

    Pages may be PIL images of any mode (1, L, P, RGB, RGBA, LA, I;16, I, F, CMYK...), numpy arrays or torch tensors
    ((H, W), (H, W, C) or (C, H, W); uint8 0..255, uint16 0..65535, float 0..1), or paths to image files.
    Transparent pixels are composited on white.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = LayoutLMRoIAlignImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: int = 224,
        resample: int = PILImageResampling.BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        apply_ocr: bool = False,
        ocr_lang: str | None = None,
        tesseract_config: str | None = "",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(size, dict):  # accept transformers' {"height": s, "width": s} form
            if size.get("height") != size.get("width"):
                raise ValueError(f"`size` must be square (the model's `image_size`), got {size}.")
            size = size["height"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"`size` must be a positive int (the model config's `image_size`), got {size!r}.")
        if int(resample) not in _INTERPOLATION:
            raise ValueError(f"`resample` must be NEAREST, BILINEAR or BICUBIC, got {resample!r}.")
        self.do_resize = do_resize
        self.size = size
        self.resample = int(resample)
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = list(image_mean) if image_mean is not None else list(IMAGENET_DEFAULT_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(IMAGENET_DEFAULT_STD)
        self.apply_ocr = apply_ocr
        self.ocr_lang = ocr_lang
        self.tesseract_config = tesseract_config

    def preprocess(
        self,
        images: Any,
        do_resize: bool | None = None,
        size: int | None = None,
        resample: int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        apply_ocr: bool | None = None,
        ocr_lang: str | None = None,
        tesseract_config: str | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Process one page or a list of pages; arguments left `None` take the processor's own values.

        Returns:
            `BatchFeature` with `pixel_values` ((B, 3, size, size) float32 for `return_tensors="pt"`/`"np"`, a list
            of (3, size, size) arrays otherwise) and, with `apply_ocr`, `words` and `boxes` (0-1000) per page.
        """
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else size
        resample = self.resample if resample is None else int(resample)
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        image_mean = self.image_mean if image_mean is None else image_mean
        image_std = self.image_std if image_std is None else image_std
        apply_ocr = self.apply_ocr if apply_ocr is None else apply_ocr
        ocr_lang = self.ocr_lang if ocr_lang is None else ocr_lang
        tesseract_config = self.tesseract_config if tesseract_config is None else tesseract_config

        if kwargs:
            logger.warning_once(f"{type(self).__name__} ignores the unknown arguments {sorted(kwargs)}.")
        pages = list(images) if isinstance(images, (list, tuple)) else [images]
        if not pages:
            raise ValueError("`images` is empty: pass one page or a list of pages.")
        mean = torch.tensor(image_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(image_std, dtype=torch.float32).view(-1, 1, 1)

        pixel_values, words, boxes = [], [], []
        for page in pages:
            rgb = page_to_rgb(page)  # (H, W, 3) on 0..255
            if apply_ocr:
                page_words, page_boxes = apply_tesseract(
                    PIL.Image.fromarray(np.rint(rgb).astype(np.uint8)), ocr_lang, tesseract_config
                )
                words.append(page_words)
                boxes.append(page_boxes)
            pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)  # (3, H, W)
            if do_resize and tuple(pixels.shape[1:]) != (size, size):
                mode = _INTERPOLATION[resample]
                pixels = F.interpolate(
                    pixels[None],
                    size=(size, size),
                    mode=mode,
                    align_corners=None if mode == "nearest" else False,
                    antialias=mode != "nearest",
                )[0]
            if do_rescale:
                pixels = pixels * rescale_factor
            if do_normalize:
                pixels = (pixels - mean) / std
            pixel_values.append(pixels.to(torch.float32).numpy())

        if return_tensors is not None:
            if len({values.shape for values in pixel_values}) > 1:  # only possible with do_resize=False
                raise ValueError(
                    "`images` differ in size and cannot be stacked: keep `do_resize=True` or use `return_tensors=None`."
                )
            pixel_values = np.stack(pixel_values)
        features = BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)
        if apply_ocr:  # added after the tensor conversion: words are strings and pages differ in length
            features["words"] = words
            features["boxes"] = boxes
        return features
