"""Label documents at scale: folders, globs, list files, PDFs and datasets in; batched, resumable JSON Lines out.

`scripts/label.py` is the command. The modules, one job each: `sources` (inputs -> documents -> page jobs, the split
between processes), `reading` (a page job -> its words and encoded windows, in `DataLoader` workers), `runner` (batches
of pages through the package's road, `road_layoutlm_roialign.label_pages`: windows of several pages per forward pass,
each page's backbone run once, decoded and linked as `predict_page` does), `jsonl` (append-only, fsync'd records; a
torn last line cut off on resume), `shards` (per-process output names and their merge), `pipeline` (one run: plan,
stream, write, summarize), `ray_run` (the same run on Ray Data: reader tasks, model replicas, one writer).
"""

from .jsonl import JsonlWriter, OutputLock, read_complete, recover
from .pipeline import LabelRun, plan_run, process_share
from .reading import PageReader
from .runner import PageLabeller
from .shards import merge_shards, output_paths
from .sources import PageJob, expand_inputs, page_jobs, shard

__all__ = [
    "JsonlWriter",
    "OutputLock",
    "LabelRun",
    "PageJob",
    "PageLabeller",
    "PageReader",
    "expand_inputs",
    "merge_shards",
    "output_paths",
    "page_jobs",
    "plan_run",
    "process_share",
    "read_complete",
    "recover",
    "shard",
]
