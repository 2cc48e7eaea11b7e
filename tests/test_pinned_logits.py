"""Pinned numbers, as transformers' integration tests pin an output slice: tiny checkpoints written by earlier
versions of this package (tests/fixtures/make_pinned_checkpoint.py) must load with today's code and give the outputs
they gave then. A refactor or a new default that changes the numbers of a saved checkpoint fails here.

- `tiny_zero_gate`: the earlier default `visual_init="zero_gate"`, with a non-zero gate.
- `tiny_default_linking`: today's defaults, a linking checkpoint whose token head is the default token classifier's;
  checked as `LayoutLMRoIAlignForTokenClassification` (`logits`) and as the linking model (`link_logits`)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from layoutlm_roialign import LayoutLMRoIAlignForRelationExtraction, LayoutLMRoIAlignForTokenClassification

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE = FIXTURES / "tiny_zero_gate"
DEFAULT_LINKING = FIXTURES / "tiny_default_linking"
TOKEN_INPUTS = ("input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values")

# logits[0, :3, :3] when the checkpoint was written (commit 21c7e93).
EXPECTED_SLICE = torch.tensor(
    [
        [-0.0114966481924057, -0.1728883683681488, -0.018721288070082664],
        [0.20052650570869446, 0.03125082701444626, -0.08776400983333588],
        [0.10705015063285828, -0.012578420341014862, -0.05469745025038719],
    ]
)

# tiny_default_linking, written at commit ceddb0e: the token logits[0, :3, :3]; the link_logits of the candidate pairs
# of sequence 0 (question keys 1, 3, 5 by answer values 2, 4, 6), and of sequence 1's key 0 ([0, 0, :3]: itself,
# then its two answers).
DEFAULT_TOKEN_SLICE = torch.tensor(
    [
        [-0.3151545822620392, 0.021585579961538315, -0.1919458955526352],
        [-0.14345420897006989, -0.08960708230733871, 0.2950698435306549],
        [-0.14128252863883972, 0.2743578255176544, -0.1912040412425995],
    ]
)
DEFAULT_LINK_SLICE = torch.tensor(
    [
        [-1.5206266641616821, -1.5568307638168335, -1.5149822235107422],
        [-0.2486206591129303, -0.2877868711948395, -0.6744276881217957],
        [-7.568201541900635, -4.2710490226745605, -1.8934171199798584],
    ]
)
DEFAULT_LINK_SLICE_1 = torch.tensor([-10000.0, -0.19042697548866272, -0.38729509711265564])


def test_old_zero_gate_checkpoint_gives_its_pinned_logits():
    model = LayoutLMRoIAlignForTokenClassification.from_pretrained(FIXTURE).eval()
    assert model.config.visual_init == "zero_gate"
    assert model.layoutlm_roialign.visual_embeddings.gate.abs().min() > 0  # the gate's saved values, not zeros
    pinned = load_file(str(FIXTURE / "pinned_batch.safetensors"))
    expected = pinned.pop("logits")
    with torch.no_grad():
        logits = model(**pinned).logits
    torch.testing.assert_close(logits[0, :3, :3], EXPECTED_SLICE, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    # The visual branch matters in this checkpoint: the pinned numbers would catch a change in it.
    with torch.no_grad():
        model.layoutlm_roialign.visual_embeddings.gate.zero_()
        assert (model(**pinned).logits - expected).abs().max() > 1e-3


def test_default_token_classifier_gives_its_pinned_logits():
    model = LayoutLMRoIAlignForTokenClassification.from_pretrained(DEFAULT_LINKING).eval()
    assert model.config.visual_init == "normed_zero_projection" and model.config.resolved_backbone_norm == "group_norm"
    pinned = load_file(str(DEFAULT_LINKING / "pinned_batch.safetensors"))
    inputs = {k: pinned[k] for k in TOKEN_INPUTS}
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.testing.assert_close(logits[0, :3, :3], DEFAULT_TOKEN_SLICE, rtol=0, atol=1e-4)
    torch.testing.assert_close(logits, pinned["logits"], rtol=0, atol=1e-4)
    # The visual branch matters in this checkpoint: the pinned numbers would catch a change in it.
    with torch.no_grad():
        model.layoutlm_roialign.visual_embeddings.projection.weight.zero_()
        assert (model(**inputs).logits - pinned["logits"]).abs().max() > 1e-3


def test_default_linking_model_gives_its_pinned_link_logits():
    model = LayoutLMRoIAlignForRelationExtraction.from_pretrained(DEFAULT_LINKING).eval()
    assert model.config.link_entity_box_feature and model.config.link_box_relation
    assert model.config.link_head_scale == 20.0
    pinned = load_file(str(DEFAULT_LINKING / "pinned_batch.safetensors"))
    inputs = {k: pinned[k] for k in (*TOKEN_INPUTS, "entity_spans", "entity_labels")}
    with torch.no_grad():
        out = model(**inputs)
    torch.testing.assert_close(out.link_logits[0, 1::2, 2::2], DEFAULT_LINK_SLICE, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.link_logits[1, 0, :3], DEFAULT_LINK_SLICE_1, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.link_logits, pinned["link_logits"], rtol=0, atol=1e-4)
    torch.testing.assert_close(out.logits, pinned["logits"], rtol=0, atol=1e-4)
    # The visual branch (token and entity box features) and the box relation both matter here.
    with torch.no_grad():
        model.layoutlm_roialign.visual_embeddings.projection.bias.zero_()
        model.layoutlm_roialign.visual_embeddings.projection.weight.zero_()
        assert (model(**inputs).link_logits - pinned["link_logits"]).abs().max() > 1e-3
        model = LayoutLMRoIAlignForRelationExtraction.from_pretrained(DEFAULT_LINKING).eval()
        model.link_head.box_relation[2].weight.zero_()
        assert (model(**inputs).link_logits - pinned["link_logits"]).abs().max() > 1e-3
