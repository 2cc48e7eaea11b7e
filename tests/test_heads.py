"""The registry of heads: a head registered once is loaded, saved and used to label pages like the built-in ones."""

import json

import pytest
import torch
from conftest import TINY_TRAINING_MODEL, make_funsd_release_root, save_tiny_checkpoint, tiny_config
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForTokenClassification,
    LayoutLMConfig,
    LayoutLMForTokenClassification,
    TrainingArguments,
)
from transformers.modeling_outputs import TokenClassifierOutput

from layoutlm_roialign import (
    LayoutLMRoIAlignForRelationExtraction,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignModel,
    LayoutLMRoIAlignPreTrainedModel,
)
from layoutlm_roialign.commands.train import ModelArguments, run_training
from layoutlm_roialign.data import FUNSD_LABELS, DataArguments, load_funsd_folder, render_synthetic_form
from layoutlm_roialign.engine_layoutlm_roialign import predict_page
from layoutlm_roialign.heads_layoutlm_roialign import HEADS, auto_class_of_head, register_head, unregister_head
from layoutlm_roialign.loader import load_model_and_processor
from layoutlm_roialign.model_factory import build_model_and_processor
from layoutlm_roialign.road_layoutlm_roialign import is_linking_model
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


class LinkerHead(LayoutLMRoIAlignForRelationExtraction):
    """A throwaway head with the linking model's layers (and its link method), registered as the test says."""


def test_whether_a_model_links_is_the_registrys_flag(tmp_path):
    """The road links with a head the registry says links, not with any class that has a link method; transformers'
    own heads and unregistered ones do not link."""
    register_head(LinkerHead, "AutoModelForTokenClassification", labels_tokens=True)  # words only
    try:
        model, processor = load_model_and_processor(save_tiny_checkpoint(tmp_path / "linker", head=LinkerHead))
        assert type(model) is LinkerHead and not is_linking_model(model)
        image, words, boxes = render_synthetic_form(seed=1, index=0)[:3]
        assert "pairs" not in predict_page(model, processor, image, words, boxes, max_length=128, stride=32)
        register_head(LinkerHead, "AutoModelForTokenClassification", labels_tokens=True, links=True)
        assert is_linking_model(model)
        assert "pairs" in predict_page(model, processor, image, words, boxes, max_length=128, stride=32)
    finally:
        unregister_head(LinkerHead)
    assert not is_linking_model(model)
    assert is_linking_model(LayoutLMRoIAlignForRelationExtraction(tiny_config()))
    assert not is_linking_model(LayoutLMRoIAlignForTokenClassification(tiny_config()))
    layoutlm = LayoutLMConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                              intermediate_size=37)  # fmt: skip
    assert not is_linking_model(LayoutLMForTokenClassification(layoutlm))


def test_training_a_registered_linking_heads_task_needs_entity_links(tmp_path):
    """Training reads from the registry whether a task's head links: a new linking head's task needs links too."""
    root = make_funsd_release_root(tmp_path / "funsd")
    load_funsd_folder(root / "training_data").remove_columns(["entities", "links"]).save_to_disk(tmp_path / "saved")
    register_head(LinkerHead, "AutoModelForTokenClassification", labels_tokens=True, links=True, task="pairing")
    try:
        with pytest.raises(ValueError, match="--task pairing needs entity links in the data"):
            run_training(ModelArguments(**TINY_TRAINING_MODEL, task="pairing"),
                         DataArguments(dataset=str(tmp_path / "saved"), validation_size=2),
                         TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, num_train_epochs=1,
                                           report_to="none", disable_tqdm=True))  # fmt: skip
    finally:
        unregister_head(LinkerHead)
