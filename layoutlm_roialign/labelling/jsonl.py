"""The labeller's output files: JSON Lines, one record per page, append-only and fsync'd, readable after any kill.

A record is written as one line in one `write`, then flushed and fsync'd with the rest of its batch, so a kill
(SIGKILL, power loss) can only leave the last line cut short, never lose or damage an earlier one. `recover` opens an
output that a killed run left: a last line without its newline is a torn record, and the file is truncated back to the
last complete line (that page is labelled again by the rerun, and written once); every complete line is parsed, and
their `(source, page)` keys are the pages to skip. A last line that is not the start of one of our records means
the file is not the labeller's (a notes file without a trailing newline): it is refused, never truncated.
`read_complete` reads a file that another process may be appending to (a shard of the same launch) without ever
changing it. `OutputLock` is an exclusive `fcntl.flock` on an output, held by the run that writes it, so that a second
run on the same output stops with a message instead of writing every page twice.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable

__all__ = ["JsonlWriter", "OutputLock", "recover", "read_complete", "record_key", "torn_tail"]

RECORD_START = b'{"source": '  # how every line the labeller writes begins (json.dumps of a record, `source` first)


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
        page = record.get("page")
        if not isinstance(record["source"], str) or not (page is None or type(page) is int):
            raise ValueError(
                f"{path} line {number} is not a labeller record (`source` must be a string and `page` a page number "
                f"or null; got {record['source']!r}, {page!r}): the file was changed by something other than the "
                "labeller. Fix or remove that line, or write to another --output."
            )
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


def torn_tail(path: str | os.PathLike) -> bytes:
    """What follows the last newline of the file at `path` (a torn last line; empty when there is none)."""
    data = _read(os.fspath(path))
    return data[data.rfind(b"\n") + 1 :]


def recover(path: str | os.PathLike, cut: bool = True) -> list[dict]:
    """The records of an output that this process is about to append to, after cutting off a torn last line (with
    `cut=False` only checked: a file this process is about to replace, such as a failures file).

    Raises:
        ValueError: naming the file and line, when a complete line is not a labeller record, or when the last line
            is cut short but is not the start of a record of ours (the file is then left as it is).
    """
    path = os.fspath(path)
    data = _read(path)
    complete = data.rfind(b"\n") + 1
    tail = data[complete:]
    if tail and not tail.startswith(RECORD_START[: len(tail)]):
        raise ValueError(
            f"--output {path!r} is not the labeller's: its last line ({tail[:60].decode('utf-8', 'replace')!r}) is "
            "not a record of ours, so the file was left as it is. Give another --output (a new file, or one a "
            "labelling run wrote)."
        )
    records = _parse(path, data[:complete])
    if tail and cut:  # a torn record: the run that wrote it was killed mid-line
        with open(path, "r+b") as f:
            f.truncate(complete)
            f.flush()
            os.fsync(f.fileno())
    return records


class OutputLock:
    """An exclusive lock on the output `path` (`fcntl.flock`, created empty if missing), held until `release`.

    Raises:
        ValueError: naming `--output`, when another process holds it (a labelling run still writing it, or a merge).
    """

    def __init__(self, path: str | os.PathLike, flag: str = "--output") -> None:
        self.path = os.fspath(path)
        # O_APPEND and no O_TRUNC: taking the lock never changes a byte of the file.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(self._fd)
            self._fd = None
            raise ValueError(
                f"{flag} {self.path!r} is being written by another running process (a labelling run or a merge "
                "holds its lock): wait for it to finish, then run again (it resumes), or give another --output."
            ) from err

    @staticmethod
    def is_held(path: str | os.PathLike) -> bool:
        """Whether a process holds the lock of the existing file `path` now."""
        try:
            fd = os.open(os.fspath(path), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


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
