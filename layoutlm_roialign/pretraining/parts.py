"""The pages a pre-training run has read so far, kept on disk so that a killed reading (hours of OCR) resumes.

`PageParts` is `<cache_dir>/.<fingerprint>.parts/`, keyed by the pages and the reading settings as the finished cache
is: the windows of the pages read, as `datasets` parts (`part-<first page>`, each written to a temporary folder,
fsync'd and renamed into place), and `pages.jsonl`, one record per page read (its part and the number of pages in
it, windows, tokens, words), appended and fsync'd after the part that holds its windows, with the labeller's JSON
Lines writer (`labelling.jsonl`). A kill can therefore leave only a torn last record, or a part whose pages are not
all recorded yet; both are dropped when the store is opened again, and their pages are read again. Pages that failed
are not recorded: every run retries them, as the labeller does. The store is locked while a run writes it, and
removed once the cache is built from it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..final_folder import save_folder_atomically
from ..labelling.jsonl import JsonlWriter, OutputLock, recover

__all__ = ["PageParts", "parts_folder"]

logger = logging.getLogger(__name__)

RECORDS = "pages.jsonl"


def parts_folder(cache_folder: Path) -> Path:
    """Where the pages of the cache `cache_folder` are kept while they are read."""
    return cache_folder.parent / f".{cache_folder.name}.parts"


def _fsync_tree(folder: Path) -> None:
    """Flush every file of `folder` (and the folder itself) to disk."""
    for path in [*folder.rglob("*"), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class PageParts:
    """The durable store of the windows read so far (see the module's docstring), opened (and locked) for one run.

    Args:
        folder: the store (`parts_folder` of the cache it becomes).
        features: the `datasets.Features` of a window row.
        every: windows gathered in memory before they are written as one part.
        seconds: the longest time pages read wait in memory before they are written (slow OCR loses at most this).

    Attributes:
        done: `{page index: record}` of the pages already read (by this run or an earlier one).

    Raises:
        ValueError: when another running process is writing the store.
    """

    def __init__(self, folder: Path, features: Any, every: int, seconds: float = 60.0) -> None:
        self.folder, self.features, self.every, self.seconds = folder, features, every, seconds
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = OutputLock(folder / RECORDS)
        except ValueError as err:
            raise ValueError(
                f"The pages cached in {folder} are being read by another running pre-training run: wait for it to "
                "finish (its windows are then reused), or give another --cache_dir."
            ) from err
        records = recover(folder / RECORDS)  # a torn last record (killed mid-line) is cut off
        # a part counts only with the records of all its pages (a kill may leave some of them unwritten) and while
        # it is there; the pages of any other are read again
        pages_of = Counter(record["part"] for record in records)
        self.done = {
            r["index"]: r
            for r in records
            if r["part"] is None or (pages_of[r["part"]] == r["part_pages"] and (folder / r["part"]).is_dir())
        }
        named = {record["part"] for record in self.done.values()}
        for path in folder.iterdir():  # a part written just before a kill, before its records: read again
            if path.name != RECORDS and path.name not in named:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self._writer = JsonlWriter(folder / RECORDS)
        self.rows: dict[str, list] = {name: [] for name in features}
        self.pending: list[dict] = []
        self._since, self._flushing = time.monotonic(), False

    def add(self, job: Any, index: int, item: dict, rows: list[dict]) -> None:
        """Add page `index` (`job`; the reader's `item`) with its window `rows` (one dict of columns per window)."""
        for row in rows:
            for name, value in row.items():
                self.rows[name].append(value)
        tokens = sum(len(row["input_ids"]) for row in rows)
        record = {"source": job.source, "page": job.page, "index": index, "part": None, "windows": len(rows)}
        self.pending.append({**record, "tokens": tokens, "words": len(item.get("words") or [])})
        if len(self.rows["page"]) >= self.every or time.monotonic() - self._since >= self.seconds:
            self.flush()

    def flush(self) -> None:
        """Write the windows held in memory as one part, then the records of their pages (fsync'd)."""
        import datasets

        self._flushing = True  # until the records are written: an interrupted flush is never continued
        if self.rows["page"]:
            name = f"part-{self.rows['page'][0]:09d}"

            def write(out: Path) -> None:
                datasets.Dataset.from_dict(self.rows, features=self.features).save_to_disk(str(out))
                _fsync_tree(out)

            save_folder_atomically(self.folder / name, write)
            written = [record for record in self.pending if record["windows"]]
            for record in written:
                record.update(part=name, part_pages=len(written))
            for values in self.rows.values():
                values.clear()
        self._writer.write(self.pending)
        self.done.update((record["index"], record) for record in self.pending)
        self.pending.clear()
        self._since, self._flushing = time.monotonic(), False

    def dataset(self) -> Any:
        """The windows of every page recorded, in page order (`None` when no page gave any)."""
        import datasets

        names = sorted({record["part"] for record in self.done.values() if record["part"]})
        if not names:
            return None
        return datasets.concatenate_datasets([datasets.load_from_disk(str(self.folder / name)) for name in names])

    def close(self) -> None:
        """Write the pages held in memory (unless a write of them was interrupted: they are read again by the next
        run), and release the store."""
        if self.pending and not self._flushing:
            self.flush()
        self._writer.close()
        self._lock.release()
