"""The windows MVLM trains on: every page of the sources read by the labeller's page reader (text layer or OCR, the
processor's windows) and kept as a `datasets` folder on disk, keyed by the pages and the reading settings, so that a
second epoch, a rerun or a resumed run never re-reads a PDF. While the pages are read, each batch is kept on disk
(`parts.PageParts`), so that a rerun after a kill reads only the pages not read yet."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..data.encoding import TOKEN_COLUMNS
from ..final_folder import save_folder_atomically
from ..labelling.reading import PageReader, reader_loader
from ..labelling.sources import dataset_documents, expand_inputs, load_page_dataset, page_jobs
from ..labelstudio import labelstudio_options
from ..options_layoutlm_roialign import WindowOptions
from ..processing_layoutlm_roialign import LayoutLMRoIAlignProcessor
from ..windowing_layoutlm_roialign import WINDOW_INPUTS
from .arguments import PretrainingArguments
from .parts import RECORDS, PageParts, parts_folder

__all__ = ["WINDOWS_STATS", "count_line", "failure_text", "has_read_pages", "public_name", "read_pretraining_windows"]

logger = logging.getLogger(__name__)

WINDOWS_STATS = "pretraining_windows.json"
PART_WINDOWS = 256  # windows with pixels written as one part of the store of pages read


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


def read_pretraining_windows(
    args: PretrainingArguments, processor: LayoutLMRoIAlignProcessor, cache_dir: str | os.PathLike, pixels: bool
) -> tuple[Any, dict]:
    """The windows of every page of the sources, from the cache when it holds them, else read and cached.

    Returns:
        `(windows, stats)`: a `datasets.Dataset` with one row per window (`input_ids`, `bbox`, `attention_mask`,
        `token_type_ids`, `word_ids` (-1 for special tokens), `page` and, with `pixels`, the page's `pixel_values`
        in float16) and what was read (`documents`, `pages` = `pages_with_words` + `pages_without_words` +
        `failed_pages`, `windows`, `tokens`, `words`, `failures` (the first 20, each naming its file and page),
        `seconds`, `sources`, `cached`).
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
        stats.setdefault(
            "pages_without_words", max(0, stats["pages"] - stats["pages_with_words"] - stats["failed_pages"])
        )
        logger.info(f"Reusing the {stats['windows']} windows of {stats['pages']} pages cached in {folder}")
        return datasets.load_from_disk(str(folder)), {**stats, "cached": True}
    stats = _read_and_cache(args, processor, jobs, failures, pages, folder, pixels)
    return datasets.load_from_disk(str(folder)), {**stats, "cached": False}


def has_read_pages(cache_dir: str | os.PathLike) -> bool:
    """Whether `cache_dir` holds pages read by an earlier run: a finished cache, or the parts store of a reading
    that was interrupted."""
    folder = Path(cache_dir)
    if not folder.is_dir():
        return False
    for path in folder.iterdir():
        records = path / RECORDS
        if (path / WINDOWS_STATS).is_file() or (records.is_file() and records.stat().st_size > 0):
            return True
    return False


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
    """Read the pages of `jobs` that the parts store (`parts.PageParts`) does not hold yet (in `--num_workers`
    processes), keeping each batch on disk as it is read; once every page is there, write their windows to `folder`
    (atomically), remove the store and return what was read."""
    from tqdm.auto import tqdm

    for stale in folder.parent.glob(f".{folder.name}.parts-*"):  # per-process parts of an earlier version
        if stale.name.rpartition("-")[2].isdigit() and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    store = PageParts(parts_folder(folder), window_features(processor.image_processor.size, pixels),
                      every=PART_WINDOWS if pixels else 16 * PART_WINDOWS)  # fmt: skip
    todo = [index for index in range(len(jobs)) if index not in store.done]
    if len(todo) < len(jobs):
        logger.info(f"Reusing the {len(jobs) - len(todo)} pages read by an earlier run (kept in {store.folder}); "
                    f"reading the other {len(todo)}")  # fmt: skip
    windows = WindowOptions(args.max_length, args.stride)
    reader = PageReader([jobs[index] for index in todo], processor, args.read_options(), windows, pages)
    loader = reader_loader(reader, args.num_workers)
    failed = [failure_text(f) for f in failures]
    start = time.perf_counter()
    bar = tqdm(loader, total=len(todo), unit="page", desc="reading pages", dynamic_ncols=True)
    try:
        for position, item in enumerate(bar):
            index = todo[position]
            if "error" in item:
                failed.append(failure_text(item))
            else:
                store.add(jobs[index], index, item, _window_rows(item, index, pixels))
        store.flush()
    finally:  # the bar first: a Ctrl-C's message is then the last line
        bar.close()
        store.close()
    stats = _page_counts(jobs, failures, store.done, failed)
    stats["seconds"] = round(time.perf_counter() - start, 1)
    stats["sources"] = [public_name(e) for e in args.inputs] + ([public_name(args.dataset)] if args.dataset else [])
    windows = store.dataset()
    if windows is None:
        shutil.rmtree(store.folder, ignore_errors=True)
        raise ValueError(
            f"None of the {len(jobs)} pages gave any words (--words_from {args.words_from}); failures: "
            f"{stats['failures'][:3]}"
        )

    def write(out: Path) -> None:
        windows.save_to_disk(str(out))
        (out / WINDOWS_STATS).write_text(json.dumps(stats, indent=2))

    save_folder_atomically(folder, write)
    shutil.rmtree(store.folder, ignore_errors=True)
    logger.info(f"{count_line(stats)}; read in {stats['seconds']} s: {stats['windows']} windows, {stats['tokens']} "
                f"tokens, cached in {folder}")  # fmt: skip
    return stats


def failure_text(failure: dict) -> str:
    """How a failure record is reported: its file (or dataset row), its page, and the reason."""
    where = failure["source"] if failure.get("page") is None else f"{failure['source']} page {failure['page']}"
    return f"{where}: {failure['error']}"


def _page_counts(jobs: list, failures: list[dict], done: dict, failed: list[str]) -> dict:
    """What was read, counted so that it adds up: `pages` = `pages_with_words` + `pages_without_words` +
    `failed_pages`, where a document that cannot be opened counts as one failed page."""
    records = [done[index] for index in range(len(jobs)) if index in done]
    with_words = sum(record["windows"] > 0 for record in records)
    return {
        "documents": len({job.source for job in jobs} | {failure["source"] for failure in failures}),
        "pages": len(jobs) + len(failures),
        "pages_with_words": with_words,
        "pages_without_words": len(records) - with_words,
        "failed_pages": len(failed),
        "words": sum(record["words"] for record in records),
        "windows": sum(record["windows"] for record in records),
        "tokens": sum(record["tokens"] for record in records),
        "failures": failed[:20],
    }


def count_line(stats: dict) -> str:
    """The counts of a reading in words, with what they mean."""
    return (
        f"{stats['documents']} documents, {stats['pages']} pages: {stats['pages_with_words']} with words + "
        f"{stats['pages_without_words']} without words + {stats['failed_pages']} failed (a document that cannot be "
        "opened counts as one failed page)"
    )


def window_features(image_size: int, pixels: bool) -> Any:
    """The columns of a cached window: the rows the model reads (`WINDOW_INPUTS`), `word_ids`, `page` and, with
    `pixels`, the page's `pixel_values` in float16."""
    import datasets

    features = {name: TOKEN_COLUMNS[name] for name in WINDOW_INPUTS}
    features.update(word_ids=datasets.Sequence(datasets.Value("int32")), page=datasets.Value("int32"))
    if pixels:
        features["pixel_values"] = datasets.Array3D(shape=(3, image_size, image_size), dtype="float16")
    return datasets.Features(features)


def _window_rows(item: dict, index: int, pixels: bool) -> list[dict]:
    """The cache rows of one read page (`PageReader`'s item, page number `index`): one per window, without its
    padding (the windows are padded on the right)."""
    windows, rows = item["windows"], []
    for w in range(0 if windows is None else len(windows["input_ids"])):
        length = int(windows["attention_mask"][w].sum())
        row = {name: windows[name][w, :length].tolist() for name in WINDOW_INPUTS}
        row["word_ids"] = [-1 if i is None else i for i in item["word_ids"][w][:length]]
        row["page"] = index
        if pixels:
            row["pixel_values"] = item["pixel_values"].to(torch.float16).numpy()
        rows.append(row)
    return rows
