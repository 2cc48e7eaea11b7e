"""The registry of heads: a head registered once is loaded, saved and used to label pages like the built-in ones."""

import json

import pytest
import torch
from conftest import TINY_TRAINING_MODEL, save_tiny_checkpoint
from torch import nn
from transformers import AutoModel, AutoModelForTokenClassification
from transformers.modeling_outputs import TokenClassifierOutput

from layoutlm_roialign import (
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignModel,
    LayoutLMRoIAlignPreTrainedModel,
)
from layoutlm_roialign.data import FUNSD_LABELS, render_synthetic_form
from layoutlm_roialign.engine_layoutlm_roialign import predict_page
from layoutlm_roialign.heads_layoutlm_roialign import HEADS, auto_class_of_head, register_head, unregister_head
from layoutlm_roialign.loader import load_model_and_processor
from layoutlm_roialign.model_factory import build_model_and_processor
from layoutlm_roialign.saving_layoutlm_roialign import checkpoint_auto_map


class TaggerHead(LayoutLMRoIAlignPreTrainedModel):
    """A throwaway token head: one linear layer on the fused token states."""

    def __init__(self, config):
        super().__init__(config)
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config)
        self.tagger = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, bbox=None, attention_mask=None, token_type_ids=None, pixel_values=None,
                image_index=None, labels=None, **kwargs):  # fmt: skip
        states = self.layoutlm_roialign(
            input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, token_type_ids=token_type_ids,
            pixel_values=pixel_values, image_index=image_index,
        ).last_hidden_state  # fmt: skip
        return TokenClassifierOutput(logits=self.tagger(states))


@pytest.fixture
def tagger():
    register_head(TaggerHead, "AutoModelForTokenClassification", labels_tokens=True)
    yield TaggerHead
    unregister_head(TaggerHead)


def test_a_head_registered_once_is_loaded_saved_and_labels_pages(tagger, tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "tagger", head=tagger)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["TaggerHead"]
    assert config["auto_map"]["AutoModelForTokenClassification"] == "test_heads.TaggerHead"
    assert config["auto_map"]["AutoModel"] == "modeling_layoutlm_roialign.LayoutLMRoIAlignModel"
    assert config["custom_pipelines"]["form-understanding"]["impl"].endswith("FormUnderstandingPipeline")
    assert checkpoint_auto_map(tagger) == config["auto_map"]

    model, processor = load_model_and_processor(folder, task="token-classification")
    assert type(model) is tagger
    assert type(AutoModelForTokenClassification.from_pretrained(folder)) is tagger
    assert type(AutoModel.from_pretrained(folder)) is LayoutLMRoIAlignModel
    winner = FUNSD_LABELS.index("B-ANSWER")
    with torch.no_grad():  # every token's logits favour one label: the road must give it to every word
        model.tagger.weight.zero_()
        model.tagger.bias.copy_(torch.arange(len(FUNSD_LABELS)) == winner)
    image, words, boxes = render_synthetic_form(seed=1, index=0)[:3]
    result = predict_page(model, processor, image, words, boxes, max_length=128, stride=32)
    assert [w["text"] for w in result["words"]] == list(words)
    assert {w["label"] for w in result["words"]} == {"B-ANSWER"}


def test_an_unregistered_head_is_refused_by_the_loader_and_the_road(tmp_path):
    register_head(TaggerHead, "AutoModelForTokenClassification", labels_tokens=True)
    folder = save_tiny_checkpoint(tmp_path / "tagger", head=TaggerHead)
    model, processor = load_model_and_processor(folder, task="token-classification")
    unregister_head(TaggerHead)
    assert "TaggerHead" not in HEADS and auto_class_of_head("TaggerHead") is None
    image, words, boxes = render_synthetic_form(seed=1, index=0)[:3]
    with pytest.raises(ValueError, match="needs a token-classification or linking checkpoint.*TaggerHead"):
        predict_page(model, processor, image, words, boxes, max_length=128, stride=32)
    assert auto_class_of_head("LayoutLMRoIAlignForTokenClassification") == "AutoModelForTokenClassification"


def test_a_registered_heads_task_is_built_by_the_model_factory():
    register_head(TaggerHead, "AutoModelForTokenClassification", labels_tokens=True, task="tagging")
    try:
        model, processor = build_model_and_processor(
            FUNSD_LABELS, [["date", "name", "total"]], task="tagging", **TINY_TRAINING_MODEL
        )
    finally:
        unregister_head(TaggerHead)
    assert type(model) is TaggerHead
    assert model.config.id2label == dict(enumerate(FUNSD_LABELS)) and model.tagger.out_features == len(FUNSD_LABELS)
    assert (model.config.image_size, model.config.hidden_size, len(processor.tokenizer)) == (
        64,
        32,
        model.config.vocab_size,
    )
    with pytest.raises(
        ValueError, match=r"--task must be one of \['linking', 'token-classification'\], got 'tagging'"
    ):
        build_model_and_processor(FUNSD_LABELS, [["date"]], task="tagging", **TINY_TRAINING_MODEL)


def test_a_head_of_a_new_auto_class_is_named_only_in_its_own_checkpoints(tmp_path):
    register_head(TaggerHead, "AutoModelForQuestionAnswering")
    try:
        assert checkpoint_auto_map(TaggerHead)["AutoModelForQuestionAnswering"] == "test_heads.TaggerHead"
        assert "AutoModelForQuestionAnswering" not in checkpoint_auto_map(LayoutLMRoIAlignForTokenClassification)
        folder = save_tiny_checkpoint(tmp_path / "qa", head=TaggerHead)
        assert "custom_pipelines" not in json.loads((folder / "config.json").read_text())
        assert type(load_model_and_processor(folder)[0]) is TaggerHead
        with pytest.raises(ValueError, match="is a TaggerHead checkpoint, which does not label words"):
            load_model_and_processor(folder, task="token-classification")
    finally:
        unregister_head(TaggerHead)
