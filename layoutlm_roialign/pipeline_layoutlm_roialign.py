"""The `"form-understanding"` pipeline: a page in, its labelled words, entities and (for a linking checkpoint) key-value
pairs out, in one pass of the model.

    from transformers import pipeline
    pipe = pipeline(model="user/repo", trust_remote_code=True)
    pipe("form.png")                                    # words by OCR
    pipe("report.pdf", page=2)                          # words from the PDF's text layer (OCR for a scan)
    pipe({"image": "form.png", "words": [...], "boxes": [[x0, y0, x1, y1], ...]})   # 0-1000 boxes
    pipe({"image": page_image, "words": [...], "pixel_boxes": [...]})               # boxes in page pixels
    pipe(["a.png", "b.png"], batch_size=16)             # windows of several pages share a forward pass
    pipeline(model="user/repo", trust_remote_code=True, dtype=torch.float32)   # float32 even where bf16 is native

Every checkpoint the package saves carries this file (`custom_pipelines` in its config.json), so the lines above work
where the package is not installed. The pipeline drives the engine (`engine_layoutlm_roialign`): `preprocess` reads
the page and cuts it into windows (`read_and_encode`), `_forward` runs them (`Engine.label_batch`: the window loop,
the decoding and the linking), `postprocess` returns the result as `scripts/predict.py` writes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import PIL.Image
from transformers import Pipeline

from .engine_layoutlm_roialign import Engine, read_and_encode
from .options_layoutlm_roialign import ComputeOptions, LinkOptions, ReadOptions, WindowOptions
from .page_words_layoutlm_roialign import check_ocr_lang
from .pages_layoutlm_roialign import DEFAULT_DPI, WORDS_FROM
from .road_layoutlm_roialign import check_link_rules, check_positive, group_pages

__all__ = ["FormUnderstandingPipeline"]

INPUT_KEYS = ("image", "words", "boxes", "pixel_boxes", "page", "entities")
DEFAULT_BATCH_SIZE = 8  # windows per forward pass
ENCODED = ("windows", "word_ids", "pixel_values")  # what `_forward` reads of an encoded page, beside its words


class FormUnderstandingPipeline(Pipeline):
    """Label the words of document pages and link their entities into key-value pairs.

    Inputs (one, or a list / generator / dataset of them): a page image path, a PDF path (`page=` chooses the page,
    from 1), a PIL image or numpy array, or a dict `{"image", "words", "boxes" (0-1000) | "pixel_boxes", "page",
    "entities"}`; `entities` (a linking checkpoint) are linked instead of the predicted ones.

    Call arguments: `page` (default 1), `words_from` (`"auto"`: the PDF's text layer, else OCR; `"text"`; `"ocr"`),
    `dpi` (PDF rendering), `ocr_lang` (checked against Tesseract's languages), `max_length` and `stride` (windows),
    `threshold` (a probability in [0, 1]) and `one_value_key` (a bool), overriding the checkpoint's `link_threshold`
    / `link_one_value_key`, `clamp_boxes` (pin given boxes past the page edge to it instead of refusing them),
    `batch_size` (windows per forward pass, across pages; default 8). `device` and `dtype` are taken at construction
    as by every pipeline; `dtype` is what the model computes in (`ComputeOptions`): `"auto"` (`pipeline()`'s default:
    bf16 autocast where the device computes bf16 natively, else float32), `torch.float32` / `"float32"` (float32),
    `torch.bfloat16` / `"bfloat16"`, or `"int8"` (dynamic quantization of the Linear layers, CPU). Pages are read by
    `pages_layoutlm_roialign.read_page`, with its rules (pixel budget, pixel values, boxes).

    Returns per page: `{"width", "height", "page", "words_from", "dtype" (what ran), "words": [{"text", "box", "pixel_box", "label",
    "score"}], "entities": [{"label", "text", "word_indices", "box", "pixel_box", "score"}]}`, plus `"pairs":
    [{"key": {...}, "value": {...}, "score"}]` for a linking checkpoint.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, dtype: Any = None, **kwargs: Any) -> None:
        self.compute = ComputeOptions(dtype)  # `pipeline()` hands its `dtype` ("auto" unless given) to the pipeline
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("FormUnderstandingPipeline needs the checkpoint's processor (`processor=`).")
        self._windows(None)  # a `batch_size` given at construction is checked here

    def _windows(self, batch_size: Any) -> int:
        """Windows per forward pass: `batch_size` of the call, else of the construction, else the default."""
        for value in (batch_size, self._batch_size):
            if value is not None:
                check_positive("batch_size", value, "windows per forward pass")
                return value
        return DEFAULT_BATCH_SIZE

    def __call__(self, inputs: Any, *args: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        windows = self._windows(batch_size)  # the pages' batches and the engine's forward passes alike
        return super().__call__(inputs, *args, batch_size=windows, windows_per_pass=windows, **kwargs)

    def _sanitize_parameters(
        self,
        page: int | None = None,
        words_from: str | None = None,
        dpi: float | None = None,
        ocr_lang: str | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        threshold: float | None = None,
        one_value_key: bool | None = None,
        clamp_boxes: bool | None = None,
        windows_per_pass: int | None = None,
        **unknown: Any,
    ) -> tuple[dict, dict, dict]:
        if unknown:
            raise ValueError(
                f"FormUnderstandingPipeline got unknown arguments {sorted(unknown)}; it takes page, words_from, dpi, "
                "ocr_lang, max_length, stride, threshold, one_value_key, clamp_boxes and batch_size."
            )
        if words_from is not None and words_from not in WORDS_FROM:
            raise ValueError(f"`words_from` must be one of {WORDS_FROM}, got {words_from!r}.")
        if dpi is not None and not 0 < dpi:
            raise ValueError(f"`dpi` must be a positive number (PDF rendering resolution), got {dpi!r}.")
        if max_length is not None:
            check_positive("max_length", max_length, "tokens per window")
        if clamp_boxes is not None and not isinstance(clamp_boxes, bool):
            raise ValueError(f"`clamp_boxes` must be True or False, got {clamp_boxes!r}.")
        check_link_rules(threshold, one_value_key)
        check_ocr_lang(ocr_lang)
        preprocess = {k: v for k, v in dict(page=page, words_from=words_from, dpi=dpi, ocr_lang=ocr_lang,
                                             max_length=max_length, stride=stride,
                                             clamp_boxes=clamp_boxes).items() if v is not None}  # fmt: skip
        forward = {k: v for k, v in dict(threshold=threshold, one_value_key=one_value_key,
                                         windows_per_pass=windows_per_pass).items() if v is not None}  # fmt: skip
        return preprocess, forward, {}

    def preprocess(
        self,
        inputs: Any,
        page: int = 1,
        words_from: str = "auto",
        dpi: float = DEFAULT_DPI,
        ocr_lang: str | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        clamp_boxes: bool = False,
    ) -> dict:
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(INPUT_KEYS))
            if unknown or "image" not in inputs:
                raise ValueError(
                    f"A page given as a dict takes the keys {list(INPUT_KEYS)} ('image' required); got {sorted(inputs)}."
                )
            source, page = inputs["image"], inputs.get("page", page)
            words, boxes, pixel_boxes = inputs.get("words"), inputs.get("boxes"), inputs.get("pixel_boxes")
            entities = inputs.get("entities")
        elif isinstance(inputs, (str, os.PathLike, PIL.Image.Image, np.ndarray)):
            source, words, boxes, pixel_boxes, entities = inputs, None, None, None, None
        else:
            raise ValueError(
                "`inputs` must be a page: an image or PDF path, a PIL image, a numpy array, or a dict with 'image' "
                f"(and 'words' with 'boxes' or 'pixel_boxes'); got {type(inputs).__name__}."
            )
        encoded = read_and_encode(
            self.processor, source, page, words, boxes, read=ReadOptions(words_from, dpi, ocr_lang),
            windows=WindowOptions(max_length, stride).resolve(self.model.config), pixel_boxes=pixel_boxes,
            clamp_boxes=clamp_boxes,
        )  # fmt: skip
        fields = ("words", "boxes", "width", "height", "words_from", "num_pages", *ENCODED)
        return {**{k: encoded[k] for k in fields}, "page": page, "entities": entities}

    def _forward(self, model_inputs: dict | list[dict], threshold: float | None = None,
                 one_value_key: bool | None = None, windows_per_pass: int = DEFAULT_BATCH_SIZE,
                 ) -> dict | list[dict]:  # fmt: skip
        pages = model_inputs if isinstance(model_inputs, list) else [model_inputs]
        given = [page["entities"] for page in pages]
        engine = Engine(self.model, self.processor, links=LinkOptions(threshold, one_value_key),
                        compute=self.compute, batch_size=windows_per_pass)  # fmt: skip
        results = engine.label_batch(pages, given if any(e is not None for e in given) else None)
        for page, result in zip(pages, results, strict=True):
            result.update(
                page=page["page"], words_from=page["words_from"], dtype=engine.dtype, order=page.get("order")
            )
        return results if isinstance(model_inputs, list) else results[0]

    def postprocess(self, model_outputs: dict) -> dict:
        keys = ("width", "height", "page", "words_from", "dtype", "words", "entities", "pairs")
        return {k: model_outputs[k] for k in keys if k in model_outputs}

    def get_iterator(
        self, inputs: Any, num_workers: int, batch_size: int, preprocess_params: dict, forward_params: dict,
        postprocess_params: dict,
    ) -> Iterator[dict]:  # fmt: skip
        """Pages read (in `num_workers` DataLoader workers when > 0) and batched by windows (`group_pages`): the
        windows of several pages share each forward pass; results come back in the order of `inputs`."""
        import torch
        from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

        sized = hasattr(inputs, "__len__")
        dataset = (PipelineDataset if sized else PipelineIterator)(inputs, self.preprocess, preprocess_params)
        if num_workers and sized:
            dataset = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)

        def numbered() -> Iterator[dict]:
            for order, page in enumerate(dataset):
                yield {**page, "order": order}

        def results() -> Iterator[dict]:
            waiting: dict[int, dict] = {}
            following = 0
            for group in group_pages(numbered(), batch_size):
                for result in self.forward(group, **forward_params):
                    waiting[result.pop("order")] = self.postprocess(result, **postprocess_params)
                while following in waiting:
                    yield waiting.pop(following)
                    following += 1

        return results()
