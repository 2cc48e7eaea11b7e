"""The visual branch is safe by construction: it starts as the text model, its backbone's output stays
bounded at random init, any torchvision backbone cut at a named node works, and pretrained weights load from a
local state-dict file under other key names."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import MODEL_INPUTS, TINY, assert_remote_code_gives, random_batch, tiny_config
from conftest import model_inputs as inputs
from torchvision.ops import FrozenBatchNorm2d
from transformers import AutoModelForTokenClassification

from layoutlm_roialign import (
    LayoutLMRoIAlignConfig,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignModel,
    build_backbone,
)
from layoutlm_roialign.assembly import map_state_dict_by_position


def page_like_batch(seed: int = 0, image_size: int = 64) -> dict:
    """A random batch whose pixels have a large non-zero mean (a white page is ~+2 after ImageNet normalization), so
    a projection bias or an un-normalized feature would show up in the output."""
    batch = random_batch(seed=seed, image_size=image_size)
    batch["pixel_values"] = batch["pixel_values"] + 2.0
    return batch


# --- equality with the text encoder at init -------------------------------------------------------------------


@pytest.mark.parametrize("visual_init", ["normed_zero_projection", "zero_gate", "zero_projection"])
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_fused_equals_text_encoder_at_init(visual_init, backbone):
    torch.manual_seed(0)
    model = LayoutLMRoIAlignModel(tiny_config(visual_init=visual_init, backbone=backbone)).eval()
    batch = page_like_batch()
    with torch.no_grad():
        fused = model(**inputs(batch))
        text = model.layoutlm(**{k: batch[k] for k in MODEL_INPUTS if k != "pixel_values"})
    # the visual branch really ran on the page (its pooled features are far from zero) and still adds nothing
    pooled = model.visual_embeddings.backbone(batch["pixel_values"])["features"]
    assert pooled.abs().mean() > 1e-2
    assert torch.equal(fused.visual_embeddings, torch.zeros_like(fused.visual_embeddings))
    assert torch.equal(fused.last_hidden_state, text.last_hidden_state)
    assert torch.equal(fused.pooler_output, text.pooler_output)


@pytest.mark.parametrize("visual_init", ["normed_zero_projection", "zero_gate", "zero_projection"])
def test_token_logits_equal_text_only_twin_at_init(visual_init):
    """The whole token classifier with the visual branch equals the same weights without it."""
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(visual_init=visual_init)).eval()
    twin = LayoutLMRoIAlignForTokenClassification(tiny_config(visual_init=visual_init, use_visual_features=False))
    missing, unexpected = twin.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("layoutlm_roialign.visual_embeddings.") for k in unexpected)
    batch = page_like_batch(seed=1)
    with torch.no_grad():
        assert torch.equal(model(**inputs(batch)).logits, twin.eval()(**inputs(batch)).logits)


def test_tutorial_init_is_not_text_equal():
    """`visual_init="normal"` (the tutorial's raw projection) changes the output at init: why it is not the default."""
    torch.manual_seed(0)
    model = LayoutLMRoIAlignModel(tiny_config(visual_init="normal")).eval()
    batch = page_like_batch()
    with torch.no_grad():
        fused = model(**inputs(batch)).last_hidden_state
        text = model.layoutlm(**{k: batch[k] for k in MODEL_INPUTS if k != "pixel_values"}).last_hidden_state
    assert (fused - text).abs().max() > 1e-2


def test_zero_gate_opens_with_training():
    """Zero gate is not a dead end: the first step moves the gate (only), after which the projection learns too."""
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(visual_init="zero_gate", visual_dropout=0.0))
    visual = model.layoutlm_roialign.visual_embeddings
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = page_like_batch()
    model(**inputs(batch, labels=True)).loss.backward()
    assert visual.gate.grad.abs().sum() > 0
    assert visual.projection.weight.grad.abs().sum() == 0  # gated by zero
    optimizer.step()
    optimizer.zero_grad()
    model(**inputs(batch, labels=True)).loss.backward()
    assert visual.projection.weight.grad.abs().sum() > 0


# --- normalization that fits the weights --------------------------------------------------------------------------


def test_auto_norm_follows_weights():
    assert tiny_config().resolved_backbone_norm == "group_norm"
    assert tiny_config(backbone_weights="weights.pt").resolved_backbone_norm == "frozen_batch_norm"
    assert (
        tiny_config(backbone_weights="weights.pt", backbone_norm="group_norm").resolved_backbone_norm == "group_norm"
    )
    backbone, _, _ = build_backbone(tiny_config())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in backbone.modules())
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)) for m in backbone.modules())
    backbone, _, _ = build_backbone(tiny_config(backbone_weights="weights.pt"))
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in backbone.modules())


NORM_TYPES = {
    "frozen_batch_norm": FrozenBatchNorm2d,
    "batch_norm": torch.nn.BatchNorm2d,
    "group_norm": torch.nn.GroupNorm,
    "layer_norm": torchvision.models.convnext.LayerNorm2d,
}


def norms_built(backbone: torch.nn.Module) -> set[str]:
    return {name for name, kind in NORM_TYPES.items() for m in backbone.modules() if type(m) is kind}


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
@pytest.mark.parametrize("norm", ["auto", "frozen_batch_norm", "batch_norm", "group_norm"])
def test_backbone_norm_is_the_one_built_for_every_batch_norm_backbone(backbone, norm):
    config = tiny_config(backbone=backbone, backbone_norm=norm)
    built, _, _ = build_backbone(config)
    assert norms_built(built) == {config.resolved_backbone_norm}
    if backbone == "mobilenet_v3_small" and norm == "frozen_batch_norm":  # torchvision's eps is kept
        assert {m.eps for m in built.modules() if isinstance(m, FrozenBatchNorm2d)} == {1e-3}


def test_backbone_norm_is_refused_where_the_backbone_has_its_own():
    config = tiny_config(backbone="convnext_tiny")
    assert config.resolved_backbone_norm == "layer_norm"
    assert tiny_config(backbone="convnext_tiny", backbone_weights="w.pt").resolved_backbone_norm == "layer_norm"
    built, _, _ = build_backbone(config)
    assert norms_built(built) == {"layer_norm"}
    for norm in ("frozen_batch_norm", "batch_norm", "group_norm"):
        with pytest.raises(ValueError, match=rf"`backbone_norm`='{norm}' cannot be applied to convnext_tiny"):
            tiny_config(backbone="convnext_tiny", backbone_norm=norm)
    vgg = tiny_config(backbone="vgg11", backbone_return_node="features.14")
    assert vgg.resolved_backbone_norm == "none"
    assert norms_built(build_backbone(vgg)[0]) == set()


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_random_backbone_output_is_bounded(backbone):
    """At random init, "auto" gives group norm and the stride-16 features keep a unit-order scale; a frozen
    BatchNorm that never saw data is the identity, and a random ResNet-101's `layer3` then grows by orders of
    magnitude (this is what swamped the text representation in the tutorial's design)."""
    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) + 1.0
    stds = {}
    for norm in ("auto", "frozen_batch_norm"):
        torch.manual_seed(0)
        model = LayoutLMRoIAlignModel(tiny_config(backbone=backbone, backbone_norm=norm)).eval()
        with torch.no_grad():
            features = model.visual_embeddings.backbone(pixel_values)["features"]
        assert torch.isfinite(features).all()
        stds[model.config.resolved_backbone_norm] = features.std().item()
    assert stds["group_norm"] < 10.0
    assert stds["frozen_batch_norm"] > stds["group_norm"]
    if backbone == "resnet101":
        assert stds["frozen_batch_norm"] > 100 * stds["group_norm"]


# --- any torchvision backbone, cut at a named node ----------------------------------------------------------------


@pytest.mark.parametrize(
    "backbone, node, channels, stride",
    [
        ("resnet18", "layer3", 256, 16),
        ("resnet50", "layer3", 1024, 16),
        ("resnet18", "layer2", 128, 8),
        ("mobilenet_v2", "features.13", 96, 16),
        ("convnext_tiny", "features.5", 384, 16),
    ],
)
def test_channels_and_stride_are_inferred(backbone, node, channels, stride):
    config = tiny_config(backbone=backbone, backbone_return_node=node)
    _, out_channels, out_stride = build_backbone(config)
    assert (out_channels, out_stride) == (channels, stride)
    if node == LayoutLMRoIAlignConfig(backbone=backbone).backbone_return_node:  # the default node
        torch.manual_seed(0)
        visual = LayoutLMRoIAlignModel(tiny_config(backbone=backbone)).visual_embeddings
        assert visual.spatial_scale == 1 / stride
        assert visual.projection.in_features == channels * 9


@pytest.mark.slow  # eight training steps and a remote-code load in a subprocess, per backbone
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "convnext_tiny"])
def test_light_backbone_trains_and_round_trips(tmp_path, backbone):
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(backbone=backbone))
    backbone_before = {
        k: v.clone() for k, v in model.layoutlm_roialign.visual_embeddings.backbone.state_dict().items()
    }
    batch = page_like_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(**inputs(batch, labels=True)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    backbone_after = model.layoutlm_roialign.visual_embeddings.backbone.state_dict()
    assert any(not torch.equal(backbone_before[k], backbone_after[k]) for k in backbone_before)  # it trained
    assert model.layoutlm_roialign.visual_embeddings.projection.weight.abs().max() > 0  # the zero layer opened

    model.eval()
    with torch.no_grad():
        expected = model(**inputs(batch)).logits
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    loaded = AutoModelForTokenClassification.from_pretrained(ckpt).eval()
    assert loaded.config.backbone == backbone
    with torch.no_grad():
        assert torch.equal(loaded(**inputs(batch)).logits, expected)

    assert_remote_code_gives(ckpt, inputs(batch), expected, tmp_path, backbone=backbone)


def test_unknown_backbone_and_return_node():
    with pytest.raises(ValueError, match="backbone"):
        tiny_config(backbone="not_a_net")
    with pytest.raises(ValueError, match="backbone_return_node"):
        tiny_config(backbone="vgg11")  # a torchvision model without a default node
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        build_backbone(tiny_config(backbone="fasterrcnn_resnet50_fpn", backbone_return_node="backbone"))
    with pytest.raises(ValueError, match="backbone_return_node"):
        LayoutLMRoIAlignModel(tiny_config(backbone_return_node="layer9"))
    with pytest.raises(ValueError, match="backbone_return_node"):
        LayoutLMRoIAlignModel(tiny_config(backbone_return_node="flatten"))  # (B, C): no map for RoIAlign
    # a model without a default node works once the node is named
    _, channels, stride = build_backbone(tiny_config(backbone="vgg11", backbone_return_node="features.14"))
    assert (channels, stride) == (512, 8)


# --- pretrained weights from a local state-dict file ---------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_local_weights_under_other_key_names_are_mapped_by_position(tmp_path, backbone):
    torch.manual_seed(1)
    net = getattr(torchvision.models, backbone)(weights=None)
    with torch.no_grad():  # make BatchNorm statistics non-trivial so that a mis-mapping would show
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
    source = net.state_dict()
    renamed = {f"old_export.{i:04d}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(source.items())}
    torch.save(renamed, tmp_path / "renamed.pt")
    # The model's own loader takes torchvision's key names only, and says where the renaming helper is.
    with pytest.raises(ValueError, match="torchvision's key names.*map_state_dict_by_position"):
        LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
            None, backbone_weights=tmp_path / "renamed.pt", **{**TINY, "backbone": backbone}
        )
    path = tmp_path / "weights.pt"
    torch.save(map_state_dict_by_position(renamed, source), path)

    model = LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
        None, backbone_weights=path, **{**TINY, "backbone": backbone}
    )
    assert model.config.backbone_weights == "weights.pt"
    assert model.config.resolved_backbone_norm == "frozen_batch_norm"
    loaded = model.layoutlm_roialign.visual_embeddings.backbone.state_dict()
    checked = 0
    for key, tensor in loaded.items():
        if key.endswith("num_batches_tracked"):
            continue
        # FrozenBatchNorm2d has the same tensor names as BatchNorm2d, so the source key is the torchvision key
        assert torch.equal(tensor, source[key]), key
        checked += 1
    assert checked > 20

    # the loaded pretrained model survives a save/load round trip (the weights ship inside the checkpoint)
    model.save_pretrained(tmp_path / "ckpt")
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "ckpt")
    for key, tensor in reloaded.layoutlm_roialign.visual_embeddings.backbone.state_dict().items():
        assert torch.equal(tensor, loaded[key]), key


def test_local_weights_that_do_not_fit_are_refused(tmp_path):
    source = torchvision.models.resnet34(weights=None).state_dict()  # resnet34 has more blocks than resnet18
    target = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match="does not fit"):
        map_state_dict_by_position({f"w{i}": v for i, v in enumerate(source.values())}, target)
    path = tmp_path / "weights.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)  # same names, other shapes
    with pytest.raises(ValueError, match="does not fit"):
        LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(None, backbone_weights=path, **TINY)
