"""Prediction on a page: words with box/label/score, window merging, entity grouping, OCR path, the drawing."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest
import torch
from conftest import TINY_TRAINING_MODEL

from layoutlm_roialign.data import FUNSD_LABELS
from layoutlm_roialign.inference import draw_entities, group_entities, label_colours, load_words_json, predict_page
from layoutlm_roialign.training import ModelArguments, build_model_and_processor

LABELS = FUNSD_LABELS
VOCAB = ["date", "name", "total", "amount", "signature", "received", "invoice", "phone"]


@pytest.fixture(scope="module")
def model_and_processor():
    torch.manual_seed(0)
    args = ModelArguments(**{**TINY_TRAINING_MODEL, "tokenizer_vocab_size": 120})
    model, processor = build_model_and_processor(args, LABELS, [VOCAB * 3])
    # A visible gate, so the page pixels change the predictions.
    torch.nn.init.normal_(model.layoutlm_roialign.visual_embeddings.gate, std=1.0)
    return model.eval(), processor


def make_page(num_words: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = [VOCAB[i] for i in rng.integers(0, len(VOCAB), num_words)]
    boxes = []
    for i in range(num_words):
        x, y = 40 + (i % 5) * 180, 40 + (i // 5) * 60
        boxes.append([x, y, x + 150, y + 40])
    image = PIL.Image.new("RGB", (400, 500), "white")
    return words, boxes, image


def test_predict_page_returns_every_word_with_box_label_and_score(model_and_processor):
    model, processor = model_and_processor
    words, boxes, image = make_page(12)
    result = predict_page(model, processor, image, words, boxes)
    assert (result["width"], result["height"]) == (400, 500)
    assert [w["text"] for w in result["words"]] == words
    assert [w["box"] for w in result["words"]] == boxes
    assert result["words"][0]["pixel_box"] == [16.0, 20.0, 76.0, 40.0]  # 0-1000 -> page pixels
    assert all(w["label"] in LABELS and 0 < w["score"] <= 1 for w in result["words"])

    # Label and score are those of the word's first sub-token in a single forward pass.
    enc = processor(image, words, boxes, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.softmax(-1)[0]
    first = {}
    for position, word in enumerate(enc.word_ids(0)):
        if word is not None:
            first.setdefault(word, position)
    for i, word in enumerate(result["words"]):
        score, label_id = probs[first[i]].max(-1)
        assert word["label"] == LABELS[int(label_id)]
        assert word["score"] == pytest.approx(float(score), abs=1e-5)
    assert json.loads(json.dumps(result)) == result  # plain JSON types only


def test_long_pages_are_split_into_windows_and_every_word_is_read_once(model_and_processor):
    model, processor = model_and_processor
    words, boxes, image = make_page(40)
    result = predict_page(model, processor, image, words, boxes, max_length=24, stride=6)
    assert len(result["words"]) == 40
    assert [w["text"] for w in result["words"]] == words
    assert all(w["label"] in LABELS and 0 < w["score"] <= 1 for w in result["words"])


def test_empty_page_gives_no_words(model_and_processor):
    model, processor = model_and_processor
    result = predict_page(model, processor, PIL.Image.new("RGB", (50, 50), "white"), [], [])
    assert result["words"] == [] and result["entities"] == []
    with pytest.raises(ValueError, match="both `words` and `boxes`"):
        predict_page(model, processor, PIL.Image.new("RGB", (50, 50)), ["a"], None)


def test_ocr_path_reads_the_words_from_the_page(model_and_processor):
    pytest.importorskip("pytesseract")
    model, processor = model_and_processor
    image = PIL.Image.new("RGB", (600, 120), "white")
    draw = PIL.ImageDraw.Draw(image)
    draw.text((20, 30), "INVOICE TOTAL", fill="black", font=PIL.ImageFont.load_default(size=40))
    result = predict_page(model, processor, image)
    assert [w["text"] for w in result["words"]] == ["INVOICE", "TOTAL"]
    assert all(0 <= v <= 1000 for w in result["words"] for v in w["box"])


def test_group_entities_follows_bio_labels():
    labels = ["B-QUESTION", "I-QUESTION", "O", "I-ANSWER", "I-ANSWER", "B-ANSWER", "I-QUESTION", "B-HEADER"]
    words = [
        {"text": f"w{i}", "box": [10 * i, 0, 10 * i + 5, 10], "label": label, "score": 0.5 + 0.05 * i}
        for i, label in enumerate(labels)
    ]
    entities = group_entities(words)
    assert [(e["label"], e["word_indices"]) for e in entities] == [
        ("QUESTION", [0, 1]),
        ("ANSWER", [3, 4]),
        ("ANSWER", [5]),
        ("QUESTION", [6]),
        ("HEADER", [7]),
    ]
    assert entities[0]["text"] == "w0 w1" and entities[0]["box"] == [0, 0, 15, 10]
    assert entities[0]["score"] == pytest.approx(0.525)


def test_drawing_has_each_entity_box_in_its_label_colour_and_a_legend():
    page = PIL.Image.new("RGB", (300, 200), "white")
    prediction = {
        "entities": [
            {"label": "QUESTION", "pixel_box": [20, 20, 120, 50], "box": [0, 0, 0, 0]},
            {"label": "ANSWER", "pixel_box": [150, 100, 280, 150], "box": [0, 0, 0, 0]},
        ]
    }
    drawn = draw_entities(page, prediction, LABELS)
    colours = label_colours(LABELS)
    assert set(colours) == {"HEADER", "QUESTION", "ANSWER"} and len(set(colours.values())) == 3
    assert drawn.width > page.width  # the legend panel sits beside the page, covering nothing
    pixels = np.asarray(drawn)
    assert tuple(pixels[35, 18]) == colours["QUESTION"]  # left edge of the QUESTION box (outline 2 px outside)
    assert tuple(pixels[125, 148]) == colours["ANSWER"]
    legend = pixels[:, page.width :].reshape(-1, 3)
    for name in ("HEADER", "QUESTION", "ANSWER"):  # every type has its swatch, even one not found
        assert (legend == colours[name]).all(-1).any(), name


def test_words_json_in_pixels_is_normalized(tmp_path):
    path = tmp_path / "words.json"
    path.write_text(json.dumps({"words": ["a", "b"], "pixel_boxes": [[0, 0, 50, 20], [100, 50, 200, 100]]}))
    words, boxes = load_words_json(str(path), 200, 100)
    assert words == ["a", "b"] and boxes == [[0, 0, 250, 200], [500, 500, 1000, 1000]]
    path.write_text(json.dumps({"words": ["a"]}))
    with pytest.raises(ValueError, match="`boxes`"):
        load_words_json(str(path), 200, 100)
