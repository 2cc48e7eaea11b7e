"""One labelling run: inputs -> this process's page jobs -> reader workers -> batched model -> JSON Lines.

`plan_run` does everything that can fail on bad arguments before a model is loaded: it checks the destinations,
expands the inputs, takes this process's share (`process_index` of `num_processes`, round-robin over documents, or
over a dataset's rows), reads which pages the outputs already hold (cutting off a torn last line), and counts the
pages still to do. `LabelRun.run` then streams them: a `DataLoader` of `PageReader` workers reads, OCRs and encodes
pages ahead of the model, `group_pages` + `PageLabeller` label them in batches, and every batch's records are
appended and fsync'd before the next is taken, with a progress bar (tqdm; off under `quiet` and when stderr is not a
terminal). Failures go to the failures file, which each run starts afresh, since every run retries every page
without a record: after a complete run it lists exactly the pages that have none. Nothing is held per page but its
key, so memory stays flat however many pages there are.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..configuration_layoutlm_roialign import label_names
from ..drawing import draw_prediction
from ..options_layoutlm_roialign import ReadOptions, WindowOptions
from ..outputs import check_output_paths, write_files
from ..pages_layoutlm_roialign import WORDS_FROM
from ..pdf_layoutlm_roialign import check_dpi
from ..road_layoutlm_roialign import group_pages
from .jsonl import JsonlWriter, OutputLock, read_complete, record_key, recover
from .reading import PageReader, reader_loader
from .runner import PageLabeller
from .shards import done_path, output_paths, record_files, write_done
from .sources import PageJob, dataset_documents, expand_inputs, load_page_dataset, page_jobs, shard

__all__ = ["LabelRun", "check_run_arguments", "draw_page", "plan_run", "process_share"]


def process_share() -> tuple[int, int]:
    """`(process_index, num_processes)` of this process, from its launcher's environment: `RANK` / `WORLD_SIZE`
    (`accelerate launch` on GPUs and machines, torchrun), or MPI's (`accelerate launch --cpu` with a hostfile,
    mpirun); `(0, 1)` for a plain `python`. Labelling needs no process group: each process reads this once."""
    for rank, size in (
        ("RANK", "WORLD_SIZE"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
        ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
    ):
        if int(os.environ.get(size, "1")) > 1:
            return int(os.environ.get(rank, "0")), int(os.environ[size])
    return 0, 1


@dataclass
class LabelRun:
    """The pages one process labels and where it writes them (made by `plan_run`)."""

    jobs: list[PageJob]
    failures: list[dict]  # documents that could not be opened
    output: str
    failures_output: str
    skipped: int  # pages the outputs already hold
    process_index: int = 0
    num_processes: int = 1
    dataset: Any = None
    read: ReadOptions = field(default_factory=ReadOptions)
    windows: WindowOptions = field(default_factory=WindowOptions)  # unset sizes: the model's
    png_dir: str | None = None
    lock: OutputLock | None = None  # held on `output` from `plan_run` to the end of `run`

    def run(
        self,
        model: torch.nn.Module,
        processor: Any,
        batch_size: int = 8,
        num_workers: int = 2,
        device: str | None = None,
        dtype: str = "auto",
        compile: bool = False,
        quiet: bool = False,
    ) -> dict:
        """Label the planned pages and return the summary (`pages`, `failed`, `skipped`, `words`, `entities`,
        `seconds`, `pages_per_second`, `input_wait_share`: the share of the time the model waited for pages, `dtype`:
        what the model computed in, the option resolved for the device).
        The output's lock is released at the end; a shard of a launch is then marked done (`shards.write_done`)."""
        try:
            summary = self._run(model, processor, batch_size, num_workers, device, dtype, compile, quiet)
            if self.num_processes > 1:
                write_done(self.output, self.failures_output)
            return summary
        finally:
            if self.lock is not None:
                self.lock.release()

    def _run(self, model, processor, batch_size, num_workers, device, dtype, compile, quiet) -> dict:
        from tqdm.auto import tqdm

        check_run_arguments(batch_size, num_workers)
        windows = self.windows.resolve(model.config)
        reader = PageReader(self.jobs, processor, self.read, windows, self.dataset, keep_image=bool(self.png_dir))
        labeller = PageLabeller(model, processor, batch_size, device, dtype, compile)  # a linking model: pairs too
        loader = reader_loader(reader, num_workers, prefetch_factor=4, pin_memory=labeller.device.type == "cuda")
        labels = label_names(model.config)
        summary = {
            "pages": 0,
            "failed": 0,
            "skipped": self.skipped,
            "words": 0,
            "entities": 0,
            "dtype": labeller.dtype,
        }
        bar = tqdm(
            total=len(self.jobs) + len(self.failures),
            unit="page",
            desc="labelling",
            dynamic_ncols=True,
            disable=True if quiet or self.process_index else None,
        )
        start = time.perf_counter()
        waited = 0.0
        with JsonlWriter(self.output) as records, JsonlWriter(self.failures_output, truncate=True) as failures:
            self.write_records(self.failures, records, failures, summary)
            bar.update(len(self.failures))
            batches = group_pages(iter(loader), batch_size)
            while True:
                tick = time.perf_counter()
                pages = next(batches, None)
                waited += time.perf_counter() - tick
                if pages is None:
                    break
                done = labeller(pages)
                labelled = [r for r in done if "error" not in r]
                if self.png_dir:
                    by_key = {(p["source"], p["page"]): p for p in pages}
                    for record in labelled:
                        record["png"] = draw_page(self.png_dir, by_key[record_key(record)]["image"], record, labels)
                self.write_records(done, records, failures, summary)
                bar.update(len(done))
        bar.close()
        return self.finish_summary(summary, time.perf_counter() - start, waited)

    @staticmethod
    def write_records(done: list[dict], records: JsonlWriter, failures: JsonlWriter, summary: dict) -> None:
        """Append a batch's records (pages labelled) and failure records (with `error`) to their files, on disk when
        this returns, and count them into `summary`."""
        labelled = [r for r in done if "error" not in r]
        records.write(labelled)
        failures.write([r for r in done if "error" in r])
        summary["pages"] += len(labelled)
        summary["failed"] += len(done) - len(labelled)
        summary["words"] += sum(len(r["words"]) for r in labelled)
        summary["entities"] += sum(len(r["entities"]) for r in labelled)

    def finish_summary(self, summary: dict, seconds: float, waited: float) -> dict:
        """`summary` with the run's time, speed, input wait share (`waited` of `seconds`) and outputs."""
        summary.update(
            seconds=round(seconds, 3),
            pages_per_second=round(summary["pages"] / seconds, 3) if seconds > 0 else 0.0,
            input_wait_share=round(waited / seconds, 3) if seconds > 0 else 0.0,
            output=self.output,
            failures_output=self.failures_output,
            process=f"{self.process_index + 1}/{self.num_processes}",
        )
        return summary


def draw_page(png_dir: str, image: Any, record: dict, labels: list[str]) -> str:
    """Draw the page's entities (and key-value pairs) into `png_dir` (written whole, then renamed) and return the
    file's path."""
    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(record["source"]))[0])[:80] or "page"
    digest = hashlib.sha1(record["source"].encode("utf-8")).hexdigest()[:8]
    path = os.path.join(png_dir, f"{stem}-{digest}.p{record['page']}.png")
    drawing = draw_prediction(image, record, labels)  # arrows from keys to values, where there are pairs
    write_files({path: lambda f: drawing.save(f, format="PNG")})
    return path


def check_run_arguments(batch_size: int, num_workers: int) -> None:
    """Check `LabelRun.run`'s `batch_size` and `num_workers`, before a run creates anything.

    Raises:
        ValueError: naming the flag.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"--batch_size must be a positive int (windows per forward pass), got {batch_size!r}.")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"--num_workers must be 0 (read pages in this process) or more, got {num_workers!r}.")


def plan_run(
    output: str,
    inputs: list[str] | None = None,
    dataset: str | None = None,
    split: str = "train",
    *,
    read: ReadOptions | None = None,
    windows: WindowOptions | None = None,
    png_dir: str | None = None,
    process_index: int | None = None,
    num_processes: int | None = None,
    labelstudio: dict | None = None,
) -> LabelRun:
    """Check the arguments and plan this process's pages (module docstring); nothing is labelled yet. `read`: how
    pages are read (`PageSourceArguments.read_options`); `windows`: their windows (unset sizes: the model's).

    Raises:
        ValueError: naming the argument, for missing inputs, an unusable destination, an unknown `words_from`,
            a dataset, split or column that does not exist, or an output file that is not the labeller's.
    `labelstudio`: how a Label Studio export given as `dataset` is read (`labelstudio.labelstudio_options`).
    """
    read, windows = read or ReadOptions(), windows or WindowOptions()
    _check_plan_arguments(inputs, dataset, read, windows)
    if process_index is None or num_processes is None:
        process_index, num_processes = process_share()
    records_path, failures_path = output_paths(output, process_index, num_processes)
    check_output_paths({"--output": records_path, "--output (failures)": failures_path})
    if png_dir:
        if os.path.exists(png_dir) and not os.path.isdir(png_dir):
            raise ValueError(f"--png_dir {png_dir!r} is a file; give a folder (it is created if missing).")
        os.makedirs(png_dir, exist_ok=True)
    jobs, failures, pages = _share_of_jobs(inputs, dataset, split, read, process_index, num_processes, labelstudio)
    lock, done = _lock_and_read_done(output, records_path, failures_path)
    todo = [job for job in jobs if job.key not in done]
    failures = [f for f in failures if record_key(f) not in done]
    return LabelRun(
        jobs=todo,
        failures=failures,
        output=records_path,
        failures_output=failures_path,
        skipped=len(jobs) - len(todo),
        process_index=process_index,
        num_processes=num_processes,
        dataset=pages,
        read=read,
        windows=windows,
        png_dir=png_dir,
        lock=lock,
    )


def _check_plan_arguments(
    inputs: list[str] | None, dataset: str | None, read: ReadOptions, windows: WindowOptions
) -> None:
    """Check `plan_run`'s arguments that need nothing read (as it takes them).

    Raises:
        ValueError: naming the flag, for no inputs, an unknown `words_from`, a bad `dpi`, only one of
            `words_column` and `boxes_column`, a `max_length` below 1 or a negative `stride`.
    """
    for flag, value, least in (("--max_length", windows.max_length, 1), ("--stride", windows.stride, 0)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise ValueError(f"{flag} must be an int of at least {least} (tokens), got {value!r}.")
    if not inputs and not dataset:
        raise ValueError("Give --inputs (folders, globs, list files, files) or --dataset, or both.")
    if read.words_from not in WORDS_FROM:
        raise ValueError(f"--words_from must be one of {WORDS_FROM}, got {read.words_from!r}.")
    check_dpi(read.dpi)
    if (read.words_column is None) != (read.boxes_column is None):
        raise ValueError("Give --words_column and --boxes_column together (the words and their 0-1000 boxes).")


def _share_of_jobs(
    inputs: list[str] | None,
    dataset: str | None,
    split: str,
    read: ReadOptions,
    process_index: int,
    num_processes: int,
    labelstudio: dict | None = None,
) -> tuple[list[PageJob], list[dict], Any]:
    """This process's share of the page jobs (`plan_run`'s arguments, as it takes them): the pages of its share of the
    input documents, then those of its share of the dataset's rows. Returns the jobs, the failures of documents that
    could not be opened (and, for the first process, of folders that could not be read), and the loaded dataset
    (`None` without `dataset`).

    Raises:
        ValueError: naming the flag, for a dataset, split or column that does not exist.
    """
    jobs, failures = [], []
    if inputs:
        unreadable: list[dict] = []
        files = shard(expand_inputs(inputs, unreadable), process_index, num_processes)
        jobs, failures = page_jobs(files)
        failures += unreadable if process_index == 0 else []  # folders that cannot be read: once per launch
    pages = None
    if dataset:
        pages = load_page_dataset(dataset, split, read.image_column, **(labelstudio or {}))
        for name, column in (("--words_column", read.words_column), ("--boxes_column", read.boxes_column)):
            if column is not None and column not in pages.column_names:
                raise ValueError(f"{name} {column!r}: --dataset {dataset!r} has the columns {pages.column_names}.")
        jobs += shard(dataset_documents(dataset, split, len(pages)), process_index, num_processes)
    return jobs, failures, pages


def _lock_and_read_done(output: str, records_path: str, failures_path: str) -> tuple[OutputLock, set]:
    """Lock this process's `records_path` and return the lock and the keys of the pages that every records file of
    `output` already holds (a torn last line of `records_path` is cut off; `failures_path` is checked to be the
    labeller's). This shard is marked unfinished again.

    Raises:
        ValueError: for an output file that is not the labeller's, or an output another run holds.
    """
    recover(failures_path, cut=False)  # a foreign file there is refused, never replaced
    lock = OutputLock(records_path)  # a second run on this output stops here (ValueError: exit 2)
    try:
        if os.path.exists(done_path(records_path)):
            os.remove(done_path(records_path))  # this shard is being written again: unfinished until this run ends
        done = {record_key(r) for r in recover(records_path)}
        for path in record_files(output):
            if os.path.abspath(path) != os.path.abspath(records_path):
                done.update(record_key(r) for r in read_complete(path))
    except BaseException:
        lock.release()
        raise
    return lock, done
