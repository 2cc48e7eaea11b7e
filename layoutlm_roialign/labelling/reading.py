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

import copy
import logging
import multiprocessing.connection
import os
import pickle
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..engine_layoutlm_roialign import read_and_encode
from ..options_layoutlm_roialign import ReadOptions, WindowOptions
from ..pages_layoutlm_roialign import WORDS_FROM
from .sources import PageJob

logger = logging.getLogger(__name__)

__all__ = ["PageReader", "PageStream", "reader_loader", "read_in_child", "worker_init", "WORDS_FROM"]


def worker_init(worker_id: int) -> None:
    """`DataLoader(worker_init_fn=...)`: one torch thread per worker, one OpenMP thread per Tesseract call."""
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # read by the tesseract processes pytesseract starts


def _as_is(item: dict) -> dict:
    return item


# How torch's DataLoader reports a worker process that died (a failed liveness check, or its SIGCHLD handler).
WORKER_LOST = "DataLoader worker (pid"
WORKER_EXIT_WAIT = 2.0  # seconds to wait for a worker to be seen ended, after an error receiving a page from it


def reader_loader(
    reader: PageReader, num_workers: int, prefetch_factor: int | None = None, pin_memory: bool = False
) -> PageStream:
    """`reader`'s items one at a time, in order, read in `num_workers` processes (each set up by `worker_init`; 0: in
    this process) `prefetch_factor` items ahead per worker; a page whose reading ends its process is its failure
    record (`PageStream`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer ran
    return PageStream(reader, num_workers, prefetch_factor, pin_memory)


class PageStream:
    """An iterable of a `PageReader`'s items, in order, read ahead by a torch `DataLoader`.

    A page whose reading ends its worker process (a crash in a PDF or image library, the memory killer) does not end
    the run. The DataLoader then stops with the loss of that worker; the pages it had handed out and not yet given
    back (at most `num_workers * prefetch_factor`, one of them the cause) are read again one per forked process
    (`read_in_child`), so that the page that ends its process again becomes a failure record and the others are read,
    and a fresh DataLoader reads the rest. While it is iterated from the main thread, the loss of a worker is found
    where the next page is awaited (DataLoader checks its workers at least every 5 s while it waits), not raised by
    torch's SIGCHLD handler at whatever line the main thread runs then (in a forward pass, between two writes).
    """

    def __init__(self, reader: PageReader, num_workers: int, prefetch_factor: int | None = None,
                 pin_memory: bool = False) -> None:  # fmt: skip
        self.reader, self.num_workers, self.pin_memory = reader, num_workers, pin_memory
        self.prefetch_factor = (prefetch_factor or 2) if num_workers else None  # 2: DataLoader's default

    def __len__(self) -> int:
        return len(self.reader)

    def _loader(self, start: int) -> torch.utils.data.DataLoader:
        reader = self.reader
        if start:
            reader = copy.copy(reader)  # the same reader, on the pages from `start` on
            reader.jobs = self.reader.jobs[start:]
        return torch.utils.data.DataLoader(
            reader, batch_size=None, shuffle=False, num_workers=self.num_workers, collate_fn=_as_is,
            worker_init_fn=worker_init if self.num_workers else None, prefetch_factor=self.prefetch_factor,
            pin_memory=self.pin_memory,
        )  # fmt: skip

    def __iter__(self) -> Iterator[dict]:
        start, total = 0, len(self.reader)
        quiet = _SigchldQuiet(self.num_workers)
        try:
            while start < total:
                pages, delivered = None, 0
                try:
                    quiet.now()
                    pages = iter(self._loader(start))
                    quiet.now()
                    for item in pages:
                        yield item
                        delivered += 1
                    return
                except (RuntimeError, EOFError, OSError) as err:
                    lost = _lost_worker(err, pages)
                    if lost is None:
                        raise
                del pages  # the loader's other workers stop
                start += delivered
                if start >= total:  # lost after its last page
                    return
                end = min(total, start + self.num_workers * self.prefetch_factor)
                if not hasattr(os, "fork"):  # Windows: no page can be read alone
                    raise RuntimeError(f"{lost}, reading a page of {self.reader.jobs[start].source} or of the "
                                       f"{end - start - 1} pages after it")  # fmt: skip
                logger.warning(
                    f"{lost}: reading the {end - start} pages that the reader workers held (from "
                    f"{self.reader.jobs[start].source}) again, one process each; then reading on."
                )
                for index in range(start, end):
                    yield read_in_child(self.reader, index, ", when read alone after a reader worker was lost")
                start = end
        finally:
            quiet.undo()


def _lost_worker(err: BaseException, pages: Any) -> str | None:
    """What `err`, raised by the DataLoader iterator `pages`, says of a lost worker process; None when it is not the
    loss of a worker. The loss comes as torch's `RuntimeError` ("DataLoader worker (pid(s) ...) exited unexpectedly"),
    or, where the page that worker sent last had its tensors' file descriptors still to be handed over by it, as the
    error of that handover (`EOFError`, `ConnectionError`, ...) while a worker has ended."""
    if isinstance(err, RuntimeError):
        return str(err) if str(err).startswith(WORKER_LOST) else None
    workers = list(getattr(pages, "_workers", None) or [])  # torch's worker processes (no public handle on them)
    ended = set(multiprocessing.connection.wait([w.sentinel for w in workers], timeout=WORKER_EXIT_WAIT))
    for w in workers:
        if w.sentinel in ended:
            w.join(WORKER_EXIT_WAIT)  # its exit status (its files close a moment before it has one)
    dead = [w for w in workers if w.exitcode]
    if not dead:
        return None
    pids = ", ".join(str(w.pid) for w in dead)
    return f"DataLoader worker (pid(s) {pids}) exited unexpectedly ({type(err).__name__} receiving a page from it)"


class _SigchldQuiet:
    """Puts SIGCHLD at its default action (`now`) and the handler before it back (`undo`), where pages are read in
    worker processes and this is the main thread (see `PageStream`). torch's handler is set first (torch sets it once
    a process, as its first DataLoader with workers starts), so that the DataLoaders started later leave it off."""

    def __init__(self, num_workers: int) -> None:
        self.active = (bool(num_workers) and hasattr(signal, "SIGCHLD")  # not on Windows
                       and threading.current_thread() is threading.main_thread())  # fmt: skip
        self.previous: Any = _UNSET

    def now(self) -> None:
        if not self.active:
            return
        if self.previous is _UNSET:
            set_torchs = getattr(torch.utils.data._utils.signal_handling, "_set_SIGCHLD_handler", None)
            if set_torchs is not None:
                set_torchs()
        handler = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if self.previous is _UNSET or (self.previous is signal.SIG_DFL and callable(handler)):
            self.previous = signal.SIG_DFL if handler is None else handler

    def undo(self) -> None:
        if self.previous is not _UNSET:
            signal.signal(signal.SIGCHLD, self.previous)
            self.previous = _UNSET


_UNSET = object()


def read_in_child(reader: PageReader, index: int, context: str = "") -> dict:
    """`reader[index]`, read in a process forked for this page alone (one torch thread, as `worker_init`); if that
    process dies before it sends the page (a crash in a PDF or image library, the memory killer), the page's failure
    record instead: "reading the page ended its reader process (signal SIGKILL)" + `context` + ": the page is left
    out"."""
    get, put = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read, send, and leave without running the parent's exit handlers
        code = 1  # a page not sent whole
        try:
            os.close(get)
            worker_init(0)
            with os.fdopen(put, "wb") as out:
                out.write(pickle.dumps(reader[index], protocol=pickle.HIGHEST_PROTOCOL))
            code = 0
        finally:
            os._exit(code)
    os.close(put)
    with os.fdopen(get, "rb") as got:
        data = got.read()
    status = os.waitpid(pid, 0)[1]
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and data:
        return pickle.loads(data)
    how = (f"signal {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
           else f"exit status {os.waitstatus_to_exitcode(status)}")  # fmt: skip
    job = reader.jobs[index]
    return {"source": job.source, "page": job.page, "num_pages": job.num_pages,
            "error": f"reading the page ended its reader process ({how}){context}: the page is left out"}  # fmt: skip


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
