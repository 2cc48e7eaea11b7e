"""The options of the road from a page to its answer, each with its default, as three small dataclasses that every
driver (the pipeline, `predict_page`, `scripts/predict.py`, the labeller, `scripts/evaluate_checkpoint.py`, the demo
and pre-training's reader) passes on as they are:

- `ReadOptions`: how a page is read (`pages_layoutlm_roialign.read_page`): where its words come from, the PDF
  resolution, the OCR language, and which columns of a dataset hold the page, its words and their boxes.
- `WindowOptions`: the windows a page is cut into; unset sizes follow the checkpoint (`window_sizes`).
- `LinkOptions`: how a linking checkpoint decides its pairs; unset rules follow the checkpoint (`link_rules`).
- `ComputeOptions`: what the model computes in (`dtype`: `"auto"` by default; `compute_layoutlm_roialign`).

This module travels with every checkpoint beside the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .compute_layoutlm_roialign import dtype_name, resolve_dtype
from .pdf_layoutlm_roialign import DEFAULT_DPI

__all__ = ["ComputeOptions", "LinkOptions", "MAX_WINDOW", "ReadOptions", "WindowOptions", "link_rules", "window_sizes"]

MAX_WINDOW = 512  # the longest window by default: LayoutLM-base's positions


@dataclass(frozen=True)
class ReadOptions:
    """How pages are read: `words_from` (`"auto"`: a PDF's text layer, else OCR; `"text"`; `"ocr"`), `dpi` (PDF
    rendering), `ocr_lang` (Tesseract's language), and for a dataset of pages the columns holding the page image
    (`image_column`) and, optionally, its words and their 0-1000 boxes (`words_column`, `boxes_column`)."""

    words_from: str = "auto"
    dpi: float = DEFAULT_DPI
    ocr_lang: str | None = None
    image_column: str = "image"
    words_column: str | None = None
    boxes_column: str | None = None


@dataclass(frozen=True)
class WindowOptions:
    """The windows a page is cut into: `max_length` tokens, consecutive windows sharing `stride` tokens; `None`
    follows the checkpoint (`window_sizes`)."""

    max_length: int | None = None
    stride: int | None = None

    def resolve(self, config: Any) -> WindowOptions:
        """These options with unset sizes taken from the model's `config` (`window_sizes`)."""
        return WindowOptions(*window_sizes(config, self.max_length, self.stride))


@dataclass(frozen=True)
class LinkOptions:
    """How a linking checkpoint decides its pairs: `threshold` (a pair's probability must exceed it) and
    `one_value_key` (each value keeps only its best key); `None` follows the checkpoint (`link_rules`)."""

    threshold: float | None = None
    one_value_key: bool | None = None

    def resolve(self, config: Any) -> LinkOptions:
        """These options with unset rules taken from the model's `config` (`link_rules`)."""
        return LinkOptions(*link_rules(config, self.threshold, self.one_value_key))


@dataclass(frozen=True)
class ComputeOptions:
    """What the model computes in: `dtype`, one of `compute_layoutlm_roialign.DTYPES` (`"auto"`: bf16 autocast where
    the device computes bf16 natively, else float32; `"float32"`; `"bfloat16"`; `"int8"`: dynamic quantization of the
    Linear layers, CPU only), or a `torch.dtype` among float32 / bfloat16 / int8 (kept as its name)."""

    dtype: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))  # checked (a clear error) and kept as a name

    def resolve(self, device: Any) -> ComputeOptions:
        """These options with `dtype` resolved for a model on `device` (`resolve_dtype`: never `"auto"`)."""
        return ComputeOptions(resolve_dtype(self.dtype, device))


def window_sizes(config: Any, max_length: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """`(max_length, stride)` of the windows for a model with `config`: as given, else windows as long as its
    positions allow (at most `MAX_WINDOW`) and, unless given, overlapping by a quarter of their length."""
    if max_length is None:
        max_length = min(MAX_WINDOW, config.max_position_embeddings)
    return max_length, max_length // 4 if stride is None else stride


def link_rules(config: Any, threshold: float | None = None, one_value_key: bool | None = None) -> tuple[float, bool]:
    """`(threshold, one_value_key)` of a linking model with `config`: as given, else its `link_threshold` /
    `link_one_value_key`."""
    return (
        config.link_threshold if threshold is None else threshold,
        config.link_one_value_key if one_value_key is None else one_value_key,
    )
