"""Pages in, records out: the composition of the road that every driver runs.

    engine = Engine(model, processor, ReadOptions(dpi=200), WindowOptions(), LinkOptions(threshold=0.6),
                    ComputeOptions(dtype="auto"))      # engine.dtype: what runs ("bfloat16" or "float32" here)
    page = engine.encode_page("form.pdf", page=2)      # read (`read_page`) -> windows (`encode_page`)
    records = engine.label_batch([page])               # one forward pass -> words, entities (-> pairs)

`read_and_encode` is the reading half on its own (no model), for reader workers (`labelling.reading.PageReader`,
the pipeline's `preprocess`): `pages_layoutlm_roialign.read_page`, then `road_layoutlm_roialign.encode_page`.
`Engine.label_batch` is the model half (`road_layoutlm_roialign.label_pages`: window loop, decoding, linking; for
scoring, every candidate pair's probability among the predicted and the gold entities, from the same pass). The
drivers choose inputs, workers and outputs: the pipeline (`pipeline_layoutlm_roialign`: both halves), `predict_page`
below (`scripts/predict.py`, the demo), the labeller (`labelling`: `PageReader` reads, `PageLabeller` labels),
`dataset_predictions` (`scripts/evaluate_checkpoint.py` and training's evaluation: `Engine.encode_page`, and
`Engine.label_batch` with `pair_scores` and `gold_entities`) and pre-training's reader (`pretraining.windows`: the
reading half). This module travels with every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .compute_layoutlm_roialign import model_for, resolve_for
from .options_layoutlm_roialign import ComputeOptions, LinkOptions, ReadOptions, WindowOptions
from .pages_layoutlm_roialign import DEFAULT_DPI, read_page
from .road_layoutlm_roialign import check_link_rules, check_positive, encode_page, label_pages

__all__ = ["Engine", "predict_page", "read_and_encode"]


def read_and_encode(
    processor: Any,
    source: Any,
    page: int = 1,
    words: Sequence[str] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    *,
    read: ReadOptions,
    windows: WindowOptions,
    **how: Any,
) -> dict:
    """Read one page (`pages_layoutlm_roialign.read_page` with `read`'s `words_from`, `dpi`, `ocr_lang`; `how`: its
    `pixel_boxes`, `name`, `clamp_boxes`) and cut it into `windows` (resolved: `WindowOptions.resolve`) with
    `road_layoutlm_roialign.encode_page`.

    Returns:
        `read_page`'s fields (`image`, `words`, `boxes`, `width`, `height`, `words_from`, ...) and `encode_page`'s
        (`windows`, `word_ids`, `pixel_values`).
    """
    if windows.max_length is None or windows.stride is None:
        raise ValueError("`windows` must be resolved against the model's config first (`WindowOptions.resolve`).")
    page_read = read_page(
        source, page, words, boxes, words_from=read.words_from, dpi=read.dpi, ocr_lang=read.ocr_lang, **how
    )
    encoded = encode_page(
        processor, page_read["image"], page_read["words"], page_read["boxes"], windows.max_length, windows.stride
    )
    return {**page_read, **encoded}


class Engine:
    """A checkpoint with how it reads, windows and links pages (see the module docstring).

    Args:
        model, processor: a token-classification or linking checkpoint (its device is where it runs).
        read, windows, links, compute: the options (defaults: the dataclasses'; unset windows and link rules follow
            the checkpoint's config; `compute.dtype` is resolved for the model's device once, here).
        batch_size: windows per forward pass, across pages.
        dtype: shorthand for `compute=ComputeOptions(dtype)`.
        forward: the callable to run instead of `model` (e.g. its `torch.compile`d form; `runner`'s for int8).

    Attributes:
        dtype: what runs (`"float32"`, `"bfloat16"` or `"int8"`), for the drivers' outputs.
        runner: the model that runs: `model`, or its int8 copy (made once, `compute.model_for`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        read: ReadOptions | None = None,
        windows: WindowOptions | None = None,
        links: LinkOptions | None = None,
        compute: ComputeOptions | None = None,
        *,
        batch_size: int = 8,
        dtype: Any = None,
        forward: Any = None,
    ) -> None:
        check_positive("batch_size", batch_size, "windows per forward pass")
        if compute is not None and dtype is not None:
            raise ValueError("Give `compute` or its shorthand `dtype`, not both.")
        self.compute = ComputeOptions(resolve_for((compute or ComputeOptions(dtype)).dtype, model))
        self.dtype = self.compute.dtype
        self.runner = model_for(model, self.dtype)
        self.model, self.processor = model, processor
        self.read = read or ReadOptions()
        self.windows = (windows or WindowOptions()).resolve(model.config)
        self.links = links or LinkOptions()
        check_link_rules(self.links.threshold, self.links.one_value_key)
        self.batch_size, self.forward = batch_size, forward

    def encode_page(self, source: Any, page: int = 1, words: Any = None, boxes: Any = None, **how: Any) -> dict:
        """One page read and cut into windows (`read_and_encode` with this engine's options)."""
        return read_and_encode(self.processor, source, page, words, boxes, read=self.read, windows=self.windows, **how)

    def label_batch(
        self,
        pages: Sequence[dict],
        entities: Sequence[Any] | None = None,
        *,
        pair_scores: bool = False,
        gold_entities: Sequence[Any] | None = None,
    ) -> list[dict]:
        """Label (and link) encoded pages in one pass of the encoder and the backbone (`label_pages`); `entities`: per
        page, entities to link instead of the predicted ones. For scoring a linking model: `pair_scores` gives every
        candidate pair's probability (`"pair_scores"`) instead of the decided pairs, and `gold_entities` (per page)
        scores the pairs among those too (`"gold_pair_scores"`), from the same pass."""
        return label_pages(
            self.model, self.processor, pages, self.batch_size, dtype=self.dtype, entities=entities,
            threshold=self.links.threshold, one_value_key=self.links.one_value_key, forward=self.forward,
            pair_scores=pair_scores, gold_entities=gold_entities,
        )  # fmt: skip


def predict_page(
    model: torch.nn.Module,
    processor: Any,
    image: Any,
    words: Sequence[str] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    ocr_lang: str | None = None,
    *,
    page: int = 1,
    words_from: str = "auto",
    dpi: float = DEFAULT_DPI,
    dtype: Any = "auto",
    entities: Sequence[Any] | None = None,
    threshold: float | None = None,
    one_value_key: bool | None = None,
) -> dict:
    """Label the words of one page (and link its entities, for a linking model): an `Engine` run on one page.

    Args:
        model, processor: the checkpoint (`load_model_and_processor`).
        image: the page: a PDF or image path (with `page`), a PIL image, a numpy array (`read_page`).
        words, boxes: the page's words and their 0-1000 boxes; both `None` to read them (`words_from`: the PDF's
            text layer, else OCR).
        max_length, stride: window size and overlap in tokens (`None`: the checkpoint's, `window_sizes`).
        batch_size: windows per forward pass.
        ocr_lang, words_from, dpi: how the page is read (`ReadOptions`); `page`: its number, from 1.
        dtype: what the model computes in (`ComputeOptions.dtype`: `"auto"`, `"float32"`, `"bfloat16"`, `"int8"`).
        entities: a linking model links these entities (`word_indices`, `label`; e.g. gold ones) instead of the
            predicted ones (`given_entities`).
        threshold, one_value_key: override the checkpoint's `link_threshold` / `link_one_value_key`.

    Returns:
        `{"width", "height", "words_from", "dtype", "words": [{"text", "box", "pixel_box", "label", "score"}],
        "entities": [...][, "pairs": [...]]}` (`decode_page`, `pair_records`); `dtype` is what ran (`Engine.dtype`).
    """
    engine = Engine(
        model, processor, ReadOptions(words_from, dpi, ocr_lang), WindowOptions(max_length, stride),
        LinkOptions(threshold, one_value_key), ComputeOptions(dtype), batch_size=batch_size,
    )  # fmt: skip
    encoded = engine.encode_page(image, page, words, boxes)
    result = engine.label_batch([encoded], None if entities is None else [entities])[0]
    return {
        "width": result.pop("width"),
        "height": result.pop("height"),
        "words_from": encoded["words_from"],
        "dtype": engine.dtype,
        **result,
    }
