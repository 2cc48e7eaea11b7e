"""scripts/predict.py in-process: pages in any mode, destinations checked before the model loads, outputs written
together or not at all, and bad models, word files and windows stopping with a message that names the flag."""

from __future__ import annotations

import json
import os
import re
import runpy

import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
import torch
from conftest import REPO_ROOT, TINY_TRAINING_MODEL
from helpers import make_pixels_matter

from layoutlm_roialign.data import FUNSD_LABELS
from layoutlm_roialign.model_factory import build_model_and_processor

VOCAB = ["date", "name", "total", "amount", "signature", "received", "invoice", "phone"]
WORDS = {"words": ["date", "1998", "total"], "pixel_boxes": [[10, 10, 60, 30], [70, 10, 120, 30], [10, 50, 60, 70]]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model, processor = build_model_and_processor(
        FUNSD_LABELS, [VOCAB * 3], **{**TINY_TRAINING_MODEL, "tokenizer_vocab_size": 120}
    )
    make_pixels_matter(model)
    folder = tmp_path_factory.mktemp("ckpt") / "final"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def predict():
    """The script's globals: `main`, and the names it calls (patchable: `run_path` returns a copy, so use main's)."""
    return runpy.run_path(str(REPO_ROOT / "scripts" / "predict.py"), run_name="script")["main"].__globals__


@pytest.fixture
def page(tmp_path) -> dict[str, str]:
    """A 300 x 400 page with dark bars, as 8-bit and 16-bit grey files, and its words file."""
    grey = PIL.Image.new("L", (300, 400), 255)
    draw = PIL.ImageDraw.Draw(grey)
    for i in range(5):
        draw.rectangle([10 + 40 * i, 10 + 70 * i, 150 + 20 * i, 40 + 70 * i], fill=50 * i)
    grey.save(tmp_path / "page8.png")
    PIL.Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(tmp_path / "page16.png")
    (tmp_path / "words.json").write_text(json.dumps(WORDS))
    return {
        "8": str(tmp_path / "page8.png"),
        "16": str(tmp_path / "page16.png"),
        "words": str(tmp_path / "words.json"),
    }


def run(predict, checkpoint, image, words, out_json, out_png, *extra):
    args = ["--model", checkpoint, "--image", image, "--output_json", str(out_json), "--output_png", str(out_png)]
    return predict["main"]([*args, *(["--words", words] if words else []), *extra])


def test_a_16_bit_page_predicts_as_the_8_bit_page(predict, checkpoint, page, tmp_path):
    eight = run(predict, checkpoint, page["8"], page["words"], tmp_path / "a.json", tmp_path / "a.png")
    sixteen = run(predict, checkpoint, page["16"], page["words"], tmp_path / "b.json", tmp_path / "b.png")
    assert [w["label"] for w in sixteen["words"]] == [w["label"] for w in eight["words"]]
    for a, b in zip(sixteen["words"], eight["words"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    assert json.loads((tmp_path / "b.json").read_text()) == sixteen
    with PIL.Image.open(tmp_path / "a.png") as a, PIL.Image.open(tmp_path / "b.png") as b:
        assert np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= 1  # the same drawing
    assert oct(os.stat(tmp_path / "a.json").st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def old_outputs(tmp_path) -> tuple:
    (tmp_path / "pred.json").write_text("old json")
    (tmp_path / "pred.png").write_bytes(b"old png")
    return tmp_path / "pred.json", tmp_path / "pred.png"


def assert_untouched(tmp_path, out_json, out_png):
    assert out_json.read_text() == "old json" and out_png.read_bytes() == b"old png"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporary file left behind


@pytest.mark.parametrize(
    ("png", "match"),
    [
        ("missing/pred.png", r"--output_png .*missing/pred\.png.*the folder .*missing' does not exist"),
        (".", r"--output_png '\.' is a folder"),
        ("pred.json", r"--output_png and --output_json are the same file"),
        ("pred.xyz", r"--output_png .*PIL cannot write \.xyz"),
    ],
)
def test_bad_destinations_stop_before_the_model_loads(
    predict, checkpoint, page, tmp_path, capsys, monkeypatch, png, match
):
    out_json, out_png = old_outputs(tmp_path)

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the destinations were checked")

    predict["load_model_and_processor"] = must_not_load
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run(predict, checkpoint, page["8"], page["words"], out_json, png)
    assert info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert_untouched(tmp_path, out_json, out_png)


def test_a_failed_drawing_leaves_the_old_json_and_png(predict, checkpoint, page, tmp_path):
    out_json, out_png = old_outputs(tmp_path)

    class Unsaveable:
        def save(self, *args, **kwargs):
            raise OSError("disk full")

    predict["draw_prediction"] = lambda *args, **kwargs: Unsaveable()
    with pytest.raises(OSError, match="disk full"):
        run(predict, checkpoint, page["8"], page["words"], out_json, out_png)
    assert_untouched(tmp_path, out_json, out_png)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model": "models/nope"}, r"--model 'models/nope'.*does not exist"),
        ({"image": "missing.png"}, r"missing\.png' does not exist"),
        ({"words": {"words": "ab", "boxes": [[0, 0, 1, 1]] * 2}}, r"--words .*`words` must be a list"),
        ({"words": {"words": ["a"], "boxes": [[0, "1", 2, 3]]}}, r"--words .*`boxes`\[0\] \(word 0, 'a'\)"),
        ({"words": {"words": ["a"], "pixel_boxes": [[0, 0, 600, 30]]}}, r"word 0 \('a'\).*300 x 400.*--clamp_boxes"),
        ({"extra": ["--max_length", "2"]}, r"`max_length` is 2, but a window needs at least 3 tokens"),
        ({"extra": ["--max_length", "64", "--stride", "62"]}, r"`stride` is 62.*less than 62"),
    ],
)
def test_bad_input_stops_with_a_message_naming_it(
    predict, checkpoint, page, tmp_path, capsys, monkeypatch, change, match
):
    out_json, out_png = old_outputs(tmp_path)
    words = page["words"]
    if "words" in change:
        (tmp_path / "bad.json").write_text(json.dumps(change["words"]))
        words = str(tmp_path / "bad.json")
    image = str(tmp_path / change["image"]) if "image" in change else page["8"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run(predict, change.get("model", checkpoint), image, words, out_json, out_png, *change.get("extra", []))
    assert info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert_untouched(tmp_path, out_json, out_png)


def test_clamp_boxes_pins_off_page_boxes_to_the_edge(predict, checkpoint, page, tmp_path):
    (tmp_path / "off.json").write_text(json.dumps({"words": ["a"], "pixel_boxes": [[150, 0, 600, 30]]}))
    result = run(predict, checkpoint, page["8"], str(tmp_path / "off.json"), tmp_path / "p.json", "", "--clamp_boxes")
    assert result["words"][0]["box"] == [500, 0, 1000, 75]
    assert not (tmp_path / "p.png").exists()


def test_an_unwritable_destination_folder_stops_before_the_model_loads(
    predict, checkpoint, page, tmp_path, capsys, monkeypatch
):
    # Tests may run as root, for whom every folder is writable: make this one read-only as os.access sees it.
    out_json, out_png = old_outputs(tmp_path)
    (tmp_path / "locked").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: "locked" not in str(p) and real_access(p, mode))
    predict["load_model_and_processor"] = lambda *a, **k: pytest.fail("the model loaded before the check")
    with pytest.raises(SystemExit):
        run(predict, checkpoint, page["8"], page["words"], out_json, tmp_path / "locked" / "pred.png")
    assert re.search(r"--output_png .*locked.*is not writable", capsys.readouterr().err)
    assert_untouched(tmp_path, out_json, out_png)


def test_pixel_boxes_of_a_page_over_the_pixel_budget_are_read_on_its_own_pixels(
    predict, checkpoint, page, tmp_path, monkeypatch
):
    monkeypatch.setattr(
        "layoutlm_roialign.pages_layoutlm_roialign.MAX_PAGE_PIXELS", 30_000
    )  # the 300 x 400 page is read at 150 x 200
    result = run(predict, checkpoint, page["8"], page["words"], tmp_path / "p.json", "")
    assert (result["width"], result["height"]) == (150, 200)
    assert [w["box"] for w in result["words"]] == [[33, 25, 200, 75], [233, 25, 400, 75], [33, 125, 200, 175]]
