"""The options of the road (`options_layoutlm_roialign`): a checkpoint with few positions labels a long page through
every driver without window flags, and every driver gives the same words and labels."""

from __future__ import annotations

import importlib.util
import json
import runpy
import sys

import datasets
import PIL.Image
import pytest
from conftest import REPO_ROOT, save_tiny_checkpoint

from layoutlm_roialign.data import FUNSD_LABELS, render_synthetic_form
from layoutlm_roialign.inference import load_model_and_processor, predict_page
from layoutlm_roialign.options_layoutlm_roialign import LinkOptions, WindowOptions, link_rules, window_sizes


def test_window_sizes_follow_the_checkpoint_unless_given(config):
    config.max_position_embeddings = 64
    assert window_sizes(config) == (64, 16)
    assert window_sizes(config, 40) == (40, 10)
    assert window_sizes(config, 40, 5) == (40, 5)
    config.max_position_embeddings = 1024
    assert window_sizes(config) == (512, 128)
    assert WindowOptions(stride=0).resolve(config) == WindowOptions(512, 0)


def test_link_rules_follow_the_checkpoint_unless_given(config):
    config.link_threshold, config.link_one_value_key = 0.3, False
    assert link_rules(config) == (0.3, False)
    assert link_rules(config, 0.0, True) == (0.0, True)
    assert LinkOptions(threshold=0.9).resolve(config) == LinkOptions(0.9, False)


def _run_script(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    try:
        runpy.run_path(str(REPO_ROOT / "scripts" / name), run_name="__main__")
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"{name} exited with {exit_.code}"


@pytest.fixture(scope="module")
def long_page(tmp_path_factory):
    """A checkpoint with 64 positions, and a page of a synthetic form whose words need several 64-token windows: as
    a PNG, a words JSON and a one-page `save_to_disk` dataset (splits `train` and `test`)."""
    root = tmp_path_factory.mktemp("engine")
    checkpoint = save_tiny_checkpoint(root / "tiny", max_position_embeddings=64)
    image, words, boxes, tags = render_synthetic_form(seed=3, index=1)
    image.save(root / "page.png")
    (root / "page.words.json").write_text(json.dumps({"words": words, "boxes": boxes}))
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "words": datasets.Sequence(datasets.Value("string")),
            "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=FUNSD_LABELS)),
        }
    )
    rows = {"image": [image], "words": [words], "bboxes": [boxes], "ner_tags": [tags]}
    page_set = datasets.Dataset.from_dict(rows, features=features)
    train = datasets.concatenate_datasets([page_set] * 5)  # enough to hold out a validation page
    datasets.DatasetDict({"train": train, "test": page_set}).save_to_disk(root / "dataset")
    return root, checkpoint, words, boxes


def test_a_64_position_checkpoint_labels_a_long_page_alike_through_every_driver(long_page, monkeypatch):
    from transformers import pipeline

    from layoutlm_roialign.commands.evaluate import evaluate_checkpoint
    from layoutlm_roialign.data import DataArguments

    root, checkpoint, words, boxes = long_page
    model, processor = load_model_and_processor(str(checkpoint))
    assert model.config.max_position_embeddings == 64
    page = str(root / "page.png")

    by_road = predict_page(model, processor, page, words, boxes)
    labels = [(w["text"], w["label"]) for w in by_road["words"]]
    assert [text for text, _ in labels] == words
    image = PIL.Image.open(page).convert("RGB")
    windows = processor(image, words, boxes, truncation=True, max_length=64, stride=16, return_overflowing_tokens=True)
    assert len(windows["input_ids"]) > 2  # the page needs several windows

    pipe = pipeline("form-understanding", model=model, processor=processor)
    assert [(w["text"], w["label"]) for w in pipe({"image": page, "words": words, "boxes": boxes})["words"]] == labels

    _run_script(
        "predict.py",
        [
            "--model",
            str(checkpoint),
            "--image",
            page,
            "--words",
            str(root / "page.words.json"),
            "--output_json",
            str(root / "predict.json"),
            "--output_png",
            "",
        ],
        monkeypatch,
    )
    predicted = json.loads((root / "predict.json").read_text())
    assert [(w["text"], w["label"]) for w in predicted["words"]] == labels

    _run_script(
        "label.py",
        [
            "--model",
            str(checkpoint),
            "--dataset",
            str(root / "dataset"),
            "--split",
            "test",
            "--words_column",
            "words",
            "--boxes_column",
            "bboxes",
            "--num_workers",
            "0",
            "--quiet",
            "--output",
            str(root / "labels.jsonl"),
        ],
        monkeypatch,
    )
    (record,) = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines()]
    assert [(w["text"], w["label"]) for w in record["words"]] == labels

    report = evaluate_checkpoint(str(checkpoint), DataArguments(dataset=str(root / "dataset")), "test",
                                 return_predictions=True)  # fmt: skip
    assert report["predictions"] == [[label for _, label in labels]]

    spec = importlib.util.spec_from_file_location("demo_app_engine", REPO_ROOT / "demo" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    _, shown = app.label_page(app.Labeller(str(checkpoint)), page, 1, str(root / "page.words.json"))
    assert [(w["text"], w["label"]) for w in shown["words"]] == labels
