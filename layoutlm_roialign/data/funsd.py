"""FUNSD-schema datasets: the original release folder, Hub copies, and the train/validation split.

Every loader returns rows of one schema (`funsd_features`): `id`, `words`, `bboxes` (0-1000 per word), IOB
`ner_tags` (a `Sequence(ClassLabel)`) and the page `image`, which is what `layoutlm_roialign.data.encoding` encodes.
Loaders whose source has FUNSD's entity links (the release folder, synthetic forms, a `save_to_disk` or Hub copy
that carries the two columns) add `entities` (per entity: FUNSD `id`, `label` in capitals, `word_indices` into the
kept words, 0-1000 `box`) and `links` (`[from_id, to_id]` pairs, deduplicated, oriented as FUNSD lists them:
question -> answer, header -> question).
Each also says what it loaded in the dataset's `info`: `dataset_name` and `license` (FUNSD's own terms for the
release folder, whatever the folder is called), which the model card reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Value, load_dataset, load_from_disk
from datasets import Image as ImageFeature
from datasets import Sequence as SequenceFeature

from ..image_processing_layoutlm_roialign import normalize_box

__all__ = [
    "FUNSD_LABELS",
    "FUNSD_ENTITY_TYPES",
    "FUNSD_LICENSE",
    "funsd_features",
    "has_links",
    "funsd_info",
    "parse_funsd_annotation",
    "load_funsd_folder",
    "load_hub_funsd",
    "to_funsd_schema",
    "load_dataset_spec",
    "split_train_validation",
]

# The label order of the Hub's `nielsr/funsd` (and of LayoutLM's FUNSD notebooks), so checkpoints agree.
FUNSD_LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
FUNSD_ENTITY_TYPES = ("question", "answer", "header", "other")  # "other" is labelled O
FUNSD_LICENSE = "FUNSD license: non-commercial, research and educational purposes only"


def funsd_info() -> DatasetInfo:
    """What the FUNSD folder loader reports about its data (`dataset_name`, `license`, ...)."""
    return DatasetInfo(
        dataset_name="funsd",
        description="FUNSD: Form Understanding in Noisy Scanned Documents (Jaume, Ekenel, Thiran, ICDAR-OST 2019).",
        homepage="https://guillaumejaume.github.io/FUNSD/",
        license=FUNSD_LICENSE,
        features=funsd_features(links=True),
    )


def funsd_features(label_names: Sequence[str] = FUNSD_LABELS, links: bool = False) -> Features:
    """The schema every loader returns; `links=True` adds the `entities` and `links` columns."""
    features = {
        "id": Value("string"),
        "words": SequenceFeature(Value("string")),
        "bboxes": SequenceFeature(SequenceFeature(Value("int64"), length=4)),
        "ner_tags": SequenceFeature(ClassLabel(names=list(label_names))),
        "image": ImageFeature(),
    }
    if links:
        entity = {
            "id": Value("int64"),
            "label": Value("string"),
            "word_indices": SequenceFeature(Value("int64")),
            "box": SequenceFeature(Value("int64"), length=4),
        }
        features["entities"] = [entity]  # a list of structs (a `Sequence` of a dict would become a dict of lists)
        features["links"] = SequenceFeature(SequenceFeature(Value("int64"), length=2))
    return Features(features)


def has_links(dataset: Dataset) -> bool:
    """Whether a FUNSD-schema dataset carries `entities` and `links` (what the linking task trains on)."""
    return {"entities", "links"} <= set(dataset.column_names)


def _iob(entity_label: str, position: int) -> str:
    kind = entity_label.strip().upper()
    if kind == "OTHER":
        return "O"
    return f"{'B' if position == 0 else 'I'}-{kind}"


def parse_funsd_annotation(
    annotation_file: str | os.PathLike, width: int, height: int, skip_empty_words: bool = True
) -> dict[str, Any]:
    """One FUNSD annotation file -> `words`, 0-1000 `bboxes`, IOB `labels`, the `entities` (label, word count), the
    `entity_records` (FUNSD `id`, `label` in capitals, `word_indices` into the kept words, 0-1000 `box`: the union
    of its kept words' boxes) and the `links` (`[from_id, to_id]`, deduplicated: FUNSD lists each link in both of its
    entities).

    Each entity's words are labelled B-/I-<LABEL> in reading order ("other" -> O). Words whose text is blank
    (624 of FUNSD's 22,512 training words) are dropped by default: they have no tokens to label. An entity left
    without words (152 in the training split) has no record, and links to it are dropped (`dropped_links` counts
    them); a link naming an id that no entity has is an error.

    Raises:
        ValueError: naming the file, if it is not JSON of FUNSD's form or a word's box is malformed.
    """
    path = Path(annotation_file)
    try:
        form = json.loads(path.read_text(encoding="utf-8"))["form"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"FUNSD annotation {path} is malformed: expected JSON with a 'form' list ({err}).") from err
    words: list[str] = []
    boxes: list[list[int]] = []
    labels: list[str] = []
    entities: list[tuple[str, int]] = []
    records: list[dict[str, Any]] = []
    links: list[list[int]] = []
    for e, entity in enumerate(form):
        try:
            label = str(entity["label"]).lower()
            entity_words = list(entity["words"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"FUNSD annotation {path}: entity {e} lacks 'label' or 'words' ({err}).") from err
        if label not in FUNSD_ENTITY_TYPES:
            raise ValueError(f"FUNSD annotation {path}: entity {e} has unknown label {label!r}.")
        kept = [w for w in entity_words if str(w.get("text", "")).strip()] if skip_empty_words else entity_words
        entities.append((label, len(kept)))
        if kept:
            records.append({"id": int(entity.get("id", e)), "label": label.upper(), "word_indices": []})
        for pair in entity.get("linking") or []:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2) or [int(v) for v in pair] in links:
                continue
            links.append([int(pair[0]), int(pair[1])])
        for i, word in enumerate(kept):
            try:
                box = normalize_box(word["box"], width, height)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"FUNSD annotation {path}: entity {e} has a bad word box ({err}).") from err
            records[-1]["word_indices"].append(len(words))
            words.append(str(word.get("text", "")))
            boxes.append(box)
            labels.append(_iob(label, i))
    for record in records:
        members = [boxes[i] for i in record["word_indices"]]
        record["box"] = [*(min(b[k] for b in members) for k in (0, 1)), *(max(b[k] for b in members) for k in (2, 3))]
    every_id = {int(entity.get("id", e)) for e, entity in enumerate(form)}
    for pair in links:
        if not set(pair) <= every_id:
            raise ValueError(f"FUNSD annotation {path}: link {pair} names an entity id that no entity has.")
    kept_ids = {record["id"] for record in records}
    kept_links = [pair for pair in links if set(pair) <= kept_ids]
    return {
        "words": words,
        "bboxes": boxes,
        "labels": labels,
        "entities": entities,
        "entity_records": records,
        "links": kept_links,
        "dropped_links": len(links) - len(kept_links),
    }


def _annotation_pairs(folder: Path) -> list[tuple[Path, Path]]:
    annotations = folder / "annotations"
    images = folder / "images"
    if not folder.is_dir():
        raise FileNotFoundError(f"FUNSD folder {folder} does not exist.")
    if not annotations.is_dir() or not images.is_dir():
        raise ValueError(
            f"{folder} is not a FUNSD-layout folder: it needs annotations/*.json and images/*.png "
            "(as in FUNSD's training_data/ or testing_data/)."
        )
    pairs = []
    for ann in sorted(annotations.glob("*.json")):
        candidates = [images / f"{ann.stem}{ext}" for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff")]
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise ValueError(f"FUNSD folder {folder}: annotation {ann.name} has no page image {candidates[0]}.")
        pairs.append((ann, image))
    if not pairs:
        raise ValueError(f"FUNSD folder {folder}: annotations/ holds no *.json files.")
    return pairs


def _page_size(image: Path) -> tuple[int, int]:
    try:
        with PIL.Image.open(image) as im:
            im.verify()
        with PIL.Image.open(image) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises SyntaxError for some corrupt files
        raise ValueError(f"FUNSD page image {image} cannot be read ({err}).") from err


def load_funsd_folder(folder: str | os.PathLike, skip_empty_words: bool = True) -> Dataset:
    """A folder in FUNSD's original release layout (`annotations/<id>.json` with pixel boxes, `images/<id>.png`)
    -> a FUNSD-schema `Dataset`, pages sorted by id. Boxes are normalized by each page's size and clamped to 0..1000.

    Raises:
        FileNotFoundError: if `folder` does not exist.
        ValueError: naming the file, for a missing or unreadable page image or a malformed annotation.
    """
    folder = Path(folder)
    pairs = _annotation_pairs(folder)
    rows: dict[str, list] = {"id": [], "words": [], "bboxes": [], "ner_tags": [], "image": [], "entities": [],
                             "links": []}  # fmt: skip
    for ann, image in pairs:
        width, height = _page_size(image)
        page = parse_funsd_annotation(ann, width, height, skip_empty_words=skip_empty_words)
        rows["id"].append(ann.stem)
        rows["words"].append(page["words"])
        rows["bboxes"].append(page["bboxes"])
        rows["ner_tags"].append([FUNSD_LABELS.index(label) for label in page["labels"]])
        rows["image"].append(str(image.resolve()))
        rows["entities"].append(page["entity_records"])
        rows["links"].append(page["links"])
    info = funsd_info()
    return Dataset.from_dict(rows, features=info.features, info=info)


def to_funsd_schema(dataset: Dataset | DatasetDict, image_root: str | os.PathLike | None = None) -> Any:
    """Map a token-classification dataset of FUNSD's kind onto `funsd_features`.

    Accepts the column names of the Hub copies: `tokens` or `words`; `bboxes`, `bbox` or `boxes` (0-1000);
    `ner_tags` or `labels` (a `Sequence(ClassLabel)`; its label names are kept); `image` or `image_path`
    (a path, resolved against `image_root` when relative); `entities` and `links` in this package's schema are kept
    when both are there (the Hub's `nielsr/funsd` has neither). Missing columns raise a `ValueError` naming them.
    """
    if isinstance(dataset, DatasetDict):
        return DatasetDict({name: to_funsd_schema(split, image_root) for name, split in dataset.items()})
    columns = set(dataset.column_names)

    def pick(*names: str) -> str:
        for name in names:
            if name in columns:
                return name
        raise ValueError(f"The dataset has none of the columns {names} (it has {sorted(columns)}).")

    words, boxes, tags = pick("words", "tokens"), pick("bboxes", "bbox", "boxes"), pick("ner_tags", "labels")
    image = pick("image", "image_path")
    inner = getattr(dataset.features[tags], "feature", None)
    names = getattr(inner, "names", None)
    if names is None:
        raise ValueError(f"The dataset's `{tags}` must be a Sequence of ClassLabel, got {dataset.features[tags]}.")
    renames = {old: new for old, new in ((words, "words"), (boxes, "bboxes"), (tags, "ner_tags")) if old != new}
    if renames:
        dataset = dataset.rename_columns(renames)
    if "id" not in columns:
        dataset = dataset.add_column("id", [str(i) for i in range(len(dataset))])
    if image == "image_path":
        root = Path(image_root) if image_root is not None else None

        def resolve(path: str) -> str:
            full = root / path if root is not None and not os.path.isabs(path) else Path(path)
            if not full.is_file():
                raise ValueError(
                    f"Page image {full} (column `image_path`) does not exist; pass `image_root` where the dataset's "
                    "images are, or use a copy with an `image` column."
                )
            return str(full)

        dataset = dataset.map(lambda row: {"image": resolve(row["image_path"])}, remove_columns=["image_path"])
    links = {"entities", "links"} <= columns  # a copy in this schema (e.g. our `save_to_disk`) keeps its links
    keep = ["id", "words", "bboxes", "ner_tags", "image"] + (["entities", "links"] if links else [])
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep])
    return dataset.cast(funsd_features(names, links=links))


def load_hub_funsd(
    repo_id: str = "nielsr/funsd", revision: str | None = "refs/convert/parquet", **kwargs: Any
) -> DatasetDict:
    """A FUNSD copy on the Hub as FUNSD-schema splits (needs the network).

    `nielsr/funsd` (word-level boxes, the right ones for per-word RoI features) is a loading-script dataset, which
    `datasets` >= 4 refuses; its parquet export (`revision="refs/convert/parquet"`) loads. If that revision does
    not exist, the main branch is tried.
    """
    try:
        ds = load_dataset(repo_id, revision=revision, **kwargs)
    except Exception as first:  # noqa: BLE001 - retried on the main branch, then reported with both causes
        if revision is None:
            raise ValueError(f"Hub dataset {repo_id!r} could not be loaded: {first}") from first
        try:
            ds = load_dataset(repo_id, **kwargs)
        except Exception as second:  # noqa: BLE001
            raise ValueError(
                f"Hub dataset {repo_id!r} could not be loaded (revision {revision!r}: {first}; main: {second}). "
                "Offline, give a local FUNSD-layout folder or a `save_to_disk` folder instead."
            ) from second
    for split in ds.values():  # the Hub's own licence is kept; the name says which copy it was
        split.info.dataset_name = split.info.dataset_name or repo_id
    return to_funsd_schema(ds)


def _is_hub_id(spec: str) -> bool:
    owner, _, name = spec.partition("/")
    return bool(owner and name) and "/" not in name and not spec.startswith((".", "~")) and " " not in spec


def load_dataset_spec(spec: str) -> Dataset | DatasetDict:
    """`--dataset`: a FUNSD-layout folder, a FUNSD release root (training_data/ + testing_data/), a
    `save_to_disk` folder, or a Hub dataset id.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a folder of another layout, or a Hub id that cannot be loaded.
    """
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        if (path / "annotations").is_dir():
            return load_funsd_folder(path)
        splits = {"train": path / "training_data", "test": path / "testing_data"}
        if splits["train"].is_dir():
            return DatasetDict({name: load_funsd_folder(p) for name, p in splits.items() if p.is_dir()})
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return to_funsd_schema(load_from_disk(str(path)))
        raise ValueError(
            f"{path} is neither a FUNSD-layout folder (annotations/, images/), a FUNSD release root "
            "(training_data/), nor a datasets `save_to_disk` folder."
        )
    if path.exists():
        raise ValueError(f"{path} is a file; give a folder or a Hub dataset id.")
    if not _is_hub_id(spec):
        raise FileNotFoundError(f"{spec!r} is not an existing folder, nor a Hub dataset id of the form 'owner/name'.")
    return load_hub_funsd(spec)


def split_train_validation(dataset: Dataset, validation_size: float | int = 30, seed: int = 0) -> DatasetDict:
    """Hold out `validation_size` pages (a count >= 1, or a share < 1) of `dataset`, shuffled by `seed`.

    FUNSD ships only train and test; its training split is divided 119 / 30 for validation.
    """
    n = len(dataset)
    if 0 < validation_size < 1:
        count = max(1, round(n * validation_size))
    elif validation_size >= 1 and float(validation_size).is_integer():
        count = int(validation_size)
    else:
        raise ValueError(f"`validation_size` must be a share in (0, 1) or a page count >= 1, got {validation_size}.")
    if not 1 <= count < n:
        raise ValueError(f"`validation_size` {validation_size} leaves no training pages out of {n}; use fewer.")
    parts = dataset.train_test_split(test_size=count, seed=seed, shuffle=True)
    return DatasetDict({"train": parts["train"], "validation": parts["test"]})
