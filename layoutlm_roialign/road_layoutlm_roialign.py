"""The one road from a page to its answer, which the pipeline (`pipeline_layoutlm_roialign`), `scripts/predict.py`,
the demo, `scripts/evaluate_checkpoint.py` and the labeller all take:

1. `pages_layoutlm_roialign.read_page` reads a page and its words; `encode_page` turns them into windows of
   `max_length` tokens overlapping by `stride`, with the page's image once.
2. `predict_windows`, the one window loop, runs the windows of one or many pages `batch_size` at a time, each page's
   image once per forward pass (`image_index`), on the model's device, in the `dtype` asked for
   (`compute_layoutlm_roialign`: `"auto"` by default, bf16 autocast where the device computes bf16 natively); for a
   linking model it keeps the fused token states and the backbone's feature map of that one pass.
3. `decode_page` reads each word's label once (its first sub-token, in the window where it has the most context) and
   groups the words into entities (`entities_layoutlm_roialign.group_entities`); for a linking model its `link_pages`
   then scores the candidate (key, value) pairs among those entities (or given ones) from the kept states, with no
   second encoder pass, and decides them by the checkpoint's `link_threshold` and `link_one_value_key`.

`label_pages` runs steps 2-3 for a batch of encoded pages and `group_pages` makes such batches from a stream of pages;
`engine_layoutlm_roialign` composes them with the page reader. This module travels with every checkpoint beside the
pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F

from .compute_layoutlm_roialign import DTYPES, autocast, model_for, resolve_for
from .entities_layoutlm_roialign import given_entities, group_entities, link_pages, pair_records
from .heads_layoutlm_roialign import labels_tokens, links_entities
from .windowing_layoutlm_roialign import WINDOW_INPUTS, merge_window_predictions

__all__ = [
    "DTYPES",
    "check_link_rules",
    "check_positive",
    "decode_page",
    "encode_page",
    "group_pages",
    "is_linking_model",
    "label_pages",
    "num_windows",
    "predict_windows",
]


def _head_name(model: Any) -> str:
    # an exported model run by ONNX Runtime (`onnx_runtime`) names the head it was exported from
    return getattr(model, "head_name", None) or type(model).__name__


def _labels_tokens(model: torch.nn.Module) -> bool:
    return labels_tokens(_head_name(model))


def is_linking_model(model: torch.nn.Module) -> bool:
    """Whether `model` links entities into key-value pairs: its head class is registered with `links`
    (`heads_layoutlm_roialign.HEADS`, local or remote code); transformers' own heads and unregistered ones do not."""
    return links_entities(_head_name(model))


def encode_page(
    processor: Any,
    image: Any,
    words: Sequence[str],
    boxes: Sequence[Sequence[int]],
    max_length: int = 512,
    stride: int = 128,
) -> dict:
    """One page's words and 0-1000 boxes -> its windows of `max_length` tokens overlapping by `stride`.

    Returns:
        `{"windows": {"input_ids", "bbox", "attention_mask", "token_type_ids"} (padded tensors, one row per window;
        `None` without words), "word_ids": each window's word ids, "pixel_values": the page's one image `(3, size,
        size)`}`.
    """
    if not words:
        pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"][0]
        return {"windows": None, "word_ids": None, "pixel_values": pixel_values}
    encoding = processor(
        image,
        list(words),
        [list(box) for box in boxes],
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        padding="longest",
        return_tensors="pt",
    )
    return {
        "windows": {k: encoding[k] for k in WINDOW_INPUTS},
        "word_ids": [encoding.word_ids(i) for i in range(len(encoding["input_ids"]))],
        "pixel_values": encoding["pixel_values"][0].clone(),  # every window holds the same page: keep one
    }


def num_windows(page: Mapping[str, Any]) -> int:
    """The windows of an encoded page (0 for a page without words or a failed one)."""
    windows = page.get("windows")
    return 0 if windows is None else len(windows["input_ids"])


def check_positive(name: str, value: Any, what: str) -> None:
    """Raise a `ValueError` naming `name` unless `value` is a positive int (`what` says what it counts)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int ({what}), got {value!r}.")


def _check_batch_size(batch_size: Any) -> None:
    check_positive("batch_size", batch_size, "windows per forward pass")


def check_link_rules(threshold: Any, one_value_key: Any) -> None:
    """Check overrides of a linking checkpoint's rules (`None`: the checkpoint's own): `threshold` a probability in
    [0, 1] (0 keeps every candidate pair, 1 none), `one_value_key` a bool.

    Raises:
        ValueError: naming the argument.
    """
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, Real)
        or not math.isfinite(threshold)
        or not 0 <= threshold <= 1
    ):
        kind = f" (a {type(threshold).__name__})" if not isinstance(threshold, Real) else ""
        raise ValueError(f"`threshold` must be a number in [0, 1] (a pair's probability), got {threshold!r}{kind}.")
    if one_value_key is not None and not isinstance(one_value_key, bool):
        raise ValueError(f"`one_value_key` must be True or False, got {one_value_key!r}.")


@torch.inference_mode()
def predict_windows(
    model: torch.nn.Module,
    pages: Sequence[Mapping[str, Any]],
    batch_size: int = 8,
    *,
    pad_token_id: int = 0,
    dtype: Any = "auto",
    keep_link_states: bool = False,
    forward: Any = None,
) -> list[dict]:
    """Run a model over the windows of `pages`, `batch_size` windows per forward pass: the one window loop.

    Windows of several pages share a pass; each pass holds each of its pages' images once and `image_index` says
    which image a window reads, so the backbone runs once per page per pass.

    Args:
        model: a token-classification or linking model (any device; put in eval mode here).
        pages: encoded pages (`encode_page`: `windows`, `pixel_values`).
        batch_size: windows per forward pass.
        pad_token_id: the tokenizer's padding id (windows of different pages are padded to one length).
        dtype: one of `DTYPES` (`compute_layoutlm_roialign`; `"auto"`: bf16 autocast where the device computes bf16
            natively, else float32; `"int8"`: the model's int8 copy, `model_for`).
        keep_link_states: also keep each window's fused token states and each page's feature map (`link_pages`
            reads them), from the same pass.
        forward: the callable to run instead of `model` (e.g. its `torch.compile`d form).

    Returns:
        Per page, `{"logits": [(length, num_labels) float32 CPU tensor per window]}`, each cut to the window's
        length; with `keep_link_states` also `"states"` (per window `(length, hidden)`), `"bbox"` (per window
        `(length, 4)`) and `"feature_map"` (the page's, or `None` without the visual branch), on the model's device.
    """
    _check_batch_size(batch_size)
    device = next(model.parameters()).device
    dtype = resolve_for(dtype, model)
    model = model_for(model, dtype).eval()
    forward = forward or model
    uses_pixels = getattr(model.config, "use_visual_features", True)
    rows = [(p, w) for p, page in enumerate(pages) for w in range(num_windows(page))]
    out = [{"logits": [None] * num_windows(page)} for page in pages]
    if keep_link_states:
        for result, page in zip(out, pages, strict=True):
            result.update(states=[None] * num_windows(page), bbox=[None] * num_windows(page), feature_map=None)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        inputs, image_index = _window_batch(pages, chunk, pad_token_id, uses_pixels)
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        extra = {"output_link_states": True} if keep_link_states else {}
        with autocast(device, dtype):
            outputs = forward(**inputs, **extra)
        logits = outputs.logits.float().cpu()  # (B, length, num_labels)
        lengths = inputs["attention_mask"].sum(-1).tolist()
        for i, ((p, w), n) in enumerate(zip(chunk, lengths, strict=True)):
            out[p]["logits"][w] = logits[i, :n]
            if keep_link_states:
                out[p]["states"][w] = outputs.fused_states[i, :n]
                out[p]["bbox"][w] = inputs["bbox"][i, :n]
                if outputs.feature_map is not None and out[p]["feature_map"] is None:
                    out[p]["feature_map"] = outputs.feature_map[image_index[i]]
    return out


def _window_batch(
    pages: Sequence[Mapping[str, Any]], chunk: Sequence[tuple[int, int]], pad_token_id: int, uses_pixels: bool
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The model inputs of the `(page, window)` pairs of `chunk`, padded to the longest, each page's image once, and
    `image_index`: which of those images each window reads."""
    length = max(pages[p]["windows"]["input_ids"].shape[1] for p, _ in chunk)
    inputs = {}
    for name in WINDOW_INPUTS:
        pad = pad_token_id if name == "input_ids" else 0  # padding: no box, not attended, segment 0
        window_rows = []
        for p, w in chunk:
            tensor = pages[p]["windows"][name][w]
            extra = length - tensor.shape[0]
            window_rows.append(F.pad(tensor, (0, 0, 0, extra) if tensor.dim() == 2 else (0, extra), value=pad))
        inputs[name] = torch.stack(window_rows)  # (B, length[, 4])
    chunk_pages = list(dict.fromkeys(p for p, _ in chunk))
    image_index = torch.tensor([chunk_pages.index(p) for p, _ in chunk])
    if uses_pixels:
        inputs["pixel_values"] = torch.stack([pages[p]["pixel_values"] for p in chunk_pages])  # (pages, 3, H, W)
        inputs["image_index"] = image_index
    return inputs, image_index


def decode_page(
    words: Sequence[str],
    boxes: Sequence[Sequence[int]],
    word_ids_per_window: Sequence[Sequence[int | None]],
    logits_per_window: Sequence[torch.Tensor],
    width: int,
    height: int,
    id2label: Mapping[int, str],
) -> dict:
    """The labelled words and entities of one page from its windows' logits: each word is read on its first sub-token
    in the window where it has the most context (`merge_window_predictions`), its label the argmax and its score the
    softmax probability there.

    Args:
        words, boxes: the page's words and 0-1000 boxes.
        word_ids_per_window: each window's word ids (`encode_page`'s `word_ids`).
        logits_per_window: each window's logits `(length, num_labels)`, cut to its length or not.
        width, height: the page's size in pixels, for `pixel_box`.
        id2label: the model's label names.

    Returns:
        `{"width", "height", "words": [{"text", "box", "pixel_box", "label", "score"}], "entities": [...]}`; `box` is
        on the 0-1000 grid, `pixel_box` in page pixels; entities are described in `group_entities`.
    """
    result = {"width": width, "height": height, "words": [], "entities": []}
    if not words:
        return result
    num_windows = len(word_ids_per_window)
    seq_len = max(len(ids) for ids in word_ids_per_window)
    probabilities = torch.zeros(num_windows, seq_len, logits_per_window[0].shape[-1])
    for i, window in enumerate(logits_per_window):
        n = min(len(window), seq_len)
        probabilities[i, :n] = window[:n].float().softmax(-1)
    # Merge windows on flat token positions, then read label and score at the position chosen for each word: the
    # same rule as `merge_window_predictions` on label ids, with the score coming from the same window.
    flat_positions = torch.arange(num_windows * seq_len).view(num_windows, seq_len)
    chosen = merge_window_predictions(
        [list(ids) + [None] * (seq_len - len(ids)) for ids in word_ids_per_window],
        flat_positions,
        [0] * num_windows,
        [len(words)],
        fill_value=-1,
    )[0]
    flat = probabilities.view(num_windows * seq_len, -1)
    for word, box, position in zip(words, boxes, chosen, strict=True):
        if position < 0:  # no window holds the word (the tokenizer dropped it)
            label, score = "O", 0.0
        else:
            score, label_id = flat[position].max(-1)
            label, score = id2label[int(label_id)], float(score)
        box = [int(v) for v in box]
        pixel_box = [
            round(box[0] * width / 1000, 1),
            round(box[1] * height / 1000, 1),
            round(box[2] * width / 1000, 1),
            round(box[3] * height / 1000, 1),
        ]
        result["words"].append({"text": word, "box": box, "pixel_box": pixel_box, "label": label, "score": score})
    result["entities"] = group_entities(result["words"])
    return result


def label_pages(
    model: torch.nn.Module,
    processor: Any,
    pages: Sequence[Mapping[str, Any]],
    batch_size: int = 8,
    *,
    dtype: Any = "auto",
    entities: Sequence[Sequence[Any] | None] | None = None,
    threshold: float | None = None,
    one_value_key: bool | None = None,
    forward: Any = None,
    pair_scores: bool = False,
    gold_entities: Sequence[Sequence[Any] | None] | None = None,
) -> list[dict]:
    """Label (and, for a linking model, link) a batch of encoded pages in one pass of the encoder and the backbone.

    Args:
        model, processor: the checkpoint.
        pages: encoded pages: `read_page`'s `words`, `boxes`, `width`, `height` and `encode_page`'s fields.
        batch_size: windows per forward pass (`predict_windows`).
        dtype: one of `DTYPES` (`predict_windows`).
        entities: per page, entities to link instead of the predicted ones (`None` for a page: its predicted ones);
            see `given_entities`.
        threshold, one_value_key: override the checkpoint's `link_threshold` / `link_one_value_key`.
        forward: the callable to run instead of `model` (e.g. its `torch.compile`d form).
        pair_scores: for a linking model, give `"pair_scores"` instead of `"pairs"`: every candidate pair among the
            page's entities as `(key, value, probability)`, each value's best key, not thresholded (for scores at any
            threshold; `threshold` and `one_value_key` do not apply).
        gold_entities: per page, reference entities (`word_indices`, `label`; `None` for a page: none) whose
            candidate pairs a linking model scores as `pair_scores` does, into `"gold_pair_scores"`. The link head
            runs again on the states kept from the same pass; the encoder and the backbone do not.

    Returns:
        Per page, `decode_page`'s result; for a linking model also `"pairs"` (`pair_records`) or `"pair_scores"`, and
        `"gold_pair_scores"` for a page with `gold_entities`.
    """
    check_link_rules(threshold, one_value_key)
    if not _labels_tokens(model):
        raise ValueError(
            f"Labelling pages needs a token-classification or linking checkpoint; this one is a {type(model).__name__}"
            " (fine-tune it with scripts/train.py first)."
        )
    linking = is_linking_model(model)
    _check_entity_lists("entities", entities, pages, model, linking)
    _check_entity_lists("gold_entities", gold_entities, pages, model, linking)
    kept = predict_windows(
        model, pages, batch_size, pad_token_id=processor.tokenizer.pad_token_id, dtype=dtype,
        keep_link_states=linking, forward=forward,
    )  # fmt: skip
    id2label = model.config.id2label
    results = [
        decode_page(page["words"], page["boxes"], page["word_ids"] or [], out["logits"], page["width"],
                    page["height"], id2label)
        for page, out in zip(pages, kept, strict=True)
    ]  # fmt: skip
    if entities is not None:
        for result, given in zip(results, entities, strict=True):
            if given is not None:
                result["entities"] = given_entities(given, result["words"], model.config.resolved_entity_types)
    if linking and pair_scores:
        scores = _pair_scores(model, processor, pages, kept, [r["entities"] for r in results], batch_size)
        for result, page_scores in zip(results, scores, strict=True):
            result["pair_scores"] = page_scores
    elif linking:
        pairs = link_pages(model, processor, pages, kept, [r["entities"] for r in results], batch_size, threshold,
                           one_value_key)  # fmt: skip
        for result, page_pairs in zip(results, pairs, strict=True):
            result["pairs"] = pair_records(result["entities"], page_pairs)
    if gold_entities is not None:
        scores = _pair_scores(model, processor, pages, kept, [g or [] for g in gold_entities], batch_size)
        for result, gold, page_scores in zip(results, gold_entities, scores, strict=True):
            if gold is not None:
                result["gold_pair_scores"] = page_scores
    return results


def _check_entity_lists(name: str, lists: Any, pages: Sequence[Any], model: Any, linking: bool) -> None:
    """Per-page entity lists (`None`: not given) are for a linking model, one per page."""
    if lists is None:
        return
    if not linking:
        raise ValueError(f"`{name}` are linked by a linking model; this one is a {type(model).__name__}.")
    if len(lists) != len(pages):
        raise ValueError(f"`{name}` has {len(lists)} lists for {len(pages)} pages: give one per page.")


def _pair_scores(
    model: torch.nn.Module, processor: Any, pages: Sequence[Any], kept: Sequence[Any], entities: Any, batch_size: int
) -> list[list[tuple[int, int, float]]]:
    """Per page, every candidate pair among its `entities` as `(key, value, probability)`: `link_pages` with
    threshold 0, each value's best key."""
    pairs = link_pages(model, processor, pages, kept, entities, batch_size, threshold=0.0, one_value_key=True)
    return [[(p["key"], p["value"], p["score"]) for p in page] for page in pairs]


def group_pages(items: Iterable[dict], batch_size: int, lookahead: int = 4) -> Iterator[list[dict]]:
    """Batches of whole encoded pages holding at most `batch_size` windows (a longer page alone), of similar lengths.

    Every window of a batch is padded to its longest, and padding costs as much as text on a CPU: so the pages wait in
    a pool of about `lookahead` batches, and each batch is the oldest page of the pool with the pages closest to it
    in length (a page waits at most while the pool turns over `lookahead` times). Pages that need no forward pass
    (failures, pages without words) come out at once, one per batch. `lookahead=1` keeps the arrival order.
    """
    pool: list[dict] = []
    count = 0
    for item in items:
        n = num_windows(item)
        if n == 0:
            yield [item]
            continue
        pool.append(item)
        count += n
        while count >= lookahead * batch_size:
            batch = _take_batch(pool, batch_size)
            count -= sum(num_windows(p) for p in batch)
            yield batch
    while pool:
        yield _take_batch(pool, batch_size)


def _length(item: dict) -> int:
    return item["windows"]["input_ids"].shape[1]


def _take_batch(pool: list[dict], batch_size: int) -> list[dict]:
    """The oldest page of `pool` and the pages nearest to it in length that fit in `batch_size` windows (removed)."""
    first = pool.pop(0)
    batch, count = [first], num_windows(first)
    for item in sorted(pool, key=lambda p: abs(_length(p) - _length(first))):
        if count >= batch_size:
            break
        if count + num_windows(item) <= batch_size:
            batch.append(item)
            count += num_windows(item)
    chosen = {id(item) for item in batch[1:]}
    pool[:] = [item for item in pool if id(item) not in chosen]
    return batch
