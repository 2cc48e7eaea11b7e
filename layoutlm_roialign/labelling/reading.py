"""Reading pages ahead of the model: a torch `Dataset` of page jobs whose items are encoded pages or failures.

`PageReader[i]` does all the work a page needs before the model, so that a `DataLoader` with workers runs it in
parallel and ahead of the forward passes: it opens the page (a PDF page rendered with pypdfium2, an image file's
frame, a dataset row's image), gets its words and 0-1000 boxes (the PDF's text layer, the dataset's columns, or
Tesseract), and encodes its windows with the processor (`road.encode_page`). Whatever goes wrong with one page
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

from ..pages import DEFAULT_DPI, WORDS_FROM, read_page
from ..road import encode_page
from .sources import PageJob

__all__ = ["PageReader", "worker_init", "WORDS_FROM"]


def worker_init(worker_id: int) -> None:
    """`DataLoader(worker_init_fn=...)`: one torch thread per worker, one OpenMP thread per Tesseract call."""
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # read by the tesseract processes pytesseract starts


def _reason(err: BaseException) -> str:
    return str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"


class PageReader(torch.utils.data.Dataset):
    """Page jobs -> encoded pages (see the module docstring).

    Args:
        jobs: the pages to read (`sources.page_jobs`, `sources.dataset_documents`).
        processor: the checkpoint's processor.
        words_from: `"auto"`, `"text"` or `"ocr"`.
        max_length, stride: window size and overlap in tokens.
        ocr_lang: Tesseract language(s), e.g. `"eng"`.
        dpi: resolution PDF pages are rendered at.
        dataset: the `datasets.Dataset` that `"dataset"` jobs index; `image_column` holds its pages and
            `words_column` / `boxes_column` (optional) its words and 0-1000 boxes.
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
        words_from: str = "auto",
        max_length: int = 512,
        stride: int = 128,
        ocr_lang: str | None = None,
        dpi: float = DEFAULT_DPI,
        dataset: Any = None,
        image_column: str = "image",
        words_column: str | None = None,
        boxes_column: str | None = None,
        keep_image: bool = False,
    ) -> None:
        if words_from not in WORDS_FROM:
            raise ValueError(f"--words_from must be one of {WORDS_FROM}, got {words_from!r}.")
        self.jobs = list(jobs)
        self.processor = processor
        self.words_from = words_from
        self.max_length, self.stride = max_length, stride
        self.ocr_lang = ocr_lang
        self.dpi = dpi
        self.dataset = dataset
        self.image_column, self.words_column, self.boxes_column = image_column, words_column, boxes_column
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
            source, page, name = row[self.image_column], 1, f"{job.source} row {job.page - 1}"
            if self.words_column and self.words_from != "ocr":
                kept = [(w.strip(), b) for w, b in zip(row[self.words_column], row[self.boxes_column], strict=True)
                        if isinstance(w, str) and w.strip()]  # fmt: skip
                words, boxes = [w for w, _ in kept], [[int(round(v)) for v in b] for _, b in kept]
        else:
            source, page, name = job.source, job.page, None
        try:
            read = read_page(source, page, words, boxes, words_from=self.words_from, dpi=self.dpi,
                             ocr_lang=self.ocr_lang, name=name)  # fmt: skip
        except (ImportError, OSError) as err:  # pytesseract or the tesseract binary missing, a Tesseract crash
            raise RuntimeError(f"OCR failed: {_reason(err)}") from err
        if self.words_from == "text" and read["words_from"] == "none":
            raise ValueError(
                "the page has no text layer (an image, a scan) and --words_from text never OCRs: it is left for a "
                "run with --words_from auto or ocr"
            )
        words_from = "dataset" if read["words_from"] == "given" else read["words_from"]
        item = {"words_from": words_from, **{k: read[k] for k in ("width", "height", "words", "boxes")}}
        item.update(encode_page(self.processor, read["image"], read["words"], read["boxes"], self.max_length,
                                self.stride))  # fmt: skip
        if self.keep_image:
            item["image"] = read["image"]
        return item
