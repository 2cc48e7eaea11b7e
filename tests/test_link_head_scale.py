"""The link head's weight multiplier (`config.link_head_scale`): the same function at initialization, and Adam moves
the head's effective weights `scale` times faster at one learning rate, while the encoder is untouched by it."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from layoutlm_roialign import LayoutLMRoIAlignForRelationExtraction
from layoutlm_roialign.data import FUNSD_LABELS
from layoutlm_roialign.linking_layoutlm_roialign import ScaledLinear


def build(scale: float) -> LayoutLMRoIAlignForRelationExtraction:
    torch.manual_seed(0)
    config = tiny_config(id2label=dict(enumerate(FUNSD_LABELS)), link_head_scale=scale)
    return LayoutLMRoIAlignForRelationExtraction(config)


def effective_weights(model) -> dict[str, torch.Tensor]:
    return {
        name: (module.weight * module.scale).detach().clone()
        for name, module in model.named_modules()
        if isinstance(module, ScaledLinear)
    }


def test_every_link_head_layer_is_scaled():
    model = build(20.0)
    layers = [m for m in model.link_head.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(isinstance(m, ScaledLinear) and m.scale == 20.0 for m in layers)
    assert not any(isinstance(m, ScaledLinear) for m in model.layoutlm_roialign.modules())


def test_same_function_at_initialization():
    one, twenty = effective_weights(build(1.0)), effective_weights(build(20.0))
    assert one.keys() == twenty.keys()
    for name in one:
        torch.testing.assert_close(one[name], twenty[name], rtol=1e-5, atol=1e-7)
    # the stored parameters are the effective ones divided by the scale
    model = build(20.0)
    stored = model.link_head.bilinear.weight.detach()
    assert stored.std().item() == pytest.approx(0.02 / 20, rel=0.2)


def test_adam_moves_the_head_scale_times_faster_at_one_learning_rate():
    moved = {}
    for scale in (1.0, 20.0):
        model = build(scale)
        before = effective_weights(model)
        text_before = model.layoutlm_roialign.layoutlm.embeddings.word_embeddings.weight.detach().clone()
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0)
        loss = sum((m.weight * m.scale).sum() for m in model.modules() if isinstance(m, ScaledLinear))
        loss = loss + model.layoutlm_roialign.layoutlm.embeddings.word_embeddings.weight.sum()
        loss.backward()
        optimizer.step()
        after = effective_weights(model)
        moved[scale] = (after["link_head.bilinear"] - before["link_head.bilinear"]).abs().mean().item()
        text_moved = (model.layoutlm_roialign.layoutlm.embeddings.word_embeddings.weight - text_before).abs().mean()
        assert text_moved.item() == pytest.approx(5e-5, rel=1e-2)  # Adam's first step: lr per parameter
    assert moved[20.0] / moved[1.0] == pytest.approx(20.0, rel=1e-2)


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="link_head_scale"):
        tiny_config(link_head_scale=0)
