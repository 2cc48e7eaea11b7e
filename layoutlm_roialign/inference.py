"""The one road from a page to its answer, and the one loader of a checkpoint.

`load_model_and_processor` loads a checkpoint folder or Hub id as the class its config names, saying which path is
missing or which file is damaged. The road, which the pipeline (`pipeline_layoutlm_roialign`), `scripts/predict.py`,
the demo, `scripts/evaluate.py` and the labeller all take:

1. `pages.read_page` reads a page and its words; `encode_page` turns them into windows of `max_length` tokens
   overlapping by `stride`, with the page's image once.
2. `predict_windows`, the one window loop, runs the windows of one or many pages `batch_size` at a time, each page's
   image once per forward pass (`image_index`), on the model's device, under bf16 autocast on request; for a
   linking model it keeps the fused token states and the backbone's feature map of that one pass.
3. `decode_page` reads each word's label once (its first sub-token, in the window where it has the most context) and
   groups the words into entities (`group_entities`); for a linking model `link_pages` then scores the candidate
   (key, value) pairs among those entities (or given ones) from the kept states, with no second encoder pass, and
   decides them by the checkpoint's `link_threshold` and `link_one_value_key`.

`label_pages` runs steps 2-3 for a batch of encoded pages, `group_pages` makes such batches from a stream of pages, and
`predict_page` is the whole road for one page.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .pages import DEFAULT_DPI, read_page
from .processing_layoutlm_roialign import merge_window_links, merge_window_predictions, select_links

__all__ = [
    "DTYPES",
    "load_model_and_processor",
    "is_linking_model",
    "predict_page",
    "encode_page",
    "predict_windows",
    "decode_page",
    "group_entities",
    "group_pages",
    "label_pages",
    "link_pages",
    "pair_records",
]

DTYPES = ("float32", "bfloat16")  # `dtype` of the road: float32, or bf16 autocast (RoIAlign stays in float32)
WINDOW_INPUTS = ("input_ids", "bbox", "attention_mask", "token_type_ids")  # a window's tokens (pixels: per page)
NOT_LINKED = ("O", "OTHER")  # labels of given entities that are no type: kept, never linked
_PAD_VALUES = {"bbox": 0, "attention_mask": 0, "token_type_ids": 0}


def _auto_classes() -> dict[str, Any]:
    """`config.architectures` name -> the Auto class that loads it (the linking model answers
    `AutoModelForTokenClassification`: its checkpoints map that class to it, and so does the package)."""
    from transformers import (
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    return {
        "feature-extraction": AutoModel,
        "LayoutLMRoIAlignModel": AutoModel,
        "LayoutLMRoIAlignForMaskedLM": AutoModelForMaskedLM,
        "LayoutLMRoIAlignForTokenClassification": AutoModelForTokenClassification,
        "LayoutLMRoIAlignForRelationExtraction": AutoModelForTokenClassification,
        "LayoutLMRoIAlignForSequenceClassification": AutoModelForSequenceClassification,
    }


def _auto_class_of(model: str, trust_remote_code: bool) -> Any:
    """The Auto class for the architecture a checkpoint's config names (token classification by default)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return _auto_classes()["LayoutLMRoIAlignForTokenClassification"]  # the load itself then says what is wrong
    classes = _auto_classes()
    names = [n for n in getattr(config, "architectures", None) or [] if n in classes]
    return classes[names[0] if names else "LayoutLMRoIAlignForTokenClassification"]


def load_model_and_processor(
    model: str | os.PathLike,
    trust_remote_code: bool = False,
    *,
    task: str | None = None,
    dtype: Any = None,
) -> tuple[Any, Any]:
    """Load a checkpoint (a folder written by `save_pretrained` or a Hub id) as the class its `config.architectures`
    names (token classifier, linking model, sequence classifier), and its processor: the one loader of the package.

    Args:
        model: the folder or Hub id (`user/name`).
        trust_remote_code: run the checkpoint's own code (needed where this package is not installed).
        task: `None` for the checkpoint's own class, or `"feature-extraction"` for the base model (the fused token
            states, whatever head the checkpoint has).
        dtype: the weights' dtype (e.g. `torch.bfloat16`); default float32.

    Raises:
        ValueError: naming `--model` and the path, when a local path does not exist (rather than a message about
            reaching huggingface.co), the folder holds no saved model, or a weights file is damaged or incomplete.
    """
    from transformers import AutoProcessor

    if task not in (None, "feature-extraction"):
        raise ValueError(f"`task` must be None (the checkpoint's own class) or 'feature-extraction', got {task!r}.")
    model = os.fspath(model)
    local = os.path.isdir(model)
    if local:
        _check_model_folder(model)
    elif os.path.exists(model):
        raise ValueError(f"--model {model!r} is a file; give the folder that holds its config.json.")
    elif _looks_like_a_path(model):
        raise ValueError(
            f"--model {model!r} does not exist (no folder {os.path.abspath(model)!r}). Give the folder that "
            "scripts/train.py wrote (e.g. runs/main/final) or a Hub id (user/name)."
        )
    try:
        auto_class = _auto_classes()["feature-extraction"] if task else _auto_class_of(model, trust_remote_code)
        net = auto_class.from_pretrained(model, trust_remote_code=trust_remote_code, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as err:
        if local:
            raise ValueError(f"--model {model!r}: the folder cannot be loaded ({_first_line(err)}).") from err
        raise ValueError(
            f"--model {model!r}: no folder of that name exists here ({os.path.abspath(model)!r} does not exist), "
            f"and as a Hub id it could not be loaded ({_first_line(err)})."
        ) from err
    try:
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"--model {model!r}: the model loads but its processor does not ({_first_line(err)}). The folders "
            "scripts/train.py writes hold both; save one beside the model with `processor.save_pretrained(folder)`."
        ) from err
    return net, processor


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _looks_like_a_path(model: str) -> bool:
    """Whether `model` can only be a local path: a Hub id is `name` or `user/name`, of letters, digits, `-_.`."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model) or model.startswith((".", "~")) or ".." in model:
        return True
    return "/" in model and os.path.isdir(model.split("/")[0])  # `models/nope` while `models/` exists here


def _check_model_folder(folder: str) -> None:
    if not os.path.isfile(os.path.join(folder, "config.json")):
        inside = sorted(d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "config.json")))
        hint = f" It holds saved models in {inside}: give one of them." if inside else ""
        raise ValueError(
            f"--model {folder!r} has no config.json: it is not a folder written by `save_pretrained`.{hint}"
        )
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"--model {folder!r}: {index} is damaged ({err}); save or copy the model again.") from err
        files = [os.path.join(folder, shard) for shard in shards]
        for file in files:
            if not os.path.isfile(file):
                raise ValueError(f"--model {folder!r}: the weights file {file} listed in {index} is missing.")
    else:
        files = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".safetensors")]
        if not files and not any(n.endswith(".bin") for n in os.listdir(folder)):
            raise ValueError(f"--model {folder!r} has no weights (model.safetensors): save or copy the model again.")
    for file in files:
        _check_safetensors(file)


def _check_safetensors(file: str) -> None:
    """A safetensors file is an 8-byte header length, a JSON header giving each tensor's byte range, and the bytes:
    a file cut short (an interrupted copy, download or save) is shorter than its header says."""
    size = os.path.getsize(file)
    problem = None
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 2 or 8 + length > size:
                problem = f"it is {size} bytes, too short for its header"
            else:
                header = json.loads(f.read(length))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                if size < 8 + length + end:
                    problem = f"it is {size} bytes but its header describes {8 + length + end}"
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        problem = f"its header cannot be read ({err})"
    if problem:
        raise ValueError(
            f"The weights file {file} is damaged or incomplete: {problem} (an interrupted save, copy or download?). "
            "Copy or download the model again, or save it again."
        )


def _labels_tokens(model: torch.nn.Module) -> bool:
    return type(model).__name__ in ("LayoutLMRoIAlignForTokenClassification", "LayoutLMRoIAlignForRelationExtraction")


def is_linking_model(model: torch.nn.Module) -> bool:
    """Whether `model` links entities into key-value pairs (a `LayoutLMRoIAlignForRelationExtraction`, local or
    remote code)."""
    return callable(getattr(model, "link_logits_from_states", None))


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


def _autocast(device: torch.device, dtype: str) -> Any:
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {DTYPES}, got {dtype!r}.")
    if dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_batch_size(batch_size: Any) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int (windows per forward pass), got {batch_size!r}.")


@torch.inference_mode()
def predict_windows(
    model: torch.nn.Module,
    pages: Sequence[Mapping[str, Any]],
    batch_size: int = 8,
    *,
    pad_token_id: int = 0,
    dtype: str = "float32",
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
        dtype: `"float32"`, or `"bfloat16"` for bf16 autocast.
        keep_link_states: also keep each window's fused token states and each page's feature map (`link_pages`
            reads them), from the same pass.
        forward: the callable to run instead of `model` (e.g. its `torch.compile`d form).

    Returns:
        Per page, `{"logits": [(length, num_labels) float32 CPU tensor per window]}`, each cut to the window's
        length; with `keep_link_states` also `"states"` (per window `(length, hidden)`), `"bbox"` (per window
        `(length, 4)`) and `"feature_map"` (the page's, or `None` without the visual branch), on the model's device.
    """
    _check_batch_size(batch_size)
    model.eval()
    forward = forward or model
    device = next(model.parameters()).device
    uses_pixels = getattr(model.config, "use_visual_features", True)
    rows = [(p, w) for p, page in enumerate(pages) for w in range(num_windows(page))]
    out = [{"logits": [None] * num_windows(page)} for page in pages]
    if keep_link_states:
        for result, page in zip(out, pages, strict=True):
            result.update(states=[None] * num_windows(page), bbox=[None] * num_windows(page), feature_map=None)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(pages[p]["windows"]["input_ids"].shape[1] for p, _ in chunk)
        inputs = {}
        for name in WINDOW_INPUTS:
            pad = pad_token_id if name == "input_ids" else _PAD_VALUES[name]
            window_rows = []
            for p, w in chunk:
                tensor = pages[p]["windows"][name][w]
                extra = length - tensor.shape[0]
                window_rows.append(F.pad(tensor, (0, 0, 0, extra) if tensor.dim() == 2 else (0, extra), value=pad))
            inputs[name] = torch.stack(window_rows)  # (B, length[, 4])
        chunk_pages = list(dict.fromkeys(p for p, _ in chunk))
        image_index = torch.tensor([chunk_pages.index(p) for p, _ in chunk])
        if uses_pixels:
            inputs["pixel_values"] = torch.stack([pages[p]["pixel_values"] for p in chunk_pages])
            inputs["image_index"] = image_index
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        extra = {"output_link_states": True} if keep_link_states else {}
        with _autocast(device, dtype):
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


def group_entities(words: Sequence[dict]) -> list[dict]:
    """Join consecutive words into entities by their BIO labels (seqeval's reading: `B-X` starts an entity, `I-X`
    continues an entity of type X or starts one after anything else; `O` words belong to none).

    Returns:
        One dict per entity: `label` (the type, e.g. `"QUESTION"`), `text`, `word_indices`, `box` and `pixel_box`
        (the union of its words' boxes) and `score` (the mean of its words' scores).
    """
    entities: list[dict] = []
    current: dict | None = None
    for i, word in enumerate(words):
        label = word["label"]
        prefix, _, kind = label.partition("-") if "-" in label else ("", "", label)
        if label == "O" or not kind:
            current = None
            continue
        if prefix == "I" and current is not None and current["label"] == kind:
            current["word_indices"].append(i)
        else:
            current = {"label": kind, "word_indices": [i]}
            entities.append(current)
    for entity in entities:
        members = [words[i] for i in entity["word_indices"]]
        entity["text"] = " ".join(w["text"] for w in members)
        for key in ("box", "pixel_box"):
            if all(key in w for w in members):
                entity[key] = [
                    min(w[key][0] for w in members),
                    min(w[key][1] for w in members),
                    max(w[key][2] for w in members),
                    max(w[key][3] for w in members),
                ]
        entity["score"] = float(np.mean([w["score"] for w in members]))
    return entities


def given_entities(entities: Sequence[Any], words: Sequence[dict], entity_types: Sequence[str]) -> list[dict]:
    """Entities given to link instead of the predicted ones (e.g. gold ones), checked and described as
    `group_entities` describes predicted ones (`label`, `word_indices`, `text`, `box`, `pixel_box`, `score`).

    A label is a type of `entity_types` in any case, with or without a `B-`/`I-` prefix (FUNSD's files say
    `"question"`), a type's index, or one of `NOT_LINKED` (FUNSD's `"other"`: kept, never a candidate);
    `word_indices` are consecutive integer word indices, no word in two entities.

    Raises:
        ValueError: naming `entities` and the entity, for a label that is not one of the model's types (they are
            listed), missing, non-integer, out-of-range or non-consecutive word indices, or an entity that repeats
            or overlaps another.
    """
    types = {t.upper(): t for t in entity_types}
    owner: dict[int, int] = {}
    out = []
    for e, entity in enumerate(entities):
        where = f"`entities`[{e}]"
        if not isinstance(entity, Mapping) or "word_indices" not in entity:
            raise ValueError(f"{where} is {entity!r}: expected a dict with `word_indices` and `label`.")
        label = entity.get("label")
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(entity_types):
            name = entity_types[int(label)].upper()
        else:
            name = re.sub(r"^[BIES]-", "", label.strip().upper()) if isinstance(label, str) else None
        if name not in types and name not in NOT_LINKED:
            raise ValueError(
                f"{where} has the label {label!r}: a label is one of the model's entity types {list(entity_types)} "
                f"(any case, with or without a B-/I- prefix, or its index), or {' / '.join(NOT_LINKED)} for an entity "
                "never linked."
            )
        raw = list(entity["word_indices"])
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in raw):
            raise ValueError(f"{where} has `word_indices` {raw!r}: they must be integers (indices into the words).")
        indices = [int(i) for i in raw]
        if not indices or indices != list(range(indices[0], indices[0] + len(indices))):
            raise ValueError(f"{where}: `word_indices` {indices} must be consecutive word indices in order.")
        if indices[0] < 0 or indices[-1] >= len(words):
            raise ValueError(f"{where}: `word_indices` {indices} do not index the page's {len(words)} words.")
        for i in indices:
            if i in owner:
                other = owner[i]
                same = entities[other]["word_indices"] is not None and list(entities[other]["word_indices"]) == raw
                relation = "repeats" if same else f"overlaps (word {i}, {words[i]['text']!r})"
                raise ValueError(
                    f"{where} {relation} `entities`[{other}]: an entity's words belong to it alone (drop duplicates, "
                    "split overlapping entities)."
                )
            owner[i] = e
        members = [words[i] for i in indices]
        described = {
            "label": types.get(name, name),
            "word_indices": indices,
            "text": " ".join(w["text"] for w in members),
        }
        for key in ("box", "pixel_box"):
            described[key] = [min(w[key][0] for w in members), min(w[key][1] for w in members),
                              max(w[key][2] for w in members), max(w[key][3] for w in members)]  # fmt: skip
        described["score"] = float(np.mean([w["score"] for w in members]))
        out.append(described)
    return out


@torch.inference_mode()
def link_pages(
    model: torch.nn.Module,
    processor: Any,
    pages: Sequence[Mapping[str, Any]],
    kept: Sequence[Mapping[str, Any]],
    entities: Sequence[Sequence[dict]],
    batch_size: int = 8,
    threshold: float | None = None,
    one_value_key: bool | None = None,
) -> list[list[dict]]:
    """Decide the key-value pairs among `entities` of each page from the states `predict_windows` kept, with no
    other encoder or backbone pass; windows of several pages share a pass of the link head.

    Args:
        model: the linking model `predict_windows` ran.
        processor: its processor (which windows hold which entities: `encode_entities`).
        pages: the encoded pages (`word_ids`).
        kept: `predict_windows(..., keep_link_states=True)`'s result for `pages`.
        entities: per page, the entities to link (`word_indices`, `label` a type name).
        batch_size: windows per pass of the link head.
        threshold, one_value_key: override `config.link_threshold` / `config.link_one_value_key`.

    Returns:
        Per page, `[{"key": entity position, "value": entity position, "score": probability}]`, sorted by key.
    """
    config = model.config
    threshold = config.link_threshold if threshold is None else threshold
    one_value_key = config.link_one_value_key if one_value_key is None else one_value_key
    types = config.resolved_entity_types
    per_page = []
    rows = []  # (page, window, entity spans, entity labels)
    for p, (page, page_entities) in enumerate(zip(pages, entities, strict=True)):
        if not num_windows(page) or not page_entities:
            per_page.append(None)
            continue
        encoded = processor.encode_entities(page["word_ids"], page_entities, types)
        per_page.append(encoded)
        for w, (spans, labels) in enumerate(zip(encoded["entity_spans"], encoded["entity_labels"], strict=True)):
            if len(spans) > 1:
                rows.append((p, w, spans, labels))
    link_logits: dict[tuple[int, int], torch.Tensor] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(kept[p]["states"][w].shape[0] for p, w, _, _ in chunk)
        count = max(len(spans) for *_, spans, _ in chunk)
        states = torch.stack([F.pad(kept[p]["states"][w], (0, 0, 0, length - kept[p]["states"][w].shape[0]))
                              for p, w, _, _ in chunk])  # fmt: skip
        bbox = torch.stack([F.pad(kept[p]["bbox"][w], (0, 0, 0, length - kept[p]["bbox"][w].shape[0]))
                            for p, w, _, _ in chunk])  # fmt: skip
        spans = torch.tensor([list(s) + [[0, 0]] * (count - len(s)) for *_, s, _ in chunk], dtype=torch.long)
        labels = torch.tensor([list(t) + [-100] * (count - len(t)) for *_, t in chunk], dtype=torch.long)
        chunk_pages = list(dict.fromkeys(p for p, *_ in chunk))
        feature_map = image_index = None
        if kept[chunk_pages[0]].get("feature_map") is not None:
            feature_map = torch.stack([kept[p]["feature_map"] for p in chunk_pages])
            image_index = torch.tensor([chunk_pages.index(p) for p, *_ in chunk], device=feature_map.device)
        device = states.device
        logits = (
            model.link_logits_from_states(states, bbox, spans.to(device), labels.to(device), feature_map, image_index)
            .float()
            .cpu()
        )  # (B, E, E)
        for i, (p, w, s, _) in enumerate(chunk):
            link_logits[p, w] = logits[i, : len(s), : len(s)]
    out = []
    for p, (page, encoded) in enumerate(zip(pages, per_page, strict=True)):
        if encoded is None:
            out.append([])
            continue
        windows = range(num_windows(page))
        empty = torch.empty(0, 0)
        scores = merge_window_links(
            encoded["entity_index"],
            encoded["entity_spans"],
            [link_logits.get((p, w), empty) for w in windows],
            [sum(i is not None for i in page["word_ids"][w]) for w in windows],
            [0] * len(windows),
            num_pages=1,
        )[0]
        out.append([{"key": k, "value": v, "score": s} for k, v, s in select_links(scores, threshold, one_value_key)])
    return out


def pair_records(entities: Sequence[dict], pairs: Sequence[dict]) -> list[dict]:
    """Decided pairs as the road writes them: each end `{"entity": its index in `entities`, "label", "text", "box",
    "pixel_box"}`, and the score rounded."""
    return [
        {"key": _end(entities[p["key"]], p["key"]), "value": _end(entities[p["value"]], p["value"]),
         "score": round(float(p["score"]), 4)}
        for p in pairs
    ]  # fmt: skip


def _end(entity: dict, index: int) -> dict:
    return {"entity": index, **{k: entity[k] for k in ("label", "text", "box", "pixel_box") if k in entity}}


def label_pages(
    model: torch.nn.Module,
    processor: Any,
    pages: Sequence[Mapping[str, Any]],
    batch_size: int = 8,
    *,
    dtype: str = "float32",
    entities: Sequence[Sequence[Any] | None] | None = None,
    threshold: float | None = None,
    one_value_key: bool | None = None,
    forward: Any = None,
) -> list[dict]:
    """Label (and, for a linking model, link) a batch of encoded pages in one pass of the encoder and the backbone.

    Args:
        model, processor: the checkpoint.
        pages: encoded pages: `read_page`'s `words`, `boxes`, `width`, `height` and `encode_page`'s fields.
        batch_size: windows per forward pass (`predict_windows`).
        dtype: `"float32"` or `"bfloat16"` (autocast).
        entities: per page, entities to link instead of the predicted ones (`None` for a page: its predicted ones);
            see `given_entities`.
        threshold, one_value_key: override the checkpoint's `link_threshold` / `link_one_value_key`.
        forward: the callable to run instead of `model` (e.g. its `torch.compile`d form).

    Returns:
        Per page, `decode_page`'s result; for a linking model also `"pairs"` (`pair_records`).
    """
    if not _labels_tokens(model):
        raise ValueError(
            f"Labelling pages needs a token-classification or linking checkpoint; this one is a {type(model).__name__}"
            " (fine-tune it with scripts/train.py first)."
        )
    linking = is_linking_model(model)
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
        if not linking:
            raise ValueError(f"`entities` are linked by a linking model; this one is a {type(model).__name__}.")
        if len(entities) != len(pages):
            raise ValueError(f"`entities` has {len(entities)} lists for {len(pages)} pages: give one per page.")
        for result, given in zip(results, entities, strict=True):
            if given is not None:
                result["entities"] = given_entities(given, result["words"], model.config.resolved_entity_types)
    if linking:
        pairs = link_pages(model, processor, pages, kept, [r["entities"] for r in results], batch_size, threshold,
                           one_value_key)  # fmt: skip
        for result, page_pairs in zip(results, pairs, strict=True):
            result["pairs"] = pair_records(result["entities"], page_pairs)
    return results


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


def predict_page(
    model: torch.nn.Module,
    processor: Any,
    image: Any,
    words: Sequence[str] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    max_length: int = 512,
    stride: int = 128,
    batch_size: int = 8,
    ocr_lang: str | None = None,
    *,
    page: int = 1,
    words_from: str = "auto",
    dpi: float = DEFAULT_DPI,
    dtype: str = "float32",
    entities: Sequence[Any] | None = None,
    threshold: float | None = None,
    one_value_key: bool | None = None,
) -> dict:
    """Label the words of one page (and link its entities, for a linking model): the whole road for one page.

    Args:
        model, processor: the checkpoint (`load_model_and_processor`).
        image: the page: a PDF or image path (with `page`), a PIL image, a numpy array (`pages.read_page`).
        words, boxes: the page's words and their 0-1000 boxes; both `None` to read them (`words_from`: the PDF's
            text layer, else OCR).
        max_length, stride: window size and overlap in tokens.
        batch_size: windows per forward pass.
        ocr_lang: Tesseract language for OCR.
        page: the page number, from 1 (a PDF's page, a multi-page image's frame).
        words_from, dpi: see `pages.read_page`.
        dtype: `"float32"` or `"bfloat16"` (autocast).
        entities: a linking model links these entities (`word_indices`, `label`; e.g. gold ones) instead of the
            predicted ones (`given_entities`).
        threshold, one_value_key: override the checkpoint's `link_threshold` / `link_one_value_key`.

    Returns:
        `{"width", "height", "words_from", "words": [{"text", "box", "pixel_box", "label", "score"}], "entities":
        [...][, "pairs": [...]]}` (`decode_page`, `pair_records`).
    """
    read = read_page(image, page, words, boxes, words_from=words_from, dpi=dpi, ocr_lang=ocr_lang)
    encoded = {**read, **encode_page(processor, read["image"], read["words"], read["boxes"], max_length, stride)}
    result = label_pages(
        model, processor, [encoded], batch_size, dtype=dtype, entities=None if entities is None else [entities],
        threshold=threshold, one_value_key=one_value_key,
    )[0]  # fmt: skip
    return {"width": result.pop("width"), "height": result.pop("height"), "words_from": read["words_from"], **result}
