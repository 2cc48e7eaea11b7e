"""Output files of one process of a launch, and the merge that joins the shards.

With `--output labels.jsonl`, a single process writes `labels.jsonl` and `labels.failures.jsonl`; process `i` of `n`
(under `accelerate launch`) writes `labels.shard-0000i-of-0000n.jsonl` and `labels.shard-0000i-of-0000n.failures.jsonl`
beside it. A page is done when any of these record files holds it, whatever process count wrote it, so a rerun with
another number of processes or machines does not label a page twice. `merge_shards` joins the record files into
`labels.jsonl` (one record per page, sorted by source and page) and the failure files into `labels.failures.jsonl`
(without the pages that have a record), each written to a temporary file and renamed, then removes the shards.
"""

from __future__ import annotations

import glob
import json
import os
import re

from ..outputs import write_files
from .jsonl import read_complete, record_key

__all__ = ["output_paths", "record_files", "merge_shards"]

_SHARD = re.compile(r"\.shard-(\d+)-of-(\d+)\.jsonl$")


def _stem(output: str) -> str:
    root, ext = os.path.splitext(os.fspath(output))
    return root if ext.lower() in (".jsonl", ".json", ".ndjson") else os.fspath(output)


def output_paths(output: str | os.PathLike, index: int = 0, count: int = 1) -> tuple[str, str]:
    """`(records, failures)` paths of process `index` of `count` (module docstring)."""
    output = os.fspath(output)
    if count == 1:
        return output, _stem(output) + ".failures.jsonl"
    name = f"{_stem(output)}.shard-{index:05d}-of-{count:05d}"
    return name + ".jsonl", name + ".failures.jsonl"


def _shards(output: str, failures: bool) -> list[str]:
    stem = glob.escape(_stem(output))
    suffix = ".failures.jsonl" if failures else ".jsonl"
    paths = glob.glob(stem + ".shard-*-of-*" + suffix)
    return sorted(p for p in paths if _SHARD.search(p.removesuffix(suffix) + ".jsonl"))


def record_files(output: str | os.PathLike) -> list[str]:
    """Every record file of `output` that exists: the output itself and the shards of any launch."""
    output = os.fspath(output)
    return ([output] if os.path.isfile(output) else []) + _shards(output, failures=False)


def merge_shards(output: str | os.PathLike) -> dict:
    """Join the shards of `output` into `output` and its failures file (module docstring).

    Returns:
        `{"records", "failures", "shards"}`: the counts written and the shard files merged (and removed).

    Raises:
        ValueError: naming `--output`, when there is nothing to merge.
    """
    output = os.fspath(output)
    shards = _shards(output, failures=False)
    failure_shards = _shards(output, failures=True)
    if not shards and not failure_shards:
        raise ValueError(f"--output {output!r}: no shard files ({_stem(output)}.shard-*-of-*.jsonl) to merge.")
    records: dict = {}
    for path in record_files(output):
        for record in read_complete(path):
            records.setdefault(record_key(record), record)
    failures: dict = {}
    failures_path = output_paths(output)[1]
    for path in ([failures_path] if os.path.isfile(failures_path) else []) + failure_shards:
        for record in read_complete(path):
            if record_key(record) not in records:
                failures[record_key(record)] = record

    def order(key: tuple) -> tuple:
        return (key[0], -1 if key[1] is None else key[1])

    def lines(items: dict) -> bytes:
        return b"".join(
            (json.dumps(items[k], ensure_ascii=False) + "\n").encode("utf-8") for k in sorted(items, key=order)
        )

    def writer(items: dict):
        def write(f) -> None:
            f.write(lines(items))
            f.flush()
            os.fsync(f.fileno())

        return write

    write_files({output: writer(records), failures_path: writer(failures)})
    for path in shards + failure_shards:
        os.remove(path)
    return {"records": len(records), "failures": len(failures), "shards": shards}
