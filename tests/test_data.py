"""Data: the FUNSD folder loader (against the real training split), the schema mapper, the train/validation split,
the synthetic forms, and clear errors for broken inputs."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import PIL.Image
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature

from layoutlm_roialign.data import (
    FUNSD_LABELS,
    generate_synthetic_forms,
    load_dataset_spec,
    load_funsd_folder,
    split_train_validation,
    to_funsd_schema,
)
from layoutlm_roialign.data.synthetic import PHRASES


def tag_names(ds: Dataset, row: dict) -> list[str]:
    return [ds.features["ner_tags"].feature.int2str(t) for t in row["ner_tags"]]


def test_funsd_training_split_has_the_counts_of_its_readme(funsd_train):
    every_word = load_funsd_folder(funsd_train, skip_empty_words=False)
    assert len(every_word) == 149
    assert sum(len(w) for w in every_word["words"]) == 22512
    entities = Counter(e["label"] for page in every_word["entities"] for e in page)
    assert entities == {"QUESTION": 3266, "ANSWER": 2802, "HEADER": 441, "OTHER": 902}
    starts = Counter(tag for row in every_word for tag in tag_names(every_word, row) if tag.startswith("B-"))
    assert starts == {"B-QUESTION": 3266, "B-ANSWER": 2802, "B-HEADER": 441}  # "other" entities are O


def test_funsd_folder_rows_follow_the_schema(funsd_train):
    ds = load_funsd_folder(funsd_train)
    assert ds.features["ner_tags"].feature.names == FUNSD_LABELS
    assert sum(len(w) for w in ds["words"]) == 22512 - 624  # blank words dropped by default
    row = ds[0]
    assert row["id"] == "0000971160"
    assert len(row["words"]) == len(row["bboxes"]) == len(row["ner_tags"]) > 0
    assert all(w.strip() for w in row["words"])
    boxes = np.array([b for r in ds["bboxes"] for b in r])
    assert boxes.min() >= 0 and boxes.max() <= 1000
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    with PIL.Image.open(funsd_train / "images" / "0000971160.png") as im:
        width, height = im.size
    raw = json.loads((funsd_train / "annotations" / "0000971160.json").read_text())["form"]
    first = next(w for e in raw for w in e["words"] if w["text"].strip())
    x0, y0, x1, y1 = first["box"]
    assert row["words"][0] == first["text"]
    assert row["bboxes"][0] == [round(1000 * x0 / width), round(1000 * y0 / height), round(1000 * x1 / width),
                                round(1000 * y1 / height)]  # fmt: skip
    assert row["image"].size == (width, height)


def test_split_is_119_30_and_fixed_by_its_seed(funsd_train):
    ds = load_funsd_folder(funsd_train)
    a, b = split_train_validation(ds, 30, seed=0), split_train_validation(ds, 30, seed=0)
    assert (len(a["train"]), len(a["validation"])) == (119, 30)
    assert a["validation"]["id"] == b["validation"]["id"]
    assert not set(a["train"]["id"]) & set(a["validation"]["id"])
    assert split_train_validation(ds, 30, seed=1)["validation"]["id"] != a["validation"]["id"]
    assert len(split_train_validation(ds, 0.2, seed=0)["validation"]) == 30


def copy_pages(funsd_train, tmp_path, ids=("0000971160", "0000989556")):
    folder = tmp_path / "funsd"
    (folder / "annotations").mkdir(parents=True)
    (folder / "images").mkdir()
    for page in ids:
        shutil.copy(funsd_train / "annotations" / f"{page}.json", folder / "annotations")
        shutil.copy(funsd_train / "images" / f"{page}.png", folder / "images")
    return folder


def test_broken_funsd_folders_name_the_file(funsd_train, tmp_path):
    folder = copy_pages(funsd_train, tmp_path)
    (folder / "images" / "0000989556.png").unlink()
    with pytest.raises(ValueError, match="0000989556.json has no page image"):
        load_funsd_folder(folder)

    folder = copy_pages(funsd_train, tmp_path / "b")
    (folder / "annotations" / "0000971160.json").write_text('{"form": [{"label": "question"')
    with pytest.raises(ValueError, match=r"0000971160\.json is malformed"):
        load_funsd_folder(folder)

    folder = copy_pages(funsd_train, tmp_path / "c")
    (folder / "images" / "0000971160.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"0000971160\.png cannot be read"):
        load_funsd_folder(folder)

    folder = copy_pages(funsd_train, tmp_path / "d")
    form = json.loads((folder / "annotations" / "0000971160.json").read_text())
    form["form"][0]["words"][0]["box"] = [50, 50, 10, 60]
    (folder / "annotations" / "0000971160.json").write_text(json.dumps(form))
    with pytest.raises(ValueError, match=r"0000971160\.json: entity 0 has a bad word box .*inverted"):
        load_funsd_folder(folder)


def test_dataset_spec_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        load_dataset_spec(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a FUNSD-layout folder"):
        load_dataset_spec(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="could not be loaded"):  # the Hub is offline in the tests
        load_dataset_spec("no-such-owner/no-such-dataset")


def test_dataset_spec_reads_a_release_root_and_a_save_to_disk_folder(funsd_train, tmp_path):
    root = tmp_path / "release"
    root.mkdir()
    copy_pages(funsd_train, tmp_path).rename(root / "training_data")
    ds = load_dataset_spec(str(root))
    assert isinstance(ds, DatasetDict) and list(ds) == ["train"] and len(ds["train"]) == 2
    ds["train"].save_to_disk(str(tmp_path / "saved"))
    again = load_dataset_spec(str(tmp_path / "saved"))
    assert again["words"] == ds["train"]["words"] and again["bboxes"] == ds["train"]["bboxes"]


def test_hub_style_columns_map_onto_the_schema(tmp_path):
    page = tmp_path / "p.png"
    PIL.Image.new("L", (50, 40), 255).save(page)
    hub_like = Dataset.from_dict(
        {
            "tokens": [["a", "b"]],
            "bbox": [[[0, 0, 10, 10], [5, 5, 20, 20]]],
            "ner_tags": [[1, 0]],
            "image_path": ["p.png"],
        },  # fmt: skip
        features=Features(
            {
                "tokens": SequenceFeature(Value("string")),
                "bbox": SequenceFeature(SequenceFeature(Value("int64"))),
                "ner_tags": SequenceFeature(ClassLabel(names=["O", "B-X"])),
                "image_path": Value("string"),
            }
        ),
    )
    ds = to_funsd_schema(hub_like, image_root=tmp_path)
    assert set(ds.column_names) == {"id", "words", "bboxes", "ner_tags", "image"}
    assert ds[0]["words"] == ["a", "b"] and ds[0]["image"].size == (50, 40)
    assert ds.features["ner_tags"].feature.names == ["O", "B-X"]
    with pytest.raises(ValueError, match="p.png .*does not exist"):
        to_funsd_schema(hub_like, image_root=tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="none of the columns"):
        to_funsd_schema(hub_like.remove_columns("bbox"))


def test_split_sizes_are_checked():
    ds = Dataset.from_dict({"x": list(range(5))})
    with pytest.raises(ValueError, match="leaves no training pages"):
        split_train_validation(ds, 5)
    with pytest.raises(ValueError, match="`validation_size`"):
        split_train_validation(ds, 1.5)


def test_synthetic_forms_are_deterministic_by_seed_and_index():
    a = generate_synthetic_forms(4, seed=3)
    b = generate_synthetic_forms(6, seed=3)
    c = generate_synthetic_forms(4, seed=4)
    for i in range(4):
        assert a[i]["words"] == b[i]["words"] and a[i]["bboxes"] == b[i]["bboxes"]
        assert np.array_equal(np.asarray(a[i]["image"]), np.asarray(b[i]["image"]))
    assert a["words"] != c["words"]
    assert a.features["ner_tags"].feature.names == FUNSD_LABELS
    for row in a:
        assert len(row["words"]) == len(row["bboxes"]) == len(row["ner_tags"]) > 10
        boxes = np.array(row["bboxes"])
        assert boxes.min() >= 0 and boxes.max() <= 1000 and (boxes[:, 2:] > boxes[:, :2]).all()


def entity_phrases(ds: Dataset, kind: str) -> list[tuple[str, ...]]:
    out = []
    for row in ds:
        for word, tag in zip(row["words"], tag_names(ds, row), strict=False):
            if tag == f"B-{kind}":
                out.append([word])
            elif tag == f"I-{kind}":
                out[-1].append(word)
    return [tuple(w.rstrip(":") for w in phrase) for phrase in out]


def test_synthetic_headers_differ_from_questions_only_in_the_pixels():
    ds = generate_synthetic_forms(40, seed=0)
    headers, questions = entity_phrases(ds, "HEADER"), entity_phrases(ds, "QUESTION")
    pool = {tuple(p.split()) for p in PHRASES}
    assert len(headers) > 30 and len(questions) > 3 * 30
    assert set(headers) <= pool and set(questions) <= pool  # the same words ...
    assert len(set(headers) & set(questions)) > 10
    # ... and boxes of the same size: the median box height of header and question words agrees within 10%.
    heights = {"HEADER": [], "QUESTION": []}
    ink = {"HEADER": [], "QUESTION": []}
    for row in ds:
        page = np.asarray(row["image"], dtype=np.float32)
        height, width = page.shape
        for box, tag in zip(row["bboxes"], tag_names(ds, row), strict=False):
            kind = tag[2:]
            if kind in heights:
                heights[kind].append(box[3] - box[1])
                x0, y0, x1, y1 = (
                    round(v / 1000 * s) for v, s in zip(box, (width, height, width, height), strict=False)
                )
                ink[kind].append(page[y0:y1, x0:x1].mean())
    assert abs(np.median(heights["HEADER"]) / np.median(heights["QUESTION"]) - 1) < 0.1
    # What tells them apart is the look: header words sit in a shaded band.
    assert np.mean(ink["QUESTION"]) - np.mean(ink["HEADER"]) > 40


def test_synthetic_pages_count_is_checked():
    with pytest.raises(ValueError, match="`num_pages`"):
        generate_synthetic_forms(0)
