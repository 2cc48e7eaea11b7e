"""Pinned numbers, as transformers' integration tests pin an output slice: a tiny checkpoint written by an earlier
version of this package (tests/fixtures/make_pinned_checkpoint.py, earlier default `visual_init="zero_gate"`
with a non-zero gate) must load with today's code and give the logits it gave then. A refactor or a new default that
changes the numbers of a saved checkpoint fails here."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from layoutlm_roialign import LayoutLMRoIAlignForTokenClassification

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny_zero_gate"

# logits[0, :3, :3] when the checkpoint was written (commit 21c7e93).
EXPECTED_SLICE = torch.tensor(
    [
        [-0.0114966481924057, -0.1728883683681488, -0.018721288070082664],
        [0.20052650570869446, 0.03125082701444626, -0.08776400983333588],
        [0.10705015063285828, -0.012578420341014862, -0.05469745025038719],
    ]
)


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
