"""`from_pretrained_parts`: a LayoutLM or plain BERT checkpoint plus backbone weights, loaded after `post_init`."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from conftest import TINY, random_batch
from conftest import model_inputs as inputs
from torchvision.ops import FrozenBatchNorm2d
from transformers import BertConfig, BertModel, LayoutLMConfig, LayoutLMModel

from layoutlm_roialign import LayoutLMRoIAlignConfig, LayoutLMRoIAlignForTokenClassification, backbone_weights_name

TEXT = {
    k: TINY[k]
    for k in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
    )
}


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(1)
    net = torchvision.models.resnet18()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a pretrained network has
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_from_layoutlm_checkpoint_and_backbone_file(tmp_path, resnet18_file):
    torch.manual_seed(2)
    text = LayoutLMModel(LayoutLMConfig(**TEXT))
    text.save_pretrained(tmp_path / "layoutlm")
    weights_path, weights = resnet18_file
    model = LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
        tmp_path / "layoutlm", backbone_weights=weights_path, backbone="resnet18", image_size=64, num_labels=7
    )
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    assert model.config.backbone_weights == weights_path.name
    assert model.config.resolved_backbone_norm == "frozen_batch_norm"
    ours = model.layoutlm_roialign.layoutlm.state_dict()
    for key, value in text.state_dict().items():
        if key.startswith("pooler."):
            assert key not in ours  # the token classifier reads token states: it has no pooler to load into
            continue
        assert torch.equal(ours[key], value), key  # nothing re-initialized by post_init
    backbone = model.layoutlm_roialign.visual_embeddings.backbone.state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer3.1.bn2.weight", "layer3.1.conv2.weight"):
        assert torch.equal(backbone[key], weights[key]), key
    assert not any(k.startswith(("layer4", "fc")) for k in backbone)


def test_from_plain_bert_checkpoint_starts_2d_embeddings_fresh(tmp_path):
    torch.manual_seed(3)
    bert = BertModel(BertConfig(**TEXT))
    bert.save_pretrained(tmp_path / "bert")
    model = LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
        tmp_path / "bert", backbone="resnet18", image_size=64, num_labels=3
    )
    ours = model.layoutlm_roialign.layoutlm.state_dict()
    shared = [k for k in bert.state_dict() if k in ours and not k.endswith("position_ids")]
    assert len(shared) > 20
    for key in shared:
        assert torch.equal(ours[key], bert.state_dict()[key]), key
    assert "embeddings.x_position_embeddings.weight" in ours  # LayoutLM's 2-D embeddings exist, fresh
    assert model.config.resolved_backbone_norm == "group_norm"  # no backbone weights: trainable norm


def test_unknown_backbone_weight_name():
    with pytest.raises(ValueError, match="backbone_weights"):
        LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
            None,
            backbone_weights="NOT_A_WEIGHT",
            backbone="resnet18",
            image_size=64,
            **{k: v for k, v in TEXT.items()},
        )


def from_resnet18_file(weights_path) -> LayoutLMRoIAlignForTokenClassification:
    """A tiny token classifier whose ResNet-18 backbone comes from the state-dict file `weights_path`."""
    return LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
        None, backbone_weights=weights_path, backbone="resnet18", image_size=64, num_labels=7, **TEXT
    )


def test_pretrained_model_round_trips(tmp_path, resnet18_file):
    weights_path, _ = resnet18_file
    model = from_resnet18_file(weights_path).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = LayoutLMRoIAlignForTokenClassification.from_pretrained(tmp_path / "ckpt").eval()
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_published_config_names_the_weights_and_the_built_norm_never_a_local_path(tmp_path, resnet18_file):
    weights_path, _ = resnet18_file
    model = from_resnet18_file(weights_path)
    model.save_pretrained(tmp_path / "ckpt")
    text = (tmp_path / "ckpt" / "config.json").read_text()
    saved = json.loads(text)
    assert saved["backbone_weights"] == "resnet18.pth" and str(weights_path.parent) not in text
    assert saved["backbone_norm"] == "frozen_batch_norm"  # resolved: the architecture no longer hangs on a name
    random = LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
        None, backbone="resnet18", image_size=64, num_labels=7, **TEXT
    )
    assert random.config.backbone_norm == "group_norm" and random.config.backbone_weights is None
    # torchvision weight names are recorded resolved ("DEFAULT" is an alias), without downloading anything
    assert backbone_weights_name("DEFAULT", "resnet18") == "IMAGENET1K_V1"
    assert backbone_weights_name("IMAGENET1K_V2", "resnet50") == "IMAGENET1K_V2"


def test_old_config_with_a_local_path_builds_the_same_model(tmp_path, resnet18_file):
    """Configs written before the norm was saved resolved hold a local path and "auto": same architecture, logits."""
    weights_path, _ = resnet18_file
    model = from_resnet18_file(weights_path).eval()
    model.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    config.update(backbone_weights="/home/someone/site-packages/weights/resnet18.pth", backbone_norm="auto")
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = LayoutLMRoIAlignForTokenClassification.from_pretrained(tmp_path / "old").eval()
    backbone = old.layoutlm_roialign.visual_embeddings.backbone
    assert old.config.resolved_backbone_norm == "frozen_batch_norm"
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    batch = random_batch()
    with torch.no_grad():
        assert torch.equal(old(**inputs(batch)).logits, model(**inputs(batch)).logits)


def test_text_encoder_from_one_of_our_checkpoints(tmp_path):
    """A checkpoint of this package (e.g. after MVLM pre-training) gives its `layoutlm` text encoder; the rest (the
    backbone, the head) starts fresh."""
    from layoutlm_roialign import LayoutLMRoIAlignForMaskedLM

    torch.manual_seed(0)
    mlm = LayoutLMRoIAlignForMaskedLM(LayoutLMRoIAlignConfig(**TINY))
    mlm.save_pretrained(tmp_path / "mvlm")
    torch.manual_seed(1)
    model = LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
        str(tmp_path / "mvlm"), backbone="resnet18", image_size=64, num_labels=3
    )
    assert model.config.hidden_size == TINY["hidden_size"] and model.config.num_labels == 3
    expected = mlm.layoutlm_roialign.layoutlm.state_dict()
    got = model.layoutlm_roialign.layoutlm.state_dict()
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert not torch.equal(
        model.layoutlm_roialign.visual_embeddings.backbone.conv1.weight,
        mlm.layoutlm_roialign.visual_embeddings.backbone.conv1.weight,
    )
