"""`--dataset export.json`: Label Studio exports read as FUNSD-schema rows (words, boxes, BIO tags, entities, links),
checked by a round trip of FUNSD's validation pages and by every kind of bad export."""

from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest

from layoutlm_roialign.data import DataArguments, load_training_data
from layoutlm_roialign.data.labelstudio import load_labelstudio_export
from layoutlm_roialign.data.labelstudio_regions import apportion, region_box
from layoutlm_roialign.metrics import entity_scores

FUNSD_MAP = "question=QUESTION,answer=ANSWER,header=HEADER,other=O"


def funsd_page_as_task(annotation: Path, image_url: str, width: int, height: int, task_id: int) -> dict:
    """One FUNSD annotation file -> a Label Studio task as its OCR template exports it: per entity a rectangle, its
    label and its transcription sharing a region id (percent coordinates), and per link a relation."""
    result = []
    for entity in json.loads(annotation.read_text())["form"]:
        rid = f"r{entity['id']}"
        x0, y0, x1, y1 = entity["box"]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        value = {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
                 "height": 100 * (y1 - y0) / height, "rotation": 0}  # fmt: skip
        size = {"original_width": width, "original_height": height, "image_rotation": 0}
        text = " ".join(w["text"] for w in entity["words"] if w["text"].strip())
        for kind, extra in (
            ("rectangle", {}),
            ("labels", {"labels": [entity["label"]]}),
            ("textarea", {"text": [text]}),
        ):
            result.append({"id": rid, "from_name": kind, "to_name": "image", "type": kind, **size,
                           "value": {**value, **extra}})  # fmt: skip
    links = {tuple(pair) for entity in json.loads(annotation.read_text())["form"] for pair in entity["linking"]}
    for a, b in sorted(links):
        result.append({"from_id": f"r{a}", "to_id": f"r{b}", "type": "relation", "direction": "right"})
    return {"id": task_id, "data": {"image": image_url}, "annotations": [{"id": task_id, "result": result}]}


@pytest.fixture(scope="module")
def funsd_validation(funsd_train):
    """FUNSD's validation pages (the training code's split: 30 pages, seed 0) and the same pages as a Label Studio
    export whose image URLs are the server's upload paths, imported again."""
    pages = load_training_data(DataArguments(dataset=str(funsd_train), validation_size=30, split_seed=0))["validation"]
    tasks = []
    for number, page_id in enumerate(pages["id"], start=1):
        with PIL.Image.open(funsd_train / "images" / f"{page_id}.png") as image:
            width, height = image.size
        url = f"/data/upload/1/0a1b2c3d-{page_id}.png"
        tasks.append(funsd_page_as_task(funsd_train / "annotations" / f"{page_id}.json", url, width, height, number))
    return pages, tasks


def test_funsd_validation_pages_survive_a_round_trip_through_a_label_studio_export(funsd_validation, funsd_train,
                                                                                   tmp_path):  # fmt: skip
    pages, tasks = funsd_validation
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    args = DataArguments(dataset=str(tmp_path / "export.json"), images_dir=str(funsd_train / "images"),
                         label_map=FUNSD_MAP, page_words_from="text", validation_size=5)  # fmt: skip
    splits = load_training_data(args)
    imported = load_labelstudio_export(tmp_path / "export.json", funsd_train / "images", FUNSD_MAP, "text")
    assert sorted(list(splits["train"]["id"]) + list(splits["validation"]["id"])) == sorted(imported["id"])
    assert imported.features["ner_tags"].feature.names == pages.features["ner_tags"].feature.names
    names = imported.features["ner_tags"].feature.names
    for task, original, back in zip(tasks, pages, imported, strict=True):
        regions = {
            item["id"]: item["value"] for item in task["annotations"][0]["result"] if item["type"] == "rectangle"
        }
        size = task["annotations"][0]["result"][0]
        matched = {}
        for entity in back["entities"]:  # each imported entity is a FUNSD entity: same words, label, region
            words = [back["words"][i] for i in entity["word_indices"]]
            candidates = [
                e for e in original["entities"] if _tokens(original["words"], e["word_indices"]) == words
                and e["label"] == entity["label"] and e["id"] not in matched.values()
                and all(_inside(back["bboxes"][i], region_box(regions[f"r{e['id']}"], size["original_width"],
                                                              size["original_height"])) for i in entity["word_indices"])
            ]  # fmt: skip
            assert candidates, (back["id"], words)
            matched[entity["id"]] = candidates[0]["id"]
            kind = names[original["ner_tags"][candidates[0]["word_indices"][0]]][2:]
            expected = ["O"] * len(words) if not kind else [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
            assert [names[back["ner_tags"][i]] for i in entity["word_indices"]] == expected
        assert sorted(matched.values()) == sorted(e["id"] for e in original["entities"])
        assert sorted([matched[a], matched[b]] for a, b in back["links"]) == sorted(original["links"])
        assert len(back["words"]) == len(_tokens(original["words"], range(len(original["words"]))))
    stats = json.loads(imported.info.description)
    assert stats["pages"] == 30 and stats["skipped_tasks"] == 0 and stats["words_page_words"] == 0
    assert stats["words_apportioned"] == sum(len(_tokens(w, range(len(w)))) for w in pages["words"])
    assert stats["entity_types"] == ["ANSWER", "HEADER", "QUESTION"]

    def gold_counts(rows):
        references = [[names[t] for t in tags] for tags in rows["ner_tags"]]
        return {kind: s["number"] for kind, s in entity_scores(references, references)["per_type"].items()}

    assert gold_counts(imported) == gold_counts(pages)
    assert sum(gold_counts(pages).values()) > 500


def _tokens(words, indices) -> list[str]:
    """The words at `indices`, split at spaces (a FUNSD "word" may hold several: "Lakeland Metro Market")."""
    return " ".join(words[i] for i in indices).split()


def _inside(box, region) -> bool:
    return region[0] <= box[0] <= box[2] <= region[2] and region[1] <= box[1] <= box[3] <= region[3]


def test_a_rotated_region_becomes_the_box_enclosing_its_corners():
    # 10 % x 10 % square at (50 %, 50 %) of a 1000 x 1000 page, turned 90 degrees clockwise about its top-left corner
    assert region_box({"x": 50, "y": 50, "width": 10, "height": 10, "rotation": 90}, 1000, 1000) == [
        400,
        500,
        500,
        600,
    ]
    assert region_box({"x": 50, "y": 50, "width": 20, "height": 10, "rotation": 45}, 800, 800) == [429, 500, 642, 713]


def test_apportioned_words_split_the_region_by_characters_and_lines():
    boxes = apportion([["ab", "c"], ["defg"]], [0, 0, 400, 100])
    assert boxes == [[0, 0, 200, 50], [300, 0, 400, 50], [0, 50, 400, 100]]


def rectangle_task(task_id, image, regions, relations=(), size=(400, 300)):
    """A task of Label Studio's OCR template: `regions` are `(id, [x, y, w, h] in percent, label, text)`."""
    result = []
    for rid, (x, y, w, h), label, text in regions:
        value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0}
        common = {"id": rid, "to_name": "image", "original_width": size[0], "original_height": size[1]}
        result += [
            {**common, "type": "rectangle", "from_name": "bbox", "value": value},
            {**common, "type": "labels", "from_name": "label", "value": {**value, "labels": [label]}},
            {**common, "type": "textarea", "from_name": "transcription", "value": {**value, "text": [text]}},
        ]
    result += [{"type": "relation", "from_id": a, "to_id": b, "direction": "right"} for a, b in relations]
    return {"id": task_id, "data": {"image": image}, "annotations": [{"result": result, "was_cancelled": False}]}


@pytest.fixture
def page_folder(tmp_path):
    PIL.Image.new("RGB", (400, 300), "white").save(tmp_path / "page.png")
    return tmp_path


def write_export(folder: Path, tasks) -> str:
    path = folder / "export.json"
    path.write_text(json.dumps(tasks))
    return str(path)


@pytest.fixture
def page_words(monkeypatch):
    """The page reader gives every page the words "Date 1998 note" (0-1000 boxes), as a text layer or OCR would."""
    import layoutlm_roialign.data.labelstudio as module

    real = module.read_page

    def read_page(source, **kwargs):
        page = real(source, words_from="text")
        return {**page, "words": ["Date", "1998", "note"], "boxes": [[100, 100, 200, 150], [300, 100, 400, 150],
                                                                     [100, 800, 300, 850]], "words_from": "ocr"}  # fmt: skip

    monkeypatch.setattr(module, "read_page", read_page)


def test_regions_take_the_boxes_of_page_words_inside_them_and_other_page_words_become_o(page_folder, page_words):
    tasks = [rectangle_task(7, "page.png", [("q", (8, 8, 14, 10), "Question", "Date"),
                                            ("a", (28, 8, 14, 10), "Answer", "May 1998")], [("q", "a")])]  # fmt: skip
    rows = load_labelstudio_export(write_export(page_folder, tasks))
    names = rows.features["ner_tags"].feature.names
    row = rows[0]
    assert list(zip(row["words"], [names[t] for t in row["ner_tags"]], strict=True)) == [
        ("Date", "B-QUESTION"), ("May", "B-ANSWER"), ("1998", "I-ANSWER"), ("note", "O")]  # fmt: skip
    assert row["bboxes"][0] == [100, 100, 200, 150] and row["bboxes"][3] == [100, 800, 300, 850]
    assert row["bboxes"][1][0] >= 280 and row["bboxes"][2][2] <= 420  # apportioned: 2 words, 1 page word
    assert [(e["label"], e["word_indices"]) for e in row["entities"]] == [("QUESTION", [0]), ("ANSWER", [1, 2])]
    assert row["links"] == [[0, 1]]
    stats = json.loads(rows.info.description)
    assert (stats["words_page_words"], stats["words_apportioned"], stats["o_words"]) == (1, 2, 1)
    assert stats["regions_page_words_mismatch"] == 1  # "May 1998" over the one page word "1998"


def test_label_map_renames_keeps_as_o_or_drops_and_refuses_labels_it_does_not_name(page_folder):
    tasks = [rectangle_task(3, "page.png", [("a", (10, 10, 20, 10), "Question", "Name"),
                                            ("b", (10, 30, 20, 10), "Stamp", "PAID"),
                                            ("c", (10, 50, 20, 10), "Junk", "xx yy")], [("a", "b"), ("a", "c")])]  # fmt: skip
    path = write_export(page_folder, tasks)
    rows = load_labelstudio_export(path, label_map="Question=KEY,Stamp=O,Junk=", page_words_from="text")
    row = rows[0]
    assert row["words"] == ["Name", "PAID"] and rows.features["ner_tags"].feature.names == ["O", "B-KEY", "I-KEY"]
    assert [e["label"] for e in row["entities"]] == ["KEY", "OTHER"] and row["links"] == [[0, 1]]
    assert json.loads(rows.info.description)["links_dropped"] == 1
    with pytest.raises(ValueError, match=r"task 3: region c has the label 'JUNK', which --label_map does not name"):
        load_labelstudio_export(path, label_map="Question=KEY,Stamp=O", page_words_from="text")
    with pytest.raises(ValueError, match="--label_map entry 'Question' needs the form OLD=NEW"):
        load_labelstudio_export(path, label_map="Question", page_words_from="text")


def test_a_rotated_region_is_imported_with_its_words_inside_the_enclosing_box(page_folder):
    task = rectangle_task(5, "page.png", [("r", (50, 20, 20, 10), "Answer", "one two")])
    task["annotations"][0]["result"][0]["value"]["rotation"] = 30
    row = load_labelstudio_export(write_export(page_folder, [task]), page_words_from="text")[0]
    region = region_box({"x": 50, "y": 20, "width": 20, "height": 10, "rotation": 30}, 400, 300)
    assert region[2] - region[0] > 200 and all(_inside(box, region) for box in row["bboxes"])


@pytest.mark.parametrize(
    "tasks, message",
    [
        ([], "is empty: it holds no tasks"),
        ({"form": []}, "is not a Label Studio export"),
        ([{"image": "page.png", "label": []}], "is not a Label Studio export"),
        (
            [rectangle_task(9, "nowhere/scan.png", [])],
            r"task 9: its image 'nowhere/scan.png' is missing.*--images_dir",
        ),
        (
            [rectangle_task(4, "page.png", [("a", (90, 10, 20, 10), "Answer", "x")])],
            "task 4: region a: it lies outside",
        ),
        (
            [rectangle_task(6, "page.png", [("a", (10, 10, 20, 10), "Answer", "x")], [("a", "zz")])],
            r"task 6: a relation a -> zz names the missing region\(s\) \['zz'\]",
        ),
        ([{"id": 1, "data": {"image": "page.png"}, "annotations": []}], r"has no annotated task \(1 of 1 tasks"),
    ],
)
def test_bad_exports_are_refused_naming_the_task_and_what_is_wrong(page_folder, tasks, message):
    with pytest.raises(ValueError, match=message):
        load_labelstudio_export(write_export(page_folder, tasks), page_words_from="text")


def test_overlapping_regions_claiming_one_word_are_refused(page_folder, page_words):
    tasks = [rectangle_task(8, "page.png", [("a", (5, 5, 30, 20), "Question", "Date"),
                                            ("b", (20, 5, 30, 20), "Answer", "1998")])]  # fmt: skip
    with pytest.raises(ValueError, match=r"task 8: regions \['a', 'b'\] overlap and all claim the page word '1998'"):
        load_labelstudio_export(write_export(page_folder, tasks))


def test_tasks_without_annotations_are_skipped_and_counted(page_folder):
    tasks = [{"id": 1, "data": {"image": "page.png"}, "predictions": [{"result": []}]},
             {"id": 2, "data": {"image": "page.png"}, "annotations": [{"result": [], "was_cancelled": True}]},
             rectangle_task(3, "page.png", [("a", (10, 10, 20, 10), "Answer", "x")])]  # fmt: skip
    rows = load_labelstudio_export(write_export(page_folder, tasks), page_words_from="text")
    assert rows["id"] == ["3"] and json.loads(rows.info.description)["skipped_tasks"] == 2


def test_without_ocr_the_import_says_so_and_how_to_go_on(page_folder, monkeypatch):
    import layoutlm_roialign.data.labelstudio as module

    def no_tesseract(source, **kwargs):
        raise OSError("tesseract is not installed or it's not in your PATH")

    monkeypatch.setattr(module, "read_page", no_tesseract)
    path = write_export(page_folder, [rectangle_task(2, "page.png", [("a", (10, 10, 20, 10), "Answer", "x")])])
    with pytest.raises(ValueError, match=r"task 2: the page words outside its regions \(O words\) need OCR.*"
                       "--page_words_from text"):  # fmt: skip
        load_labelstudio_export(path)


def test_every_dataset_flag_set_takes_a_label_studio_export(page_folder):
    from transformers import HfArgumentParser

    from layoutlm_roialign.labelling.sources import PageSourceArguments

    path = write_export(page_folder, [rectangle_task(1, "/data/upload/3/0a1b2c3d-page.png", [("a", (10, 10, 20, 10),
                                                                                             "Answer", "x y")])])  # fmt: skip
    argv = ["--dataset", path, "--images_dir", str(page_folder), "--label_map", "answer=VALUE",
            "--page_words_from", "text"]  # fmt: skip
    (data_args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(argv + ["--validation_size", "1"])
    with pytest.raises(ValueError, match="leaves no training pages"):  # one page: nothing to hold out, but it loaded
        load_training_data(data_args)
    (sources,) = HfArgumentParser(PageSourceArguments).parse_args_into_dataclasses(argv)
    from layoutlm_roialign.labelling.sources import load_page_dataset

    pages = load_page_dataset(sources.dataset, images_dir=sources.images_dir, page_words_from=sources.page_words_from)
    assert pages["words"] == [["x", "y"]] and pages[0]["image"]["path"] == str((page_folder / "page.png").resolve())


def test_train_py_refuses_a_bad_export_naming_the_task_before_writing_anything(page_folder, capsys):
    import runpy

    from conftest import REPO_ROOT

    tasks = [rectangle_task(12, "page.png", [("a", (10, 10, 20, 10), "Answer", "x")], [("a", "gone")])]
    train = runpy.run_path(str(REPO_ROOT / "scripts" / "train.py"), run_name="script")["main"]
    with pytest.raises(SystemExit) as exit_:
        train(["--dataset", write_export(page_folder, tasks), "--page_words_from", "text",
               "--output_dir", str(page_folder / "run")])  # fmt: skip
    assert exit_.value.code == 2 and not (page_folder / "run").exists()
    message = capsys.readouterr().err
    assert "task 12: a relation a -> gone names the missing region(s) ['gone']" in message
    assert "FUNSD-layout folder" not in message
