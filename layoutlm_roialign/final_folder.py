"""The final folder of a run, written so that an interruption never leaves a half-written one that loads:
`save_folder_atomically` writes it beside its place and renames it there, `remove_stale_temporary_folders` clears
what an interrupted save left behind, and `prepare_final_folder` refuses a `final/` that holds anything a checkpoint
save does not write (`checkpoint_files.is_written_checkpoint`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint_files import is_written_checkpoint

__all__ = ["FINAL_FOLDER", "prepare_final_folder", "remove_stale_temporary_folders", "save_folder_atomically"]

logger = logging.getLogger(__name__)

FINAL_FOLDER = "final"


def remove_stale_temporary_folders(destination: str | os.PathLike) -> list[Path]:
    """Clean up after an interrupted `save_folder_atomically(destination)`: remove the `.<name>.tmp-<pid>` folders
    beside `destination`, and its `.<name>.old-<pid>` ones (the previous folder, moved aside just before the new one
    took its place), but put such a previous folder back if `destination` itself is missing. Nothing else is
    touched. Returns the removed folders."""
    destination = Path(destination)
    if not destination.parent.is_dir():
        return []
    stale = re.compile(rf"\.{re.escape(destination.name)}\.(tmp|old)-\d+")
    removed = []
    for path in sorted(destination.parent.iterdir()):
        if not stale.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        if path.name.startswith(f".{destination.name}.old-") and not destination.exists():
            os.replace(path, destination)
            logger.warning(f"Restored {destination} from {path.name}, left by an interrupted save.")
            continue
        shutil.rmtree(path)
        removed.append(path)
        logger.warning(f"Removed {path}, left by an interrupted save.")
    return removed


def prepare_final_folder(output_dir: str | os.PathLike, remove_stale: bool = True, flag: str = "--output_dir") -> Path:
    """`<output_dir>/final`, checked before a run starts: an existing one must be a checkpoint this package wrote
    (`is_written_checkpoint`), since the run replaces it. With `remove_stale`, what an interrupted save left beside
    it is cleared first (`remove_stale_temporary_folders`).

    Raises:
        ValueError: naming `flag` and the folder, when it holds anything a checkpoint save does not write (it is
            left as it is).
    """
    final_dir = Path(output_dir) / FINAL_FOLDER
    if remove_stale:
        remove_stale_temporary_folders(final_dir)
    _check_replaceable(final_dir, is_written_checkpoint, flag)
    return final_dir


def _check_replaceable(destination: Path, replaceable: Callable[[Path], bool], flag: str | None) -> None:
    if (destination.exists() or destination.is_symlink()) and not replaceable(destination):
        raise ValueError(
            f"{flag + ': ' if flag else ''}{destination} holds files this run did not write, and a run replaces that "
            f"folder; it was left as it is. Move it away{f', or give another {flag}' if flag else ''}, and run again."
        )


def save_folder_atomically(
    destination: str | os.PathLike,
    write: Callable[[Path], Any],
    replaceable: Callable[[Path], bool] | None = None,
) -> Path:
    """Call `write(folder)` on a fresh temporary folder beside `destination`, then rename it to `destination`
    (replacing an older one). An interruption leaves at most a `.<name>.tmp-*` folder, never a half-written
    `destination`; the next call (or `remove_stale_temporary_folders`) removes it.

    Args:
        replaceable: tells whether an existing `destination` may be replaced (e.g. `is_written_checkpoint`);
            `None`: any.

    Raises:
        ValueError: when `destination` exists and `replaceable` says no (nothing is written then).
    """
    destination = Path(destination)
    if replaceable is not None:
        _check_replaceable(destination, replaceable, None)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_folders(destination)
    tmp = destination.parent / f".{destination.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if destination.exists():
        old = destination.parent / f".{destination.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(destination, old)
    os.replace(tmp, destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return destination
