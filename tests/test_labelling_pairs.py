"""The labeller with a linking checkpoint: every record gets the key-value pairs that `inference.predict_page` gives
for the same page, and the drawings get the arrows."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_TRAINING_MODEL  # noqa: I001
from helpers import VOCAB, label_in_process, make_pixels_matter, write_text_pdf

from layoutlm_roialign import LayoutLMRoIAlignForRelationExtraction
from layoutlm_roialign.data import FUNSD_LABELS
from layoutlm_roialign.inference import predict_page
from layoutlm_roialign.labelling import read_complete
from layoutlm_roialign.model_factory import build_model_and_processor
from layoutlm_roialign.pdf_layoutlm_roialign import DEFAULT_DPI, render_pdf_page


@pytest.fixture(scope="module")
def linking_checkpoint(tmp_path_factory):
    """A tiny linking checkpoint (random weights, pixels live) that finds questions and answers on every page and
    links them with a low threshold, so that the records hold pairs to compare."""
    torch.manual_seed(0)
    token_model, processor = build_model_and_processor(
        FUNSD_LABELS, [VOCAB * 3], **{**TINY_TRAINING_MODEL, "tokenizer_vocab_size": 120}
    )
    config = token_model.config
    config.link_threshold = 0.05
    model = LayoutLMRoIAlignForRelationExtraction(config)
    make_pixels_matter(model)
    with torch.no_grad():  # B-QUESTION and B-ANSWER by turns, whatever the word
        model.classifier.weight.normal_(std=0.5)
        model.classifier.bias.copy_(torch.tensor([-9.0, -9.0, -9.0, 3.0, -9.0, 3.0, -9.0]))
    folder = tmp_path_factory.mktemp("linking") / "final"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder), model.eval(), processor


def test_a_linking_checkpoint_writes_the_pairs_of_predict_page(linking_checkpoint, tmp_path):
    folder, model, processor = linking_checkpoint
    pages = [["date", "name", "total", "amount"], VOCAB * 3]  # the second page spans windows at max_length 16
    write_text_pdf(tmp_path / "doc.pdf", pages)
    summary = label_in_process(
        folder, ["--inputs", str(tmp_path / "doc.pdf"), "--output", str(tmp_path / "labels.jsonl"),
                 "--max_length", "16", "--stride", "4", "--png_dir", str(tmp_path / "png")],
    )  # fmt: skip
    assert summary["pages"] == 2 and summary["failed"] == 0
    records = sorted(read_complete(tmp_path / "labels.jsonl"), key=lambda r: r["page"])
    assert sum(len(r["pairs"]) for r in records) >= 2
    for record in records:
        page = render_pdf_page(tmp_path / "doc.pdf", record["page"] - 1, DEFAULT_DPI)
        words, boxes = [w["text"] for w in record["words"]], [w["box"] for w in record["words"]]
        alone = predict_page(model, processor, page, words, boxes, max_length=16, stride=4)
        assert [(e["label"], e["text"]) for e in record["entities"]] == [
            (e["label"], e["text"]) for e in alone["entities"]
        ]
        assert [(p["key"]["entity"], p["value"]["entity"]) for p in record["pairs"]] == [
            (p["key"]["entity"], p["value"]["entity"]) for p in alone["pairs"]
        ]
        assert [p["score"] for p in record["pairs"]] == pytest.approx([p["score"] for p in alone["pairs"]], abs=1e-3)
        assert all(p["key"]["label"] == "QUESTION" and p["value"]["label"] == "ANSWER" for p in record["pairs"])
        assert record["png"].endswith(".png")
