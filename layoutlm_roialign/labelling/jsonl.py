"""The labeller's output files: JSON Lines, one record per page, append-only and fsync'd, readable after any kill.

A record is written as one line in one `write`, then flushed and fsync'd with the rest of its batch, so a kill
(SIGKILL, power loss) can only leave the last line cut short, never lose or damage an earlier one. `recover` opens an
output that a killed run left: a last line without its newline is a torn record, and the file is truncated back to
the last complete line (that page is labelled again by the rerun, and written once); every complete line is parsed,
and their `(source, page)` keys are the pages to skip. `read_complete` reads a file that another process may be
appending to (a shard of the same launch) without ever changing it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

__all__ = ["JsonlWriter", "recover", "read_complete", "record_key"]


def record_key(record: dict) -> tuple[str, int | None]:
    """The page a record is about: `(source, page)`."""
    return (record["source"], record.get("page"))


def _parse(path: str, data: bytes) -> list[dict]:
    records = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise ValueError(
                f"{path} line {number} is not a JSON record ({err}): the file was changed by something other than "
                "the labeller. Fix or remove that line, or write to another --output."
            ) from err
        if not isinstance(record, dict) or "source" not in record:
            raise ValueError(f"{path} line {number} is not a labeller record (no `source`); use another --output.")
        records.append(record)
    return records


def read_complete(path: str | os.PathLike) -> list[dict]:
    """The complete lines of a JSON Lines file (a torn last line is ignored, the file left as it is); `[]` if the
    file does not exist."""
    path = os.fspath(path)
    data = _read(path)
    return _parse(path, data[: data.rfind(b"\n") + 1])


def _read(path: str) -> bytes:
    """The file's bytes; empty if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def recover(path: str | os.PathLike) -> list[dict]:
    """The records of an output that this process is about to append to, after cutting off a torn last line.

    Raises:
        ValueError: naming the file and line, when a complete line is not a labeller record.
    """
    path = os.fspath(path)
    data = _read(path)
    complete = data.rfind(b"\n") + 1
    records = _parse(path, data[:complete])
    if complete < len(data):  # a torn record: the run that wrote it was killed mid-line
        with open(path, "r+b") as f:
            f.truncate(complete)
            f.flush()
            os.fsync(f.fileno())
    return records


class JsonlWriter:
    """Appends records to a JSON Lines file; `write` returns once they are on disk (flush + fsync)."""

    def __init__(self, path: str | os.PathLike, truncate: bool = False) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "wb" if truncate else "ab")  # noqa: SIM115 (closed by `close`)
        if truncate:
            os.fsync(self._file.fileno())

    def write(self, records: Iterable[dict]) -> None:
        lines = [(json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8") for record in records]
        if not lines:
            return
        for line in lines:
            self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
