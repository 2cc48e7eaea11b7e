"""Pre-annotated Label Studio tasks from the labeller's records (or `scripts/predict.py`'s JSON), and the labelling
configuration that matches a checkpoint's labels, so that a project is set up in one step and people correct
predictions instead of drawing every box.

A task is `{"data": {"image": URL, "layoutlm_roialign": {"source", "page"}}, "predictions": [{"model_version",
"score", "result"}]}`: per entity a `rectangle`, its `labels` and its `textarea` transcription sharing one region
id (Label Studio's OCR template; percent coordinates of the page, each with the entity's score), and per key-value
pair a `relation` (key -> value). Image URLs are `--image_root_url` followed by the page file's path relative to
`--image_root`; pages that are not image files of their own (PDF pages, TIFF frames past the first, dataset rows)
are rendered to PNG files in `render_dir` first. Files are written atomically, and a file there already is replaced
only when this module wrote it (the tasks carry `data.layoutlm_roialign`, the configuration starts with `MARK`).
"""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from .outputs import write_files

__all__ = [
    "MARK",
    "entity_types",
    "labelling_config",
    "read_records",
    "record_to_task",
    "export_tasks",
    "write_config",
    "write_tasks",
]

MARK = "<!-- layoutlm-roialign labelling config -->"
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")  # what a browser shows; others are rendered


def entity_types(label_names: Sequence[str]) -> list[str]:
    """A checkpoint's BIO label names -> its entity types, in label order (`["O", "B-KEY", "I-KEY"]` -> `["KEY"]`)."""
    types: list[str] = []
    for name in label_names:
        kind = name[2:] if name[:2] in ("B-", "I-") else name
        if name != "O" and kind not in types:
            types.append(kind)
    return types


def labelling_config(types: Sequence[str]) -> str:
    """Label Studio's OCR template for `types`: the page image, one `Labels` choice per type, a `Rectangle` and a
    per-region `TextArea` transcription (relations between regions need no tag)."""
    if not types:
        raise ValueError("The checkpoint has no entity types (its labels are only O); nothing to label.")
    labels = "\n".join(
        f"    <Label value={quoteattr(t)} background={quoteattr(COLOURS[i % len(COLOURS)])}/>"
        for i, t in enumerate(types)
    )
    return f"""{MARK}
<View>
  <Image name="image" value="$image" zoom="true" zoomControl="true" rotateControl="false"/>
  <Labels name="label" toName="image">
{labels}
  </Labels>
  <Rectangle name="bbox" toName="image" strokeWidth="2"/>
  <TextArea name="transcription" toName="image" editable="true" perRegion="true" required="true"
            maxSubmissions="1" rows="2" placeholder="Text of the region" displayMode="region-list"/>
</View>
"""


def read_records(path: str | os.PathLike) -> list[dict]:
    """The labeller's JSON Lines records, or one `scripts/predict.py` JSON (a single record)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return [whole]
    try:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--records {path}: neither the labeller's JSON Lines nor predict.py's JSON ({err})."
        ) from err
    if not all(isinstance(r, dict) and "source" in r for r in records):
        raise ValueError(f"--records {path}: a line is not a labeller record (no `source`).")
    return records


def record_to_task(record: dict, image_url: str, model_version: str) -> dict:
    """One page's record (`words`, `entities` with `label`, `text`, 0-1000 `box`, `score`; optional `pairs`) -> a
    Label Studio task with the predictions."""
    size = {"original_width": record.get("width"), "original_height": record.get("height"), "image_rotation": 0}
    result = []
    for index, entity in enumerate(record.get("entities") or []):
        x0, y0, x1, y1 = entity["box"]
        value = {"x": x0 / 10, "y": y0 / 10, "width": (x1 - x0) / 10, "height": (y1 - y0) / 10, "rotation": 0}
        common = {"id": f"e{index}", "to_name": "image", **size, "score": round(float(entity.get("score", 1.0)), 4)}
        result += [
            {**common, "type": "rectangle", "from_name": "bbox", "value": value},
            {**common, "type": "labels", "from_name": "label", "value": {**value, "labels": [entity["label"]]}},
            {**common, "type": "textarea", "from_name": "transcription", "value": {**value, "text": [entity["text"]]}},
        ]
    for pair in record.get("pairs") or []:
        result.append({"type": "relation", "from_id": f"e{pair['key']['entity']}",
                       "to_id": f"e{pair['value']['entity']}", "direction": "right", "labels": []})  # fmt: skip
    scores = [float(e.get("score", 1.0)) for e in record.get("entities") or []]
    return {
        "data": {"image": image_url, "layoutlm_roialign": {"source": record["source"], "page": record.get("page")}},
        "predictions": [{"model_version": model_version, "score": round(sum(scores) / max(len(scores), 1), 4),
                         "result": result}],
    }  # fmt: skip


def _url(file: Path, image_root: Path, image_root_url: str) -> str:
    try:
        relative = file.resolve().relative_to(image_root.resolve())
    except ValueError as err:
        raise ValueError(
            f"The page {file} is not under --image_root {image_root}; give the folder that holds the pages (and "
            "--render_dir) as --image_root."
        ) from err
    return image_root_url + urllib.parse.quote(relative.as_posix())


def _page_file(record: dict, render_dir: str | None, rendered: dict) -> Path:
    """The image file Label Studio shows for a record's page: the source itself when it is a browser image file
    of one page, else a PNG to render into `render_dir` (planned in `rendered`, written later)."""
    source, page = record["source"], record.get("page") or 1
    if os.path.isfile(source) and Path(source).suffix.lower() in IMAGE_SUFFIXES and page == 1:
        return Path(source)
    if not render_dir:
        raise ValueError(
            f"The page {source!r} (page {page}) is not an image file a browser shows (a PDF page, a TIFF frame or a "
            "dataset row); give --render_dir, a folder to write it to as PNG."
        )
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source).name)
    target = Path(render_dir) / f"{stem}-p{page}.png"
    rendered[target] = (source, page)
    return target


def export_tasks(
    records: Iterable[dict],
    image_root_url: str,
    image_root: str | os.PathLike = ".",
    model_version: str = "",
    render_dir: str | None = None,
) -> tuple[list[dict], dict[Path, tuple[str, int]], int]:
    """Records -> `(tasks, pages to render {png: (source, page)}, records skipped)`: records of pages the labeller
    could not read (`error`) are skipped and counted."""
    tasks, rendered, skipped = [], {}, 0
    for record in records:
        if "error" in record:
            skipped += 1
            continue
        file = _page_file(record, render_dir, rendered)
        tasks.append(record_to_task(record, _url(file, Path(image_root), image_root_url), model_version))
    return tasks, rendered, skipped


def render_page(source: str, page: int) -> Any:
    """A page the labeller read, as an RGB PIL image: a file's page or frame, or a `<dataset>[<split>]` row."""
    from .pages_layoutlm_roialign import read_page

    if source.endswith("]") and "[" in source and not os.path.exists(source):
        from .labelling.sources import load_page_dataset

        spec, split = source[:-1].rsplit("[", 1)
        rows = load_page_dataset(spec, split)
        return read_page(rows[page - 1]["image"], words=[], boxes=[])["image"]
    return read_page(source, page, words=[], boxes=[])["image"]


def _is_ours_tasks(path: Path) -> bool:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(tasks, list) and all(
        isinstance(t, dict) and "layoutlm_roialign" in (t.get("data") or {}) for t in tasks
    )


def _check_replaceable(path: Path, flag: str, ours: bool) -> None:
    if path.exists() and not ours:
        raise ValueError(f"{flag} {path} exists and was not written by this tool; choose another file or remove it.")


def write_tasks(path: str | os.PathLike, tasks: list[dict], rendered: dict[Path, tuple[str, int]]) -> None:
    """Write the tasks (JSON) and the pages to render (PNG) together, atomically; an existing file is replaced only
    when this module wrote it.

    Raises:
        ValueError: naming the flag, for a destination holding a file this module did not write.
    """
    path = Path(path)
    _check_replaceable(path, "--output", path.exists() and _is_ours_tasks(path))
    writers = {str(path): lambda f: f.write(json.dumps(tasks, indent=1).encode())}
    for target, (source, page) in rendered.items():
        buffer = io.BytesIO()
        render_page(source, page).save(buffer, format="PNG")
        data = buffer.getvalue()
        if target.exists() and target.read_bytes() != data:
            raise ValueError(f"--render_dir: {target} exists and holds another image; give an empty or new folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        writers[str(target)] = lambda f, data=data: f.write(data)
    write_files(writers)


def write_config(path: str | os.PathLike, config: str) -> None:
    """Write a labelling configuration atomically (replacing only one that this module wrote)."""
    path = Path(path)
    ours = path.exists() and path.read_text(encoding="utf-8", errors="replace").startswith(MARK)
    _check_replaceable(path, "--output", ours)
    write_files({str(path): lambda f: f.write(config.encode())})
