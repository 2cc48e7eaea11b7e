"""The windows MVLM trains on: every page of the sources read by the labeller's page reader (text layer or OCR, the
processor's windows) and kept as a `datasets` folder on disk, keyed by the pages and the reading settings, so that a
second epoch, a rerun or a resumed run never re-reads a PDF."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import save_folder_atomically
from ..data.encoding import TOKEN_COLUMNS
from ..labelling.reading import PageReader, worker_init
from ..labelling.sources import dataset_documents, expand_inputs, load_page_dataset, page_jobs
from ..labelstudio import labelstudio_options
from ..processing_layoutlm_roialign import LayoutLMRoIAlignProcessor
from ..windowing_layoutlm_roialign import WINDOW_INPUTS
from .arguments import PretrainingArguments

__all__ = ["WINDOWS_STATS", "public_name", "read_pretraining_windows"]

logger = logging.getLogger(__name__)

WINDOWS_STATS = "pretraining_windows.json"


def public_name(entry: str) -> str:
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

    jobs, failures, pages = _page_jobs(args)
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
    stats = _read_and_cache(args, processor, jobs, failures, pages, folder, pixels)
    return datasets.load_from_disk(str(folder)), {**stats, "cached": False}


def _page_jobs(args: PretrainingArguments) -> tuple[list, list[dict], Any]:
    """The pages of `--inputs` and `--dataset` (at most `--max_pages`), the inputs that failed to open, and the
    dataset (`None` without `--dataset`)."""
    jobs, failures = [], []
    if args.inputs:
        jobs, failures = page_jobs(expand_inputs(args.inputs))
    pages = None
    if args.dataset:
        pages = load_page_dataset(args.dataset, args.split, args.image_column, **labelstudio_options(args))
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
    return jobs, failures, pages


def _read_and_cache(
    args: PretrainingArguments, processor: LayoutLMRoIAlignProcessor, jobs: list, failures: list[dict], pages: Any,
    folder: Path, pixels: bool,
) -> dict:  # fmt: skip
    """Read every page of `jobs` (in `--num_workers` processes), write their windows to `folder` (atomically) and
    return what was read."""
    from tqdm.auto import tqdm

    reader = PageReader(
        jobs, processor, words_from=args.words_from, max_length=args.max_length, stride=args.stride,
        ocr_lang=args.ocr_lang, dpi=args.dpi, dataset=pages, image_column=args.image_column,
        words_column=args.words_column, boxes_column=args.boxes_column,
    )  # fmt: skip
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer ran
    loader = torch.utils.data.DataLoader(
        reader, batch_size=None, num_workers=args.num_workers, collate_fn=_as_is,
        worker_init_fn=worker_init if args.num_workers else None,
    )  # fmt: skip
    stats = {"documents": len({j.source for j in jobs}), "pages": len(jobs), "pages_with_words": 0, "words": 0}
    stats.update(failed_pages=len(failures), windows=0, tokens=0, failures=[f["error"] for f in failures][:20])
    parts = _WindowParts(folder.parent / f".{folder.name}.parts-{os.getpid()}", processor.image_processor.size, pixels)
    start = time.perf_counter()
    for index, item in enumerate(tqdm(loader, total=len(jobs), unit="page", desc="reading pages", dynamic_ncols=True)):
        if "error" in item:
            stats["failed_pages"] += 1
            if len(stats["failures"]) < 20:
                stats["failures"].append(f"{item['source']} page {item['page']}: {item['error']}")
        elif item["windows"] is not None:
            stats["pages_with_words"] += 1
            stats["words"] += len(item["words"])
            stats["windows"] += len(item["windows"]["input_ids"])
            stats["tokens"] += parts.add(item, index)
    parts.flush()
    stats["seconds"] = round(time.perf_counter() - start, 1)
    stats["sources"] = [public_name(e) for e in args.inputs] + ([public_name(args.dataset)] if args.dataset else [])
    if not parts.parts:
        raise ValueError(
            f"None of the {len(jobs)} pages gave any words (--words_from {args.words_from}); failures: "
            f"{stats['failures'][:3]}"
        )
    parts.save(folder, stats)
    logger.info(
        f"Read {stats['pages']} pages ({stats['pages_with_words']} with words, {stats['failed_pages']} failed) in "
        f"{stats['seconds']} s: {stats['windows']} windows, {stats['tokens']} tokens, cached in {folder}"
    )
    return stats


class _WindowParts:
    """Windows gathered in memory and written as `datasets` parts under `folder` every few hundred windows, then
    joined into the cache: the rows the model reads (`WINDOW_INPUTS`), `word_ids`, `page` and, with `pixels`, the
    page's `pixel_values` in float16."""

    def __init__(self, folder: Path, image_size: int, pixels: bool) -> None:
        import datasets

        features = {name: TOKEN_COLUMNS[name] for name in WINDOW_INPUTS}
        features.update(word_ids=datasets.Sequence(datasets.Value("int32")), page=datasets.Value("int32"))
        if pixels:
            features["pixel_values"] = datasets.Array3D(shape=(3, image_size, image_size), dtype="float16")
        self.features = datasets.Features(features)
        self.folder, self.pixels, self.every = folder, pixels, 256 if pixels else 4096
        self.rows: dict[str, list] = {name: [] for name in features}
        self.parts: list = []

    def add(self, item: dict, index: int) -> int:
        """Add the windows of one read page (`PageReader`'s item, page number `index`); returns their tokens."""
        windows, tokens = item["windows"], 0
        for w in range(len(windows["input_ids"])):
            length = int(windows["attention_mask"][w].sum())  # the windows are padded on the right
            for name in WINDOW_INPUTS:
                self.rows[name].append(windows[name][w, :length].tolist())
            self.rows["word_ids"].append([-1 if i is None else i for i in item["word_ids"][w][:length]])
            self.rows["page"].append(index)
            if self.pixels:
                self.rows["pixel_values"].append(item["pixel_values"].to(torch.float16).numpy())
            tokens += length
        if len(self.rows["page"]) >= self.every:
            self.flush()
        return tokens

    def flush(self) -> None:
        """Write the windows held in memory as one part."""
        import datasets

        if self.rows["page"]:
            path = str(self.folder / f"part-{len(self.parts):05d}")
            datasets.Dataset.from_dict(self.rows, features=self.features).save_to_disk(path)
            self.parts.append(datasets.load_from_disk(path))
            for values in self.rows.values():
                values.clear()

    def save(self, folder: Path, stats: dict) -> None:
        """Join the parts into `folder` with `stats` beside them (atomically), and remove the parts."""
        import shutil

        import datasets

        def write(out: Path) -> None:
            datasets.concatenate_datasets(self.parts).save_to_disk(str(out))
            (out / WINDOWS_STATS).write_text(json.dumps(stats, indent=2))

        save_folder_atomically(folder, write)
        shutil.rmtree(self.folder, ignore_errors=True)
