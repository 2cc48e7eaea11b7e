"""Predict the entities of a page and draw them: the logic behind `scripts/predict.py`.

`load_model_and_processor` loads a checkpoint folder or Hub id, saying which path is missing or which file is
damaged. `predict_page` runs a token-classification checkpoint over a page (words and 0-1000 boxes given, or read by
OCR), splitting long pages into overlapping windows (`predict_windows`, the one window loop of the package) and
reading each word once (its first sub-token, in the window where it has the most context:
`merge_window_predictions`); `encode_page` and `decode_page` are its two ends, shared with the batch labeller
(`layoutlm_roialign.labelling`). It returns every word with its box, label and score, and the entities: runs of words
joined by the BIO labels. `draw_entities` draws each entity's box in its label's colour on the page, with a legend.
`load_words_json` reads a `--words` file.
"""

from __future__ import annotations

import colorsys
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

from .image_processing_layoutlm_roialign import normalize_box
from .pages import load_page, page_to_rgb_image
from .processing_layoutlm_roialign import box_problem, merge_window_predictions

__all__ = [
    "load_model_and_processor",
    "predict_page",
    "encode_page",
    "decode_page",
    "predict_windows",
    "takes_image_index",
    "group_entities",
    "draw_entities",
    "label_colours",
    "load_words_json",
]

# Colours of FUNSD's entity types; other types get evenly spaced hues.
KNOWN_COLOURS = {"QUESTION": (31, 119, 180), "ANSWER": (44, 160, 44), "HEADER": (214, 39, 40), "O": (150, 150, 150)}
# A pixel box may cross the page edge by this fraction of the page side (at least `BOX_TOLERANCE_PX` pixels) before
# `load_words_json` refuses it: OCR and annotation boxes often overshoot by a few pixels, while boxes measured on a
# different size of the image overshoot by far more.
BOX_TOLERANCE = 0.02
BOX_TOLERANCE_PX = 2.0


def load_model_and_processor(
    model: str | os.PathLike, trust_remote_code: bool = False, *, task: str = "token-classification"
) -> tuple[Any, Any]:
    """Load a checkpoint (a folder written by `save_pretrained` or a Hub id) and its processor.

    Args:
        model: the folder or Hub id (`user/name`).
        trust_remote_code: run the checkpoint's own code (needed where this package is not installed).
        task: `"token-classification"` (the model with its head) or `"feature-extraction"` (the bare model).

    Raises:
        ValueError: naming `--model` and the path, when a local path does not exist (rather than a message about
            reaching huggingface.co), the folder holds no saved model, or a weights file is damaged or incomplete.
    """
    from transformers import AutoModel, AutoModelForTokenClassification, AutoProcessor

    classes = {"token-classification": AutoModelForTokenClassification, "feature-extraction": AutoModel}
    if task not in classes:
        raise ValueError(f"`task` must be one of {sorted(classes)}, got {task!r}.")
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
        net = classes[task].from_pretrained(model, trust_remote_code=trust_remote_code)
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


@torch.inference_mode()
def predict_windows(
    model: torch.nn.Module,
    windows: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    input_names: Sequence[str],
    batch_size: int = 8,
    collate: Callable[[list], Mapping[str, torch.Tensor]] | None = None,
) -> list[torch.Tensor]:
    """Run a token-classification model over windows, `batch_size` at a time: the one window loop of the package
    (`predict_page`, the evaluation and the experiments all call it).

    Args:
        model: the model (any device; put in eval mode here).
        windows: a padded encoding (name -> tensor with one row per window, e.g. the processor's output with
            `return_tensors="pt"`), or a list of per-window dicts that `collate` pads into one batch. An encoding
            may hold one image per page in `pixel_values` and each window's page in `image_index`: each batch then
            passes the images of its windows' pages, once each.
        input_names: the model inputs to pass (`processor.model_input_names`); other keys are ignored.
        batch_size: windows per forward pass.
        collate: pads a list of windows into a batch of tensors; required for a list of windows.

    Returns:
        One float32 CPU tensor of logits `(length, num_labels)` per window, cut to the window's own length (its
        `attention_mask` sum for an encoding, the length of its `input_ids` for a list of windows).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int (windows per forward pass), got {batch_size!r}.")
    model.eval()
    device = next(model.parameters()).device
    padded = isinstance(windows, Mapping)
    if not padded and collate is None:
        raise ValueError("`collate` is required to batch a list of windows (or pass a padded encoding).")
    num_windows = len(windows["input_ids"]) if padded else len(windows)
    out: list[torch.Tensor] = []
    for start in range(0, num_windows, batch_size):
        stop = min(start + batch_size, num_windows)
        if padded:
            batch = {k: windows[k][start:stop] for k in input_names if k in windows}
            if "image_index" in windows:  # one image per page: the pages of these windows, once each
                pages, image_index = windows["image_index"][start:stop].unique(return_inverse=True)
                batch.update(pixel_values=windows["pixel_values"][pages], image_index=image_index)
            if "attention_mask" in windows:  # right padding: a window's length is its mask's sum
                lengths = [int(n) for n in windows["attention_mask"][start:stop].sum(-1)]
            else:
                lengths = [windows["input_ids"].shape[1]] * (stop - start)
        else:
            rows = [windows[i] for i in range(start, stop)]
            batch = {k: v for k, v in collate(rows).items() if k in input_names}
            lengths = [len(row["input_ids"]) for row in rows]
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()  # (B, L, num_labels)
        out.extend(logits[i, :n] for i, n in enumerate(lengths))
    return out


def takes_image_index(model: torch.nn.Module) -> bool:
    """Whether the model reads one image per page through `image_index`: not a text-only model, nor a checkpoint
    whose remote code predates it (that one needs the page's image repeated per window)."""
    uses_pixels = getattr(model.config, "use_visual_features", True)
    return uses_pixels and "image_index" in inspect.signature(model.forward).parameters


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
) -> dict:
    """Label the words of one page.

    Args:
        model: a LayoutLM-RoIAlign token-classification model (any device; put in eval mode here).
        processor: its processor.
        image: the page (anything `pages.load_page` takes: a path, PIL image, numpy array).
        words, boxes: the page's words and their 0-1000 boxes; both `None` to OCR the page with Tesseract.
        max_length, stride: window size and overlap in tokens for pages longer than one window.
        batch_size: windows per forward pass.
        ocr_lang: Tesseract language for OCR.

    Returns:
        `{"width", "height", "words": [{"text", "box", "pixel_box", "label", "score"}], "entities": [...]}`; `box` is
        on the 0-1000 grid, `pixel_box` in page pixels, `score` the softmax probability of the label; entities are
        described in `group_entities`.
    """
    if (words is None) != (boxes is None):
        raise ValueError("Give both `words` and `boxes` (0-1000), or neither to OCR the page.")
    page = load_page(image)  # in its own mode: the image processor converts 16-bit and transparent pages correctly
    width, height = page.size
    if words is None:
        ocr = processor.image_processor(page, apply_ocr=True, ocr_lang=ocr_lang)
        words, boxes = list(ocr["words"][0]), [list(b) for b in ocr["boxes"][0]]
    words, boxes = list(words), [[int(round(v)) for v in box] for box in boxes]
    if not words:
        return decode_page([], [], [], [], width, height, model.config.id2label)
    encoding = encode_page(processor, page, words, boxes, max_length, stride)
    if "pixel_values" in encoding and takes_image_index(model):
        # The windows share the page: one image and one backbone run per batch, not one per window (checkpoints
        # whose code predates `image_index` get the image repeated per window, as the processor gives it).
        encoding["pixel_values"] = encoding["pixel_values"][:1]
        encoding["image_index"] = torch.zeros(len(encoding["input_ids"]), dtype=torch.long)
    logits = predict_windows(model, encoding, processor.model_input_names, batch_size)
    word_ids = [encoding.word_ids(i) for i in range(len(logits))]
    return decode_page(words, boxes, word_ids, logits, width, height, model.config.id2label)


def encode_page(
    processor: Any,
    page: Any,
    words: Sequence[str],
    boxes: Sequence[Sequence[int]],
    max_length: int = 512,
    stride: int = 128,
) -> Any:
    """One page's words (non-empty) and 0-1000 boxes -> its windows: a padded `BatchEncoding` of `return_tensors="pt"`,
    one row per window of `max_length` tokens overlapping by `stride`, each with the page's `pixel_values`."""
    return processor(
        page,
        list(words),
        [list(box) for box in boxes],
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        padding="longest",
        return_tensors="pt",
    )


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
    softmax probability there (`predict_page`'s result; the batch labeller decodes with it too).

    Args:
        words, boxes: the page's words and 0-1000 boxes.
        word_ids_per_window: `encoding.word_ids(i)` of each window of the page.
        logits_per_window: each window's logits `(length, num_labels)`, cut to its length or not.
        width, height: the page's size in pixels, for `pixel_box`.
        id2label: the model's label names.
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


def label_colours(labels: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """One distinct RGB colour per entity type (FUNSD's types keep fixed colours)."""
    types = sorted({label.split("-", 1)[-1] for label in labels if label != "O"})
    others = [t for t in types if t not in KNOWN_COLOURS]
    colours = {t: KNOWN_COLOURS[t] for t in types if t in KNOWN_COLOURS}
    for i, t in enumerate(others):
        r, g, b = colorsys.hsv_to_rgb((0.1 + i / max(1, len(others))) % 1.0, 0.85, 0.85)
        colours[t] = (int(r * 255), int(g * 255), int(b * 255))
    return colours


def draw_entities(
    image: Any, prediction: dict, labels: Sequence[str] | None = None, line_width: int | None = None
) -> PIL.Image.Image:
    """Draw each entity's box in its type's colour on the page, with a legend panel on the right.

    Args:
        image: the page (anything `pages.load_page` takes).
        prediction: `predict_page` output.
        labels: every label of the model (so the legend lists every type, found or not); default: the types found.
        line_width: box outline width in pixels (default: scaled to the page).
    """
    page = page_to_rgb_image(image)
    width, height = page.size
    types = labels if labels is not None else [e["label"] for e in prediction["entities"]]
    colours = label_colours(list(types))
    line_width = line_width or max(2, round(min(width, height) / 400))
    font = PIL.ImageFont.load_default(size=max(12, height // 60))

    legend_rows = sorted(colours)
    row_height = font.size + 10
    text_width = max([round(font.getlength(f"{t} (00)")) for t in legend_rows] + [round(font.getlength("Legend"))])
    panel = text_width + 3 * row_height
    canvas = PIL.Image.new("RGB", (width + panel, max(height, (len(legend_rows) + 2) * row_height)), "white")
    canvas.paste(page, (0, 0))
    draw = PIL.ImageDraw.Draw(canvas)
    counts = {t: 0 for t in colours}
    for entity in prediction["entities"]:
        colour = colours.get(entity["label"], (0, 0, 0))
        counts[entity["label"]] = counts.get(entity["label"], 0) + 1
        x0, y0, x1, y1 = entity.get("pixel_box") or [
            entity["box"][0] * width / 1000,
            entity["box"][1] * height / 1000,
            entity["box"][2] * width / 1000,
            entity["box"][3] * height / 1000,
        ]
        draw.rectangle([x0 - 2, y0 - 2, x1 + 2, y1 + 2], outline=colour, width=line_width)

    x = width + row_height // 2
    draw.text((x, row_height // 2), "Legend", fill="black", font=font)
    for i, name in enumerate(legend_rows, start=1):
        y = row_height // 2 + i * row_height
        draw.rectangle([x, y, x + row_height - 8, y + row_height - 8], fill=colours[name], outline="black")
        draw.text((x + row_height, y), f"{name} ({counts.get(name, 0)})", fill="black", font=font)
    return canvas


def load_words_json(path: str, width: int, height: int, clamp: bool = False) -> tuple[list[str], list[list[int]]]:
    """Read a `--words` file: `{"words": [...], "boxes": [...]}` (0-1000 boxes) or `{"words": [...],
    "pixel_boxes": [...]}` (page pixels, normalized here with the page's `width` and `height`).

    A pixel box may cross the page edge by `BOX_TOLERANCE` of the page side (at least `BOX_TOLERANCE_PX` pixels) and
    is then clamped to it; a box past that, or a 0-1000 box outside 0..1000, is an error (boxes measured on another
    size of the image would otherwise be pinned to the page edge), unless `clamp` is set.

    Raises:
        ValueError: naming the file, the field and the word, for unreadable JSON, a missing field, `words` that are
            not a list of non-empty strings, boxes that are not 4 numbers or are inverted, lengths that differ, and
            boxes that do not fit the page.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as err:
        raise ValueError(f"--words {path}: cannot read the file ({err.strerror or err}).") from err
    except ValueError as err:
        raise ValueError(f"--words {path}: not valid JSON ({err}).") from err
    if not isinstance(data, dict) or "words" not in data or ("boxes" in data) == ("pixel_boxes" in data):
        raise ValueError(
            f"--words {path}: expected a JSON object with `words` and either `boxes` (0-1000) or `pixel_boxes`."
        )
    field = "pixel_boxes" if "pixel_boxes" in data else "boxes"
    words, boxes = data["words"], data[field]
    for name, values in (("words", words), (field, boxes)):
        if not isinstance(values, list):
            raise ValueError(
                f"--words {path}: `{name}` must be a list, one entry per word; got {type(values).__name__}."
            )
    if len(boxes) != len(words):
        raise ValueError(f"--words {path}: {len(words)} `words` but {len(boxes)} `{field}`: give one box per word.")
    for i, word in enumerate(words):
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"--words {path}: `words`[{i}] is {word!r}; every word must be a non-empty string.")
    for i, box in enumerate(boxes):
        problem = box_problem(box)
        if problem:
            raise ValueError(f"--words {path}: `{field}`[{i}] (word {i}, {words[i]!r}): {problem}.")
    if field == "boxes":
        limits, unit = (1000, 1000, 0.0, 0.0), "the 0-1000 grid"
    else:
        tolerance = (max(BOX_TOLERANCE_PX, BOX_TOLERANCE * width), max(BOX_TOLERANCE_PX, BOX_TOLERANCE * height))
        limits, unit = (width, height, *tolerance), f"the {width} x {height} page"
    if not clamp:
        _check_boxes_fit(path, field, words, boxes, *limits, unit)
    if field == "pixel_boxes":
        boxes = [normalize_box(box, width, height) for box in boxes]  # clamps to the page
    return list(words), [[min(1000, max(0, int(round(v)))) for v in box] for box in boxes]


def _check_boxes_fit(
    path: str, field: str, words: list, boxes: list, width: float, height: float, tol_x: float, tol_y: float, unit: str
) -> None:
    def outside(box: list) -> bool:
        x0, y0, x1, y1 = box
        return x0 < -tol_x or y0 < -tol_y or x1 > width + tol_x or y1 > height + tol_y

    bad = [i for i, box in enumerate(boxes) if outside(box)]
    if not bad:
        return
    i = bad[0]
    slack = f" (by more than {tol_x:g} x {tol_y:g} px)" if field == "pixel_boxes" else ""
    more = f" {len(bad) - 1} more of the {len(words)} words do too." if len(bad) > 1 else ""
    hint = (
        "Were the boxes measured on another size of this image? Give boxes of this image's pixels"
        if field == "pixel_boxes"
        else "Give boxes on the 0-1000 grid (or page pixels under `pixel_boxes`)"
    )
    raise ValueError(
        f"--words {path}: word {i} ({words[i]!r}) has `{field}` {boxes[i]} outside {unit}{slack}.{more} {hint}, "
        "or pass --clamp_boxes (`clamp=True`) to pin them to the page edge."
    )
