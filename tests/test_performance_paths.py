"""The visual branch's fast paths give the straightforward path's outputs.

The straightforward path pools every token (padding included), each token's box separately, from a contiguous
(NCHW) image; each switch of `LayoutLMRoIAlignVisualEmbeddings` (`skip_padding`, `share_boxes`, `channels_last`)
and the static-shape path used under `torch.compile` must give the same logits to 1e-5. Speed itself is measured by
`lab/benchmarks/bench.py`, not asserted here.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch
from conftest import random_batch, tiny_config

import layoutlm_roialign.visual_layoutlm_roialign as visual_module
from layoutlm_roialign import LayoutLMRoIAlignForTokenClassification

SWITCHES = ("skip_padding", "share_boxes", "channels_last")


def make_model(**overrides) -> LayoutLMRoIAlignForTokenClassification:
    torch.manual_seed(0)
    model = LayoutLMRoIAlignForTokenClassification(tiny_config(**overrides)).eval()
    # The projection starts at zero, which would hide any difference in the visual term: give it trained-like values.
    torch.nn.init.normal_(model.layoutlm_roialign.visual_embeddings.projection.weight, std=0.05)
    return model


def inputs_of(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


@contextlib.contextmanager
def switched(model, **switches):
    """Set the visual branch's switches (`SWITCHES`; those not given on) for the block, and put back the values they
    had whatever happens in it: the module's `model` is shared, and a failing test must not change the next one's."""
    visual = model.layoutlm_roialign.visual_embeddings
    saved = {name: getattr(visual, name) for name in SWITCHES}
    try:
        for name in SWITCHES:
            setattr(visual, name, switches.get(name, True))
        yield
    finally:
        for name, value in saved.items():
            setattr(visual, name, value)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def batch():
    batch = random_batch(batch_size=3, seq_len=24)
    mask = batch["attention_mask"].bool()
    assert (~mask).any(), "the batch must have padding"
    rows = torch.cat([torch.arange(3).repeat_interleave(24)[:, None], batch["bbox"].reshape(-1, 4)], 1)
    assert len(torch.unique(rows[mask.reshape(-1)], dim=0)) < int(mask.sum()), "the batch must share boxes"
    return batch


@torch.no_grad()
def straightforward(model, batch) -> torch.Tensor:
    with switched(model, skip_padding=False, share_boxes=False, channels_last=False):
        return model(**inputs_of(batch)).logits


@pytest.mark.parametrize(
    "switches",
    [dict(zip(SWITCHES, values, strict=True)) for values in itertools.product((True, False), repeat=3) if any(values)],
    ids=lambda s: "+".join(k for k, v in s.items() if v),
)
def test_fast_paths_give_straightforward_logits(model, batch, switches):
    reference = straightforward(model, batch)
    with switched(model, **switches), torch.no_grad():
        logits = model(**inputs_of(batch)).logits
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)
    # The visual term matters in this comparison (a zero gate would make every path equal).
    with torch.no_grad():
        visual = model.layoutlm_roialign(**inputs_of(batch)).visual_embeddings
    assert visual[batch["attention_mask"].bool()].abs().mean() > 1e-2


def test_padding_gets_no_visual_term_on_every_path(model, batch):
    padding = batch["attention_mask"] == 0
    for values in itertools.product((True, False), repeat=3):
        with switched(model, **dict(zip(SWITCHES, values, strict=True))), torch.no_grad():
            visual = model.layoutlm_roialign(**inputs_of(batch)).visual_embeddings
        assert torch.equal(visual[padding], torch.zeros_like(visual[padding]))


def test_a_failing_block_leaves_the_shared_models_switches_as_they_were(model, batch):
    visual = model.layoutlm_roialign.visual_embeddings
    before = {name: getattr(visual, name) for name in SWITCHES}
    with pytest.raises(AssertionError, match="a check failed"):
        with switched(model, skip_padding=False, share_boxes=False, channels_last=False):
            assert not visual.skip_padding and not visual.share_boxes and not visual.channels_last
            raise AssertionError("a check failed")
    assert {name: getattr(visual, name) for name in SWITCHES} == before


def test_fast_path_pools_each_attended_box_once(model, batch):
    visual = model.layoutlm_roialign.visual_embeddings
    rois, token_index, inverse = visual.rois(batch["bbox"], batch["attention_mask"], 64, 64)
    mask = batch["attention_mask"].reshape(-1).bool()
    assert torch.equal(token_index, mask.nonzero().squeeze(1))
    assert len(rois) == len(torch.unique(rois, dim=0)) < int(mask.sum())
    # Every token gets back the RoI of its own (page, box).
    page = torch.div(token_index, batch["bbox"].shape[1], rounding_mode="floor")
    scale = torch.tensor([64 / 1000, 64 / 1000, 64 / 1000, 64 / 1000])
    boxes = batch["bbox"].reshape(-1, 4)[token_index].float() * scale
    boxes[page != torch.roll(page, 1)] = torch.tensor([0.0, 0.0, 64.0, 64.0])  # first token: the page
    torch.testing.assert_close(rois[inverse], torch.cat([page[:, None].float(), boxes], 1))


def test_fast_and_straightforward_paths_give_the_same_gradients(batch):
    model = make_model(visual_dropout=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.train()
    grads = []
    for fast in (True, False):
        model.zero_grad()
        with switched(model, skip_padding=fast, share_boxes=fast, channels_last=fast):
            model(**batch).loss.backward()
        visual = model.layoutlm_roialign.visual_embeddings
        grads.append(
            [
                p.grad.clone()
                for p in (visual.projection.weight, visual.feature_norm.weight, visual.backbone.conv1.weight)
            ]
        )
    for fast, slow in zip(*grads, strict=True):
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def _record_roi_align_dtypes(monkeypatch) -> list:
    seen = []
    original = visual_module.roi_align

    def recording(feature_map, rois, *args, **kwargs):
        seen.append((feature_map.dtype, rois.dtype))
        return original(feature_map, rois, *args, **kwargs)

    monkeypatch.setattr(visual_module, "roi_align", recording)
    return seen


def test_bf16_autocast_runs_close_to_fp32_with_roi_align_in_fp32(model, batch, monkeypatch):
    seen = _record_roi_align_dtypes(monkeypatch)
    with torch.no_grad():
        reference = model(**inputs_of(batch)).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(**inputs_of(batch)).logits
    assert seen[-1] == (torch.float32, torch.float32)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.05)


def test_bf16_model_runs_with_roi_align_in_fp32(batch, monkeypatch):
    reference_model = make_model()
    with torch.no_grad():
        reference = reference_model(**inputs_of(batch)).logits
    model = make_model().to(torch.bfloat16)
    seen = _record_roi_align_dtypes(monkeypatch)
    with torch.no_grad():
        out = model(**inputs_of(batch))
    assert seen == [(torch.float32, torch.float32)]
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.logits.float(), reference, atol=0.15, rtol=0.05)


def test_channels_last_backbone_input(model, batch):
    visual = model.layoutlm_roialign.visual_embeddings
    seen = []
    handle = visual.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(**inputs_of(batch))
    finally:
        handle.remove()
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    # The weights are left alone: checkpoints (safetensors wants contiguous tensors) are unchanged.
    assert all(p.is_contiguous() for p in visual.parameters())


def test_visual_branch_compiles_without_graph_breaks(model, batch):
    visual = model.layoutlm_roialign.visual_embeddings
    args = (batch["pixel_values"], batch["bbox"], batch["attention_mask"])
    explanation = torch._dynamo.explain(visual)(*args)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(visual, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args), visual(*args), atol=1e-5, rtol=0)


def test_compiled_model_gives_eager_logits(model, batch):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)  # inductor; fullgraph: no graph break anywhere in the model
    with torch.no_grad():
        expected = model(**inputs_of(batch)).logits
        logits = compiled(**inputs_of(batch)).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
