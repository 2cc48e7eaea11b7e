"""Pages -> model windows for `Trainer`: `encode_dataset` runs the processor over a FUNSD-schema dataset with
`datasets.map` (long pages split into overlapping windows, each row keeping which page and words it holds; with
`entity_types`, also each window's entities and links for the linking head), and `DataCollatorForLayoutLMRoIAlign`
pads windows into batches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Array3D, Dataset, Features, Value
from datasets import Sequence as SequenceFeature

from ..pages_layoutlm_roialign import load_page
from ..processing_layoutlm_roialign import IGNORE_INDEX, LayoutLMRoIAlignProcessor

__all__ = ["encode_dataset", "DataCollatorForLayoutLMRoIAlign"]

# How each token-level column is stored (the processor's `model_input_names` say which exist).
TOKEN_COLUMNS = {
    "input_ids": SequenceFeature(Value("int32")),
    "bbox": SequenceFeature(SequenceFeature(Value("int16"), length=4)),
    "attention_mask": SequenceFeature(Value("int8")),
    "token_type_ids": SequenceFeature(Value("int8")),
    "labels": SequenceFeature(Value("int32")),
}
# The linking head's columns (`entity_types` given): see the processor's `entities=`.
_ENTITY_COLUMNS = {
    "entity_spans": SequenceFeature(SequenceFeature(Value("int32"), length=2)),
    "entity_labels": SequenceFeature(Value("int32")),
    "entity_index": SequenceFeature(Value("int32")),
    "link_labels": SequenceFeature(SequenceFeature(Value("int8"))),
}


def encode_dataset(
    dataset: Dataset,
    processor: LayoutLMRoIAlignProcessor,
    max_length: int = 512,
    stride: int = 128,
    num_proc: int | None = None,
    desc: str = "Encoding pages",
    entity_types: Sequence[str] | None = None,
) -> Dataset:
    """Pages (`words`, `bboxes` 0-1000, `ner_tags`, `image`) -> one row per window with the model inputs, plus
    `word_ids` (-1 for special tokens and padding) and `page` (the row's page index in `dataset`), which
    `WordLevelEntityMetrics` uses to score each word once.

    With `entity_types` (the model's `config.resolved_entity_types`) the pages' `entities` and `links` are encoded
    too: `entity_spans`, `entity_labels`, `entity_index` and `link_labels` per window (entities of other types, e.g.
    FUNSD's OTHER, get the label -100 and are never candidates).
    """
    size = processor.image_processor.size
    token_columns = [name for name in (*processor.model_input_names, "labels") if name != "pixel_values"]
    if entity_types is not None and not {"entities", "links"} <= set(dataset.column_names):
        raise ValueError(
            "The dataset has no `entities` and `links` columns, which the linking task trains on: use a FUNSD "
            "release folder, the synthetic forms, or a copy in this package's schema."
        )
    entity_columns = list(_ENTITY_COLUMNS) if entity_types is not None else []
    features = Features(
        {
            **{name: TOKEN_COLUMNS[name] for name in token_columns},
            **{name: _ENTITY_COLUMNS[name] for name in entity_columns},
            "pixel_values": Array3D(shape=(3, size, size), dtype="float32"),
            "word_ids": SequenceFeature(Value("int32")),
            "page": Value("int32"),
        }
    )

    # Long pages overflow into windows of `max_length` tokens that share `stride` tokens.
    windows = {"truncation": True, "max_length": max_length, "stride": stride, "return_overflowing_tokens": True}

    def encode(batch: dict, indices: list[int]) -> dict:
        images = [load_page(image) for image in batch["image"]]
        linking = {}
        if entity_types is not None:
            linking = {"entities": batch["entities"], "links": batch["links"], "entity_types": entity_types}
        encoded = processor(
            images, batch["words"], batch["bboxes"], word_labels=batch["ner_tags"], **windows, **linking
        )
        mapping = list(encoded["overflow_to_sample_mapping"])
        rows = len(encoded["input_ids"])
        out = {key: encoded[key] for key in token_columns + entity_columns}
        out["pixel_values"] = [np.asarray(encoded["pixel_values"][i], dtype=np.float32) for i in range(rows)]
        out["word_ids"] = [[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(rows)]
        out["page"] = [indices[m] for m in mapping]
        return out

    return dataset.map(
        encode,
        batched=True,
        batch_size=16,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=features,
        num_proc=num_proc,
        desc=desc,
    )


@dataclass
class DataCollatorForLayoutLMRoIAlign:
    """Pads windows to the longest of the batch (rounded up to `pad_to_multiple_of`) and stacks the pages.

    Padding tokens get `pad_token_id`, box (0, 0, 0, 0), attention 0 and label -100; keys other than the model's
    inputs (`word_ids`, `page`, ...) are dropped. Entity rows (the linking task) are padded to the most entities of
    the batch, or to `max_entities` when it is larger (a fixed count keeps evaluation outputs one shape across
    batches): span (0, 0), type -100, links -100.
    """

    pad_token_id: int = 0
    pad_to_multiple_of: int | None = 8
    max_entities: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = int(math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}
        batch: dict[str, torch.Tensor] = {}
        for key, value in pads.items():
            if key not in features[0]:
                continue
            rows = [torch.as_tensor(f[key], dtype=torch.long) for f in features]
            padded = torch.full((len(rows), length), value, dtype=torch.long)
            for i, row in enumerate(rows):
                padded[i, : len(row)] = row
            batch[key] = padded
        boxes = torch.zeros(len(features), length, 4, dtype=torch.long)
        for i, f in enumerate(features):
            row = torch.as_tensor(f["bbox"], dtype=torch.long).reshape(-1, 4)
            boxes[i, : len(row)] = row
        batch["bbox"] = boxes
        if "entity_spans" in features[0]:
            batch.update(self._pad_entities(features))
        if "pixel_values" in features[0]:
            batch["pixel_values"] = torch.stack(
                [torch.as_tensor(np.asarray(f["pixel_values"]), dtype=torch.float32) for f in features]
            )
        return batch

    def _pad_entities(self, features: list[dict]) -> dict[str, torch.Tensor]:
        size = max([len(f["entity_spans"]) for f in features] + [self.max_entities or 0])
        spans = torch.zeros(len(features), size, 2, dtype=torch.long)
        types = torch.full((len(features), size), IGNORE_INDEX, dtype=torch.long)
        out = {"entity_spans": spans, "entity_labels": types}
        if "link_labels" in features[0]:
            out["link_labels"] = torch.full((len(features), size, size), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["entity_spans"])
            if n == 0:
                continue
            spans[i, :n] = torch.as_tensor(np.asarray(f["entity_spans"]), dtype=torch.long).reshape(n, 2)
            types[i, :n] = torch.as_tensor(np.asarray(f["entity_labels"]), dtype=torch.long)
            if "link_labels" in out:
                out["link_labels"][i, :n, :n] = torch.as_tensor(np.asarray(f["link_labels"]), dtype=torch.long)
        return out
