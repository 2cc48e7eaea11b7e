"""Output files of one process of a launch, and the merge that joins the shards.

With `--output labels.jsonl`, a single process writes `labels.jsonl` and `labels.failures.jsonl`; process `i` of `n`
(under `accelerate launch`) writes `labels.shard-0000i-of-0000n.jsonl` and `labels.shard-0000i-of-0000n.failures.jsonl`
beside it, and when it has finished, `labels.shard-0000i-of-0000n.done.json` (how many records and failures its
two files hold). A page is done when any of these record files holds it, whatever process count wrote it, so a rerun
with another number of processes or machines does not label a page twice. `merge_shards` checks the shard set of every
launch first (the count `n` from the names, all `n` shards there with their done file, each holding the records its
done file counts, no torn line, no process still writing one) and otherwise stops naming the shard and deletes
nothing; it then joins the record files into `labels.jsonl` (one record per page, sorted by source and page) and the
failure files into `labels.failures.jsonl` (without the pages that have a record), each written to a temporary file
and renamed, and only then removes the shards.
"""

from __future__ import annotations

import glob
import json
import os
import re

from ..outputs import write_files
from .jsonl import OutputLock, read_complete, record_key, torn_tail

__all__ = ["output_paths", "record_files", "merge_shards", "done_path", "write_done"]

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


def done_path(records_path: str | os.PathLike) -> str:
    """The done file of the shard `records_path` (`<shard>.done.json`)."""
    return os.fspath(records_path).removesuffix(".jsonl") + ".done.json"


def write_done(records_path: str, failures_path: str) -> None:
    """Mark a shard finished: its done file (written whole, then renamed) counts the records of its two files."""
    counts = {"records": len(read_complete(records_path)), "failures": len(read_complete(failures_path))}
    write_files({done_path(records_path): lambda f: f.write(json.dumps(counts).encode("utf-8") + b"\n")})


def _check_launches(output: str, shards: list[str]) -> None:
    """Every launch's shard set is complete and no longer written (module docstring); `ValueError` naming the shard."""
    fix = "rerun the same launch (it resumes, and skips what is done), then --merge again"
    counts = {int(_SHARD.search(p).group(2)) for p in shards}
    for count in sorted(counts):
        for index in range(count):
            records, failures = output_paths(output, index, count)
            if not os.path.isfile(records):
                raise ValueError(
                    f"--output {output!r}: the launch of {count} processes is missing shard {records!r} (shards are "
                    f"counted from their names: {count}); {fix}. Nothing was merged or removed."
                )
            if OutputLock.is_held(records):
                raise ValueError(
                    f"--output {output!r}: shard {records!r} is still being written by a running process; wait for "
                    "the launch to finish, then --merge. Nothing was merged or removed."
                )
            for path in (records, failures):
                if torn_tail(path):
                    raise ValueError(
                        f"--output {output!r}: shard {path!r} ends in a torn line (its process was killed while "
                        f"writing); {fix}. Nothing was merged or removed."
                    )
            try:
                with open(done_path(records), encoding="utf-8") as f:
                    done = json.load(f)
            except (OSError, ValueError):
                raise ValueError(
                    f"--output {output!r}: shard {records!r} was not finished by its process (no "
                    f"{os.path.basename(done_path(records))!r}); {fix}. Nothing was merged or removed."
                ) from None
            for path, key in ((records, "records"), (failures, "failures")):
                held = len(read_complete(path))
                if held < done.get(key, 0):
                    raise ValueError(
                        f"--output {output!r}: shard {path!r} holds {held} of the {done[key]} {key} its process "
                        f"wrote (the file was cut short or replaced); {fix}. Nothing was merged or removed."
                    )


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
        ValueError: naming `--output` and the shard, when there is nothing to merge or a launch's shard set is not
            complete (nothing is then written or removed).
    """
    output = os.fspath(output)
    shards = _shards(output, failures=False)
    failure_shards = _shards(output, failures=True)
    if not shards and not failure_shards:
        raise ValueError(f"--output {output!r}: no shard files ({_stem(output)}.shard-*-of-*.jsonl) to merge.")
    _check_launches(
        output, sorted(set(shards) | {p.removesuffix(".failures.jsonl") + ".jsonl" for p in failure_shards})
    )
    locks: list[OutputLock] = []
    try:
        for path in shards:  # a run started on a shard now stops instead of writing into it
            locks.append(OutputLock(path))
        return _merge(output, shards, failure_shards)
    finally:
        for lock in locks:
            lock.release()


def _merge(output: str, shards: list[str], failure_shards: list[str]) -> dict:
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
    for path in shards + failure_shards + [done_path(p) for p in shards]:
        if os.path.exists(path):
            os.remove(path)
    return {"records": len(records), "failures": len(failures), "shards": shards}
