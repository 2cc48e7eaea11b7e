"""The model package: shapes, save/load (also as remote code), RoI correctness, batch independence, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import MODEL_INPUTS, assert_remote_code_gives, random_batch, tiny_config
from conftest import model_inputs as inputs
from torchvision.ops import roi_align
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

from layoutlm_roialign import (
    LayoutLMRoIAlignConfig,
    LayoutLMRoIAlignForMaskedLM,
    LayoutLMRoIAlignForRelationExtraction,
    LayoutLMRoIAlignForSequenceClassification,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignModel,
)


def with_live_gate(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every text-equal `visual_init` hides the visual term at init (a zero projection or a zero gate); give those
    zeros random values so tests can see the image's effect."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if getattr(module, "gate", None) is not None:
            with torch.no_grad():
                module.gate.copy_(torch.rand(module.gate.shape, generator=g) + 0.5)
        if getattr(module, "zero_init", False):
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.02)
    return model


def build(cls=LayoutLMRoIAlignForTokenClassification, **overrides):
    torch.manual_seed(0)
    return with_live_gate(cls(tiny_config(**overrides))).eval()


# --- config -------------------------------------------------------------------------------------------------


def test_config_round_trip(tmp_path):
    config = tiny_config(backbone="resnet34", roi_output_size=2, visual_dropout=0.2)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, LayoutLMRoIAlignConfig)
    drop = {"_name_or_path"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in drop} == {
        k: v for k, v in config.to_dict().items() if k not in drop
    }
    assert loaded.roi_output_size == [2, 2] and loaded.backbone_return_node == "layer3"
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "layoutlm_roialign"


@pytest.mark.parametrize(
    "field, value",
    [
        ("backbone", "not_a_net"),
        ("backbone_norm", "instance"),
        ("image_size", 0),
        ("roi_output_size", (0, 3)),
        ("roi_spatial_scale", -1.0),
        ("roi_sampling_ratio", 0),
        ("visual_init", "ones"),
        ("visual_dropout", 1.5),
        ("max_2d_position_embeddings", 512),
    ],
)
def test_config_rejects_impossible_values(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


def test_norm_follows_weights():
    assert tiny_config().resolved_backbone_norm == "group_norm"
    assert tiny_config(backbone_weights="IMAGENET1K_V1").resolved_backbone_norm == "frozen_batch_norm"
    assert tiny_config(backbone_weights="x", backbone_norm="batch_norm").resolved_backbone_norm == "batch_norm"


# --- shapes and outputs ---------------------------------------------------------------------------------------


def test_output_shapes(batch):
    token_model = build()
    out = token_model(**inputs(batch, labels=True), output_hidden_states=True)
    assert out.logits.shape == (3, 12, 7)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (3, 12, 32)
    eager = build(attn_implementation="eager")  # SDPA kernels do not return attention maps
    attentions = eager(**inputs(batch), output_attentions=True).attentions
    assert len(attentions) == 2 and attentions[0].shape == (3, 4, 12, 12)

    base = build(LayoutLMRoIAlignModel)
    base_out = base(**inputs(batch))
    assert base_out.last_hidden_state.shape == (3, 12, 32)
    assert base_out.pooler_output.shape == (3, 32)
    assert base_out.visual_embeddings.shape == (3, 12, 32)
    assert torch.all(base_out.visual_embeddings[batch["attention_mask"] == 0] == 0)

    seq_model = build(LayoutLMRoIAlignForSequenceClassification, num_labels=4)
    seq_out = seq_model(**inputs(batch), labels=torch.tensor([0, 3, 1]))
    assert seq_out.logits.shape == (3, 4) and torch.isfinite(seq_out.loss)

    as_tuple = token_model(**inputs(batch), return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], token_model(**inputs(batch)).logits)


def test_sdpa_is_kept():
    model = LayoutLMRoIAlignForTokenClassification(tiny_config())
    assert model.config._attn_implementation == "sdpa"
    assert model.layoutlm_roialign.layoutlm.config._attn_implementation == "sdpa"


# --- save / load ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, auto",
    [
        (LayoutLMRoIAlignForTokenClassification, AutoModelForTokenClassification),
        (LayoutLMRoIAlignForSequenceClassification, AutoModelForSequenceClassification),
        (LayoutLMRoIAlignModel, AutoModel),
    ],
)
def test_save_and_load_identical(tmp_path, batch, cls, auto):
    model = build(cls)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig"} and auto.__name__ in config["auto_map"]
    assert (tmp_path / "modeling_layoutlm_roialign.py").exists()
    assert (tmp_path / "configuration_layoutlm_roialign.py").exists()
    for loaded in (cls.from_pretrained(tmp_path), auto.from_pretrained(tmp_path)):
        assert type(loaded) is cls
        expected = model(**inputs(batch))[0]
        assert torch.equal(loaded.eval()(**inputs(batch))[0], expected)


def test_loads_as_remote_code_without_the_package(tmp_path, batch):
    model = build()
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    assert_remote_code_gives(ckpt, inputs(batch), model(**inputs(batch)).logits, tmp_path)


# --- the RoI path ---------------------------------------------------------------------------------------------


def reference_visual_embeddings(visual, pixel_values, bbox, attention_mask, cls_is_page=True):
    """Per document, per token, straight from the design: scale each token's 0..1000 box to the image, pool it
    alone with roi_align, project. Independent of the model's batching, masking and box sharing."""
    size = pixel_values.shape[-1]
    out = torch.zeros(*bbox.shape[:2], visual.projection.out_features)
    for b in range(bbox.shape[0]):
        features = visual.backbone(pixel_values[b : b + 1])["features"]
        for t in range(bbox.shape[1]):
            if attention_mask[b, t] == 0:
                continue
            box = [0.0, 0.0, 1000.0, 1000.0] if (t == 0 and cls_is_page) else bbox[b, t].tolist()
            roi = torch.tensor([[0.0] + [c * size / 1000 for c in box]])
            pooled = roi_align(features, roi, (3, 3), spatial_scale=1 / 16, sampling_ratio=2, aligned=True)
            out[b, t] = visual.embed(pooled.flatten(1))[0]
    return out


def test_batched_roi_features_equal_per_document_reference(batch):
    model = build(LayoutLMRoIAlignModel)
    visual = model.visual_embeddings
    with torch.no_grad():
        got = visual(batch["pixel_values"], batch["bbox"], batch["attention_mask"])
        expected = reference_visual_embeddings(visual, batch["pixel_values"], batch["bbox"], batch["attention_mask"])
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_roi_boxes_land_on_the_word():
    """aligned=True: a box drawn exactly over one 16x16 feature cell is centred on that cell's value (a symmetric
    3x3 pooled map peaking in the middle); the tutorial's aligned=False samples half a cell to the bottom-right."""
    feature_map = torch.zeros(1, 8, 4, 4)
    feature_map[0, :, 1, 2] = 1.0  # cell (row 1, col 2) covers pixels x 32..48, y 16..32 of the 64-px image
    bbox = torch.tensor([[[0, 0, 0, 0], [500, 250, 750, 500], [0, 750, 250, 1000]]])
    pooled = {}
    for aligned in (True, False):
        visual = build(LayoutLMRoIAlignModel, image_size=64, roi_aligned=aligned).visual_embeddings
        rois, _, inverse = visual.rois(bbox, None, 64, 64)
        pooled[aligned] = visual.pool(feature_map, rois)[inverse].view(3, 8, 3, 3)
    word = pooled[True][1, 0]
    assert torch.allclose(word, word.flip(0)) and torch.allclose(word, word.flip(1))
    assert word[1, 1] == word.max() and word.min() > 0
    assert pooled[True][2].abs().max() == 0  # a box elsewhere sees nothing
    shifted = pooled[False][1, 0]
    assert not torch.allclose(shifted, shifted.flip(0))


def test_logits_independent_of_batch_companions_and_padding():
    model = build()
    batch = random_batch(batch_size=3, seq_len=12)
    with torch.no_grad():
        together = model(**inputs(batch)).logits
        for i in range(3):
            n = int(batch["attention_mask"][i].sum())
            alone = {k: batch[k][i : i + 1, :n] if k != "pixel_values" else batch[k][i : i + 1] for k in MODEL_INPUTS}
            logits = model(**alone).logits
            torch.testing.assert_close(logits[0], together[i, :n], rtol=1e-5, atol=1e-5)
            padded = {k: v for k, v in alone.items()}
            for k in ("input_ids", "bbox", "attention_mask", "token_type_ids"):
                pad = torch.zeros_like(padded[k][:, :5])
                padded[k] = torch.cat([padded[k], pad], dim=1)
            torch.testing.assert_close(model(**padded).logits[0, :n], logits[0], rtol=1e-5, atol=1e-5)


def test_image_index_shares_one_page_image_and_one_backbone_run():
    """Windows of one page given as one image + `image_index` give the logits of repeating the image per window,
    with one backbone run per page instead of one per window."""
    model = build()
    batch = random_batch(batch_size=4, seq_len=12)
    pages = batch["pixel_values"][:2]  # two pages; windows 0, 1, 3 read page 0, window 2 reads page 1
    image_index = torch.tensor([0, 0, 1, 0])
    calls = []
    hook = model.layoutlm_roialign.visual_embeddings.backbone.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0])
    )
    with torch.no_grad():
        repeated = model(**dict(inputs(batch), pixel_values=pages[image_index])).logits
        shared = model(**dict(inputs(batch), pixel_values=pages, image_index=image_index)).logits
    hook.remove()
    assert calls == [4, 2]
    torch.testing.assert_close(shared, repeated, rtol=1e-5, atol=1e-5)
    assert (repeated[0] - repeated[2]).abs().max() > 0  # the two pages do differ


@pytest.mark.parametrize(
    "image_index, match",
    [
        (torch.tensor([0, 1]), "image_index.*shape"),
        (torch.tensor([0.0, 1.0, 1.0]), "image_index.*integer"),
        (torch.tensor([0, 1, 2]), "image_index.*0..1"),
        (torch.tensor([0, -1, 1]), "image_index.*0..1"),
    ],
)
def test_bad_image_index(batch, image_index, match):
    model = build()
    with pytest.raises(ValueError, match=match):
        model(**dict(inputs(batch), pixel_values=batch["pixel_values"][:2], image_index=image_index))


def test_image_index_on_a_text_only_model(batch):
    model = build(use_visual_features=False)
    with pytest.raises(ValueError, match="image_index.*text-only"):
        model(**dict(inputs(batch), image_index=torch.tensor([0, 1, 2])))


def test_changing_the_image_changes_the_logits(batch):
    model = build()
    with torch.no_grad():
        before = model(**inputs(batch)).logits
        other = dict(inputs(batch), pixel_values=torch.flip(batch["pixel_values"], dims=[-1]))
        after = model(**other).logits
    assert (before - after).abs().max() > 1e-3


@pytest.mark.parametrize("visual_init", [None, "zero_gate"])
def test_text_equal_inits_start_as_the_text_model(batch, visual_init):
    """The default (and the old zero gate) start exactly as the text encoder."""
    torch.manual_seed(0)
    config = tiny_config() if visual_init is None else tiny_config(visual_init=visual_init)
    model = LayoutLMRoIAlignModel(config).eval()
    with torch.no_grad():
        fused = model(**inputs(batch)).last_hidden_state
        text = model.layoutlm(**{k: batch[k] for k in ("input_ids", "bbox", "attention_mask", "token_type_ids")})
    assert torch.equal(fused, text.last_hidden_state)


def test_gradients_reach_backbone_and_projection(batch):
    model = build().train()
    model(**inputs(batch, labels=True)).loss.backward()
    visual = model.layoutlm_roialign.visual_embeddings
    assert visual.projection.weight.grad.abs().sum() > 0
    assert visual.feature_norm.weight.grad.abs().sum() > 0
    first_conv = next(p for n, p in visual.backbone.named_parameters() if n.startswith("conv1"))
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_zero_projection_gets_gradient_at_init(batch):
    """At init (projection 0) the backbone is silent, but the projection itself learns through its whole fan-in, so
    the branch can open; the old zero gate likewise gets a gradient (only)."""
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config()).train()
    model(**inputs(batch, labels=True)).loss.backward()
    visual = model.layoutlm_roialign.visual_embeddings
    assert visual.projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in visual.backbone.parameters())
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(visual_init="zero_gate")).train()
    model(**inputs(batch, labels=True)).loss.backward()
    assert model.layoutlm_roialign.visual_embeddings.gate.grad.abs().sum() > 0


def test_text_only_switch(batch):
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(use_visual_features=False)).eval()
    assert model.layoutlm_roialign.visual_embeddings is None
    no_pixels = {k: batch[k] for k in ("input_ids", "bbox", "attention_mask", "token_type_ids")}
    assert model(**no_pixels).logits.shape == (3, 12, 7)


# --- training ------------------------------------------------------------------------------------------------


def test_trainer_steps_lower_the_loss(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    batch = random_batch(batch_size=8, seq_len=12, seed=1)
    rows = [{k: v[i].tolist() for k, v in batch.items()} for i in range(8)]
    dataset = Dataset.from_list(rows).with_format("torch")
    model = build().train()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        num_train_epochs=6,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) >= 10 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3


@pytest.mark.parametrize(
    "cls", [LayoutLMRoIAlignForTokenClassification, LayoutLMRoIAlignForMaskedLM, LayoutLMRoIAlignForRelationExtraction]
)
def test_token_level_heads_build_no_pooler_and_load_checkpoints_that_have_one(batch, cls, tmp_path, caplog):
    with_pooler = build(LayoutLMRoIAlignForSequenceClassification)  # reads the pooled [CLS]: keeps its pooler
    pooler = {n for n, _ in with_pooler.named_parameters() if ".pooler." in n}
    assert pooler == {"layoutlm_roialign.layoutlm.pooler.dense.weight", "layoutlm_roialign.layoutlm.pooler.dense.bias"}
    with_pooler.save_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="transformers"):
        model, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not [n for n in model.state_dict() if "pooler" in n]
    # the old pooler weights are ignored quietly (the masked-LM head does report the classifier it does not have)
    assert not [k for k in info["unexpected_keys"] if "pooler" in k] and "pooler" not in caplog.text
    text = model.layoutlm_roialign.layoutlm.embeddings.word_embeddings.weight
    assert torch.equal(text, with_pooler.layoutlm_roialign.layoutlm.embeddings.word_embeddings.weight)
    with torch.no_grad():
        out = model.layoutlm_roialign(**inputs(batch))
    assert out.pooler_output is None and out.last_hidden_state.shape == (3, 12, 32)


# Entity types from the B-/I- labels (QUESTION 0, ANSWER 1, HEADER 2), and one question -> answer pair per sequence.
LINKING_ID2LABEL = dict(enumerate(["O", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER", "B-HEADER", "I-HEADER"]))


def _head_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """A loss that reaches every parameter of `model`: the head's own (the linking head's with its link loss), or
    for the base model a fixed random projection of its token states and its pooled output."""
    if isinstance(model, LayoutLMRoIAlignModel):
        out = model(**inputs(batch))
        g = torch.Generator().manual_seed(1)
        weights = torch.randn(out.last_hidden_state.shape, generator=g)
        return (out.last_hidden_state * weights).sum() + out.pooler_output.sum()
    if isinstance(model, LayoutLMRoIAlignForRelationExtraction):
        size = batch["input_ids"].shape[0]
        entities = dict(
            entity_spans=torch.tensor([[1, 2], [2, 4]]).expand(size, 2, 2),
            entity_labels=torch.tensor([0, 1]).expand(size, 2),
            link_labels=torch.tensor([[0, 1], [0, 0]]).expand(size, 2, 2),
        )
        return model(**inputs(batch, labels=True), **entities).loss
    if isinstance(model, LayoutLMRoIAlignForSequenceClassification):
        return model(**inputs(batch), labels=torch.tensor([0, 1, 2])).loss
    if isinstance(model, LayoutLMRoIAlignForMaskedLM):
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return model(**inputs(batch), labels=labels).loss
    return model(**inputs(batch, labels=True)).loss


@pytest.mark.parametrize("use_reentrant", [True, False])
@pytest.mark.parametrize(
    "cls",
    [
        LayoutLMRoIAlignModel,
        LayoutLMRoIAlignForTokenClassification,
        LayoutLMRoIAlignForSequenceClassification,
        LayoutLMRoIAlignForMaskedLM,
        LayoutLMRoIAlignForRelationExtraction,
    ],
)
def test_gradient_checkpointing_gives_every_parameter_its_gradient(batch, cls, use_reentrant):
    """Both checkpointing modes (Trainer's `gradient_checkpointing_kwargs` lets users pick either) give the loss and
    the gradients of the run without checkpointing, to every parameter, the visual branch's included."""
    config = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, visual_dropout=0.0)
    model = build(cls, id2label=LINKING_ID2LABEL, **config).train()
    plain_loss = _head_loss(model, batch)
    plain_loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert set(plain) == {n for n, _ in model.named_parameters()}  # every parameter is trained
    model.zero_grad(set_to_none=True)
    # transformers v5's name for `gradient_checkpointing_enable(gradient_checkpointing_kwargs=...)` (deprecated)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert getattr(model, model.base_model_prefix, model).visual_embeddings.gradient_checkpointing
    pixel_values = batch["pixel_values"]
    loss = _head_loss(model, batch)
    loss.backward()
    assert not pixel_values.requires_grad  # the caller's images are left as they were
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    checkpointed = {n for n, p in model.named_parameters() if p.grad is not None}
    assert checkpointed == set(plain), f"no gradient with checkpointing: {sorted(set(plain) - checkpointed)[:5]}"
    for name, grad in plain.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast_and_bf16_weights(batch, tmp_path):
    model = build()
    with torch.no_grad():
        fp32 = model(**inputs(batch)).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(**inputs(batch)).logits
        assert torch.isfinite(autocast).all()
        assert (autocast.float() - fp32).abs().max() < 0.25
        model.save_pretrained(tmp_path)
        bf16 = LayoutLMRoIAlignForTokenClassification.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
        assert bf16.dtype == torch.bfloat16
        logits = bf16(**inputs(batch)).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert (logits.float() - fp32).abs().max() < 0.25


# --- bad input ------------------------------------------------------------------------------------------------


def _bad(batch, **changes):
    out = inputs(batch)
    out.update(changes)
    return out


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda b: _bad(b, bbox=b["bbox"].clone().index_fill_(1, torch.tensor([2]), 1001)), "bbox.*0..1000"),
        (lambda b: _bad(b, bbox=b["bbox"] - 5000), "bbox.*0..1000"),
        (lambda b: _bad(b, bbox=b["bbox"].flip(-1).clone()), "x1 >= x0"),
        (lambda b: _bad(b, bbox=b["bbox"][..., :3]), "bbox.*shape"),
        (lambda b: _bad(b, bbox=b["bbox"][:2]), "bbox.*shape"),
        (lambda b: _bad(b, bbox=b["bbox"].float()), "bbox.*integers"),
        (lambda b: _bad(b, bbox=None), "bbox.*required"),
        (lambda b: _bad(b, pixel_values=None), "pixel_values.*required"),
        (lambda b: _bad(b, pixel_values=b["pixel_values"][:2]), "pixel_values.*3 sequences"),
        (lambda b: _bad(b, pixel_values=b["pixel_values"][:, :1]), "pixel_values.*3, height, width"),
        (lambda b: _bad(b, pixel_values=b["pixel_values"][0]), "pixel_values.*3, height, width"),
        (lambda b: _bad(b, attention_mask=b["attention_mask"][:, :5]), "attention_mask.*shape"),
        (lambda b: _bad(b, labels=b["labels"].clone().fill_(7)), "labels.*0..6"),
        (lambda b: _bad(b, labels=b["labels"].clone().fill_(-3)), "labels.*0..6"),
        (lambda b: _bad(b, labels=b["labels"][:, :4]), "labels.*shape"),
    ],
)
def test_bad_input_gets_a_value_error(batch, make, match):
    model = build()
    bad = make(batch)
    if bad.get("bbox") is not None and bad["bbox"].shape == batch["bbox"].shape and "0..1000" not in match:
        assert bad["bbox"].min() >= 0
    with pytest.raises(ValueError, match=match):
        model(**bad)


def test_sequence_longer_than_max_positions(batch):
    model = build(max_position_embeddings=10)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(**inputs(batch))


def test_sequence_labels_out_of_range(batch):
    model = build(LayoutLMRoIAlignForSequenceClassification, num_labels=3)
    with pytest.raises(ValueError, match="labels"):
        model(**inputs(batch), labels=torch.tensor([0, 1, 3]))
