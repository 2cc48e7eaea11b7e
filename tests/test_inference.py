"""Prediction on a page: words with box/label/score, window merging, entity grouping, OCR path, the drawing."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest
import torch
from conftest import TINY_TRAINING_MODEL
from helpers import VOCAB, make_pixels_matter, requires_tesseract

from layoutlm_roialign.data import FUNSD_LABELS
from layoutlm_roialign.drawing import draw_entities, label_colours
from layoutlm_roialign.inference import (
    encode_page,
    group_entities,
    load_model_and_processor,
    predict_page,
    predict_windows,
)
from layoutlm_roialign.model_factory import build_model_and_processor
from layoutlm_roialign.pages_layoutlm_roialign import load_words_json

LABELS = FUNSD_LABELS


@pytest.fixture(scope="module")
def model_and_processor():
    torch.manual_seed(0)
    model, processor = build_model_and_processor(
        LABELS, [VOCAB * 3], **{**TINY_TRAINING_MODEL, "tokenizer_vocab_size": 120}
    )
    make_pixels_matter(model)
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
    with pytest.raises(ValueError, match="Give `words` with their `boxes`"):
        predict_page(model, processor, PIL.Image.new("RGB", (50, 50)), ["a"], None)


@requires_tesseract
def test_ocr_path_reads_the_words_from_the_page(model_and_processor):
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


def ink_page(width: int = 400, height: int = 500) -> np.ndarray:
    """An 8-bit grey page with dark words and bars, so the pixels change the predictions: (H, W) uint8."""
    page = PIL.Image.new("L", (width, height), 255)
    draw = PIL.ImageDraw.Draw(page)
    for i in range(6):
        draw.rectangle([20 + 60 * i, 30 + 70 * i, 140 + 40 * i, 60 + 70 * i], fill=40 * i)
    draw.text((30, 440), "INVOICE TOTAL", fill=0, font=PIL.ImageFont.load_default(size=36))
    return np.asarray(page)


def page_variants(tmp_path) -> dict[str, str]:
    """The same page as 8-bit grey, 16-bit grey ("I;16") and black ink on a transparent RGBA page, as PNG files."""
    grey = ink_page()
    rgba = np.zeros((*grey.shape, 4), dtype=np.uint8)
    rgba[..., 3] = 255 - grey
    images = {
        "8-bit": PIL.Image.fromarray(grey),
        "16-bit": PIL.Image.fromarray(grey.astype(np.uint16) * 257),
        "transparent": PIL.Image.fromarray(rgba, "RGBA"),
    }
    paths = {}
    for name, image in images.items():
        paths[name] = str(tmp_path / f"{name}.png")
        image.save(paths[name])
    return paths


def test_16_bit_and_transparent_pages_predict_as_the_8_bit_page(model_and_processor, tmp_path):
    model, processor = model_and_processor
    words, boxes, _ = make_page(12)
    paths = page_variants(tmp_path)
    expected = predict_page(model, processor, paths["8-bit"], words, boxes)
    for name in ("16-bit", "transparent"):
        got = predict_page(model, processor, paths[name], words, boxes)
        assert [w["label"] for w in got["words"]] == [w["label"] for w in expected["words"]], name
        for a, b in zip(got["words"], expected["words"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4), name
    # The page's pixels matter here: PIL's convert("RGB") (what predict used) gives other scores.
    converted = PIL.Image.open(paths["16-bit"]).convert("RGB")
    scores = [w["score"] for w in predict_page(model, processor, converted, words, boxes)["words"]]
    assert max(abs(a - w["score"]) for a, w in zip(scores, expected["words"], strict=True)) > 1e-3


@requires_tesseract
def test_ocr_reads_16_bit_and_transparent_pages_as_the_8_bit_page(model_and_processor, tmp_path):
    model, processor = model_and_processor
    paths = page_variants(tmp_path)
    expected = [w["text"] for w in predict_page(model, processor, paths["8-bit"])["words"]]
    assert "INVOICE" in expected and "TOTAL" in expected
    for name in ("16-bit", "transparent"):
        assert [w["text"] for w in predict_page(model, processor, paths[name])["words"]] == expected, name


def write_words(tmp_path, **data) -> str:
    path = tmp_path / "words.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_pixel_boxes_past_the_page_are_refused_or_clamped(tmp_path):
    # Boxes measured on a 400 x 200 scan, given with the page at half size: most words fall off the page.
    words = ["name", "date", "total"]
    pixel_boxes = [[10, 10, 60, 30], [250, 40, 380, 60], [100, 150, 180, 190]]
    path = write_words(tmp_path, words=words, pixel_boxes=pixel_boxes)
    with pytest.raises(ValueError, match=r"words\.json: word 1 \('date'\).*\[250, 40, 380, 60\].*200 x 100 page") as e:
        load_words_json(path, 200, 100)
    assert "1 more of the 3 words" in str(e.value) and "--clamp_boxes" in str(e.value)
    _, clamped = load_words_json(path, 200, 100, clamp=True)
    assert clamped == [[50, 100, 300, 300], [1000, 400, 1000, 600], [500, 1000, 900, 1000]]
    # Within the tolerance (2% of the side, at least 2 px) a box is clamped to the page edge without a word.
    path = write_words(tmp_path, words=["a", "b"], pixel_boxes=[[-2, 0, 50, 20], [150, 50, 203, 101]])
    assert load_words_json(path, 200, 100)[1] == [[0, 0, 250, 200], [750, 500, 1000, 1000]]
    path = write_words(tmp_path, words=["a"], pixel_boxes=[[0, 0, 50, 20]])
    with pytest.raises(ValueError, match=r"word 0 \('a'\).*1 x 1 page"):
        load_words_json(path, 1, 1)


def test_0_1000_boxes_out_of_range_are_refused_or_clamped(tmp_path):
    path = write_words(tmp_path, words=["a", "b"], boxes=[[0, 0, 10, 10], [900, 5, 1200, 40]])
    with pytest.raises(ValueError, match=r"word 1 \('b'\).*`boxes` \[900, 5, 1200, 40\] outside the 0-1000 grid"):
        load_words_json(path, 200, 100)
    assert load_words_json(path, 200, 100, clamp=True)[1] == [[0, 0, 10, 10], [900, 5, 1000, 40]]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"words": ["a", "b"], "boxes": [[0, 0, 1, 1], ["0", 0, 1, 1]]}, r"`boxes`\[1\] \(word 1, 'b'\).*4 numbers"),
        ({"words": ["a"], "pixel_boxes": [[0, None, 1, 1]]}, r"`pixel_boxes`\[0\] \(word 0, 'a'\).*4 numbers"),
        ({"words": ["a"], "boxes": [[0, 0, 1]]}, r"`boxes`\[0\].*4 numbers"),
        ({"words": ["a"], "boxes": [[5, 0, 1, 1]]}, r"`boxes`\[0\].*inverted"),
        ({"words": "ab", "boxes": [[0, 0, 1, 1]] * 2}, r"`words` must be a list.*got str"),
        ({"words": ["a"], "boxes": {"a": [0, 0, 1, 1]}}, r"`boxes` must be a list"),
        ({"words": ["a", "b"], "boxes": [[0, 0, 1, 1]]}, r"2 `words` but 1 `boxes`"),
        ({"words": ["a", 7], "boxes": [[0, 0, 1, 1]] * 2}, r"`words`\[1\] is 7"),
        ({"words": ["a", " "], "boxes": [[0, 0, 1, 1]] * 2}, r"`words`\[1\] is ' '.*non-empty"),
        ({"words": ["a"]}, r"expected a JSON object.*either `boxes` \(0-1000\) or `pixel_boxes`"),
    ],
)
def test_bad_word_files_name_the_file_the_field_and_the_word(tmp_path, data, match):
    path = write_words(tmp_path, **data)
    with pytest.raises(ValueError, match=r"--words .*words\.json: " + match):
        load_words_json(path, 200, 100)


def test_unreadable_word_files_name_the_file(tmp_path):
    (tmp_path / "words.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"words\.json: not valid JSON"):
        load_words_json(str(tmp_path / "words.json"), 10, 10)
    with pytest.raises(ValueError, match=r"missing\.json: cannot read the file"):
        load_words_json(str(tmp_path / "missing.json"), 10, 10)


def test_window_too_small_for_a_word_is_refused_by_the_processor(model_and_processor):
    model, processor = model_and_processor
    words, boxes, image = make_page(5)
    with pytest.raises(ValueError, match=r"`max_length` is 2, but a window needs at least 3 tokens"):
        predict_page(model, processor, image, words, boxes, max_length=2, stride=0)
    with pytest.raises(ValueError, match=r"`stride` is 8.*less than 8"):
        predict_page(model, processor, image, words, boxes, max_length=10, stride=8)


@pytest.fixture(scope="module")
def saved_model(model_and_processor, tmp_path_factory):
    model, processor = model_and_processor
    folder = tmp_path_factory.mktemp("ckpt") / "final"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_load_model_and_processor_loads_a_saved_folder(saved_model, model_and_processor):
    model, processor = load_model_and_processor(str(saved_model))
    assert type(model).__name__ == "LayoutLMRoIAlignForTokenClassification"
    assert processor.model_input_names == model_and_processor[1].model_input_names
    torch.testing.assert_close(model.classifier.weight, model_and_processor[0].classifier.weight)
    base, _ = load_model_and_processor(saved_model, task="feature-extraction")
    assert type(base).__name__ == "LayoutLMRoIAlignModel"


def test_missing_model_folder_says_the_path_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # `models/nope` could be a Hub id, and no `models/` folder exists here: tried on the Hub (offline in tests).
    with pytest.raises(ValueError, match=r"--model 'models/nope'.*does not exist") as info:
        load_model_and_processor("models/nope")
    assert "huggingface.co" not in str(info.value).split("(")[0]
    (tmp_path / "models").mkdir()  # now `models/nope` is plainly a path here: refused without asking the Hub
    for path in ("models/nope", "./nope", str(tmp_path / "nope"), "runs/a/b/final"):
        with pytest.raises(ValueError, match=r"does not exist"):
            load_model_and_processor(path)


def test_damaged_model_folders_name_the_file(saved_model, tmp_path):
    broken = tmp_path / "final"
    shutil.copytree(saved_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: os.path.getsize(weights) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match=r"model\.safetensors is damaged or incomplete: it is \d+ bytes but its"):
        load_model_and_processor(str(broken))
    weights.write_bytes(b"\x05")
    with pytest.raises(ValueError, match=r"model\.safetensors is damaged or incomplete"):
        load_model_and_processor(str(broken))
    with pytest.raises(ValueError, match=r"has no config\.json.*\['final'\]"):
        load_model_and_processor(str(tmp_path))  # the run folder instead of its final/
    model_only = tmp_path / "model_only"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(saved_model / name, model_only / name)
    with pytest.raises(
        ValueError,
        match=r"model_only'? is not a complete checkpoint folder; missing \[.*'processor_config\.json'.*processor\.save_pretrained",
    ):
        load_model_and_processor(str(model_only))


def test_predict_windows_gives_each_windows_own_logits_across_pages(model_and_processor):
    """Windows of two pages of different lengths share forward passes; each window's logits equal the window run on
    its own with its own page's image."""
    model, processor = model_and_processor
    pages = []
    for count, seed in ((40, 0), (13, 1)):
        words, boxes, image = make_page(count)
        image = PIL.Image.eval(image, lambda v, s=seed: max(0, v - 60 * s))  # the two pages' pixels differ
        pages.append(encode_page(processor, image, words, boxes, max_length=24, stride=6))
    assert len(pages[0]["windows"]["input_ids"]) >= 3
    assert pages[0]["windows"]["input_ids"].shape[1] != pages[1]["windows"]["input_ids"].shape[1]
    results = predict_windows(model, pages, batch_size=3, pad_token_id=processor.tokenizer.pad_token_id)
    for page, result in zip(pages, results, strict=True):
        windows = page["windows"]
        assert len(result["logits"]) == len(windows["input_ids"])
        for w, logits in enumerate(result["logits"]):
            n = int(windows["attention_mask"][w].sum())
            alone = {k: windows[k][w : w + 1, :n] for k in windows} | {"pixel_values": page["pixel_values"][None]}
            with torch.no_grad():
                expected = model(**alone).logits[0]
            assert logits.shape == expected.shape and logits.dtype == torch.float32
            torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        predict_windows(model, pages, batch_size=0)


def test_predict_page_runs_the_backbone_once_per_batch_of_a_pages_windows(model_and_processor):
    """predict_page gives the windows of a long page one image (`image_index`): one backbone run per batch of
    windows, and the labels of the processor's encoding, which repeats the page's image per window."""
    model, processor = model_and_processor
    words, boxes, image = make_page(40)
    encoding = processor(
        image, words, boxes, truncation=True, max_length=24, stride=6, return_overflowing_tokens=True,
        padding="longest", return_tensors="pt",
    )  # fmt: skip
    num_windows = len(encoding["input_ids"])
    assert num_windows >= 3
    calls = []
    backbone = model.layoutlm_roialign.visual_embeddings.backbone
    handle = backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        shared = predict_page(model, processor, image, words, boxes, max_length=24, stride=6, batch_size=2)
    finally:
        handle.remove()
    assert calls == [1] * ((num_windows + 1) // 2)  # one image per batch of 2 windows
    with torch.no_grad():
        repeated = model(**{k: encoding[k] for k in processor.model_input_names}).logits
    chosen = processor.post_process_token_classification(encoding, repeated.argmax(-1))[0]
    assert [w["label"] for w in shared["words"]] == [model.config.id2label[int(i)] for i in chosen]
