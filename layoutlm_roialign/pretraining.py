"""Masked visual-language model (MVLM) pre-training on unlabelled pages: the logic behind `scripts/pretrain.py`.

The LayoutLM paper pre-trains its 2-D position embeddings with a masked visual-language model: 15 % of the tokens are
chosen, their text is hidden (80 % `[MASK]`, 10 % a random token, 10 % unchanged) but their boxes are kept, and the
model predicts them from the words and the layout around them. This module does that on a user's own pages:

- `read_pretraining_windows`: the pages of folders, globs, list files, PDFs (text layer), images (OCR) and `datasets`
  datasets, named as the labeller takes them (`labelling.sources`) and read by the labeller's `PageReader` (the one
  page reader: text layer or OCR, the processor's 512-token windows), kept as a `datasets` folder on disk keyed by
  the pages and the reading settings, so that a second epoch, a rerun or a resumed run never re-reads a PDF.
- `DataCollatorForMaskedVisualLanguageModeling`: pads windows and masks them (token or whole-word masking); the
  masked tokens keep their boxes; `[CLS]`, `[SEP]`, `[PAD]` and every other special token are never chosen.
- **What a masked token's visual feature is.** A token's RoI shows its own word, so with the visual branch on the
  pixels would give the masked text away. The collator therefore blanks the boxes of every token to predict in that
  window's page image (filled with white paper, normalized as the image processor does) before the backbone sees
  it, as LayoutLMv2 does for its MVLM: a chosen token's visual feature is then the feature of blank paper at its box.
  It applies to all chosen tokens (the 10 % kept unchanged too), so the blank marks a position to predict but never
  shows its word.
- `run_pretraining`: `Trainer` (one learning rate, warm-up, bf16 where the GPU has it, resumable, `accelerate
  launch`), masked-token accuracy on held-out windows masked once, and an atomic final folder (model, processor,
  code, a model card saying what it was pre-trained on) that `scripts/train.py --text_model` or
  `--model_name_or_path` fine-tunes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, AutoTokenizer, Trainer, TrainingArguments, set_seed

from .checkpoints import FINAL_FOLDER, last_complete_checkpoint, remove_stale_temporary_folders, save_folder_atomically
from .data.encoding import DataCollatorForLayoutLMRoIAlign
from .image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor
from .labelling.reading import WORDS_FROM, PageReader, worker_init
from .labelling.sources import PageSourceArguments, dataset_documents, expand_inputs, load_page_dataset, page_jobs
from .metrics import argmax_logits
from .modeling_layoutlm_roialign import LayoutLMRoIAlignForMaskedLM
from .processing_layoutlm_roialign import IGNORE_INDEX, LayoutLMRoIAlignProcessor

__all__ = [
    "PretrainingArguments",
    "DataCollatorForMaskedVisualLanguageModeling",
    "MaskedTokenAccuracy",
    "blank_fill_value",
    "build_pretraining_model",
    "read_pretraining_windows",
    "run_pretraining",
    "write_pretraining_card",
    "PRETRAIN_SCRIPT_DEFAULTS",
]

logger = logging.getLogger(__name__)

WINDOWS_STATS = "pretraining_windows.json"
# TrainingArguments defaults of the pre-training script: one learning rate with 10 % warm-up (LayoutLM's 5e-5),
# checkpoints and held-out evaluation every 200 steps, so that a killed run resumes from at most 200 steps back.
PRETRAIN_SCRIPT_DEFAULTS = dict(
    learning_rate=5e-5,
    warmup_steps=0.1,
    weight_decay=0.01,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=8,
    num_train_epochs=1,
    eval_strategy="steps",
    eval_steps=200,
    save_strategy="steps",
    save_steps=200,
    logging_steps=20,
    save_total_limit=2,
    report_to="none",
    remove_unused_columns=False,
    train_sampling_strategy="group_by_length",  # windows of similar lengths in a batch: padding costs as much as text
)


@dataclass
class PretrainingArguments(PageSourceArguments):
    """Where the pages come from (`PageSourceArguments`), which model to start from and how to mask (the
    `TrainingArguments` say how to train)."""

    max_pages: int | None = field(
        default=None, metadata={"help": "Read only the first N pages of the sources (in their order)."}
    )
    num_workers: int = field(default=2, metadata={"help": "Processes reading, OCRing and encoding pages."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where the tokenized windows are kept (default <output_dir>/windows); reused when the "
                  "pages and reading settings are the same."},
    )  # fmt: skip
    max_length: int = field(default=512, metadata={"help": "Tokens per window."})
    stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a page."})
    text_model: str | None = field(
        default=None,
        metadata={"help": "Start from this BERT / MiniLM / LayoutLM checkpoint (folder or Hub id) and its tokenizer."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from one of this package's checkpoints (e.g. an earlier MVLM run)."}
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "Without --text_model: a tokenizer folder for a randomly initialized encoder."}
    )
    hidden_size: int | None = field(default=None, metadata={"help": "Encoder size (random encoder only)."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Encoder layers (random encoder only)."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Attention heads (random encoder only)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Feed-forward size (random encoder only)."})
    text_only: bool = field(default=False, metadata={"help": "No visual branch: pre-train text and layout only."})
    backbone: str = field(default="resnet101", metadata={"help": "torchvision backbone (with pixels)."})
    backbone_weights: str | None = field(
        default=None, metadata={"help": "Backbone weights: a torchvision weight name or a state-dict file."}
    )
    image_size: int = field(default=224, metadata={"help": "Side of the square page image the backbone sees."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of the tokens to predict."})
    whole_word_mask: bool = field(default=False, metadata={"help": "Choose whole words (all their sub-tokens)."})
    validation_windows: int = field(
        default=64, metadata={"help": "Windows held out (masked once) for the loss and masked-token accuracy."}
    )

    def __post_init__(self) -> None:
        if not self.inputs and not self.dataset:
            raise ValueError("Give --inputs (folders, globs, list files, files) or --dataset, or both.")
        if self.words_from not in WORDS_FROM:
            raise ValueError(f"--words_from must be one of {WORDS_FROM}, got {self.words_from!r}.")
        if (self.words_column is None) != (self.boxes_column is None):
            raise ValueError("Give --words_column and --boxes_column together (the words and their 0-1000 boxes).")
        if sum(x is not None for x in (self.text_model, self.model_name_or_path, self.tokenizer)) != 1:
            raise ValueError(
                "Give exactly one of --text_model (a BERT/LayoutLM checkpoint), --model_name_or_path (one of this "
                "package's checkpoints) or --tokenizer (a tokenizer folder, for a randomly initialized encoder)."
            )
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if not 0 <= self.stride < self.max_length:
            raise ValueError(f"--stride must be in 0..--max_length - 1 ({self.max_length - 1}), got {self.stride}.")
        if self.max_pages is not None and self.max_pages < 1:
            raise ValueError(f"--max_pages must be positive, got {self.max_pages}.")
        if self.validation_windows < 0:
            raise ValueError(f"--validation_windows must be 0 or more, got {self.validation_windows}.")


def blank_fill_value(image_processor: LayoutLMRoIAlignImageProcessor) -> tuple[float, float, float]:
    """The value of a white pixel in `pixel_values` as `image_processor` makes them (rescaled and normalized)."""
    white = 255.0 * (image_processor.rescale_factor if image_processor.do_rescale else 1.0)
    if not image_processor.do_normalize:
        return (white, white, white)
    return tuple(
        float((white - m) / s) for m, s in zip(image_processor.image_mean, image_processor.image_std, strict=True)
    )


@dataclass
class DataCollatorForMaskedVisualLanguageModeling:
    """Pads windows (`DataCollatorForLayoutLMRoIAlign`) and masks them for MVLM.

    Tokens that may be chosen: attended, not a special token of the tokenizer (`[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`,
    `[MASK]`), and part of a word (`word_ids` >= 0 when the rows have them). Each is chosen with `mlm_probability`
    (or, with `whole_word_mask`, each word, with all of its sub-tokens in the window); a batch gets at least one. A
    chosen token's `labels` is its id (-100 elsewhere); its input becomes `[MASK]` (`mask_replace_prob`), a random
    non-special token (`random_replace_prob`) or stays. Boxes are never changed. With `pixel_values`, the boxes of
    the chosen tokens are filled with `fill_value` (white paper; see the module docstring) in their window's image.

    Rows that already hold `labels` (held-out windows masked once) are only padded.

    Args:
        tokenizer: the model's tokenizer (mask id, special ids, vocabulary size).
        fill_value: per-channel value of a blanked pixel (`blank_fill_value(image_processor)`).
        generator: a `torch.Generator` for the random draws (default: torch's global one, which `Trainer` seeds and
            saves in its checkpoints).
    """

    tokenizer: Any
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    fill_value: Sequence[float] = (0.0, 0.0, 0.0)
    pad_to_multiple_of: int | None = 8
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"`mlm_probability` must be in (0, 1), got {self.mlm_probability}.")
        if (
            self.mask_replace_prob < 0
            or self.random_replace_prob < 0
            or self.mask_replace_prob + self.random_replace_prob > 1
        ):
            raise ValueError(
                "`mask_replace_prob` and `random_replace_prob` must be >= 0 and sum to at most 1 (the rest keep the "
                f"token), got {self.mask_replace_prob} and {self.random_replace_prob}."
            )
        if self.tokenizer.mask_token_id is None:
            raise ValueError("`tokenizer` has no mask token ([MASK]); MVLM needs one.")
        self.special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        self.random_ids = torch.tensor(
            [i for i in range(len(self.tokenizer)) if i not in set(self.special_ids.tolist())], dtype=torch.long
        )
        self.pad = DataCollatorForLayoutLMRoIAlign(
            pad_token_id=self.tokenizer.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of
        )

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad(features)
        if "labels" in batch:
            return batch
        word_ids = None
        if "word_ids" in features[0]:
            word_ids = torch.full(batch["input_ids"].shape, -1, dtype=torch.long)
            for i, f in enumerate(features):
                row = torch.as_tensor(f["word_ids"], dtype=torch.long)
                word_ids[i, : len(row)] = row
        return self.mask(batch, word_ids)

    def candidates(self, batch: dict[str, torch.Tensor], word_ids: torch.Tensor | None) -> torch.Tensor:
        """`(B, L)` bool: the tokens that may be chosen (attended, not special, in a word)."""
        allowed = ~torch.isin(batch["input_ids"], self.special_ids)
        if "attention_mask" in batch:
            allowed &= batch["attention_mask"].bool()
        if word_ids is not None:
            allowed &= word_ids >= 0
        return allowed

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def mask(self, batch: dict[str, torch.Tensor], word_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Choose, label and replace tokens of a padded batch (and blank their boxes in `pixel_values`), in place."""
        input_ids = batch["input_ids"]
        allowed = self.candidates(batch, word_ids)
        if self.whole_word_mask and word_ids is not None:
            words = self._rand(input_ids.shape[0], int(word_ids.max().clamp(min=0)) + 1) < self.mlm_probability
            chosen = allowed & words.gather(1, word_ids.clamp(min=0))
        else:
            chosen = allowed & (self._rand(*input_ids.shape) < self.mlm_probability)
        if not chosen.any() and allowed.any():  # every batch predicts something (an empty loss is NaN)
            where = allowed.nonzero()
            row, column = where[int(torch.randint(len(where), (1,), generator=self.generator))].tolist()
            chosen[row, column] = True
            if self.whole_word_mask and word_ids is not None:
                chosen[row] |= allowed[row] & (word_ids[row] == word_ids[row, column])
        batch["labels"] = input_ids.masked_fill(~chosen, IGNORE_INDEX)
        action = self._rand(*input_ids.shape)
        to_mask = chosen & (action < self.mask_replace_prob)
        to_random = (
            chosen & (action >= self.mask_replace_prob) & (action < self.mask_replace_prob + self.random_replace_prob)
        )
        replaced = input_ids.clone()
        replaced[to_mask] = self.tokenizer.mask_token_id
        picks = torch.randint(len(self.random_ids), (int(to_random.sum()),), generator=self.generator)
        replaced[to_random] = self.random_ids[picks]
        batch["input_ids"] = replaced
        if "pixel_values" in batch:
            batch["pixel_values"] = blank_boxes(batch["pixel_values"], batch["bbox"], chosen, self.fill_value)
        return batch


def blank_boxes(
    pixel_values: torch.Tensor, bbox: torch.Tensor, chosen: torch.Tensor, fill_value: Sequence[float]
) -> torch.Tensor:
    """Fill the 0-1000 boxes of the `chosen` tokens `(B, L)` with `fill_value` in their row's image `(B, 3, H, W)`
    (a copy; every pixel a box touches, so that no part of the word stays)."""
    out = pixel_values.clone()
    height, width = out.shape[-2:]
    fill = torch.as_tensor(fill_value, dtype=out.dtype).view(-1, 1, 1)
    for row in range(out.shape[0]):
        boxes = torch.unique(bbox[row][chosen[row]], dim=0).tolist()  # sub-tokens of a word share its box
        for x0, y0, x1, y1 in boxes:
            left, top = math.floor(x0 * width / 1000), math.floor(y0 * height / 1000)
            right = max(math.ceil(x1 * width / 1000), left + 1)
            bottom = max(math.ceil(y1 * height / 1000), top + 1)
            out[row, :, top:bottom, left:right] = fill
    return out


class MaskedTokenAccuracy:
    """`compute_metrics`: the share of the predicted (masked) tokens whose original id is the argmax."""

    def __call__(self, eval_prediction: Any) -> dict[str, float]:
        predictions = np.asarray(eval_prediction.predictions)
        labels = np.asarray(eval_prediction.label_ids)
        scored = labels != IGNORE_INDEX
        return {"masked_accuracy": float((predictions[scored] == labels[scored]).mean()) if scored.any() else 0.0}


def build_pretraining_model(
    args: PretrainingArguments,
) -> tuple[LayoutLMRoIAlignForMaskedLM, LayoutLMRoIAlignProcessor]:
    """The MVLM model and its processor: one of our checkpoints (`model_name_or_path`; a head is added if it has
    none), a pretrained text encoder (`text_model`, its 2-D position embeddings fresh when it is a BERT), or a random
    encoder of the given sizes with `tokenizer`."""
    if args.model_name_or_path is not None:
        model = LayoutLMRoIAlignForMaskedLM.from_pretrained(args.model_name_or_path)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
        return model, processor
    tokenizer = AutoTokenizer.from_pretrained(args.text_model or args.tokenizer, use_fast=True)
    config: dict[str, Any] = {"backbone": args.backbone, "image_size": args.image_size}
    config["use_visual_features"] = not args.text_only
    sizes = {
        k: getattr(args, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    }
    sizes = {k: v for k, v in sizes.items() if v is not None}
    if args.text_model is not None and sizes:
        raise ValueError(f"--{', --'.join(sizes)} cannot be combined with --text_model (it sets the sizes).")
    if args.text_model is None:
        config.update(sizes, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
        config["max_position_embeddings"] = max(512, args.max_length)
    weights = None if args.text_only else args.backbone_weights
    model = LayoutLMRoIAlignForMaskedLM.from_pretrained_parts(args.text_model, weights, **config)
    processor = LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(size=model.config.image_size), tokenizer)
    return model, processor


def _public_name(entry: str) -> str:
    """How a card names a source: a Hub id as it is, a local path by its base name (never this machine's path)."""
    if os.path.exists(os.path.expanduser(entry)) or os.path.sep in entry:
        return f"{os.path.basename(os.path.normpath(entry))} (local)"
    return entry


def _fingerprint(jobs: list, dataset: Any, processor: LayoutLMRoIAlignProcessor, settings: dict) -> str:
    """What the windows depend on: each page (file, size, modification time), the dataset's fingerprint, the
    tokenizer's vocabulary and the reading settings."""
    digest = hashlib.sha256()
    for job in jobs:
        stat = os.stat(job.source) if job.kind != "dataset" else None
        digest.update(repr((job.source, job.page, stat and stat.st_size, stat and stat.st_mtime_ns)).encode())
    digest.update(str(getattr(dataset, "_fingerprint", None)).encode())
    digest.update(json.dumps(processor.tokenizer.get_vocab(), sort_keys=True).encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _as_is(item: dict) -> dict:
    return item


def read_pretraining_windows(
    args: PretrainingArguments, processor: LayoutLMRoIAlignProcessor, cache_dir: str | os.PathLike, pixels: bool
) -> tuple[Any, dict]:
    """The windows of every page of the sources, from the cache when it holds them, else read and cached.

    Returns:
        `(windows, stats)`: a `datasets.Dataset` with one row per window (`input_ids`, `bbox`, `attention_mask`,
        `token_type_ids`, `word_ids` (-1 for special tokens), `page` and, with `pixels`, the page's `pixel_values`
        in float16) and what was read (`documents`, `pages`, `pages_with_words`, `failed_pages`, `windows`,
        `tokens`, `words`, `seconds`, `sources`, `cached`).
    """
    import datasets

    jobs, failures = [], []
    if args.inputs:
        jobs, failures = page_jobs(expand_inputs(args.inputs))
    pages = None
    if args.dataset:
        pages = load_page_dataset(args.dataset, args.split, args.image_column)
        for name, column in (("--words_column", args.words_column), ("--boxes_column", args.boxes_column)):
            if column is not None and column not in pages.column_names:
                raise ValueError(
                    f"{name} {column!r}: --dataset {args.dataset!r} has the columns {pages.column_names}."
                )
        jobs += dataset_documents(args.dataset, args.split, len(pages))
    if args.max_pages is not None:
        jobs = jobs[: args.max_pages]
    if not jobs:
        raise ValueError("The sources hold no readable page (see the failures above, or check --inputs / --dataset).")
    settings = {
        "words_from": args.words_from, "ocr_lang": args.ocr_lang, "dpi": args.dpi, "max_length": args.max_length,
        "stride": args.stride, "image_size": processor.image_processor.size, "pixels": pixels,
        "columns": [args.image_column, args.words_column, args.boxes_column],
    }  # fmt: skip
    folder = Path(cache_dir) / _fingerprint(jobs, pages, processor, settings)
    if (folder / WINDOWS_STATS).is_file():
        stats = json.loads((folder / WINDOWS_STATS).read_text())
        logger.info(f"Reusing the {stats['windows']} windows of {stats['pages']} pages cached in {folder}")
        return datasets.load_from_disk(str(folder)), {**stats, "cached": True}

    from tqdm.auto import tqdm

    reader = PageReader(
        jobs,
        processor,
        words_from=args.words_from,
        max_length=args.max_length,
        stride=args.stride,
        ocr_lang=args.ocr_lang,
        dpi=args.dpi,
        dataset=pages,
        image_column=args.image_column,
        words_column=args.words_column,
        boxes_column=args.boxes_column,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer ran
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=None,
        num_workers=args.num_workers,
        collate_fn=_as_is,
        worker_init_fn=worker_init if args.num_workers else None,
    )
    size = processor.image_processor.size
    features = {
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "bbox": datasets.Sequence(datasets.Sequence(datasets.Value("int16"), length=4)),
        "attention_mask": datasets.Sequence(datasets.Value("int8")),
        "token_type_ids": datasets.Sequence(datasets.Value("int8")),
        "word_ids": datasets.Sequence(datasets.Value("int32")),
        "page": datasets.Value("int32"),
    }
    if pixels:
        features["pixel_values"] = datasets.Array3D(shape=(3, size, size), dtype="float16")
    features = datasets.Features(features)
    stats = {"documents": len({j.source for j in jobs}), "pages": len(jobs), "pages_with_words": 0, "words": 0}
    stats.update(failed_pages=len(failures), windows=0, tokens=0, failures=[f["error"] for f in failures][:20])
    rows: dict[str, list] = {name: [] for name in features}
    parts, start = [], time.perf_counter()
    tmp = folder.parent / f".{folder.name}.parts-{os.getpid()}"

    def flush() -> None:
        if rows["page"]:
            part = datasets.Dataset.from_dict(rows, features=features)
            part.save_to_disk(str(tmp / f"part-{len(parts):05d}"))
            parts.append(datasets.load_from_disk(str(tmp / f"part-{len(parts):05d}")))
            for values in rows.values():
                values.clear()

    for index, item in enumerate(tqdm(loader, total=len(jobs), unit="page", desc="reading pages", dynamic_ncols=True)):
        if "error" in item:
            stats["failed_pages"] += 1
            if len(stats["failures"]) < 20:
                stats["failures"].append(f"{item['source']} page {item['page']}: {item['error']}")
            continue
        if item["windows"] is None:
            continue
        stats["pages_with_words"] += 1
        stats["words"] += len(item["words"])
        windows = item["windows"]
        for w in range(len(windows["input_ids"])):
            length = int(windows["attention_mask"][w].sum())
            rows["input_ids"].append(windows["input_ids"][w, :length].tolist())
            rows["bbox"].append(windows["bbox"][w, :length].tolist())
            rows["attention_mask"].append([1] * length)
            rows["token_type_ids"].append(windows["token_type_ids"][w, :length].tolist())
            rows["word_ids"].append([-1 if i is None else i for i in item["word_ids"][w][:length]])
            rows["page"].append(index)
            if pixels:
                rows["pixel_values"].append(item["pixel_values"].to(torch.float16).numpy())
            stats["windows"] += 1
            stats["tokens"] += length
        if len(rows["page"]) >= (256 if pixels else 4096):
            flush()
    flush()
    stats["seconds"] = round(time.perf_counter() - start, 1)
    stats["sources"] = [_public_name(e) for e in args.inputs] + ([_public_name(args.dataset)] if args.dataset else [])
    if not parts:
        raise ValueError(
            f"None of the {len(jobs)} pages gave any words (--words_from {args.words_from}); failures: "
            f"{stats['failures'][:3]}"
        )

    def write(out: Path) -> None:
        datasets.concatenate_datasets(parts).save_to_disk(str(out))
        (out / WINDOWS_STATS).write_text(json.dumps(stats, indent=2))

    save_folder_atomically(folder, write)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        f"Read {stats['pages']} pages ({stats['pages_with_words']} with words, {stats['failed_pages']} failed) in "
        f"{stats['seconds']} s: {stats['windows']} windows, {stats['tokens']} tokens, cached in {folder}"
    )
    return datasets.load_from_disk(str(folder)), {**stats, "cached": False}


def _premask(windows: Any, collator: DataCollatorForMaskedVisualLanguageModeling, seed: int) -> Any:
    """Held-out windows masked once (a fixed `seed`), so every evaluation scores the same positions."""
    masker = DataCollatorForMaskedVisualLanguageModeling(
        **{**_fields(collator), "generator": torch.Generator().manual_seed(seed)}
    )

    def mask_one(row: dict) -> dict:
        batch = masker([row])
        length = len(row["input_ids"])
        out = {"input_ids": batch["input_ids"][0, :length].tolist(), "labels": batch["labels"][0, :length].tolist()}
        if "pixel_values" in batch:
            out["pixel_values"] = batch["pixel_values"][0].to(torch.float16).numpy()
        return out

    return windows.map(mask_one, desc="masking the held-out windows", keep_in_memory=True)


def _fields(collator: DataCollatorForMaskedVisualLanguageModeling) -> dict:
    names = ("tokenizer", "mlm_probability", "whole_word_mask", "mask_replace_prob", "random_replace_prob")
    return {**{n: getattr(collator, n) for n in names}, "fill_value": collator.fill_value}


def write_pretraining_card(folder: str | os.PathLike, summary: dict) -> Path:
    """`<folder>/README.md`: what the checkpoint was pre-trained on (sources, pages, windows, tokens), how
    (steps, epochs, learning rate, masking, pixels), how it ended (held-out MVLM loss and masked-token accuracy),
    and how to fine-tune it."""
    data, train = summary["data"], summary["training"]
    rows = [
        ("sources", ", ".join(data["sources"])),
        ("documents / pages read / pages with words / failed", f"{data['documents']} / {data['pages']} / "
         f"{data['pages_with_words']} / {data['failed_pages']}"),
        ("words / windows / tokens", f"{data['words']} / {data['windows']} / {data['tokens']}"),
        ("held-out windows", summary["validation_windows"]),
        ("text encoder started from", summary["started_from"]),
        ("visual branch", summary["visual"]),
        ("masking", summary["masking"]),
        ("steps / epochs", f"{train['global_step']} / {train['epochs']:.2f}"),
        ("batch size (all processes) / learning rate / warm-up", f"{train['total_batch_size']} / "
         f"{train['learning_rate']} / {train['warmup_steps']}"),
        ("windows seen / train time (wall, CPU)", f"{train['windows_seen']} / {train['train_seconds']:.0f} s, "
         f"{train['train_cpu_seconds']:.0f} s"),
        ("throughput", f"{train['windows_per_second']:.2f} windows/s"),
        ("held-out MVLM loss / masked-token accuracy (first -> last evaluation)", summary["curve"]),
    ]  # fmt: skip
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = f"""---
library_name: transformers
tags:
- layoutlm
- masked-lm
- document-ai
- remote-code
pipeline_tag: fill-mask
---

# LayoutLM-RoIAlign pre-trained with a masked visual-language model

A `LayoutLMRoIAlignForMaskedLM` checkpoint: LayoutLM (text + 2-D positions){" + RoIAlign image features" if summary["visual"] != "off" else ""}
with a masked-LM head, pre-trained on unlabelled pages with MVLM (the LayoutLM paper's objective: masked words
keep their boxes and are predicted from the text and layout around them).

## Pre-trained on

| | |
|---|---|
{table}

## Use

Fine-tune it like a text encoder: `python scripts/train.py --text_model <this folder> ...` (its text encoder, 2-D
position embeddings included), or `--model_name_or_path <this folder>` (the whole model, visual branch included;
the task head starts fresh). Without the package: `AutoModelForMaskedLM.from_pretrained(folder,
trust_remote_code=True)`. The pages' own licences apply to what this model learned from them.
"""
    path = Path(folder) / "README.md"
    path.write_text(text)
    return path


def run_pretraining(args: PretrainingArguments, training_args: TrainingArguments, callbacks: Sequence = ()) -> dict:
    """Read (or reuse) the windows, pre-train with MVLM and write `<output_dir>/final` (model, processor, code,
    model card, `pretraining_results.json`). `--resume_from_checkpoint true` continues from the last complete
    checkpoint of `output_dir`. Returns the summary written to `<output_dir>/pretraining_results.json`."""
    output_dir = Path(training_args.output_dir)
    if training_args.should_save:
        remove_stale_temporary_folders(output_dir / FINAL_FOLDER)
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = last_complete_checkpoint(output_dir)
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint: no complete checkpoint in {output_dir}.")
    elif isinstance(resume, str) and not os.path.isfile(os.path.join(resume, "trainer_state.json")):
        raise ValueError(f"--resume_from_checkpoint {resume!r} is not a complete Trainer checkpoint folder.")

    set_seed(training_args.seed)
    model, processor = build_pretraining_model(args)
    model.config.mlm_sparse_prediction = True  # the vocabulary decoder on the predicted tokens only, in training
    pixels = bool(model.config.use_visual_features)
    cache_dir = args.cache_dir or str(output_dir / "windows")
    with training_args.main_process_first(desc="reading pages"):
        windows, data_stats = read_pretraining_windows(args, processor, cache_dir, pixels)
    collator = DataCollatorForMaskedVisualLanguageModeling(
        processor.tokenizer,
        mlm_probability=args.mlm_probability,
        whole_word_mask=args.whole_word_mask,
        fill_value=blank_fill_value(processor.image_processor),
    )
    held_out = min(args.validation_windows, len(windows) // 10)
    eval_set = None
    if held_out:
        split = windows.train_test_split(test_size=held_out, seed=0)
        windows, eval_set = split["train"], _premask(split["test"], collator, seed=0)
    else:
        training_args.eval_strategy = "no"
    if windows.num_rows == 0:
        raise ValueError("No training windows are left after holding out --validation_windows; read more pages.")
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=windows,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=processor,
        compute_metrics=MaskedTokenAccuracy() if eval_set is not None else None,
        preprocess_logits_for_metrics=argmax_logits if eval_set is not None else None,
        callbacks=list(callbacks),
    )
    # The curve's step 0, the loss and accuracy before pre-training (kept beside the checkpoints for a resumed run).
    before, before_path = None, output_dir / "eval_before_pretraining.json"
    if eval_set is not None and resume is None:
        before = trainer.evaluate()
        if trainer.is_world_process_zero():
            before_path.write_text(json.dumps(before))
    elif before_path.is_file():
        before = json.loads(before_path.read_text())
    start, cpu_start = time.perf_counter(), time.process_time()
    train_result = trainer.train(resume_from_checkpoint=resume)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    history = trainer.state.log_history
    if eval_set is not None and not any(
        h.get("step") == trainer.state.global_step and "eval_loss" in h for h in history
    ):
        trainer.evaluate()
    eval_metrics = next((h for h in reversed(history) if "eval_loss" in h), {})
    points = {  # by step: the final evaluation repeats the last step's when that step was evaluated
        h["step"]: {"step": h["step"], "loss": h["eval_loss"], "masked_accuracy": h.get("eval_masked_accuracy")}
        for h in ([{**before, "step": 0}] if before else []) + history
        if "eval_loss" in h
    }
    curve = [points[step] for step in sorted(points)]
    train_curve = [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h]
    total_batch = training_args.per_device_train_batch_size * training_args.world_size
    total_batch *= training_args.gradient_accumulation_steps
    steps = trainer.state.global_step
    started_from = _public_name(args.text_model or args.model_name_or_path or "")
    if args.tokenizer is not None:
        started_from = f"random init (tokenizer {_public_name(args.tokenizer)})"
    summary = {
        "data": {k: v for k, v in data_stats.items() if k != "failures"},
        "failures": data_stats.get("failures", []),
        "validation_windows": held_out,
        "started_from": started_from,
        "visual": f"{model.config.backbone} ({model.config.backbone_weights or 'random init'})" if pixels else "off",
        "masking": f"{args.mlm_probability:.0%} of the tokens{' (whole words)' if args.whole_word_mask else ''}, "
        "80 % [MASK] / 10 % random / 10 % kept, boxes kept"
        + (", chosen boxes blanked in the page image" if pixels else ""),
        "training": {
            "resumed_from": os.path.basename(resume) if resume else None,
            "global_step": steps,
            "epochs": float(trainer.state.epoch or 0.0),
            "total_batch_size": total_batch,
            "learning_rate": training_args.learning_rate,
            "warmup_steps": training_args.warmup_steps,
            "windows_seen": steps * total_batch,
            "train_seconds": seconds,
            "train_cpu_seconds": cpu_seconds,  # this process's CPU time (all its threads) while training
            "train_metrics": train_result.metrics,
            "windows_per_second": train_result.metrics.get("train_samples_per_second", 0.0),
        },
        "eval": eval_metrics,
        "eval_curve": curve,
        "train_curve": train_curve,
        "arguments": {k: v for k, v in asdict(args).items()},
    }
    if curve:
        first, last = curve[0], curve[-1]
        summary["curve"] = (
            f"{first['loss']:.3f} / {first['masked_accuracy']:.3f} at step {first['step']} -> "
            f"{last['loss']:.3f} / {last['masked_accuracy']:.3f} at step {last['step']}"
        )
    else:
        summary["curve"] = "not evaluated (no held-out windows)"
    final_dir = output_dir / FINAL_FOLDER
    summary["final_dir"] = str(final_dir)
    if trainer.is_world_process_zero():

        def write(folder: Path) -> None:
            trainer.save_model(str(folder))  # model (+ code, auto_map) and processor (+ code)
            write_pretraining_card(folder, summary)
            (folder / "pretraining_results.json").write_text(json.dumps(summary, indent=2, default=str))

        save_folder_atomically(final_dir, write)
        (output_dir / "pretraining_results.json").write_text(json.dumps(summary, indent=2, default=str))
        logger.info(f"Saved the pre-trained model, processor, code and model card to {final_dir}")
    return summary
