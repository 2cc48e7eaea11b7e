"""Reading pages ahead of the model: a torch `Dataset` of page jobs whose items are encoded pages or failures.

`PageReader[i]` does all the work a page needs before the model, so that a `DataLoader` with workers runs it in
parallel and ahead of the forward passes: it opens the page (a PDF page rendered with pypdfium2, an image file's
frame, a dataset row's image), gets its words and 0-1000 boxes (the PDF's text layer, the dataset's columns, or
Tesseract), and encodes its windows with the processor (`inference.encode_page`). Whatever goes wrong with one page
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

import PIL.Image
import torch

from ..image_processing_layoutlm_roialign import apply_tesseract, normalize_boxes
from ..inference import encode_page
from ..pages import load_page, page_to_rgb_image
from ..pdf import DEFAULT_DPI
from .sources import PageJob

__all__ = ["PageReader", "worker_init", "WORDS_FROM"]

WORDS_FROM = ("auto", "text", "ocr")


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
        if job.kind == "pdf":
            from ..pdf import pdf_page_words, render_pdf_page

            page = render_pdf_page(job.source, job.page - 1, dpi=self.dpi)
            if self.words_from != "ocr":
                words, pixel_boxes = pdf_page_words(job.source, job.page - 1, dpi=self.dpi)
                # pdf_page_words clamps boxes to the page: text placed off the page comes back inverted; it is not
                # on the page the model sees, so it is left out.
                kept = [(w, b) for w, b in zip(words, pixel_boxes, strict=True) if b[0] <= b[2] and b[1] <= b[3]]
                words, boxes = [w for w, _ in kept], normalize_boxes([b for _, b in kept], *page.size)
                if not words and self.words_from == "auto":
                    words = boxes = None
        elif job.kind == "dataset":
            row = self.dataset[job.page - 1]
            page = load_page(row[self.image_column], name=f"{job.source} row {job.page - 1}")
            if self.words_column and self.words_from != "ocr":
                words, boxes = row[self.words_column], row[self.boxes_column]
                kept = [(w.strip(), b) for w, b in zip(words, boxes, strict=True) if isinstance(w, str) and w.strip()]
                words, boxes = [w for w, _ in kept], [[int(round(v)) for v in b] for _, b in kept]
        else:
            page = _image_frame(job.source, job.page - 1)
        if self.words_from == "text" and (words is None or (job.kind == "pdf" and not words)):
            raise ValueError(
                "the page has no text layer (an image, a scan) and --words_from text never OCRs: it is left for a "
                "run with --words_from auto or ocr"
            )
        source = {"pdf": "text", "dataset": "dataset"}.get(job.kind, "none")
        rgb = page_to_rgb_image(page)  # 16-bit, transparent and palette pages converted as the image processor does
        if words is None and self.words_from != "text":
            try:
                words, boxes = apply_tesseract(rgb, self.ocr_lang)
            except Exception as err:  # noqa: BLE001 (pytesseract's errors, a missing binary, a Tesseract crash)
                raise RuntimeError(f"OCR failed: {_reason(err)}") from err
            source = "ocr"
        words, boxes = words or [], boxes or []
        item = {"words_from": source, "width": rgb.width, "height": rgb.height, "words": words, "boxes": boxes}
        item["windows"] = item["word_ids"] = None
        if words:
            encoding = encode_page(self.processor, rgb, words, boxes, self.max_length, self.stride)
            item["windows"] = {k: encoding[k] for k in ("input_ids", "bbox", "attention_mask", "token_type_ids")}
            item["word_ids"] = [encoding.word_ids(i) for i in range(len(encoding["input_ids"]))]
            item["pixel_values"] = encoding["pixel_values"][0].clone()  # every window holds the same page: keep one
        if self.keep_image:
            item["image"] = rgb
        return item


def _image_frame(path: str, index: int) -> PIL.Image.Image:
    """Frame `index` of an image file (a page of a multi-page TIFF), pixels read."""
    return load_page(path, frame=index)
