"""The default `visual_init` ("normed_zero_projection") starts as the text encoder and opens at the learning rate
users train with: measured on painted-box pages, whose labels only the pixels carry."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config
from helpers import lab_module

from layoutlm_roialign import LayoutLMRoIAlignConfig, LayoutLMRoIAlignForTokenClassification

painted_box_pages = lab_module("experiments/painted_box_pages.py").painted_box_pages
KEYS = ("input_ids", "bbox", "attention_mask", "token_type_ids")


def visual_share_and_accuracy(model, data) -> tuple[float, float]:
    """Mean ratio |visual term| / |text term| on the tokens that carry the cue, and token accuracy there."""
    model.eval()
    with torch.no_grad():
        fused = model.layoutlm_roialign(**{k: data[k] for k in KEYS + ("pixel_values",)})
        text = model.layoutlm_roialign.layoutlm(**{k: data[k] for k in KEYS}).last_hidden_state
        logits = model(**{k: data[k] for k in KEYS + ("pixel_values",)}).logits
    cue = data["labels"] != -100
    share = (fused.visual_embeddings[cue].norm(dim=-1) / text[cue].norm(dim=-1)).mean().item()
    accuracy = (logits.argmax(-1)[cue] == data["labels"][cue]).float().mean().item()
    model.train()
    return share, accuracy


def train_at_one_learning_rate(visual_init: str, steps: int, lr: float = 5e-5):
    """AdamW at ONE learning rate for every parameter (what `Trainer(learning_rate=lr)` does), batches of 8."""
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(visual_init=visual_init, num_labels=2)).train()
    train, held_out = painted_box_pages(96, seed=0), painted_box_pages(32, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, 96, (8,), generator=g)
        loss = model(**{k: v[idx] for k, v in train.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return visual_share_and_accuracy(model, held_out)


def test_painted_boxes_carry_the_label_only_in_the_pixels():
    data = painted_box_pages(4, seed=0)
    cue = data["labels"] != -100
    assert set(data["labels"][cue].unique().tolist()) == {0, 1}
    page, box = 0, data["bbox"][0, 1].tolist()
    x0, y0, x1, y1 = (round(c * 64 / 1000) for c in box)
    patch = data["pixel_values"][page, 0, y0:y1, x0:x1]
    assert patch.std() < 1e-6  # one flat colour per word box
    assert (patch.mean() > 0) == bool(data["labels"][0, 1])  # white (label 1) is above the grey page's mean


def test_default_is_the_normed_zero_projection():
    config = LayoutLMRoIAlignConfig()
    assert config.visual_init == "normed_zero_projection"
    assert config.visual_feature_norm and not config.visual_layer_norm
    model = LayoutLMRoIAlignForTokenClassification(tiny_config())
    visual = model.layoutlm_roialign.visual_embeddings
    assert visual.gate is None and visual.layer_norm is None
    assert visual.projection.weight.abs().max() == 0 and visual.projection.bias.abs().max() == 0
    scale = math.sqrt(32 / visual.projection.in_features)  # hidden 32, resnet18 layer3: 256 x 3 x 3 inputs
    torch.testing.assert_close(visual.feature_norm.weight, torch.full_like(visual.feature_norm.weight, scale))


def test_default_visual_term_grows_at_lr_5e_5():
    """A hundred steps at LayoutLM's fine-tuning rate: the visual term reaches a sizeable share of the text
    term on the cue tokens, and the pixels decide the labels (chance is 0.5)."""
    share, accuracy = train_at_one_learning_rate("normed_zero_projection", steps=100)
    assert share > 0.3, share
    assert accuracy > 0.95, accuracy


@pytest.mark.slow
def test_old_zero_gate_stays_closed_at_lr_5e_5():
    """Why the default changed: the same run with the earlier zero gate leaves the visual term a few percent of the
    text term (the gate moves about one learning rate per Adam step)."""
    share, accuracy = train_at_one_learning_rate("zero_gate", steps=100)
    assert share < 0.05, share
    assert accuracy < 0.95, accuracy
