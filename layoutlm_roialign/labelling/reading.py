"""Reading pages ahead of the model: a torch `Dataset` of page jobs whose items are encoded pages or failures.

`PageReader[i]` does all the work a page needs before the model, so that a `DataLoader` with workers runs it in
parallel and ahead of the forward passes: it opens the page (a PDF page rendered with pypdfium2, an image file's
frame, a dataset row's image), gets its words and 0-1000 boxes (the PDF's text layer, the dataset's columns, or
Tesseract), and encodes its windows with the processor (`engine_layoutlm_roialign.read_and_encode`). Whatever goes wrong with one page
(damaged file, unreadable frame, OCR error) comes back as `{"source", "page", "error"}` instead of stopping the run.

Where the words come from (`words_from`): `"auto"` reads a PDF page's text layer and OCRs pages without one (scans,
images); `"text"` never OCRs (a page without a text layer, an image, or a dataset row without word columns is then a
failure naming `--words_from`, so that a later run with `auto` or `ocr` labels it); `"ocr"` OCRs every page, text layer
or not. Dataset rows use their word and box columns when `words_column` is set (except under `"ocr"`).

`worker_init` limits each worker to one torch thread and Tesseract to one OpenMP thread (`OMP_THREAD_LIMIT=1`,
unless set already): with one worker per core, more threads per worker only oversubscribe the cores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ..engine_layoutlm_roialign import read_and_encode
from ..options_layoutlm_roialign import ReadOptions, WindowOptions
from ..pages_layoutlm_roialign import WORDS_FROM
from .sources import PageJob

__all__ = ["PageReader", "reader_loader", "worker_init", "WORDS_FROM"]


def worker_init(worker_id: int) -> None:
    """`DataLoader(worker_init_fn=...)`: one torch thread per worker, one OpenMP thread per Tesseract call."""
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # read by the tesseract processes pytesseract starts


def _as_is(item: dict) -> dict:
    return item


def reader_loader(
    reader: torch.utils.data.Dataset, num_workers: int, prefetch_factor: int | None = None, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A `DataLoader` that yields `reader`'s items one at a time, in order, read in `num_workers` processes (each
    set up by `worker_init`; 0: in this process) `prefetch_factor` items ahead per worker."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer ran
    return torch.utils.data.DataLoader(
        reader, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_as_is,
        worker_init_fn=worker_init if num_workers else None, prefetch_factor=prefetch_factor if num_workers else None,
        pin_memory=pin_memory,
    )  # fmt: skip


def _reason(err: BaseException) -> str:
    return str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"


class PageReader(torch.utils.data.Dataset):
    """Page jobs -> encoded pages (see the module docstring).

    Args:
        jobs: the pages to read (`sources.page_jobs`, `sources.dataset_documents`).
        processor: the checkpoint's processor.
        read: how pages are read (`words_from`: `"auto"`, `"text"` or `"ocr"`; `dpi`, `ocr_lang`); for `"dataset"`
            jobs `image_column` holds the pages and `words_column` / `boxes_column` (optional) their words and
            0-1000 boxes.
        windows: window size and overlap in tokens (resolved: `WindowOptions.resolve`).
        dataset: the `datasets.Dataset` that `"dataset"` jobs index.
        keep_image: also return the page as an RGB image (to draw the entities on).

    Items:
        `{"source", "page", "num_pages", "words_from", "width", "height", "words", "boxes", "windows",
        "word_ids", "pixel_values"[, "image"]}`: `windows` holds the padded `input_ids`, `bbox`, `attention_mask`,
        `token_type_ids` (one row per window; `None` for a page without words), `word_ids` each window's word ids,
        `pixel_values` the page's one image `(3, size, size)`. A page that cannot be read:
        `{"source", "page", "num_pages", "error"}`.
    """

    def __init__(
        self,
        jobs: Sequence[PageJob],
        processor: Any,
        read: ReadOptions,
        windows: WindowOptions,
        dataset: Any = None,
        keep_image: bool = False,
    ) -> None:
        if read.words_from not in WORDS_FROM:
            raise ValueError(f"--words_from must be one of {WORDS_FROM}, got {read.words_from!r}.")
        self.jobs = list(jobs)
        self.processor = processor
        self.read, self.windows = read, windows
        self.dataset = dataset
        self.keep_image = keep_image

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict:
        job = self.jobs[index]
        head = {"source": job.source, "page": job.page, "num_pages": job.num_pages}
        try:
            return {**head, **self._read(job)}
        except Exception as err:  # noqa: BLE001 (one bad page is a failure record, never the end of the run)
            return {**head, "error": _reason(err)}

    def _read(self, job: PageJob) -> dict:
        words = boxes = None
        if job.kind == "dataset":
            row = self.dataset[job.page - 1]
            source, page, name = row[self.read.image_column], 1, f"{job.source} row {job.page - 1}"
            if self.read.words_column and self.read.words_from != "ocr":
                given = zip(row[self.read.words_column], row[self.read.boxes_column], strict=True)
                kept = [(w.strip(), b) for w, b in given if isinstance(w, str) and w.strip()]
                words, boxes = [w for w, _ in kept], [[int(round(v)) for v in b] for _, b in kept]
        else:
            source, page, name = job.source, job.page, None
        try:
            read = read_and_encode(self.processor, source, page, words, boxes, read=self.read, windows=self.windows,
                                   name=name)  # fmt: skip
        except (ImportError, OSError) as err:  # pytesseract or the tesseract binary missing, a Tesseract crash
            raise RuntimeError(f"OCR failed: {_reason(err)}") from err
        if self.read.words_from == "text" and read["words_from"] == "none":
            raise ValueError(
                "the page has no text layer (an image, a scan) and --words_from text never OCRs: it is left for a "
                "run with --words_from auto or ocr"
            )
        words_from = "dataset" if read["words_from"] == "given" else read["words_from"]
        fields = ("width", "height", "words", "boxes", "windows", "word_ids", "pixel_values")
        item = {"words_from": words_from, **{k: read[k] for k in fields}}
        if self.keep_image:
            item["image"] = read["image"]
        return item
