"""How words, labels, entities and links map onto the overlapping windows of a page, and back.

Long pages are split into overlapping windows (`return_overflowing_tokens=True`, `stride`). Two rules, shared by the
labels the processor writes and by `merge_window_predictions`, make every word count exactly once:

* **First sub-token.** A word is labelled (and read back) on its first sub-token only. A window other than the
  first of its page may start in the middle of a word; a word that starts a window and also appears in the
  previous window of the same page is therefore treated as cut in this window (the earliest window holding a word
  always holds its first sub-token).
* **Most context.** When several windows hold a word's first sub-token, the prediction is taken from the window in
  which that word is farthest from the window's edges (as transformers' question-answering scripts do for spans);
  ties go to the earlier window. One rule for logits and label ids alike, and no averaging of logits computed from
  different contexts.

**Entities and links** (the key-value linking head): a page's entities are consecutive word indices with a type and
an id, its links `[key id, value id]` pairs. An entity belongs to a window when the window holds every token of its
words; its span is `(first token, last token + 1)` (`encode_window_entities`). A pair is scored in every window that
holds both entities, and `merge_window_links` reads its score from the window where the pair has the most context
(the nearer of the two entities to a window edge is farthest from it; ties to the earlier window). A pair whose
entities never share a window is never scored (evaluation counts it as missed).

This module travels with every checkpoint beside the processor (which imports it relatively).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers.tokenization_utils_base import TruncationStrategy

from .linking_layoutlm_roialign import NOT_A_CANDIDATE

__all__ = [
    "IGNORE_INDEX",
    "NOT_A_CANDIDATE",
    "WINDOW_INPUTS",
    "check_page_entities",
    "check_page_links",
    "check_window_size",
    "encode_window_entities",
    "first_subtoken_mask",
    "merge_window_links",
    "merge_window_predictions",
    "select_links",
    "word_index_list",
]

IGNORE_INDEX = -100  # ignored by torch's cross-entropy
# The model inputs of each window (one row of tokens per window); the page image (`pixel_values`) comes once per page.
WINDOW_INPUTS = ("input_ids", "bbox", "attention_mask", "token_type_ids")


def check_window_size(
    max_length: int | None, stride: int, truncation: Any, overflowing: bool, num_special_tokens: int
) -> None:
    """Refuse windows that cannot hold a word (the tokenizer would return empty windows or panic in Rust): a window of
    `max_length` tokens holds `num_special_tokens` ([CLS], [SEP]) and at least one of a word, and with `overflowing`
    windows each moves forward (`stride` below `max_length` minus the special tokens)."""
    if max_length is None or truncation in (None, False, "do_not_truncate", TruncationStrategy.DO_NOT_TRUNCATE):
        return
    specials = num_special_tokens
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


def word_index_list(value: Any, where: str) -> list[int]:
    """An entity's `word_indices` as a list of ints (ints, numpy or 0-d tensor integers; not bools).

    Raises:
        ValueError: starting with `where`, for a single number, a string or a mapping instead of a list, or an
            index that is not an integer.
    """
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(
            f"{where} has `word_indices` {value!r}: give a list of word indices (integers), e.g. [3] or [3, 4, 5]."
        )
    raw = list(value)
    try:
        if any(isinstance(i, (bool, np.bool_)) for i in raw):
            raise TypeError
        return [operator.index(i) for i in raw]
    except TypeError:
        raise ValueError(
            f"{where} has `word_indices` {raw!r}: they must be integers (indices into the words)."
        ) from None


def check_page_entities(
    page_entities: list, page: int, num_words: int, entity_types: Sequence[str] | None
) -> list[tuple[int, int, int, int]]:
    """One page's entities checked, as `(id, first word, last word + 1, type id or -100)` per entity.

    Args:
        page_entities: dicts with `word_indices` (consecutive indices into the page's words), optional `label` (a
            type name of `entity_types` or a type id; other names give -100) and optional `id` (default: position).
        page: the page's index, for the messages.
        num_words: the page's number of words.
        entity_types: the type names that label names index (`config.resolved_entity_types`).
    """
    checked, ids = [], set()
    for e, entity in enumerate(page_entities):
        where = f"`entities` page {page}, entity {e}"
        if not isinstance(entity, dict) or "word_indices" not in entity:
            raise ValueError(f"{where} is {entity!r}: expected a dict with `word_indices` (and `label`, `id`).")
        indices = word_index_list(entity["word_indices"], where)
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


def check_page_links(page_links: list, page: int, page_entities: list) -> set[tuple[int, int]]:
    """One page's `[key id, value id]` links, naming entities of `page_entities` (`check_page_entities`) by id, as
    `(key entity position, value entity position)` pairs."""
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


def encode_window_entities(
    word_ids_rows: list, mapping: list[int], page_entities: list, page_links: list | None, pad: bool
) -> dict[str, list]:
    """Per window: the entities all of whose tokens it holds, as token spans, types, page indices and links.

    Args:
        word_ids_rows: each window's word ids (`encoding.word_ids(i)`).
        mapping: each window's page.
        page_entities: per page, `check_page_entities`' result.
        page_links: per page, `check_page_links`' result, or `None` for no `link_labels`.
        pad: pad every window to one entity count (for tensors): span (0, 0), label -100, index -1, links -100.

    Returns:
        `{"entity_spans", "entity_labels", "entity_index"[, "link_labels"]}`, one list per window.
    """
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
