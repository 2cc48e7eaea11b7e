"""A diagnostic task whose labels only the pixels carry: each word's box is painted bright or dark on a grey page,
the words themselves are random tokens. A model that reads only text and layout stays at chance (0.5); a model whose
visual branch works reaches 1.0. `lab/experiments/painted_boxes.py` measures how fast each `visual_init` gets there at a
single learning rate, and a test checks that the default's visual term grows at LayoutLM's fine-tuning rate."""

from __future__ import annotations

import torch

__all__ = ["painted_box_pages"]

# ImageNet-normalized grey, white and black (the image processor's normalization, per channel).
_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def painted_box_pages(
    num_pages: int,
    image_size: int = 64,
    words_per_page: int = 8,
    tokens_per_word: int = 2,
    vocab_size: int = 99,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Model inputs and labels for `num_pages` painted-box pages.

    Words sit one per cell of a 4-row grid (two columns), each in a random box inside its cell; label 1 means the
    box is painted white, 0 black. Every sub-word token carries its word's box and label; [CLS] (box 0) and [SEP]
    (box 1000) are labelled -100.

    Returns:
        `input_ids`, `bbox`, `attention_mask`, `token_type_ids`, `pixel_values` (ImageNet-normalized) and `labels`,
        stacked over pages.
    """
    if words_per_page > 8:
        raise ValueError(f"`words_per_page` must be at most 8 (a 4 x 2 grid), got {words_per_page}.")
    g = torch.Generator().manual_seed(seed)
    seq_len = 2 + words_per_page * tokens_per_word
    input_ids = torch.randint(5, vocab_size, (num_pages, seq_len), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 1, 2
    bbox = torch.zeros(num_pages, seq_len, 4, dtype=torch.long)
    bbox[:, -1] = 1000
    labels = torch.full((num_pages, seq_len), -100, dtype=torch.long)
    pixels = torch.full((num_pages, 3, image_size, image_size), 0.5)
    for page in range(num_pages):
        for word, cell in enumerate(torch.randperm(8, generator=g)[:words_per_page].tolist()):
            row, col = divmod(cell, 2)
            # A box of 30-45 % of the cell's width and 50-90 % of its height, somewhere inside the cell (0..1000).
            w = int(torch.randint(150, 226, (1,), generator=g))
            h = int(torch.randint(125, 226, (1,), generator=g))
            x0 = col * 500 + int(torch.randint(0, 500 - w, (1,), generator=g))
            y0 = row * 250 + int(torch.randint(0, 250 - h, (1,), generator=g))
            box = torch.tensor([x0, y0, x0 + w, y0 + h])
            label = int(torch.randint(0, 2, (1,), generator=g))
            start = 1 + word * tokens_per_word
            bbox[page, start : start + tokens_per_word] = box
            labels[page, start : start + tokens_per_word] = label
            px = (box * image_size / 1000).round().long().tolist()
            pixels[page, :, px[1] : px[3], px[0] : px[2]] = float(label)
    return {
        "input_ids": input_ids,
        "bbox": bbox,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": (pixels - _MEAN) / _STD,
        "labels": labels,
    }
