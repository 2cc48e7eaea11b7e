"""Label Studio, both ways: the flags that read an export as `--dataset` (`LabelStudioArguments`; the reading itself
is `layoutlm_roialign.data.labelstudio`), and the labelling configuration for a checkpoint's labels.

Nothing here needs `datasets`, so the labeller's arguments can share these flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .pages_layoutlm_roialign import WORDS_FROM

__all__ = ["LabelStudioArguments", "is_labelstudio_file", "parse_label_map", "labelstudio_options"]


@dataclass
class LabelStudioArguments:
    """How `--dataset` reads a Label Studio JSON export (the flags every script taking `--dataset` shares)."""

    images_dir: str | None = field(
        default=None,
        metadata={"help": "Label Studio export: the folder holding its task images (for server URLs such as "
                  "/data/upload/... or /data/local-files/?d=...); default: the export's folder."},
    )  # fmt: skip
    label_map: str | None = field(
        default=None,
        metadata={"help": "Label Studio export: rename labels, 'Old=NEW,Other=O,Junk=' (O: its words stay as O words; "
                  "empty: the region is dropped). With a map, every label of the export must be named."},
    )  # fmt: skip
    page_words_from: str = field(
        default="auto",
        metadata={"help": "Label Studio export: the page words outside the regions (O words) come from the text "
                  "layer, else OCR (auto), OCR (ocr), or only a text layer (text: images get none).",
                  "choices": list(WORDS_FROM)},
    )  # fmt: skip


def is_labelstudio_file(spec: str) -> bool:
    """Whether `--dataset spec` names a JSON file (read as a Label Studio export)."""
    path = Path(os.path.expanduser(spec))
    return path.is_file() and path.suffix.lower() == ".json"


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """`"Old=NEW,Other=O,Junk="` -> `{"OLD": "NEW", "OTHER": "O", "JUNK": ""}` (names in capitals).

    Raises:
        ValueError: naming `--label_map`, for an entry without `=` or a name given twice.
    """
    if not text:
        return None
    mapping: dict[str, str] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        if "=" not in entry:
            raise ValueError(f"--label_map entry {entry!r} needs the form OLD=NEW (NEW=O: O words; empty: drop).")
        old, new = (part.strip().upper() for part in entry.split("=", 1))
        if old in mapping:
            raise ValueError(f"--label_map names {old!r} twice.")
        mapping[old] = new
    return mapping


def labelstudio_options(args: LabelStudioArguments) -> dict:
    """The `LabelStudioArguments` of `args` as keyword arguments of the export readers."""
    return {"images_dir": args.images_dir, "label_map": args.label_map, "page_words_from": args.page_words_from}
