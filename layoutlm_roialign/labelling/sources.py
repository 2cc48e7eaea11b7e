"""What to label: folders, globs, list files and `datasets` datasets -> documents -> page jobs, in a fixed order.

A *document* is a file (an image, a multi-page TIFF, a PDF) or one row of a dataset. `expand_inputs` turns the
`--inputs` into files: a folder gives every page file under it (recursively, sorted; PIL image extensions and `.pdf`,
hidden files skipped), a glob its matches (sorted), a list file (`.txt`, `.lst`, `.list`) the paths on its lines
(relative ones from the list file's folder; blank lines and `#` comments skipped), a file itself; inputs keep the order
given and a file named twice is labelled once, however it is named (two paths, a symlink, a folder that a symlink loop
reaches again: files are compared by device and inode, and folder walks never follow folder symlinks). A sub-folder
that cannot be read becomes a failure record; a folder given directly that cannot be read is an error. `shard` splits
documents round-robin between processes, so every process of a launch derives the same split from the same inputs.
`page_jobs` opens each document just far enough to count its pages (a PDF's page count, a TIFF's frames) and turns a
document that cannot be opened (empty, corrupt, encrypted, past PIL's decompression-bomb limit) into a failure record
instead.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import PIL.Image

from ..labelstudio import LabelStudioArguments, is_labelstudio_file
from ..options_layoutlm_roialign import ReadOptions
from ..page_words_layoutlm_roialign import check_ocr_lang
from ..pages_layoutlm_roialign import DEFAULT_DPI, WORDS_FROM, count_frames

__all__ = [
    "PageJob",
    "expand_inputs",
    "shard",
    "page_jobs",
    "dataset_documents",
    "load_page_dataset",
    "PAGE_EXTENSIONS",
    "LIST_EXTENSIONS",
]

LIST_EXTENSIONS = (".txt", ".lst", ".list")
PAGE_EXTENSIONS = frozenset(
    ext for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN and ext != ".ps"
) | {".pdf"}


@dataclass
class PageSourceArguments(LabelStudioArguments):
    """Where pages come from and how their words are read: the arguments `scripts/label.py` and
    `scripts/pretrain.py` share. `--ocr_lang` is checked against Tesseract's languages when they are built, before
    any page is read (`ValueError` naming it)."""

    inputs: list[str] = field(
        default_factory=list,
        metadata={"help": "Folders, globs (quoted), list files (.txt/.lst: a path a line), files: images and PDFs."},
    )
    dataset: str | None = field(
        default=None, metadata={"help": "A datasets `save_to_disk` folder, a Hub id or a Label Studio export (.json)."}
    )
    split: str = field(default="train", metadata={"help": "The --dataset split."})
    image_column: str = field(default="image", metadata={"help": "The --dataset column holding the pages."})
    words_column: str | None = field(default=None, metadata={"help": "A --dataset column of words (instead of OCR)."})
    boxes_column: str | None = field(default=None, metadata={"help": "Its column of 0-1000 word boxes."})
    words_from: str = field(
        default="auto",
        metadata={
            "help": "auto: a PDF's text layer, else OCR; text: never OCR; ocr: always OCR.",
            "choices": list(WORDS_FROM),
        },
    )
    ocr_lang: str | None = field(default=None, metadata={"help": "Tesseract language(s), e.g. eng or eng+deu."})
    dpi: float = field(default=DEFAULT_DPI, metadata={"help": "Resolution PDF pages are rendered at."})

    def __post_init__(self) -> None:
        check_ocr_lang(self.ocr_lang, "--ocr_lang")

    def read_options(self) -> ReadOptions:
        """How these pages are read, as the reader takes it."""
        return ReadOptions(self.words_from, self.dpi, self.ocr_lang, self.image_column, self.words_column,
                           self.boxes_column)  # fmt: skip


@dataclass(frozen=True)
class PageJob:
    """One page to label. `source` is the file (as given) or `<dataset>[<split>]`; `page` counts from 1 (a dataset's
    row `page - 1`); `kind` is `"pdf"`, `"image"` (a frame of an image file) or `"dataset"`."""

    source: str
    page: int
    num_pages: int
    kind: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.source, self.page)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _folder_files(folder: str, unreadable: list[dict] | None = None) -> list[str]:
    """Page files under `folder`; each sub-folder that cannot be read is added to `unreadable` as a failure record.

    Raises:
        ValueError: naming `--inputs`, when `folder` itself cannot be read.
    """
    errors: list[OSError] = []
    found = []
    for root, dirs, files in os.walk(folder, onerror=errors.append):  # folder symlinks are not followed: no loops
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in PAGE_EXTENSIONS:
                found.append(os.path.join(root, name))
    for err in errors:
        if os.path.normpath(err.filename or folder) == os.path.normpath(folder):
            raise ValueError(f"--inputs {folder!r}: the folder cannot be read ({err.strerror or err}).") from err
        if unreadable is not None:
            unreadable.append(
                {"source": os.path.normpath(err.filename), "page": None,
                 "error": f"the folder cannot be read ({err.strerror or err}): its files were not labelled"}
            )  # fmt: skip
    return found


def _list_file(path: str) -> list[str]:
    base = os.path.dirname(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--inputs {path!r}: the list file cannot be read ({err}).") from err
    return [
        os.path.normpath(os.path.join(base, os.path.expanduser(line))) for line in lines if line and line[0] != "#"
    ]


def _file_id(path: str) -> tuple[int, int] | str:
    """What makes a file itself: `(st_dev, st_ino)` (the path when it cannot be stat'ed; it fails later, named)."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.normpath(path)
    return (st.st_dev, st.st_ino)


def expand_inputs(inputs: Sequence[str], unreadable: list[dict] | None = None) -> list[str]:
    """The files that `inputs` (folders, globs, list files, files) name, in a deterministic order, each file once
    (module docstring). Sub-folders that cannot be read are added to `unreadable` as failure records.

    Raises:
        ValueError: naming `--inputs` and the entry, for a path that does not exist or a glob or folder that matches
            no page file.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    files: list[str] = []
    for entry in inputs:
        path = os.path.expanduser(entry)
        if os.path.isdir(path):
            skipped: list[dict] = []
            found = _folder_files(path, skipped)
            if unreadable is not None:
                unreadable.extend(skipped)
            if not found and not skipped:
                raise ValueError(
                    f"--inputs {entry!r}: the folder holds no page files (images or PDFs: "
                    f"{', '.join(sorted(e for e in PAGE_EXTENSIONS if e in ('.pdf', '.png', '.jpg', '.tif')))}, ...)."
                )
        elif os.path.isfile(path):
            found = _list_file(path) if path.lower().endswith(LIST_EXTENSIONS) else [path]
        elif _is_glob(path):
            found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not found:
                raise ValueError(f"--inputs {entry!r}: the pattern matches no file (quote it so the shell leaves it).")
        else:
            raise ValueError(f"--inputs {entry!r} does not exist: give a folder, a glob, a list file or a file.")
        files.extend(os.path.normpath(p) for p in found)
    unique: dict = {}
    for path in files:
        unique.setdefault(_file_id(path), path)
    return list(unique.values())


def shard(items: Sequence[Any], index: int, count: int) -> list[Any]:
    """Process `index`'s share of `items` out of `count` processes: every `count`-th item from `index` (round-robin,
    so long and short documents spread evenly, and the shares together are `items` exactly once)."""
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is outside 0..{count - 1}.")
    return list(items[index::count])


def _is_pdf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(5) == b"%PDF-"


def _document_pages(path: str) -> tuple[str, int]:
    """`(kind, number of pages)` of one file; `ValueError` with the reason when it cannot be opened."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise ValueError("the file is empty (0 bytes)")
        if _is_pdf(path):
            from ..pdf_layoutlm_roialign import pdf_page_count

            count = pdf_page_count(path)  # ValueError for damaged and encrypted PDFs
            if count == 0:
                raise ValueError("the PDF has no pages")
            return "pdf", count
        return "image", count_frames(path)  # the header only: pixels are read by the workers
    except OSError as err:
        raise ValueError(f"cannot be read ({err.strerror or err})") from err


def page_jobs(files: Iterable[str]) -> tuple[list[PageJob], list[dict]]:
    """Every page of `files`, and a failure record (`{"source", "page": null, "error"}`) for each file that cannot
    be opened. Only headers are read here (a PDF's page count, an image's frame count)."""
    jobs, failures = [], []
    for path in files:
        try:
            kind, count = _document_pages(path)
        except (ValueError, ImportError) as err:  # ImportError: a PDF without pypdfium2 installed
            failures.append({"source": path, "page": None, "error": str(err)})
            continue
        jobs.extend(PageJob(path, page, count, kind) for page in range(1, count + 1))
    return jobs, failures


def load_page_dataset(spec: str, split: str = "train", image_column: str = "image", **labelstudio: Any) -> Any:
    """A `datasets.Dataset` of pages: a `save_to_disk` folder, a Hub id (its parquet export when the repository
    holds a loading script) or a Label Studio export (its split `train`, read with the `labelstudio` options:
    `layoutlm_roialign.labelstudio.labelstudio_options`), split `split`, with `image_column` left undecoded (the
    workers decode it).

    Raises:
        ValueError: naming `--dataset`, `--split` or `--image_column` when the dataset cannot be loaded, has no
            such split or no such column.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError('--dataset needs the datasets library: pip install "layoutlm-roialign[train]".') from err
    path = os.path.expanduser(spec)
    try:
        if is_labelstudio_file(path):
            from ..data.labelstudio import load_labelstudio_export

            loaded = datasets.DatasetDict({"train": load_labelstudio_export(path, **labelstudio)})
        elif os.path.isdir(path):
            loaded = datasets.load_from_disk(path)
        elif os.path.exists(path):
            raise ValueError(f"--dataset {spec!r} is a file; give a `save_to_disk` folder or a Hub dataset id.")
        else:
            try:
                loaded = datasets.load_dataset(spec)
            except (RuntimeError, ValueError) as err:
                if "script" not in str(err).lower():
                    raise
                loaded = datasets.load_dataset(spec, revision="refs/convert/parquet")
    except (OSError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError, RuntimeError) as err:
        raise ValueError(f"--dataset {spec!r} cannot be loaded ({err}).") from err
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"--split {split!r}: --dataset {spec!r} has the splits {sorted(loaded)}; choose one.")
        loaded = loaded[split]
    if image_column not in loaded.column_names:
        raise ValueError(
            f"--image_column {image_column!r}: --dataset {spec!r} has the columns {loaded.column_names}; name the one "
            "holding the page images."
        )
    if isinstance(loaded.features[image_column], datasets.Image):
        loaded = loaded.cast_column(image_column, datasets.Image(decode=False))
    return loaded


def dataset_documents(spec: str, split: str, num_rows: int) -> list[PageJob]:
    """One page job per row of a dataset: source `<spec>[<split>]`, page `row + 1`."""
    source = f"{spec}[{split}]"
    return [PageJob(source, row + 1, num_rows, "dataset") for row in range(num_rows)]
