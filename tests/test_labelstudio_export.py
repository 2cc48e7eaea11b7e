"""Pre-annotated Label Studio tasks from the labeller's records and the labelling configuration of a checkpoint:
accepted as they are (as a reviewer would), the tasks import back as the labeller's entities and pairs."""

from __future__ import annotations

import json
import runpy
import xml.etree.ElementTree as ET

import pytest
from conftest import REPO_ROOT, accept_predictions, assert_same_entities_and_pairs, label_synthetic_pages

from layoutlm_roialign.data.labelstudio import load_labelstudio_export
from layoutlm_roialign.labelling import read_complete
from layoutlm_roialign.labelstudio_tasks import export_tasks, write_tasks

pytest.importorskip("datasets")


def labelstudio_script(*argv: str) -> dict:
    return runpy.run_path(str(REPO_ROOT / "scripts" / "labelstudio.py"), run_name="script")["main"](list(argv))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return label_synthetic_pages(tmp_path_factory.mktemp("labelled"))


def test_the_config_lists_the_checkpoints_entity_types_and_refuses_foreign_files(labelled, tmp_path):
    out = tmp_path / "config.xml"
    assert labelstudio_script("config", "--model", str(labelled["checkpoint"]), "--output", str(out))[
        "entity_types"
    ] == ["HEADER", "QUESTION", "ANSWER"]
    view = ET.fromstring(out.read_text())
    assert [label.get("value") for label in view.iter("Label")] == ["HEADER", "QUESTION", "ANSWER"]
    assert {tag.tag for tag in view} == {"Image", "Labels", "Rectangle", "TextArea"}
    labelstudio_script("config", "--model", str(labelled["checkpoint"]), "--output", str(out))  # its own: replaced
    (tmp_path / "mine.xml").write_text("<View/>")
    with pytest.raises(SystemExit) as exit_:
        labelstudio_script("config", "--model", str(labelled["checkpoint"]), "--output", str(tmp_path / "mine.xml"))
    assert exit_.value.code == 2 and (tmp_path / "mine.xml").read_text() == "<View/>"


def test_accepted_predictions_import_as_the_labellers_entities_and_pairs(labelled, tmp_path):
    records = sorted(read_complete(labelled["records"]), key=lambda r: r["page"])
    assert sum(len(r["entities"]) for r in records) > 10 and sum(len(r.get("pairs", [])) for r in records) > 0
    argv = ["export", "--records", str(labelled["records"]), "--model", str(labelled["checkpoint"]),
            "--image_root", str(tmp_path), "--image_root_url", "/data/local-files/?d=",
            "--render_dir", str(tmp_path / "pages"), "--output", str(tmp_path / "tasks.json")]  # fmt: skip
    summary = labelstudio_script(*argv)
    assert (summary["tasks"], summary["rendered"], summary["skipped"]) == (3, 3, 0)
    assert summary["relations"] == sum(len(r["pairs"]) for r in records)
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    by_page = sorted(tasks, key=lambda t: t["data"]["layoutlm_roialign"]["page"])
    assert by_page[0]["data"]["image"].startswith("/data/local-files/?d=pages/")
    assert all(t["predictions"][0]["model_version"] == str(labelled["checkpoint"]) for t in tasks)
    assert labelstudio_script(*argv)["tasks"] == 3  # its own output and PNGs: written again
    (tmp_path / "export.json").write_text(json.dumps(accept_predictions(by_page)))
    rows = load_labelstudio_export(tmp_path / "export.json", images_dir=tmp_path, page_words_from="text")
    assert_same_entities_and_pairs(rows, records)


def test_export_refuses_to_write_over_a_file_it_did_not_write(labelled, tmp_path):
    (tmp_path / "tasks.json").write_text('[{"data": {"image": "mine.png"}}]')
    with pytest.raises(SystemExit) as exit_:
        labelstudio_script("export", "--records", str(labelled["records"]), "--model", "m", "--image_root_url", "/",
                           "--image_root", str(tmp_path), "--render_dir", str(tmp_path / "png"),
                           "--output", str(tmp_path / "tasks.json"))  # fmt: skip
    assert exit_.value.code == 2 and json.loads((tmp_path / "tasks.json").read_text())[0]["data"] == {
        "image": "mine.png"
    }
    assert not (tmp_path / "png").exists() or not any((tmp_path / "png").iterdir())


def test_a_predict_py_json_becomes_one_task_of_its_image(labelled, tmp_path):
    import PIL.Image

    record = read_complete(labelled["records"])[0]
    prediction = {k: record[k] for k in ("width", "height", "words_from", "words", "entities", "pairs")}
    (tmp_path / "page.json").write_text(json.dumps(prediction))
    PIL.Image.new("RGB", (record["width"], record["height"]), "white").save(tmp_path / "page.png")
    argv = ["export", "--records", str(tmp_path / "page.json"), "--model", "m", "--image_root", str(tmp_path),
            "--image_root_url", "https://files.example.com/forms/", "--output", str(tmp_path / "tasks.json")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        labelstudio_script(*argv)
    assert exit_.value.code == 2 and not (tmp_path / "tasks.json").exists()
    labelstudio_script(*argv, "--image", str(tmp_path / "page.png"))
    (task,) = json.loads((tmp_path / "tasks.json").read_text())
    assert task["data"]["image"] == "https://files.example.com/forms/page.png"
    (tmp_path / "export.json").write_text(json.dumps(accept_predictions([task])))
    rows = load_labelstudio_export(tmp_path / "export.json", page_words_from="text")
    assert_same_entities_and_pairs(rows, [record])


def test_pretraining_and_the_labeller_read_a_label_studio_export_as_a_dataset(labelled, tmp_path):
    from layoutlm_roialign.pretraining.arguments import PretrainingArguments
    from layoutlm_roialign.pretraining.windows import read_pretraining_windows
    from layoutlm_roialign.processing_layoutlm_roialign import LayoutLMRoIAlignProcessor

    records = read_complete(labelled["records"])
    tasks, rendered, _ = export_tasks(records, "/data/upload/7/", tmp_path, "m", str(tmp_path / "png"))
    write_tasks(tmp_path / "tasks.json", tasks, rendered)
    (tmp_path / "export.json").write_text(json.dumps(accept_predictions(tasks)))
    args = PretrainingArguments(
        dataset=str(tmp_path / "export.json"), images_dir=str(tmp_path / "png"), page_words_from="text",
        words_column="words", boxes_column="bboxes", model_name_or_path=str(labelled["checkpoint"]), max_length=64,
        stride=16, num_workers=0,
    )  # fmt: skip
    processor = LayoutLMRoIAlignProcessor.from_pretrained(labelled["checkpoint"])
    _, stats = read_pretraining_windows(args, processor, tmp_path / "cache", pixels=False)
    assert stats["pages"] == len(records) and stats["words"] == sum(len(r["words"]) for r in records)
    summary = runpy.run_path(str(REPO_ROOT / "scripts" / "label.py"), run_name="script")["main"](
        ["--model", str(labelled["checkpoint"]), "--quiet", "--num_workers", "0", "--dataset", str(tmp_path / "export.json"),
         "--images_dir", str(tmp_path / "png"), "--page_words_from", "text", "--words_column", "words",
         "--boxes_column", "bboxes", "--output", str(tmp_path / "again.jsonl")]
    )  # fmt: skip
    assert summary["pages"] == len(records) and summary["words"] == sum(len(r["words"]) for r in records)
