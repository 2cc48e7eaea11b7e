"""Masking for the masked visual-language model (MVLM): which tokens to predict, what replaces them, and the blanking
of their boxes in the page image (see the package docstring); and the masked-token accuracy that scores it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.encoding import DataCollatorForLayoutLMRoIAlign
from ..image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor
from ..windowing_layoutlm_roialign import IGNORE_INDEX

__all__ = [
    "DataCollatorForMaskedVisualLanguageModeling",
    "MaskedTokenAccuracy",
    "blank_boxes",
    "blank_fill_value",
    "premask",
]


def blank_fill_value(image_processor: LayoutLMRoIAlignImageProcessor) -> tuple[float, float, float]:
    """The value of a white pixel in `pixel_values` as `image_processor` makes them (rescaled and normalized)."""
    white = 255.0 * (image_processor.rescale_factor if image_processor.do_rescale else 1.0)
    if not image_processor.do_normalize:
        return (white, white, white)
    return tuple(
        float((white - m) / s) for m, s in zip(image_processor.image_mean, image_processor.image_std, strict=True)
    )


@dataclass
class DataCollatorForMaskedVisualLanguageModeling:
    """Pads windows (`DataCollatorForLayoutLMRoIAlign`) and masks them for MVLM.

    Tokens that may be chosen: attended, not a special token of the tokenizer (`[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`,
    `[MASK]`), and part of a word (`word_ids` >= 0 when the rows have them). Each is chosen with `mlm_probability`
    (or, with `whole_word_mask`, each word, with all of its sub-tokens in the window); a batch gets at least one. A
    chosen token's `labels` is its id (-100 elsewhere); its input becomes `[MASK]` (`mask_replace_prob`), a random
    non-special token (`random_replace_prob`) or stays. Boxes are never changed. With `pixel_values`, the boxes of
    the chosen tokens are filled with `fill_value` (white paper; see the package docstring) in their window's image.

    Rows that already hold `labels` (held-out windows masked once) are only padded.

    Args:
        tokenizer: the model's tokenizer (mask id, special ids, vocabulary size).
        fill_value: per-channel value of a blanked pixel (`blank_fill_value(image_processor)`).
        generator: a `torch.Generator` for the random draws (default: torch's global one, which `Trainer` seeds and
            saves in its checkpoints).
    """

    tokenizer: Any
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    fill_value: Sequence[float] = (0.0, 0.0, 0.0)
    pad_to_multiple_of: int | None = 8
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"`mlm_probability` must be in (0, 1), got {self.mlm_probability}.")
        if (
            self.mask_replace_prob < 0
            or self.random_replace_prob < 0
            or self.mask_replace_prob + self.random_replace_prob > 1
        ):
            raise ValueError(
                "`mask_replace_prob` and `random_replace_prob` must be >= 0 and sum to at most 1 (the rest keep the "
                f"token), got {self.mask_replace_prob} and {self.random_replace_prob}."
            )
        if self.tokenizer.mask_token_id is None:
            raise ValueError("`tokenizer` has no mask token ([MASK]); MVLM needs one.")
        self.special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        self.random_ids = torch.tensor(
            [i for i in range(len(self.tokenizer)) if i not in set(self.special_ids.tolist())], dtype=torch.long
        )
        self.pad = DataCollatorForLayoutLMRoIAlign(
            pad_token_id=self.tokenizer.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of
        )

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad(features)
        if "labels" in batch:
            return batch
        word_ids = None
        if "word_ids" in features[0]:
            word_ids = torch.full(batch["input_ids"].shape, -1, dtype=torch.long)
            for i, f in enumerate(features):
                row = torch.as_tensor(f["word_ids"], dtype=torch.long)
                word_ids[i, : len(row)] = row
        return self.mask(batch, word_ids)

    def candidates(self, batch: dict[str, torch.Tensor], word_ids: torch.Tensor | None) -> torch.Tensor:
        """`(B, L)` bool: the tokens that may be chosen (attended, not special, in a word)."""
        allowed = ~torch.isin(batch["input_ids"], self.special_ids)
        if "attention_mask" in batch:
            allowed &= batch["attention_mask"].bool()
        if word_ids is not None:
            allowed &= word_ids >= 0
        return allowed

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def mask(self, batch: dict[str, torch.Tensor], word_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Choose, label and replace tokens of a padded batch (and blank their boxes in `pixel_values`), in place."""
        input_ids = batch["input_ids"]
        allowed = self.candidates(batch, word_ids)
        if self.whole_word_mask and word_ids is not None:
            words = self._rand(input_ids.shape[0], int(word_ids.max().clamp(min=0)) + 1) < self.mlm_probability
            chosen = allowed & words.gather(1, word_ids.clamp(min=0))
        else:
            chosen = allowed & (self._rand(*input_ids.shape) < self.mlm_probability)
        if not chosen.any() and allowed.any():  # every batch predicts something (an empty loss is NaN)
            where = allowed.nonzero()
            row, column = where[int(torch.randint(len(where), (1,), generator=self.generator))].tolist()
            chosen[row, column] = True
            if self.whole_word_mask and word_ids is not None:
                chosen[row] |= allowed[row] & (word_ids[row] == word_ids[row, column])
        batch["labels"] = input_ids.masked_fill(~chosen, IGNORE_INDEX)
        action = self._rand(*input_ids.shape)
        to_mask = chosen & (action < self.mask_replace_prob)
        to_random = (
            chosen & (action >= self.mask_replace_prob) & (action < self.mask_replace_prob + self.random_replace_prob)
        )
        replaced = input_ids.clone()
        replaced[to_mask] = self.tokenizer.mask_token_id
        picks = torch.randint(len(self.random_ids), (int(to_random.sum()),), generator=self.generator)
        replaced[to_random] = self.random_ids[picks]
        batch["input_ids"] = replaced
        if "pixel_values" in batch:
            batch["pixel_values"] = blank_boxes(batch["pixel_values"], batch["bbox"], chosen, self.fill_value)
        return batch


def blank_boxes(
    pixel_values: torch.Tensor, bbox: torch.Tensor, chosen: torch.Tensor, fill_value: Sequence[float]
) -> torch.Tensor:
    """Fill the 0-1000 boxes of the `chosen` tokens `(B, L)` with `fill_value` in their row's image `(B, 3, H, W)`
    (a copy; every pixel a box touches, so that no part of the word stays)."""
    out = pixel_values.clone()
    height, width = out.shape[-2:]
    fill = torch.as_tensor(fill_value, dtype=out.dtype).view(-1, 1, 1)
    for row in range(out.shape[0]):
        boxes = torch.unique(bbox[row][chosen[row]], dim=0).tolist()  # sub-tokens of a word share its box
        for x0, y0, x1, y1 in boxes:
            left, top = math.floor(x0 * width / 1000), math.floor(y0 * height / 1000)
            right = max(math.ceil(x1 * width / 1000), left + 1)
            bottom = max(math.ceil(y1 * height / 1000), top + 1)
            out[row, :, top:bottom, left:right] = fill
    return out


class MaskedTokenAccuracy:
    """`compute_metrics`: the share of the predicted (masked) tokens whose original id is the argmax."""

    def __call__(self, eval_prediction: Any) -> dict[str, float]:
        predictions = np.asarray(eval_prediction.predictions)
        labels = np.asarray(eval_prediction.label_ids)
        scored = labels != IGNORE_INDEX
        return {"masked_accuracy": float((predictions[scored] == labels[scored]).mean()) if scored.any() else 0.0}


def premask(windows: Any, collator: DataCollatorForMaskedVisualLanguageModeling, seed: int) -> Any:
    """Held-out windows masked once (a fixed `seed`), so every evaluation scores the same positions."""
    masker = DataCollatorForMaskedVisualLanguageModeling(
        **{**_fields(collator), "generator": torch.Generator().manual_seed(seed)}
    )

    def mask_one(row: dict) -> dict:
        batch = masker([row])
        length = len(row["input_ids"])
        out = {"input_ids": batch["input_ids"][0, :length].tolist(), "labels": batch["labels"][0, :length].tolist()}
        if "pixel_values" in batch:
            out["pixel_values"] = batch["pixel_values"][0].to(torch.float16).numpy()
        return out

    return windows.map(mask_one, desc="masking the held-out windows", keep_in_memory=True)


def _fields(collator: DataCollatorForMaskedVisualLanguageModeling) -> dict:
    names = ("tokenizer", "mlm_probability", "whole_word_mask", "mask_replace_prob", "random_replace_prob")
    return {**{n: getattr(collator, n) for n in names}, "fill_value": collator.fill_value}
