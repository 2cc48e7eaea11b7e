"""Processor for LayoutLM-RoIAlign: pages + words + word boxes (+ word labels) -> model inputs, and back.

Words are tokenized with `is_split_into_words=True` and boxes/labels are aligned through the fast tokenizer's
`word_ids()`, never by tokenizing each word on its own (which can disagree with the joined tokenization).

Long pages are split into overlapping windows (`return_overflowing_tokens=True`, `stride`). Two rules, shared by the
labels this processor writes and by `merge_window_predictions`, make every word count exactly once:

* **First sub-token.** A word is labelled (and read back) on its first sub-token only. A window other than the
  first of its page may start in the middle of a word; a word that starts a window and also appears in the
  previous window of the same page is therefore treated as cut in this window (the earliest window holding a word
  always holds its first sub-token).
* **Most context.** When several windows hold a word's first sub-token, the prediction is taken from the window in
  which that word is farthest from the window's edges (as transformers' question-answering scripts do for spans);
  ties go to the earlier window. One rule for logits and label ids alike, and no averaging of logits computed from
  different contexts.

An empty page (no words, e.g. a blank scan whose OCR found nothing) is valid: it encodes as `[CLS] [SEP]` with no
labels, and merges back to an empty list. Empty *words* are rejected.

**Entities and links** (the key-value linking head): `entities=` gives each page's entities (consecutive word
indices, a type, an id) and `links=` the `[key id, value id]` pairs. An entity belongs to a window when the window
holds every token of its words; its span is `(first token, last token + 1)`. A pair is scored in every window that
holds both entities, and `merge_window_links` reads its score from the window where the pair has the most context
(the nearer of the two entities to a window edge is farthest from it; ties to the earlier window). A pair whose
entities never share a window is never scored (evaluation counts it as missed).
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

__all__ = [
    "LayoutLMRoIAlignProcessor",
    "box_problem",
    "first_subtoken_mask",
    "merge_window_links",
    "merge_window_predictions",
    "select_links",
]

IGNORE_INDEX = -100  # ignored by torch's cross-entropy
NOT_A_CANDIDATE = -1.0e4  # the linking head's score of pairs it does not score (modeling's `NOT_A_CANDIDATE`)


def first_subtoken_mask(
    word_ids_per_window: Sequence[Sequence[int | None]], overflow_to_sample_mapping: Sequence[int] | None = None
) -> list[list[bool]]:
    """For each window, which tokens are the first sub-token of their word (see the module docstring).

    Args:
        word_ids_per_window: `encoding.word_ids(i)` for every row `i` of an encoding.
        overflow_to_sample_mapping: page index of each window; `None` means one window per page.
    """
    mapping = _check_mapping(overflow_to_sample_mapping, len(word_ids_per_window))
    masks = []
    for k, word_ids in enumerate(word_ids_per_window):
        same_page_before = k > 0 and mapping[k - 1] == mapping[k]
        previous = {w for w in word_ids_per_window[k - 1] if w is not None} if same_page_before else set()
        leading = next((w for w in word_ids if w is not None), None)
        seen: set[int] = set()
        mask = []
        for w in word_ids:
            mask.append(w is not None and w not in seen and not (w == leading and w in previous))
            if w is not None:
                seen.add(w)
        masks.append(mask)
    return masks


def merge_window_predictions(
    word_ids_per_window: Sequence[Sequence[int | None]],
    predictions_per_window: Any,
    overflow_to_sample_mapping: Sequence[int] | None = None,
    num_words_per_page: Sequence[int] | None = None,
    fill_value: int = IGNORE_INDEX,
) -> list[list[int]]:
    """Merge token-level predictions of (possibly overlapping) windows into one label id per word of each page.

    Each word is read on its first sub-token, from the window where it has the most context (module docstring).

    Args:
        word_ids_per_window: `encoding.word_ids(i)` for every window `i`.
        predictions_per_window: per window, label ids `(seq_len,)` or logits `(seq_len, num_labels)` (argmax is
            taken); a tensor/array `(num_windows, seq_len[, num_labels])` or a list of per-window ones.
        overflow_to_sample_mapping: page of each window (`encoding["overflow_to_sample_mapping"]`); `None` means
            one window per page.
        num_words_per_page: number of words of each page. If `None`, inferred from the highest word id seen, which
            misses words truncated off a page's end: pass it when truncating without overflow windows.
        fill_value: label given to words that no window holds (truncated away, or words the tokenizer drops).

    Returns:
        `list[list[int]]`: for every page, one label id per word.
    """
    if len(predictions_per_window) != len(word_ids_per_window):
        raise ValueError(
            f"`predictions_per_window` has {len(predictions_per_window)} windows but `word_ids_per_window` has "
            f"{len(word_ids_per_window)}: pass the predictions of every row of the encoding."
        )
    mapping = _check_mapping(overflow_to_sample_mapping, len(word_ids_per_window))
    num_pages = max(mapping, default=-1) + 1
    if num_words_per_page is not None:
        if len(num_words_per_page) < num_pages:
            raise ValueError(
                f"`num_words_per_page` has {len(num_words_per_page)} entries but the windows cover {num_pages} "
                "pages: give the word count of every page."
            )
        num_pages = len(num_words_per_page)
    masks = first_subtoken_mask(word_ids_per_window, mapping)

    # best[page][word] = (context, label id); context = distance of the word to its window's nearer edge
    best: list[dict[int, tuple[int, int]]] = [{} for _ in range(num_pages)]
    for k, (word_ids, mask) in enumerate(zip(word_ids_per_window, masks, strict=True)):
        label_ids = _to_label_ids(predictions_per_window[k], len(word_ids), k)
        content = [w for w in word_ids if w is not None]
        first_pos: dict[int, int] = {}
        last_pos: dict[int, int] = {}
        for pos, w in enumerate(content):
            first_pos.setdefault(w, pos)
            last_pos[w] = pos
        for t, (w, is_first) in enumerate(zip(word_ids, mask, strict=True)):
            if not is_first:
                continue
            context = min(first_pos[w], len(content) - 1 - last_pos[w])
            page = best[mapping[k]]
            if w not in page or context > page[w][0]:
                page[w] = (context, int(label_ids[t]))

    merged = []
    for p, page in enumerate(best):
        num_words = num_words_per_page[p] if num_words_per_page is not None else max(page, default=-1) + 1
        merged.append([page[w][1] if w in page else fill_value for w in range(num_words)])
    return merged


def merge_window_links(
    entity_index_per_window: Sequence[Sequence[int]],
    entity_spans_per_window: Sequence[Sequence[Sequence[int]]],
    link_logits_per_window: Any,
    content_lengths: Sequence[int],
    overflow_to_sample_mapping: Sequence[int] | None = None,
    num_pages: int | None = None,
) -> list[dict[tuple[int, int], float]]:
    """Merge the link scores of (possibly overlapping) windows into one score per (key, value) entity pair of each
    page: each pair's score comes from the window in which it has the most context (module docstring).

    Args:
        entity_index_per_window: per window, the page entity index of each of its entity rows (-1: padding).
        entity_spans_per_window: per window, each entity row's `(first, last + 1)` token span.
        link_logits_per_window: per window, `(E, E)` link logits, log p(key | value) (`NOT_A_CANDIDATE` or less:
            not scored).
        content_lengths: per window, its number of word tokens (without [CLS], [SEP] and padding).
        overflow_to_sample_mapping: page of each window; `None` means one window per page.
        num_pages: number of pages (default: from the mapping).

    Returns:
        Per page, `{(key entity, value entity): logit}` for every scored candidate pair.
    """
    mapping = _check_mapping(overflow_to_sample_mapping, len(entity_index_per_window))
    pages = num_pages if num_pages is not None else max(mapping, default=-1) + 1
    best: list[dict[tuple[int, int], tuple[int, float]]] = [{} for _ in range(pages)]
    for k, (index, spans) in enumerate(zip(entity_index_per_window, entity_spans_per_window, strict=True)):
        logits = link_logits_per_window[k]
        if isinstance(logits, torch.Tensor):
            logits = logits.detach().float().cpu().numpy()
        logits = np.asarray(logits, dtype=np.float32)
        rows = [i for i, e in enumerate(index) if int(e) >= 0]
        # distance of each entity to the window's nearer edge, in word tokens (position 0 is [CLS])
        edge = {i: min(int(spans[i][0]) - 1, int(content_lengths[k]) - int(spans[i][1]) + 1) for i in rows}
        for i in rows:
            for j in rows:
                if i == j or i >= logits.shape[0] or j >= logits.shape[1] or logits[i, j] <= NOT_A_CANDIDATE:
                    continue
                pair, context = (int(index[i]), int(index[j])), min(edge[i], edge[j])
                page = best[mapping[k]]
                if pair not in page or context > page[pair][0]:
                    page[pair] = (context, float(logits[i, j]))
    return [{pair: score for pair, (_, score) in page.items()} for page in best]


def select_links(
    scores: dict[tuple[int, int], float], threshold: float, one_value_key: bool
) -> list[tuple[int, int, float]]:
    """Decide the pairs of one page from `merge_window_links` scores (the linking head's `link_logits`: log
    p(key | value)): `(key, value, probability)` for each pair whose probability exceeds `threshold`; with
    `one_value_key`, only each value's best key among those (a key may keep several values). A key with no pair
    above the threshold has no answer. Sorted by key, then value. Both rules are the checkpoint's
    (`config.link_threshold`, `config.link_one_value_key`)."""
    chosen = []
    for (key, value), log_probability in scores.items():
        probability = math.exp(min(0.0, log_probability))
        if probability > threshold:
            chosen.append((key, value, probability))
    if one_value_key:
        best: dict[int, tuple[int, int, float]] = {}
        for pair in chosen:
            if pair[1] not in best or pair[2] > best[pair[1]][2]:
                best[pair[1]] = pair
        chosen = list(best.values())
    return sorted(chosen)


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


def _check_mapping(mapping: Sequence[int] | None, num_windows: int) -> list[int]:
    if mapping is None:
        return list(range(num_windows))
    mapping = [int(m) for m in (mapping.tolist() if hasattr(mapping, "tolist") else mapping)]
    if len(mapping) != num_windows:
        raise ValueError(
            f"`overflow_to_sample_mapping` has {len(mapping)} entries for {num_windows} windows: pass the encoding's "
            "own `overflow_to_sample_mapping`."
        )
    return mapping


def _to_label_ids(prediction: Any, seq_len: int, window: int) -> np.ndarray:
    if isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().float().cpu().numpy() if prediction.is_floating_point() else prediction.cpu()
    prediction = np.asarray(prediction)
    if prediction.ndim == 2:  # logits (seq_len, num_labels)
        prediction = prediction.argmax(-1)
    if prediction.ndim != 1 or prediction.shape[0] < seq_len:
        raise ValueError(
            f"`predictions_per_window` window {window} has shape {prediction.shape}: expected label ids ({seq_len},) "
            f"or logits ({seq_len}, num_labels)."
        )
    return prediction


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
        self._check_window(max_length, stride, truncation, return_overflowing_tokens, add_special_tokens)
        use_ocr = text is None
        if use_ocr:
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
        else:  # check the words before decoding any image: cheap, and where most mistakes are
            pages, batched = self._pages(text)
            boxes = [
                self._check_page_boxes(b, p) for p, b in enumerate(self._per_page(boxes, "boxes", pages, batched))
            ]
            num_images = len(images) if isinstance(images, (list, tuple)) else 1
            if images is not None and num_images != len(pages):
                raise ValueError(
                    f"`images` has {num_images} pages but `text` has {len(pages)} word lists: pass one image per page."
                )

        features = None
        if images is not None:
            features = self.image_processor(images, apply_ocr=use_ocr, return_tensors=return_tensors)
        if use_ocr:
            pages, boxes, batched = features["words"], features["boxes"], True
        labels = self._per_page(word_labels, "word_labels", pages, batched, required=False)
        if labels is not None:
            labels = [self._check_page_labels(page_labels, p) for p, page_labels in enumerate(labels)]

        encoded = self.tokenizer(
            pages,
            is_split_into_words=True,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            pad_to_multiple_of=pad_to_multiple_of,
            return_token_type_ids=return_token_type_ids,
            return_attention_mask=return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask,
            return_offsets_mapping=return_offsets_mapping,
            return_length=return_length,
            verbose=verbose,
            **kwargs,
        )
        num_rows = len(encoded["input_ids"])
        mapping = list(encoded["overflow_to_sample_mapping"]) if return_overflowing_tokens else list(range(num_rows))
        word_ids_rows = [encoded.word_ids(i) for i in range(num_rows)]
        first_masks = first_subtoken_mask(word_ids_rows, mapping)

        encoded["bbox"] = [
            [
                list(boxes[mapping[i]][w]) if w is not None else self._special_box(token_id)
                for w, token_id in zip(word_ids_rows[i], encoded["input_ids"][i], strict=True)
            ]
            for i in range(num_rows)
        ]
        if labels is not None:
            encoded["labels"] = [
                [
                    labels[mapping[i]][w] if w is not None and (first or label_all_tokens) else IGNORE_INDEX
                    for w, first in zip(word_ids_rows[i], first_masks[i], strict=True)
                ]
                for i in range(num_rows)
            ]
        if links is not None and entities is None:
            raise ValueError("`links` name entities by id: pass `entities` too.")
        if entities is not None:
            page_entities = self._per_page(entities, "entities", pages, batched, required=True, per_word=False)
            page_entities = [self._check_page_entities(e, p, len(pages[p]), entity_types) for p, e in
                             enumerate(page_entities)]  # fmt: skip
            page_links = None
            if links is not None:
                page_links = self._per_page(links, "links", pages, batched, required=True, per_word=False)
                page_links = [self._check_page_links(pl, p, page_entities[p]) for p, pl in enumerate(page_links)]
            encoded.update(
                self._encode_entities(word_ids_rows, mapping, page_entities, page_links, return_tensors is not None)
            )
        encoded.convert_to_tensors(tensor_type=return_tensors)

        if features is not None:
            pixel_values = features["pixel_values"]
            if return_overflowing_tokens:
                # every window of a page sees the whole page: repeat its pixels per window
                if isinstance(pixel_values, (torch.Tensor, np.ndarray)):
                    pixel_values = pixel_values[np.asarray(mapping, dtype=np.int64)]
                else:
                    pixel_values = [pixel_values[p] for p in mapping]
            encoded["pixel_values"] = pixel_values
        return encoded

    @staticmethod
    def _check_page_entities(
        page_entities: list, page: int, num_words: int, entity_types: Sequence[str] | None
    ) -> list[tuple[int, int, int, int]]:
        """`(id, first word, last word + 1, type id or -100)` per entity, checked."""
        checked, ids = [], set()
        for e, entity in enumerate(page_entities):
            where = f"`entities` page {page}, entity {e}"
            if not isinstance(entity, dict) or "word_indices" not in entity:
                raise ValueError(f"{where} is {entity!r}: expected a dict with `word_indices` (and `label`, `id`).")
            indices = [int(i) for i in entity["word_indices"]]
            if not indices:
                raise ValueError(f"{where} has no `word_indices`: drop entities without words.")
            if indices != list(range(indices[0], indices[0] + len(indices))):
                raise ValueError(f"{where}: `word_indices` {indices} must be consecutive word indices in order.")
            if indices[0] < 0 or indices[-1] >= num_words:
                raise ValueError(
                    f"{where}: `word_indices` {indices} reach past the page's {num_words} words (0..{num_words - 1})."
                )
            label = entity.get("label")
            if label is None:
                type_id = IGNORE_INDEX
            elif isinstance(label, str):
                if entity_types is None:
                    raise ValueError(
                        f"{where} has the label {label!r}: pass `entity_types` (the model's "
                        "`config.resolved_entity_types`) to turn names into type ids, or give ids."
                    )
                type_id = list(entity_types).index(label) if label in entity_types else IGNORE_INDEX
            elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
                type_id = int(label)
            else:
                raise ValueError(f"{where} has the label {label!r}: expected a type name or id.")
            entity_id = int(entity.get("id", e))
            if entity_id in ids:
                raise ValueError(f"{where} repeats the id {entity_id}: entity ids must be distinct within a page.")
            ids.add(entity_id)
            checked.append((entity_id, indices[0], indices[-1] + 1, type_id))
        return checked

    @staticmethod
    def _check_page_links(page_links: list, page: int, page_entities: list) -> set[tuple[int, int]]:
        """The links of a page as `(key entity position, value entity position)`."""
        position = {entity[0]: i for i, entity in enumerate(page_entities)}
        pairs = set()
        for n, link in enumerate(page_links):
            link = link.tolist() if hasattr(link, "tolist") else link
            if not isinstance(link, (list, tuple)) or len(link) != 2:
                raise ValueError(f"`links` page {page}, link {n} is {link!r}: expected [key id, value id].")
            missing = [int(v) for v in link if int(v) not in position]
            if missing:
                raise ValueError(
                    f"`links` page {page}, link {n} {list(link)} names entity id {missing[0]}, which no entity of "
                    f"the page has (ids: {sorted(position)[:20]}). Drop links to entities that were removed."
                )
            pairs.add((position[int(link[0])], position[int(link[1])]))
        return pairs

    @staticmethod
    def _encode_entities(
        word_ids_rows: list, mapping: list[int], page_entities: list, page_links: list | None, pad: bool
    ) -> dict[str, list]:
        """Per window: the entities all of whose tokens it holds, as token spans, types, page indices and links."""
        counts = [{} for _ in word_ids_rows]  # window -> word -> tokens of the word in the window
        first, last = [{} for _ in word_ids_rows], [{} for _ in word_ids_rows]
        most: dict[tuple[int, int], int] = {}  # (page, word) -> most tokens any window holds
        for k, word_ids in enumerate(word_ids_rows):
            for pos, w in enumerate(word_ids):
                if w is None:
                    continue
                counts[k][w] = counts[k].get(w, 0) + 1
                first[k].setdefault(w, pos)
                last[k][w] = pos
            for w, n in counts[k].items():
                most[mapping[k], w] = max(most.get((mapping[k], w), 0), n)
        out: dict[str, list] = {"entity_spans": [], "entity_labels": [], "entity_index": []}
        if page_links is not None:
            out["link_labels"] = []
        for k in range(len(word_ids_rows)):
            p = mapping[k]
            rows = [
                (e, first[k][start], last[k][end - 1] + 1, type_id)
                for e, (_, start, end, type_id) in enumerate(page_entities[p])
                if all(counts[k].get(w, 0) == most.get((p, w), -1) for w in range(start, end))
            ]
            out["entity_spans"].append([[s, t] for _, s, t, _ in rows])
            out["entity_labels"].append([type_id for *_, type_id in rows])
            out["entity_index"].append([e for e, *_ in rows])
            if page_links is not None:
                out["link_labels"].append([[int((a, b) in page_links[p]) for b, *_ in rows] for a, *_ in rows])
        if pad:  # tensors need one entity count for every window: pad rows with (0, 0), -100 and -1
            size = max((len(r) for r in out["entity_index"]), default=0)
            for i in range(len(word_ids_rows)):
                n = len(out["entity_index"][i])
                out["entity_spans"][i] += [[0, 0]] * (size - n)
                out["entity_labels"][i] += [IGNORE_INDEX] * (size - n)
                out["entity_index"][i] += [-1] * (size - n)
                if page_links is not None:
                    out["link_labels"][i] = [row + [IGNORE_INDEX] * (size - n) for row in out["link_labels"][i]]
                    out["link_labels"][i] += [[IGNORE_INDEX] * size] * (size - n)
            if size == 0:  # keep the shapes (windows, 0, 2) and (windows, 0, 0) through tensor conversion
                out = {key: [np.zeros((0, 2) if key == "entity_spans" else (0, 0) if key == "link_labels" else 0,
                                      dtype=np.int64)] * len(word_ids_rows) for key in out}  # fmt: skip
        return out

    def encode_entities(
        self, word_ids: Sequence[Sequence[int | None]], entities: Sequence[dict], entity_types: Sequence[str]
    ) -> dict[str, list]:
        """The `entity_spans`, `entity_labels` and `entity_index` of each window of one page already encoded (its
        windows' `word_ids`), for entities decided after encoding (e.g. from the token labels): what `__call__`
        gives with `entities=`, without tokenizing the page again. Lists per window, unpadded."""
        num_words = 1 + max((w for row in word_ids for w in row if w is not None), default=-1)
        checked = self._check_page_entities(list(entities), 0, num_words, entity_types)
        return self._encode_entities([list(row) for row in word_ids], [0] * len(word_ids), [checked], None, False)

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
        `one_value_key` override them."""
        if threshold is None or one_value_key is None:
            if config is None:
                raise ValueError(
                    "Pass the model's `config` (its `link_threshold` and `link_one_value_key` decide the pairs), or "
                    "both `threshold` and `one_value_key`."
                )
            threshold = config.link_threshold if threshold is None else threshold
            one_value_key = config.link_one_value_key if one_value_key is None else one_value_key
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
        return ["input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values"]

    def _check_window(
        self, max_length: int | None, stride: int, truncation: Any, overflowing: bool, add_special_tokens: bool
    ) -> None:
        """Refuse windows that cannot hold a word (the tokenizer would return empty windows or panic in Rust)."""
        if max_length is None or truncation in (None, False, "do_not_truncate", TruncationStrategy.DO_NOT_TRUNCATE):
            return
        specials = self.tokenizer.num_special_tokens_to_add(pair=False) if add_special_tokens else 0
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < specials + 1:
            raise ValueError(
                f"`max_length` is {max_length!r}, but a window needs at least {specials + 1} tokens: {specials} "
                "special ([CLS], [SEP]) and one of a word. Use a larger `max_length` (512, the model's, by default)."
            )
        if overflowing and (
            not isinstance(stride, int) or isinstance(stride, bool) or not 0 <= stride < max_length - specials
        ):
            raise ValueError(
                f"`stride` is {stride!r}, but with `max_length` {max_length} it must be at least 0 and less than "
                f"{max_length - specials} (`max_length` minus {specials} special tokens): the windows must move "
                "forward. Use a smaller `stride` (e.g. a quarter of `max_length`)."
            )

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
