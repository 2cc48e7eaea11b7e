"""Key-value pairs for the labeller's records, from a linking checkpoint (`LayoutLMRoIAlignForRelationExtraction`).

`PagePairLinker` is the labeller's `link_pairs`: after a batch is labelled, it links each page's predicted entities
with `linking.link_entities`, as `predict_pairs` does, on the page's pixels as the reader already prepared them, so
the page is not opened or resized again. It is a second pass of the encoder over the page (the entities are only known
after the first), as in `predict_pairs`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..linking import has_link_head, link_entities, pair_records

__all__ = ["PagePairLinker"]


class PagePairLinker:
    """`(record, item) -> pairs` for `PageLabeller(link_pairs=...)`: `[{"key": {...}, "value": {...}, "score"}]`, each
    end `{"entity": index in the record's entities, "label", "text", "box", "pixel_box"}` as `predict_pairs` gives.

    Args:
        model: the linking model (where the labeller put it).
        processor: its processor.
        max_length, stride: the labeller's windows.
        batch_size: windows per forward pass.
    """

    def __init__(self, model: torch.nn.Module, processor: Any, max_length: int, stride: int, batch_size: int = 8):
        if not has_link_head(model):
            raise ValueError(f"`model` ({type(model).__name__}) has no link head; load the checkpoint's joint class.")
        self.model, self.processor = model, processor
        self.max_length, self.stride, self.batch_size = max_length, stride, batch_size

    def __call__(self, record: dict, item: dict) -> list[dict]:
        words, boxes = [w["text"] for w in record["words"]], [w["box"] for w in record["words"]]
        pairs = link_entities(
            self.model, self.processor, None, words, boxes, record["entities"], self.max_length, self.stride,
            self.batch_size, pixel_values=item.get("pixel_values"),
        )  # fmt: skip
        return pair_records(record["entities"], pairs)
