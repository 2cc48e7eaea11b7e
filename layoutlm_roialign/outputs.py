"""Output files of the scripts: checked before the work, written together or not at all.

`check_output_paths` runs before a model is loaded, so a typo in a destination costs nothing. `write_files` writes
every output to a temporary file beside its destination and renames them only once all are written: a failure
leaves the old outputs as they were, never a new JSON beside an old drawing.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from typing import BinaryIO

__all__ = ["check_output_paths", "write_files"]


def check_output_paths(paths: Mapping[str, str | os.PathLike | None]) -> None:
    """Check that each destination (`{flag: path}`; `None` or `""` skipped) can be written.

    Raises:
        ValueError: naming the flag and the path, when its folder does not exist or is not writable, the path is a
            folder, or two flags name the same file.
    """
    seen: dict[str, str] = {}
    for flag, path in paths.items():
        if not path:
            continue
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"{flag} {path!r} is a folder; give a file name, e.g. {os.path.join(path, 'out')!r}.")
        if not os.path.isdir(folder):
            raise ValueError(f"{flag} {path!r}: the folder {folder!r} does not exist; create it first.")
        _check_writable(flag, path, folder)
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"{flag} and {seen[real]} are the same file {path!r}; give two different paths.")
        seen[real] = flag


def _check_writable(flag: str, path: str, folder: str) -> None:
    """Check the permission bits, then create and remove a file in `folder`: the bits pass for root, and say nothing
    about a read-only mount, a full disk or `/proc`."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path!r}: the folder {folder!r} is not writable; choose another destination.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    except OSError as err:
        raise ValueError(
            f"{flag} {path!r}: the folder {folder!r} is not writable ({err.strerror}); choose another destination."
        ) from err
    os.close(fd)
    os.remove(probe)


def write_files(writers: Mapping[str, Callable[[BinaryIO], object]]) -> None:
    """Write every file (`{path: write(binary_file)}`) or none: each goes to a temporary file in its destination's
    folder, and all are renamed into place once every one has been written."""
    temporary: dict[str, str] = {}
    try:
        for path, write in writers.items():
            folder, name = os.path.split(os.path.abspath(path))
            tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
            temporary[path] = tmp
            # os.open with mode 0o666 gives the permissions a plain open() would (the umask applies), unlike mkstemp.
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
                write(f)
        for path, tmp in temporary.items():
            os.replace(tmp, path)
    finally:
        for tmp in temporary.values():
            if os.path.exists(tmp):
                os.remove(tmp)
