"""LayoutLMRoIAlignProcessor: words + word boxes (+ labels) + page -> model inputs, overflow windows, and back.

The tokenizer is a real BertTokenizerFast with a tiny WordPiece vocabulary, so most words split into several
sub-tokens: box and label expansion is exercised, not assumed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest
import torch
from conftest import TINY
from transformers import AutoProcessor

from layoutlm_roialign import LayoutLMRoIAlignConfig, LayoutLMRoIAlignForTokenClassification
from layoutlm_roialign.image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor
from layoutlm_roialign.processing_layoutlm_roialign import (
    LayoutLMRoIAlignProcessor,
    first_subtoken_mask,
    merge_window_predictions,
)
from layoutlm_roialign.wordpiece import train_wordpiece_tokenizer

IMAGE_SIZE = 32
CLS, SEP, PAD = [0, 0, 0, 0], [1000, 1000, 1000, 1000], [0, 0, 0, 0]
VOCAB = "invoice number total amount date customer address payment due signature tax net gross".split()


def make_page(num_words: int, seed: int = 0) -> tuple[list[str], list[list[int]], list[int]]:
    """Words (cycled from VOCAB), distinct 0-1000 boxes and labels 0..6 for one page."""
    rng = np.random.default_rng(seed)
    words = [VOCAB[(i + seed) % len(VOCAB)] for i in range(num_words)]
    boxes = [[10 * i, 20 + i, 10 * i + 8, 30 + i] for i in range(num_words)]
    labels = rng.integers(0, 7, num_words).tolist()
    return words, boxes, labels


def make_image(seed: int = 0) -> PIL.Image.Image:
    """A small page whose pixels differ by seed, so repeated pixel_values can be told apart."""
    page = PIL.Image.new("L", (60, 40), 255)
    PIL.ImageDraw.Draw(page).rectangle([seed * 5, 5, seed * 5 + 20, 25], fill=0)
    return page


@pytest.fixture(scope="module")
def tokenizer():
    tok = train_wordpiece_tokenizer([" ".join(VOCAB)] * 4, vocab_size=70, model_max_length=512)
    pieces = [len(tok.tokenize(w)) for w in VOCAB]
    assert min(pieces) >= 2, "the test vocabulary must split every word into several tokens"
    return tok


@pytest.fixture(scope="module")
def processor(tokenizer) -> LayoutLMRoIAlignProcessor:
    return LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(size=IMAGE_SIZE), tokenizer)


def test_sub_tokens_carry_their_words_box_and_ids_match_joined_tokenization(processor, tokenizer):
    words, boxes, _ = make_page(6)
    enc = processor(make_image(), words, boxes)
    word_ids = enc.word_ids(0)
    # input_ids are those of tokenizing the page's words together, not word by word
    assert enc["input_ids"][0] == tokenizer(words, is_split_into_words=True)["input_ids"]
    assert len(enc["input_ids"][0]) > len(words) + 2  # words did split
    for token_box, w in zip(enc["bbox"][0], word_ids, strict=True):
        if w is not None:
            assert token_box == boxes[w]
    assert enc["bbox"][0][0] == CLS and enc["bbox"][0][-1] == SEP
    assert set(enc.keys()) == {"input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values"}


def per_word_labels(tokenizer, words: list[str], labels: list[int], all_tokens: bool = False) -> list[int]:
    """The token labels of a page written out from each word tokenized on its own: -100 on [CLS] and [SEP], the
    word's label on its first piece and -100 on its other pieces (its label on all of them with `all_tokens`)."""
    expected = [-100]
    for word, label in zip(words, labels, strict=True):
        expected += [label] + [label if all_tokens else -100] * (len(tokenizer.tokenize(word)) - 1)
    return expected + [-100]


def test_labels_on_first_sub_token_only(processor, tokenizer):
    words, boxes, labels = make_page(6)
    enc = processor(make_image(), words, boxes, word_labels=labels)
    assert enc["labels"][0] == per_word_labels(tokenizer, words, labels)
    assert sum(label != -100 for label in enc["labels"][0]) == len(words)


def test_label_all_tokens(processor, tokenizer):
    words, boxes, labels = make_page(5)
    expected = per_word_labels(tokenizer, words, labels, all_tokens=True)
    assert expected != per_word_labels(tokenizer, words, labels)  # the words do split
    for enc in (
        processor(make_image(), words, boxes, word_labels=labels, label_all_tokens=True),
        LayoutLMRoIAlignProcessor(processor.image_processor, tokenizer, label_all_tokens=True)(
            make_image(), words, boxes, word_labels=labels
        ),
    ):
        assert enc["labels"][0] == expected


def test_batch_padding_and_special_boxes(processor):
    pages = [make_page(3, seed=0), make_page(7, seed=1)]
    enc = processor(
        [make_image(0), make_image(1)],
        [p[0] for p in pages],
        [p[1] for p in pages],
        word_labels=[p[2] for p in pages],
        padding=True,
        return_tensors="pt",
    )
    length = enc["input_ids"].shape[1]
    assert enc["bbox"].shape == (2, length, 4) and enc["bbox"].dtype == torch.long
    assert enc["labels"].shape == (2, length) and enc["pixel_values"].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    short = enc["attention_mask"][0].bool()
    assert not short.all() and enc["attention_mask"][1].all()
    for i, (words, boxes, _) in enumerate(pages):
        word_ids = enc.word_ids(i)  # per-page word ids survive padding and tensor conversion
        assert max(w for w in word_ids if w is not None) == len(words) - 1
        num_real = int(enc["attention_mask"][i].sum())
        assert enc["bbox"][i, 0].tolist() == CLS and enc["bbox"][i, num_real - 1].tolist() == SEP
        assert (enc["bbox"][i, num_real:] == torch.tensor(PAD)).all()
        assert (enc["labels"][i, num_real:] == -100).all()
        for t, w in enumerate(word_ids):
            if w is not None:
                assert enc["bbox"][i, t].tolist() == boxes[w]
    assert processor.cls_box == CLS and processor.sep_box == SEP and processor.pad_box == PAD


def test_single_page_equals_batch_of_one(processor):
    words, boxes, labels = make_page(4)
    single = processor(make_image(), words, boxes, word_labels=labels, return_tensors="pt")
    batch = processor([make_image()], [words], [boxes], word_labels=[labels], return_tensors="pt")
    assert single.keys() == batch.keys()
    for key in single:
        torch.testing.assert_close(single[key], batch[key])
    assert single.word_ids(0) == batch.word_ids(0)
    # `words=` is an alias of `text`
    torch.testing.assert_close(processor(make_image(), words=words, boxes=boxes)["bbox"], [single["bbox"][0].tolist()])


def test_overflow_windows_cover_every_word_and_merge_back(processor):
    pages = [make_page(25, seed=0), make_page(9, seed=1)]
    words, boxes, labels = ([p[k] for p in pages] for k in range(3))
    enc = processor(
        [make_image(0), make_image(1)],
        words,
        boxes,
        word_labels=labels,
        truncation=True,
        max_length=16,
        stride=4,
        return_overflowing_tokens=True,
        padding="max_length",
        return_tensors="pt",
    )
    mapping = enc["overflow_to_sample_mapping"].tolist()
    num_windows = len(mapping)
    assert mapping.count(0) >= 4 and mapping.count(1) >= 2 and mapping == sorted(mapping)
    assert enc["input_ids"].shape == (num_windows, 16)
    assert enc["pixel_values"].shape == (num_windows, 3, IMAGE_SIZE, IMAGE_SIZE)
    page_pixels = processor.image_processor([make_image(0), make_image(1)], return_tensors="pt")["pixel_values"]
    for k, page in enumerate(mapping):
        torch.testing.assert_close(enc["pixel_values"][k], page_pixels[page])  # each window sees its whole page

    word_ids = [enc.word_ids(k) for k in range(num_windows)]
    for page, page_words in enumerate(words):
        seen = {w for k in range(num_windows) if mapping[k] == page for w in word_ids[k] if w is not None}
        assert seen == set(range(len(page_words)))
        labelled = set()
        for k in range(num_windows):
            if mapping[k] != page:
                continue
            for t, w in enumerate(word_ids[k]):
                if enc["labels"][k, t] != -100:
                    assert enc["labels"][k, t] == labels[page][w]
                    labelled.add(w)
        assert labelled == set(range(len(page_words)))  # every word is labelled in some window
    # windows really start inside words somewhere, so the cut-word rule is exercised
    masks = first_subtoken_mask(word_ids, mapping)
    assert any(not masks[k][1] for k in range(num_windows) if word_ids[k][1] is not None)

    # predictions equal to the labels merge back to exactly the ground truth, one label per word
    assert processor.post_process_token_classification(enc, enc["labels"]) == labels
    logits = torch.nn.functional.one_hot(enc["labels"].clamp(min=0), 7).float()
    assert merge_window_predictions(word_ids, logits, mapping, [len(w) for w in words]) == labels


def test_merge_prefers_the_window_with_most_context():
    # one page, words 0..5; windows overlap on words 2 and 3
    word_ids = [[None, 0, 1, 2, 3, None], [None, 2, 3, 4, 5, None]]
    predictions = [[-1, 10, 11, 12, 13, -1], [-1, 22, 23, 24, 25, -1]]
    # word 2: window 0 at distance min(2, 1) = 1, window 1 is cut-rule leading (appears in window 0) -> window 0
    # word 3: window 0 at distance 0 (last), window 1 at distance 1 -> window 1
    assert merge_window_predictions(word_ids, predictions, [0, 0]) == [[10, 11, 12, 23, 24, 25]]
    # windows of different pages do not compete
    assert merge_window_predictions([[None, 0, None], [None, 0, None]], [[0, 1, 0], [0, 2, 0]], [0, 1]) == [[1], [2]]
    # word 3 is at distance 1 in both windows -> the earlier one; word 4 is at 0 in window 0 and 2 in window 1
    word_ids = [[None, 0, 1, 2, 3, 4, None], [None, 2, 3, 4, 5, 6, None]]
    predictions = [[-1, 10, 11, 12, 13, 14, -1], [-1, 22, 23, 24, 25, 26, -1]]
    assert merge_window_predictions(word_ids, predictions, [0, 0]) == [[10, 11, 12, 13, 24, 25, 26]]


def test_token_to_word_predictions_single_page(processor):
    words, boxes, labels = make_page(8)
    enc = processor(make_image(), words, boxes, word_labels=labels, truncation=True, max_length=12)
    word_ids = enc.word_ids(0)
    kept = max(w for w in word_ids if w is not None) + 1
    assert kept < len(words)  # truncation dropped words at the end
    (got,) = merge_window_predictions([word_ids], [enc["labels"][0]], [0], [len(words)])
    # a word cut by truncation keeps its first sub-token, hence its label; dropped words get -100
    assert got == labels[:kept] + [-100] * (len(words) - kept)
    logits = np.eye(7)[np.clip(enc["labels"][0], 0, None)]
    assert merge_window_predictions([word_ids], [logits], [0]) == [labels[:kept]]


def test_empty_page_is_an_empty_encoding(processor):
    enc = processor(
        [make_image(0), make_image(1)], [[], ["total"]], [[], [[1, 2, 3, 4]]], word_labels=[[], [3]], padding=True
    )
    assert processor.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])[:2] == ["[CLS]", "[SEP]"]
    assert enc["bbox"][0][:2] == [CLS, SEP] and all(label == -100 for label in enc["labels"][0])
    assert processor.post_process_token_classification(enc, enc["labels"], [0, 1]) == [[], [3]]
    single = processor(make_image(), [], [])
    assert single["bbox"] == [[CLS, SEP]]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p, img: p(img, ["total", "date"], [[0, 0, 1, 1]]), r"`boxes` page 0 has 1 entries.*2 words"),
        (
            lambda p, img: p(img, ["total", "date"], [[0, 0, 1, 1]] * 2, word_labels=[1]),
            r"`word_labels` page 0 has 1 entries.*2 words",
        ),
        (
            lambda p, img: p(img, ["total", "date"], [[0, 0, 1, 1], [5, 5, 1001, 9]]),
            r"page 0, word 1.*outside 0\.\.1000",
        ),
        (
            lambda p, img: p(img, ["total", "date"], [[0, 0, 1, 1], [-1, 5, 9, 9]]),
            r"page 0, word 1.*outside 0\.\.1000",
        ),
        (lambda p, img: p(img, ["total", "date"], [[9, 0, 1, 1], [0, 0, 1, 1]]), r"page 0, word 0.*inverted"),
        (lambda p, img: p(img, ["total", "date"], [[0, 9, 1, 1], [0, 0, 1, 1]]), r"page 0, word 0.*inverted"),
        (lambda p, img: p(img, ["total", "date"], [[0, 0, 1], [0, 0, 1, 1]]), r"page 0, word 0.*4 numbers"),
        (lambda p, img: p(img, ["total", " "], [[0, 0, 1, 1]] * 2), r"`text` page 0, word 1.*non-empty"),
        (lambda p, img: p(img, "total amount", [[0, 0, 1, 1]]), r"`text` must be the words"),
        (lambda p, img: p(img, ["total"], None), r"`boxes` is required"),
        (lambda p, img: p([img, img], ["total"], [[0, 0, 1, 1]]), r"`images` has 2 pages but `text` has 1"),
        (lambda p, img: p(img, [["a"], ["b"]], [[[0, 0, 1, 1]]]), r"`boxes` has 1 pages but `text` has 2"),
        (lambda p, img: p(img, ["a"], [[0, 0, 1, 1]], word_labels=[0.5]), r"`word_labels` page 0, word 0"),
        (lambda p, img: p("/nonexistent/page.png", ["a"], [[0, 0, 1, 1]]), r"`images`.*/nonexistent/page\.png"),
        (lambda p, img: p(img), r"`text` \(the words of each page\) is required"),
        (lambda p, img: p(img, ["a"], [[0, 0, 1, 1]], words=["a"]), r"`text` or as `words`, not both"),
        (
            lambda p, img: p(img, ["total"], [[0, 0, 1, 1]], truncation=True, max_length=2),
            r"`max_length` is 2, but a window needs at least 3 tokens",
        ),
        (
            lambda p, img: p(
                img, ["total"], [[0, 0, 1, 1]], truncation=True, max_length=6, stride=4, return_overflowing_tokens=True
            ),
            r"`stride` is 4, but with `max_length` 6 it must be at least 0 and less than 4",
        ),
        (
            lambda p, img: p(
                img,
                ["total"],
                [[0, 0, 1, 1]],
                truncation=True,
                max_length=6,
                stride=-1,
                return_overflowing_tokens=True,
            ),
            r"`stride` is -1",
        ),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_argument(processor, call, match):
    with pytest.raises(ValueError, match=match):
        call(processor, make_image())


def test_ocr_processor_rejects_boxes_and_labels(tokenizer):
    processor = LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(size=IMAGE_SIZE, apply_ocr=True), tokenizer)
    with pytest.raises(ValueError, match="`boxes` and `word_labels` cannot be given without `text`"):
        processor(make_image(), word_labels=[[1]])


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="the tesseract binary is not installed")
def test_ocr_words_and_boxes_feed_the_tokenizer(tokenizer):
    pytest.importorskip("pytesseract", reason="pytesseract is not installed")
    page = PIL.Image.new("RGB", (700, 120), "white")
    PIL.ImageDraw.Draw(page).text((30, 30), "TOTAL AMOUNT DUE", fill="black", font=PIL.ImageFont.load_default(size=40))
    image_processor = LayoutLMRoIAlignImageProcessor(size=IMAGE_SIZE, apply_ocr=True)
    ocr = image_processor(page)
    enc = LayoutLMRoIAlignProcessor(image_processor, tokenizer)(page, return_tensors="pt")
    words, boxes = ocr["words"][0], ocr["boxes"][0]
    assert [w.lower() for w in words] == ["total", "amount", "due"]
    for t, w in enumerate(enc.word_ids(0)):
        if w is not None:
            assert enc["bbox"][0, t].tolist() == boxes[w]
    assert enc["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_slow_tokenizer_is_rejected():
    with pytest.raises(ValueError, match="`tokenizer` must be a fast tokenizer"):
        LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(), types.SimpleNamespace(is_fast=False))


def test_encoding_feeds_the_model(processor, tokenizer):
    config = LayoutLMRoIAlignConfig(**{**TINY, "vocab_size": len(tokenizer)})
    model = LayoutLMRoIAlignForTokenClassification(config).eval()
    words, boxes, labels = make_page(10)
    processor64 = LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(size=config.image_size), tokenizer)
    enc = processor64(
        make_image(), words, boxes, word_labels=labels, truncation=True, max_length=24, stride=4,
        return_overflowing_tokens=True, padding="max_length", return_tensors="pt",
    )  # fmt: skip
    inputs = {k: v for k, v in enc.items() if k != "overflow_to_sample_mapping"}
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (len(enc["input_ids"]), 24, 7) and torch.isfinite(out.loss)
    assert len(processor64.post_process_token_classification(enc, out.logits, [len(words)])[0]) == len(words)


def test_save_load_round_trip_in_process(processor, tokenizer, tmp_path):
    processor = LayoutLMRoIAlignProcessor(processor.image_processor, tokenizer, label_all_tokens=True)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"] == "processing_layoutlm_roialign.LayoutLMRoIAlignProcessor"
    auto_map = saved["image_processor"]["auto_map"]
    assert auto_map["AutoImageProcessor"] == "image_processing_layoutlm_roialign.LayoutLMRoIAlignImageProcessor"
    assert {"processing_layoutlm_roialign.py", "image_processing_layoutlm_roialign.py"} <= set(os.listdir(tmp_path))

    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is LayoutLMRoIAlignProcessor and loaded.label_all_tokens is True
    assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
    words, boxes, labels = make_page(12)
    kwargs = dict(word_labels=labels, truncation=True, max_length=16, stride=3, return_overflowing_tokens=True)
    expected = processor(make_image(), words, boxes, padding="max_length", return_tensors="pt", **kwargs)
    got = loaded(make_image(), words, boxes, padding="max_length", return_tensors="pt", **kwargs)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


REMOTE_CODE_SCRIPT = """
import json, sys
import numpy as np
sys.modules["layoutlm_roialign"] = None  # the package is not importable: only the checkpoint's code can be used
import PIL.Image
from transformers import AutoProcessor

processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
inputs = json.load(open(sys.argv[2]))
image = PIL.Image.open(inputs.pop("image"))
enc = processor(image, **inputs, padding="max_length", return_tensors="np")
np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in enc.items()},
         word_ids=np.asarray([[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(enc["input_ids"]))]))
print(type(processor).__module__, type(processor.image_processor).__module__)
"""


def test_remote_code_round_trip_in_a_fresh_process_without_the_package(processor, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    processor.save_pretrained(checkpoint)
    words, boxes, labels = make_page(12)
    image_path = tmp_path / "page.png"
    make_image(2).save(image_path)
    call = dict(word_labels=labels, truncation=True, max_length=16, stride=3, return_overflowing_tokens=True)
    (tmp_path / "inputs.json").write_text(
        json.dumps({"image": str(image_path), "text": words, "boxes": boxes, **call})
    )
    (tmp_path / "run.py").write_text(textwrap.dedent(REMOTE_CODE_SCRIPT))
    env = {
        **os.environ,
        "PYTHONPATH": "",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    result = subprocess.run(
        [sys.executable, "run.py", str(checkpoint), "inputs.json", "out.npz"],
        cwd=tmp_path,  # the package is not importable from here either
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    processor_module, image_processor_module = result.stdout.split()
    assert processor_module.startswith("transformers_modules.") and processor_module.endswith(
        ".processing_layoutlm_roialign"
    )
    assert image_processor_module.endswith(".image_processing_layoutlm_roialign")
    got = np.load(tmp_path / "out.npz")
    expected = processor(PIL.Image.open(image_path), words, boxes, padding="max_length", return_tensors="np", **call)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    word_ids = [[-1 if w is None else w for w in expected.word_ids(i)] for i in range(len(expected["input_ids"]))]
    np.testing.assert_array_equal(got["word_ids"], word_ids)


def test_offline_wordpiece_vocabulary_is_the_same_on_every_run():
    # `tokenizers`' own trainer breaks ties in hash order: two runs gave different ids, and training runs that
    # should match (a resumed run and an uninterrupted one) did not.
    corpus = [" ".join(VOCAB[i:] + VOCAB[:i]) for i in range(len(VOCAB))] * 3
    vocabs = [train_wordpiece_tokenizer(corpus, vocab_size=90).get_vocab() for _ in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    assert len(vocabs[0]) == 90
