"""Key-value pairs for the labeller's records, from a linking checkpoint (`LayoutLMRoIAlignForRelationExtraction`).

`PagePairLinker` is the labeller's `link_pairs`: after a batch is labelled, it links each page's predicted entities
with the rules of `linking.predict_pairs` (the candidates, window merge and decision of
`processor.post_process_relation_extraction`), reading the page's image as the reader already prepared it, so the
page is not opened or resized again. It is a second pass of the encoder over the page (the entities are only known
after the first), as in `predict_pairs`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..linking import ENTITY_INPUTS, has_link_head

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

    @torch.inference_mode()
    def __call__(self, record: dict, item: dict) -> list[dict]:
        entities = record["entities"]
        if not entities:
            return []
        config = self.model.config
        encoding = self.processor(
            None,
            [w["text"] for w in record["words"]],
            [w["box"] for w in record["words"]],
            entities=[{"word_indices": e["word_indices"], "label": e["label"]} for e in entities],
            entity_types=config.resolved_entity_types,
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            padding="longest",
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        names = [n for n in (*self.processor.model_input_names, *ENTITY_INPUTS) if n != "pixel_values"]
        num_windows = len(encoding["input_ids"])
        link_logits = []
        for start in range(0, num_windows, self.batch_size):
            rows = min(self.batch_size, num_windows - start)
            batch = {k: encoding[k][start : start + rows].to(device) for k in names if k in encoding}
            if getattr(config, "use_visual_features", True):
                batch["pixel_values"] = item["pixel_values"][None].to(device)  # the page once, read by every window
                batch["image_index"] = torch.zeros(rows, dtype=torch.long, device=device)
            link_logits.extend(self.model(**batch).link_logits.float().cpu())
        pairs = self.processor.post_process_relation_extraction(
            encoding, link_logits, config.link_threshold, config.link_one_value_key, 1
        )[0]
        return [
            {
                "key": _end(entities, p["key"]),
                "value": _end(entities, p["value"]),
                "score": round(float(p["score"]), 4),
            }
            for p in pairs
        ]


def _end(entities: list[dict], index: int) -> dict:
    return {"entity": index, **{k: entities[index][k] for k in ("label", "text", "box", "pixel_box")}}
