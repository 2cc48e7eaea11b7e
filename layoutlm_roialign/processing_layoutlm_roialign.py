"""Processor for LayoutLM-RoIAlign: pages + words + word boxes (+ word labels) -> model inputs, and back.

Words are tokenized with `is_split_into_words=True` and boxes/labels are aligned through the fast tokenizer's
`word_ids()`, never by tokenizing each word on its own (which can disagree with the joined tokenization).

Long pages are split into overlapping windows (`return_overflowing_tokens=True`, `stride`); the rules that make every
word and every entity pair count exactly once across windows (first sub-token, most context) live in
`windowing_layoutlm_roialign`, which travels with this file, and are re-exported here.

An empty page (no words, e.g. a blank scan whose OCR found nothing) is valid: it encodes as `[CLS] [SEP]` with no
labels, and merges back to an empty list. Empty *words* are rejected.

**Entities and links** (the key-value linking head): `entities=` gives each page's entities (consecutive word
indices, a type, an id) and `links=` the `[key id, value id]` pairs; each window gets the entities all of whose
tokens it holds (`entity_spans`, `entity_labels`, `entity_index`, `link_labels`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import BatchEncoding, PaddingStrategy, TruncationStrategy
from transformers.utils import TensorType

from .options_layoutlm_roialign import link_rules
from .road_layoutlm_roialign import check_link_rules
from .windowing_layoutlm_roialign import (
    IGNORE_INDEX,
    WINDOW_INPUTS,
    check_page_entities,
    check_page_links,
    check_window_size,
    encode_window_entities,
    first_subtoken_mask,
    merge_window_links,
    merge_window_predictions,
    select_links,
)

__all__ = [
    "LayoutLMRoIAlignProcessor",
    "box_problem",
    "first_subtoken_mask",
    "merge_window_links",
    "merge_window_predictions",
    "select_links",
]


def box_problem(box: Any) -> str | None:
    """What is wrong with `box` as an `(x0, y0, x1, y1)` box (4 finite numbers, x1 >= x0, y1 >= y0), or `None`."""
    if not (
        isinstance(box, (list, tuple))
        and len(box) == 4
        and all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    ):
        return f"expected 4 numbers (x0, y0, x1, y1), got {box!r}"
    if box[2] < box[0] or box[3] < box[1]:
        return f"{list(box)} is inverted; boxes are (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0"
    return None


class LayoutLMRoIAlignProcessor(ProcessorMixin):
    r"""
    Combines a [`LayoutLMRoIAlignImageProcessor`] (pages -> `pixel_values`, optional OCR) and a fast LayoutLM/BERT
    tokenizer (words -> tokens) into `LayoutLMRoIAlignModel` inputs: `input_ids`, `bbox`, `attention_mask`,
    `token_type_ids`, `pixel_values`, and `labels` when `word_labels` are given.

    Every sub-token carries its word's box; `[CLS]` and `[PAD]` get `cls_box`/`pad_box` (all zeros) and `[SEP]`
    gets `sep_box` (all 1000), as in LayoutLM's pre-training.

    Args:
        image_processor (`LayoutLMRoIAlignImageProcessor`):
            Turns pages into `pixel_values` (and OCRs them when its `apply_ocr` is set).
        tokenizer (`PreTrainedTokenizerBase`):
            A *fast* LayoutLM/BERT tokenizer: box and label alignment needs its `word_ids()`.
        label_all_tokens (`bool`, *optional*, defaults to `False`):
            Whether every sub-token of a word carries the word's label (copied as is); by default only the first
            sub-token does and the others get -100.
    """

    cls_box = [0, 0, 0, 0]
    sep_box = [1000, 1000, 1000, 1000]
    pad_box = [0, 0, 0, 0]

    def __init__(self, image_processor=None, tokenizer=None, label_all_tokens: bool = False, **kwargs) -> None:
        if tokenizer is not None and not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"`tokenizer` must be a fast tokenizer (got {type(tokenizer).__name__}): aligning boxes and labels to "
                "tokens needs its `word_ids()`. Load it with `AutoTokenizer.from_pretrained(..., use_fast=True)`."
            )
        super().__init__(image_processor, tokenizer, **kwargs)
        self.label_all_tokens = label_all_tokens

    def __call__(
        self,
        images: Any = None,
        text: Sequence[str] | Sequence[Sequence[str]] | None = None,
        boxes: Sequence[Sequence[float]] | Sequence[Sequence[Sequence[float]]] | None = None,
        word_labels: Sequence[int] | Sequence[Sequence[int]] | None = None,
        *,
        words: Sequence[str] | Sequence[Sequence[str]] | None = None,
        entities: Sequence[dict] | Sequence[Sequence[dict]] | None = None,
        links: Sequence[Sequence[int]] | Sequence[Sequence[Sequence[int]]] | None = None,
        entity_types: Sequence[str] | None = None,
        label_all_tokens: bool | None = None,
        add_special_tokens: bool = True,
        padding: bool | str | PaddingStrategy = False,
        truncation: bool | str | TruncationStrategy | None = None,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchEncoding:
        """Encode one page or a batch of pages.

        Args:
            images: one page or a list of pages (PIL images, arrays, tensors or file paths), one per word list;
                `None` gives no `pixel_values`.
            text: the words of one page (`list[str]`) or of each page (`list[list[str]]`). Optional when the image
                processor has `apply_ocr=True`: the OCR's words and boxes are used. `words=` is an alias.
            boxes: one `(x0, y0, x1, y1)` box per word on LayoutLM's 0-1000 grid (`normalize_box` converts pixel
                boxes); same nesting as `text`.
            word_labels: one label id per word (optional); same nesting as `text`.
            label_all_tokens: overrides the processor's `label_all_tokens` for this call.
            entities: the entities of the page (same nesting as `text`), for the linking head: dicts with
                `word_indices` (consecutive indices into the page's words), optional `label` (a type name from
                `entity_types`, or its index; other names, e.g. FUNSD's "OTHER", give -100: never a candidate) and
                optional `id` (default: the entity's position). Gives `entity_spans`, `entity_labels`,
                `entity_index` (the page entity of each row) and, with `links`, `link_labels` per window.
            links: `[key id, value id]` pairs of each page (same nesting as `text`), naming entities by `id`.
            entity_types: the type names `entity_labels` index (`model.config.resolved_entity_types`); needed when
                entity labels are names.
            return_overflowing_tokens: split long pages into windows of `max_length` tokens overlapping by `stride`;
                each window gets its page's `pixel_values` and `overflow_to_sample_mapping` says which page.
            Other arguments are the tokenizer's.

        Returns:
            `BatchEncoding` (always batched, `.word_ids(i)` works) with `input_ids`, `bbox`, `attention_mask`,
            `token_type_ids`, `pixel_values`, and `labels` when `word_labels` are given.

        Raises:
            ValueError: naming the argument (and page/word) for mismatched lengths, boxes outside 0..1000 or
                inverted, empty words, unreadable images, or a page count that differs from the image count.
        """
        if words is not None:
            if text is not None:
                raise ValueError("Pass the words as `text` or as `words`, not both.")
            text = words
        label_all_tokens = self.label_all_tokens if label_all_tokens is None else label_all_tokens
        specials = self.tokenizer.num_special_tokens_to_add(pair=False) if add_special_tokens else 0
        check_window_size(max_length, stride, truncation, return_overflowing_tokens, specials)
        pages = self._checked_pages(images, text, boxes, word_labels, entities, links, entity_types, return_tensors)
        encoded = self.tokenizer(
            pages["words"], is_split_into_words=True, add_special_tokens=add_special_tokens, padding=padding,
            truncation=truncation, max_length=max_length, stride=stride, pad_to_multiple_of=pad_to_multiple_of,
            return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens, return_special_tokens_mask=return_special_tokens_mask,
            return_offsets_mapping=return_offsets_mapping, return_length=return_length, verbose=verbose, **kwargs,
        )  # fmt: skip
        mapping = self._add_window_fields(encoded, pages, label_all_tokens, return_overflowing_tokens, return_tensors)
        encoded.convert_to_tensors(tensor_type=return_tensors)
        if pages["pixel_values"] is not None:
            encoded["pixel_values"] = _per_window(pages["pixel_values"], mapping, return_overflowing_tokens)
        return encoded

    def _checked_pages(
        self, images: Any, text: Any, boxes: Any, word_labels: Any, entities: Any, links: Any,
        entity_types: Sequence[str] | None, return_tensors: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """The pages to encode, checked: `words`, `boxes`, `labels`, `entities`, `links` (lists per page, `None` when
        not given) and the image processor's `pixel_values` (`None` without `images`). Without `text` the words and
        boxes are the OCR's. Given words are checked before any image is decoded: cheap, and where most mistakes are.
        """
        if text is None:
            self._check_ocr_call(images, boxes, word_labels, entities, links)
            features = self.image_processor(images, apply_ocr=True, return_tensors=return_tensors)
            return {"words": features["words"], "boxes": features["boxes"], "labels": None, "entities": None,
                    "links": None, "pixel_values": features["pixel_values"]}  # fmt: skip
        words, batched = self._pages(text)
        boxes = [self._check_page_boxes(b, p) for p, b in enumerate(self._per_page(boxes, "boxes", words, batched))]
        num_images = len(images) if isinstance(images, (list, tuple)) else 1
        if images is not None and num_images != len(words):
            raise ValueError(
                f"`images` has {num_images} pages but `text` has {len(words)} word lists: pass one image per page."
            )
        labels = self._per_page(word_labels, "word_labels", words, batched, required=False)
        if labels is not None:
            labels = [self._check_page_labels(page_labels, p) for p, page_labels in enumerate(labels)]
        page_entities, page_links = self._checked_entities(entities, links, entity_types, words, batched)
        pixel_values = None
        if images is not None:
            pixel_values = self.image_processor(images, apply_ocr=False, return_tensors=return_tensors)["pixel_values"]
        return {"words": words, "boxes": boxes, "labels": labels, "entities": page_entities, "links": page_links,
                "pixel_values": pixel_values}  # fmt: skip

    def _check_ocr_call(self, images: Any, boxes: Any, word_labels: Any, entities: Any, links: Any) -> None:
        """Refuse a call without `text` that OCR cannot serve."""
        if not self.image_processor.apply_ocr:
            raise ValueError(
                "`text` (the words of each page) is required, with `boxes`; or create the image processor with "
                "`apply_ocr=True` to read words and boxes from the pages."
            )
        if boxes is not None or word_labels is not None:
            raise ValueError(
                "`boxes` and `word_labels` cannot be given without `text`: with `apply_ocr=True` the words and "
                "boxes come from OCR, which labels cannot be aligned to. Pass `text` and `boxes` instead."
            )
        if images is None:
            raise ValueError("`images` is required to OCR the pages (`apply_ocr=True`).")
        if entities is not None or links is not None:
            raise ValueError("`entities` and `links` index the words of `text`: pass `text` and `boxes` too.")

    def _checked_entities(
        self, entities: Any, links: Any, entity_types: Sequence[str] | None, words: list[list[str]], batched: bool
    ) -> tuple[list | None, list | None]:
        """`entities=` and `links=` as lists per page, checked (`check_page_entities`, `check_page_links`)."""
        if links is not None and entities is None:
            raise ValueError("`links` name entities by id: pass `entities` too.")
        if entities is None:
            return None, None
        page_entities = self._per_page(entities, "entities", words, batched, per_word=False)
        page_entities = [check_page_entities(e, p, len(words[p]), entity_types) for p, e in enumerate(page_entities)]
        if links is None:
            return page_entities, None
        page_links = self._per_page(links, "links", words, batched, per_word=False)
        return page_entities, [check_page_links(pl, p, page_entities[p]) for p, pl in enumerate(page_links)]

    def _add_window_fields(
        self, encoded: BatchEncoding, pages: dict, label_all_tokens: bool, overflowing: bool, return_tensors: Any
    ) -> list[int]:
        """Add each window's `bbox`, `labels` and entity fields to the tokenizer's output; returns each window's page.

        Every sub-token carries its word's box; a word's label goes on its first sub-token (every sub-token with
        `label_all_tokens`), -100 elsewhere."""
        num_rows = len(encoded["input_ids"])
        mapping = list(encoded["overflow_to_sample_mapping"]) if overflowing else list(range(num_rows))
        word_ids_rows = [encoded.word_ids(i) for i in range(num_rows)]
        boxes, labels = pages["boxes"], pages["labels"]
        encoded["bbox"] = [
            [list(boxes[mapping[i]][w]) if w is not None else self._special_box(token_id)
             for w, token_id in zip(word_ids_rows[i], encoded["input_ids"][i], strict=True)]
            for i in range(num_rows)
        ]  # fmt: skip
        if labels is not None:
            first_masks = first_subtoken_mask(word_ids_rows, mapping)
            encoded["labels"] = [
                [labels[mapping[i]][w] if w is not None and (first or label_all_tokens) else IGNORE_INDEX
                 for w, first in zip(word_ids_rows[i], first_masks[i], strict=True)]
                for i in range(num_rows)
            ]  # fmt: skip
        if pages["entities"] is not None:
            pad = return_tensors is not None
            encoded.update(encode_window_entities(word_ids_rows, mapping, pages["entities"], pages["links"], pad))
        return mapping

    def encode_entities(
        self, word_ids: Sequence[Sequence[int | None]], entities: Sequence[dict], entity_types: Sequence[str]
    ) -> dict[str, list]:
        """The `entity_spans`, `entity_labels` and `entity_index` of each window of one page already encoded (its
        windows' `word_ids`), for entities decided after encoding (e.g. from the token labels): what `__call__`
        gives with `entities=`, without tokenizing the page again. Lists per window, unpadded."""
        num_words = 1 + max((w for row in word_ids for w in row if w is not None), default=-1)
        checked = check_page_entities(list(entities), 0, num_words, entity_types)
        return encode_window_entities([list(row) for row in word_ids], [0] * len(word_ids), [checked], None, False)

    def post_process_relation_extraction(
        self,
        encoding: BatchEncoding,
        link_logits: Any,
        threshold: float | None = None,
        one_value_key: bool | None = None,
        num_pages: int | None = None,
        *,
        config: Any = None,
    ) -> list[list[dict]]:
        """Link logits (one `(E, E)` per row of `encoding`, made with `entities=`) -> per page, the predicted pairs
        `{"key": entity, "value": entity, "score": probability}` (entities by their position in `entities`), merged
        over windows by `merge_window_links` and decided by `select_links` with the checkpoint's rules:
        `config.link_threshold` and `config.link_one_value_key` (pass the model's `config`), unless `threshold` /
        `one_value_key` override them (checked as every driver checks them: `check_link_rules`)."""
        check_link_rules(threshold, one_value_key)
        if threshold is None or one_value_key is None:
            if config is None:
                raise ValueError(
                    "Pass the model's `config` (its `link_threshold` and `link_one_value_key` decide the pairs), or "
                    "both `threshold` and `one_value_key`."
                )
            threshold, one_value_key = link_rules(config, threshold, one_value_key)
        num_rows = len(encoding["input_ids"])
        spans = encoding["entity_spans"]
        content = [sum(w is not None for w in encoding.word_ids(i)) for i in range(num_rows)]
        scores = merge_window_links(
            [list(map(int, row)) for row in encoding["entity_index"]],
            [s.tolist() if hasattr(s, "tolist") else s for s in spans],
            link_logits,
            content,
            encoding.get("overflow_to_sample_mapping"),
            num_pages,
        )
        return [
            [{"key": k, "value": v, "score": p} for k, v, p in select_links(page, threshold, one_value_key)]
            for page in scores
        ]

    def post_process_token_classification(
        self,
        encoding: BatchEncoding,
        predictions: Any,
        num_words_per_page: Sequence[int] | None = None,
        fill_value: int = IGNORE_INDEX,
    ) -> list[list[int]]:
        """Token predictions (label ids or logits, one row per row of `encoding`) -> one label id per word of each
        page, merging overflow windows as `merge_window_predictions` does."""
        num_rows = len(encoding["input_ids"])
        return merge_window_predictions(
            [encoding.word_ids(i) for i in range(num_rows)],
            predictions,
            encoding.get("overflow_to_sample_mapping"),
            num_words_per_page,
            fill_value,
        )

    @property
    def model_input_names(self) -> list[str]:
        return [*WINDOW_INPUTS, "pixel_values"]

    def _special_box(self, token_id: int) -> list[int]:
        if token_id == self.tokenizer.sep_token_id:
            return list(self.sep_box)
        if token_id == self.tokenizer.pad_token_id:
            return list(self.pad_box)
        return list(self.cls_box)

    @staticmethod
    def _pages(text: Any) -> tuple[list[list[str]], bool]:
        """`text` as a list of pages, and whether it came batched; a list of strings (or `[]`) is one page."""
        if isinstance(text, str) or not isinstance(text, (list, tuple)):
            raise ValueError(
                f"`text` must be the words of a page (list[str]) or of each page (list[list[str]]), got "
                f"{type(text).__name__}: split the text into words and give one box per word."
            )
        batched = not all(isinstance(w, str) for w in text)
        pages = text if batched else [text]
        for p, page in enumerate(pages):
            if not isinstance(page, (list, tuple)):
                raise ValueError(
                    f"`text` page {p} is a {type(page).__name__}: mix no pages and words; pass list[str] for one "
                    "page or list[list[str]] for a batch."
                )
            for i, word in enumerate(page):
                if not isinstance(word, str) or not word.strip():
                    raise ValueError(
                        f"`text` page {p}, word {i} is {word!r}: every word must be a non-empty string. Drop empty "
                        "words together with their boxes and labels."
                    )
        return [list(page) for page in pages], batched

    @staticmethod
    def _per_page(
        values: Any, name: str, pages: list[list[str]], batched: bool, required: bool = True, per_word: bool = True
    ) -> list | None:
        """`boxes`/`word_labels` (`per_word`: one entry per word), `entities`/`links`, nested like `text`, as a list
        of pages."""
        if values is None:
            if required:
                raise ValueError(
                    f"`{name}` is required with `text`: one (x0, y0, x1, y1) box per word on the 0-1000 grid "
                    "(convert pixel boxes with `normalize_box(box, width, height)`)."
                )
            return None
        values = values.tolist() if hasattr(values, "tolist") else values
        if not batched:
            values = [values]
        if not isinstance(values, (list, tuple)) or len(values) != len(pages):
            got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            raise ValueError(f"`{name}` has {got} pages but `text` has {len(pages)}: nest `{name}` like `text`.")
        checked = []
        for p, (page_values, page_words) in enumerate(zip(values, pages, strict=True)):
            page_values = page_values.tolist() if hasattr(page_values, "tolist") else page_values
            if not per_word:
                if not isinstance(page_values, (list, tuple)):
                    raise ValueError(f"`{name}` page {p} is a {type(page_values).__name__}: expected a list.")
                checked.append(list(page_values))
                continue
            if not isinstance(page_values, (list, tuple)) or len(page_values) != len(page_words):
                got = len(page_values) if isinstance(page_values, (list, tuple)) else type(page_values).__name__
                raise ValueError(
                    f"`{name}` page {p} has {got} entries but `text` page {p} has {len(page_words)} words: give "
                    "exactly one per word."
                )
            checked.append(list(page_values))
        return checked

    @staticmethod
    def _check_page_boxes(page_boxes: list, page: int) -> list[list[int]]:
        checked = []
        for i, box in enumerate(page_boxes):
            box = box.tolist() if hasattr(box, "tolist") else box
            problem = box_problem(box)
            if problem:
                raise ValueError(f"`boxes` page {page}, word {i}: {problem}.")
            if not all(0 <= v <= 1000 for v in box):
                raise ValueError(
                    f"`boxes` page {page}, word {i}: {list(box)} is outside 0..1000. LayoutLM boxes are on a 0-1000 "
                    "grid: convert pixel boxes with `normalize_box(box, width, height)`, which also clamps them."
                )
            checked.append([int(round(v)) for v in box])
        return checked

    @staticmethod
    def _check_page_labels(page_labels: list, page: int) -> list[int]:
        for i, label in enumerate(page_labels):
            if not isinstance(label, (int, np.integer)) or isinstance(label, bool):
                raise ValueError(f"`word_labels` page {page}, word {i}: expected an int label id, got {label!r}.")
        return [int(label) for label in page_labels]


def _per_window(pixel_values: Any, mapping: list[int], overflowing: bool) -> Any:
    """The pages' `pixel_values` as one row per window: with overflow windows, each window gets its page's."""
    if not overflowing:
        return pixel_values
    if isinstance(pixel_values, (torch.Tensor, np.ndarray)):
        return pixel_values[np.asarray(mapping, dtype=np.int64)]
    return [pixel_values[p] for p in mapping]
