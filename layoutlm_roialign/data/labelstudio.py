"""Label Studio JSON exports as FUNSD-schema datasets: `--dataset export.json` (with `--images_dir`,
`--label_map`, `--page_words_from`).

An export is a JSON list of tasks; each task's `data` names its page image (`image` or `ocr`: a path, a URL of the
server's `/data/upload/...` or `/data/local-files/?d=...`, or any URL, found under `--images_dir` by the longest tail
of its path that exists there) and its `annotations` hold `result` items. Items sharing an `id` are one region: a
`rectangle` (or `rectanglelabels`) with `labels` and a `textarea` transcription, as in Label Studio's OCR template;
`relation` items (`from_id` -> `to_id`; `direction` `left` reverses them) are links. A task's last annotation that
was not cancelled is used; tasks without one are skipped and counted.

Each task becomes one row: every region's transcription as words with boxes (`labelstudio_regions`), labelled
B-/I-<LABEL> (the label in capitals), and the page's words outside every region (its text layer or OCR, read by
`pages_layoutlm_roialign.read_page` as `--page_words_from` says) as O words; rows list their words by position (top,
then left of each region or O word). Regions become `entities` and relations `links`.
`--label_map "Old=NEW,Other=O,Junk="` renames labels (`O`: the region's words are labelled O and it stays an entity,
labelled OTHER as FUNSD's "other" entities are, with its links; empty: the region and its words are dropped); with a
map, every label of the export must be in it.

Anything wrong is a `ValueError` naming the export, the task id and what is wrong; nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.parse
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from datasets import Dataset, DatasetInfo

from ..labelstudio import parse_label_map
from ..pages_layoutlm_roialign import read_page
from .funsd import FUNSD_ENTITY_TYPES, FUNSD_LABELS, funsd_features
from .labelstudio_regions import center_inside, region_box, region_words

__all__ = ["load_labelstudio_export"]

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("image", "ocr")
COUNTS = ("skipped_tasks", "words_page_words", "words_apportioned", "regions_page_words_mismatch", "o_words",
          "regions_without_words", "regions_dropped_by_label_map", "links", "links_dropped")  # fmt: skip
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")  # Label Studio prefixes uploaded files with 8 hex digits


def load_labelstudio_export(
    path: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    label_map: str | dict[str, str] | None = None,
    page_words_from: str = "auto",
) -> Dataset:
    """A Label Studio JSON export -> a FUNSD-schema `Dataset` with `entities` and `links` (module docstring). What
    was imported is counted in `dataset.info.description` (JSON) and logged: pages, tasks skipped for want of an
    annotation, words boxed from page words and apportioned, O words, regions without words, links dropped.

    Raises:
        ValueError: naming the task, for anything the export gets wrong (module docstring).
    """
    path = Path(os.path.expanduser(path))
    mapping = parse_label_map(label_map) if isinstance(label_map, str) or label_map is None else label_map
    tasks = _read_tasks(path)
    counts: Counter = Counter(dict.fromkeys(COUNTS, 0))
    pages = []
    for index, task in enumerate(tasks):
        name = f"Label Studio export {path}: task {task.get('id', f'#{index}')}"
        annotation = _chosen_annotation(task, name)
        if annotation is None:
            counts["skipped_tasks"] += 1
            continue
        image = _resolve_image(task, name, path.parent, images_dir)
        pages.append(_task_page(task, annotation, image, name, mapping, page_words_from, counts))
    if not pages:
        raise ValueError(
            f"Label Studio export {path} has no annotated task ({counts['skipped_tasks']} of {len(tasks)} tasks "
            "have no annotation): annotate (or accept the predictions of) some tasks, then export again."
        )
    types = sorted({tag[2:] for page in pages for tag in page["tags"] if tag != "O"})
    names = FUNSD_LABELS if set(types) <= {t.upper() for t in FUNSD_ENTITY_TYPES} else _bio_names(types)
    rows = {key: [page[key] for page in pages] for key in ("id", "words", "bboxes", "image", "entities", "links")}
    rows["ner_tags"] = [[names.index(tag) for tag in page["tags"]] for page in pages]
    stats = {"pages": len(pages), "entity_types": types, **{k: counts[k] for k in COUNTS}}
    logger.warning("Label Studio export %s imported: %s", path, json.dumps(stats))
    info = DatasetInfo(dataset_name=path.stem, description=json.dumps(stats), features=funsd_features(names, True))
    return Dataset.from_dict(rows, features=info.features, info=info)


def _bio_names(types: list[str]) -> list[str]:
    return ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]


def _read_tasks(path: Path) -> list[dict]:
    """The export's tasks. Raises ValueError for a file that is not JSON, not a list of tasks, or empty."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} cannot be read as JSON ({err}).") from err
    if isinstance(tasks, dict) and isinstance(tasks.get("data"), dict):
        tasks = [tasks]  # one task exported on its own
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks):
        raise ValueError(
            f"{path} is not a Label Studio export: expected a JSON list of tasks, each with `data` (its image) and "
            "`annotations` (export the project as 'JSON', not 'JSON-MIN' or CSV)."
        )
    if not tasks:
        raise ValueError(f"Label Studio export {path} is empty: it holds no tasks.")
    return tasks


def _chosen_annotation(task: dict, name: str) -> dict | None:
    """The task's last annotation that was not cancelled, or `None`."""
    annotations = task.get("annotations") or task.get("completions") or []
    if not isinstance(annotations, list):
        raise ValueError(f"{name}: `annotations` must be a list, got {type(annotations).__name__}.")
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    if not isinstance(kept[-1].get("result", []), list):
        raise ValueError(f"{name}: its annotation's `result` must be a list.")
    return kept[-1]


def _resolve_image(task: dict, name: str, export_dir: Path, images_dir: Any) -> Path:
    """The task's page image file: its `data` URL's path, or its longest tail found under `images_dir` (default:
    the export's folder); uploads also without Label Studio's 8-hex-digit prefix."""
    data = task["data"]
    url = next((data[k] for k in IMAGE_KEYS if isinstance(data.get(k), str)), None)
    if url is None:
        raise ValueError(f"{name}: its `data` has no image (looked for {list(IMAGE_KEYS)}, found {sorted(data)}).")
    parsed = urllib.parse.urlparse(url)
    if parsed.path.startswith("/data/local-files"):
        relative = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
    else:
        relative = urllib.parse.unquote(parsed.path) if parsed.scheme or url.startswith("/data/") else url
    candidates = [] if parsed.scheme or url.startswith("/data/") else [Path(os.path.expanduser(url))]
    root = Path(os.path.expanduser(images_dir)) if images_dir else export_dir
    parts = [p for p in PurePosixPath(relative).parts if p not in ("/", ".", "..")]
    candidates += [root.joinpath(*parts[i:]) for i in range(len(parts))]
    if parts and UPLOAD_PREFIX.match(parts[-1]):
        candidates.append(root / UPLOAD_PREFIX.match(parts[-1]).group(1))
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ValueError(
            f"{name}: its image {url!r} is missing: none of {[str(c) for c in candidates[:3]]} exists. Pass "
            "--images_dir, the folder holding the task images (the server's media/upload folder, or the local "
            "files root)."
        )
    return found


def _regions(result: list, name: str) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """The annotation's regions by id (`value` of the rectangle, `labels`, `text`, page size) and its relations."""
    regions: dict[str, dict] = {}
    relations = []
    for item in result:
        if not isinstance(item, dict):
            raise ValueError(f"{name}: a result item is not an object: {item!r}.")
        kind, value = item.get("type"), item.get("value") or {}
        if kind == "relation":
            ends = (item.get("from_id"), item.get("to_id"))
            relations.append(ends[::-1] if item.get("direction") == "left" else ends)
            continue
        region = regions.setdefault(str(item.get("id")), {"labels": []})
        for key in ("original_width", "original_height"):
            region.setdefault(key, item.get(key))
        if kind in ("rectangle", "rectanglelabels"):
            region["value"] = value
        elif kind in ("polygon", "polygonlabels", "keypoint", "keypointlabels", "brush", "brushlabels"):
            raise ValueError(f"{name}: region {item.get('id')} is a {kind}; only rectangles can be imported.")
        if kind in ("labels", "rectanglelabels"):
            region["labels"] += list(value.get(kind) or [])
        elif kind == "textarea":
            region["text"] = "\n".join(str(t) for t in value.get("text") or [])
    return regions, relations


def _region_label(region_id: str, region: dict, name: str, mapping: dict | None) -> str:
    """The region's label after `--label_map`: a type in capitals, `"O"`, or `""` (dropped)."""
    labels = sorted({str(label).strip().upper() for label in region["labels"]})
    if len(labels) != 1:
        raise ValueError(f"{name}: region {region_id} has {len(labels)} labels {labels}; give each region one.")
    if mapping is None:
        return labels[0]
    if labels[0] not in mapping:
        raise ValueError(
            f"{name}: region {region_id} has the label {labels[0]!r}, which --label_map does not name (it names "
            f"{sorted(mapping)}); add '{labels[0]}=NEW', '{labels[0]}=O' or '{labels[0]}=' (drop)."
        )
    return mapping[labels[0]]


def _task_page(
    task: dict, annotation: dict, image: Path, name: str, mapping: dict | None, words_from: str, counts: Counter
) -> dict:
    """One annotated task -> a row of the schema (with `tags` as label names)."""
    try:
        page = read_page(str(image), words_from=words_from, name=str(image))
    except (ImportError, OSError) as err:
        raise ValueError(
            f"{name}: the page words outside its regions (O words) need OCR, which is not available here ({err}). "
            "Install tesseract (pip install 'layoutlm-roialign[ocr]' and the tesseract binary), or pass "
            "--page_words_from text to import only the regions' words (the rest of the page is then not learnt "
            "as O)."
        ) from err
    regions, relations = _regions(annotation.get("result") or [], name)
    boxes: dict[str, list[int]] = {}
    for region_id, region in regions.items():
        if "value" not in region:
            raise ValueError(f"{name}: region {region_id} has no rectangle (only {sorted(region)}).")
        width = region.get("original_width") or page["width"]
        height = region.get("original_height") or page["height"]
        try:
            boxes[region_id] = region_box(region["value"], width, height)
        except ValueError as err:
            raise ValueError(f"{name}: region {region_id}: {err}.") from err
    claims = _claim_page_words(page, boxes, name)
    units = []  # (box, words, word boxes, label, region id)
    for region_id, region in regions.items():
        label = _region_label(region_id, region, name, mapping)
        inside = [i for i, owner in enumerate(claims) if owner == region_id]
        words, word_boxes, rule = region_words(
            region.get("text"),
            boxes[region_id],
            [page["words"][i] for i in inside],
            [page["boxes"][i] for i in inside],
        )
        counts[f"words_{rule}"] += len(words)  # rule "none": no words
        counts["regions_without_words"] += not words
        counts["regions_page_words_mismatch"] += rule == "apportioned" and bool(inside)
        if words and label != "":
            units.append((boxes[region_id], words, word_boxes, label, region_id))
        counts["regions_dropped_by_label_map"] += label == ""
    for i, owner in enumerate(claims):
        if owner is None:
            units.append((page["boxes"][i], [page["words"][i]], [page["boxes"][i]], "O", None))
            counts["o_words"] += 1
    return _assemble(task, image, units, regions, relations, name, counts)


def _claim_page_words(page: dict, boxes: dict[str, list[int]], name: str) -> list[str | None]:
    """Per page word, the region whose box holds its centre (`None`: outside every region). Raises ValueError for a
    word two regions claim."""
    claims: list[str | None] = []
    for word, box in zip(page["words"], page["boxes"], strict=True):
        owners = [region_id for region_id, region in boxes.items() if center_inside(box, region)]
        if len(owners) > 1:
            raise ValueError(
                f"{name}: regions {owners} overlap and all claim the page word {word!r} at {box} (0-1000); make the "
                "regions not overlap there, or merge them."
            )
        claims.append(owners[0] if owners else None)
    return claims


def _assemble(
    task: dict, image: Path, units: list, regions: dict, relations: list, name: str, counts: Counter
) -> dict:
    """Units sorted by position -> words, boxes, BIO tags, entities and links."""
    words, bboxes, tags, entities = [], [], [], []
    entity_of: dict[str, int] = {}
    for _, unit_words, unit_boxes, label, region_id in sorted(units, key=lambda u: (u[0][1], u[0][0])):
        first = len(words)
        words += unit_words
        bboxes += unit_boxes
        if region_id is None:  # a page word outside every region
            tags.append("O")
            continue
        if label == "O":  # an entity as FUNSD's "other": its words labelled O, its links kept
            tags += ["O"] * len(unit_words)
        else:
            tags += [f"B-{label}"] + [f"I-{label}"] * (len(unit_words) - 1)
        entity_of[region_id] = len(entities)
        members = bboxes[first:]
        union = [min(b[0] for b in members), min(b[1] for b in members), max(b[2] for b in members),
                 max(b[3] for b in members)]  # fmt: skip
        entities.append({"id": len(entities), "label": "OTHER" if label == "O" else label, "word_indices": list(range(first, len(words))),
                         "box": union})  # fmt: skip
    links = []
    for ends in relations:
        missing = [str(end) for end in ends if str(end) not in regions]
        if missing:
            raise ValueError(f"{name}: a relation {ends[0]} -> {ends[1]} names the missing region(s) {missing}.")
        pair = [entity_of.get(str(ends[0])), entity_of.get(str(ends[1]))]
        if None in pair:
            counts["links_dropped"] += 1  # an end dropped by --label_map, or without words
        elif pair not in links:
            links.append(pair)
    counts["links"] += len(links)
    return {"id": str(task.get("id", image.stem)), "words": words, "bboxes": bboxes, "tags": tags,
            "image": str(image.resolve()), "entities": entities, "links": links}  # fmt: skip
