"""The model side of the labeller: windows of several pages in one forward pass, each page's image once.

`group_pages` gathers the pages that `PageReader` yields into batches of about `batch_size` windows, whole pages
only (a page longer than a batch forms its own), of similar lengths. `PageLabeller` stacks each page's image once and passes
`image_index` (which image each window reads), so the backbone runs once per page however many windows the page
has; it pads the windows of all pages to the longest, runs the model (bf16 autocast and `torch.compile` on request),
and decodes each page with `inference.decode_page`, the rules `predict_page` uses. A checkpoint whose model predates
`image_index` gets each page's image repeated per window instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..inference import decode_page, takes_image_index

__all__ = ["PageLabeller", "group_pages", "DTYPES"]

DTYPES = ("float32", "bfloat16")
_PAD_VALUES = {"bbox": 0, "attention_mask": 0, "token_type_ids": 0}


def _num_windows(item: dict) -> int:
    windows = item.get("windows")
    return 0 if windows is None else len(windows["input_ids"])


def _length(item: dict) -> int:
    return item["windows"]["input_ids"].shape[1]


def group_pages(items: Iterable[dict], batch_size: int, lookahead: int = 4) -> Iterator[list[dict]]:
    """Batches of whole pages holding at most `batch_size` windows (a longer page alone), of similar lengths.

    Every window of a batch is padded to its longest, and padding costs as much as text on a CPU: so the pages wait in
    a pool of about `lookahead` batches, and each batch is the oldest page of the pool with the pages closest to it
    in length (a page waits at most while the pool turns over `lookahead` times). Pages that need no forward pass
    (failures, pages without words) come out at once, one per batch. `lookahead=1` keeps the arrival order.
    """
    pool: list[dict] = []
    count = 0
    for item in items:
        n = _num_windows(item)
        if n == 0:
            yield [item]
            continue
        pool.append(item)
        count += n
        while count >= lookahead * batch_size:
            batch = _take_batch(pool, batch_size)
            count -= sum(_num_windows(p) for p in batch)
            yield batch
    while pool:
        yield _take_batch(pool, batch_size)


def _take_batch(pool: list[dict], batch_size: int) -> list[dict]:
    """The oldest page of `pool` and the pages nearest to it in length that fit in `batch_size` windows (removed)."""
    first = pool.pop(0)
    batch, count = [first], _num_windows(first)
    for item in sorted(pool, key=lambda p: abs(_length(p) - _length(first))):
        if count >= batch_size:
            break
        if count + _num_windows(item) <= batch_size:
            batch.append(item)
            count += _num_windows(item)
    chosen = {id(item) for item in batch[1:]}
    pool[:] = [item for item in pool if id(item) not in chosen]
    return batch


class PageLabeller:
    """Labels batches of encoded pages (`PageReader` items) and returns one JSON-ready record per page.

    Args:
        model: a token-classification checkpoint (moved to `device`, put in eval mode).
        pad_token_id: the tokenizer's padding id (windows of different pages are padded to one length).
        device: where the model runs (default: where it is).
        dtype: `"float32"`, or `"bfloat16"` for bf16 autocast (RoIAlign stays in float32).
        compile: run the forward pass through `torch.compile`.
        link_pairs: `(record, item) -> pairs` for checkpoints that link entities into key-value pairs (issue 11); the
            one place a record gets `"pairs"`. `None`: records have no `"pairs"`.

    Records: `{"source", "page", "num_pages", "width", "height", "words_from", "words", "entities"[, "pairs"]}`, the
    words and entities as `predict_page` gives them; a page the reader could not read: `{"source", "page", "error"}`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        pad_token_id: int,
        device: str | torch.device | None = None,
        dtype: str = "float32",
        compile: bool = False,
        link_pairs: Callable[[dict, dict], list] | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {DTYPES}, got {dtype!r}.")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.eval().to(self.device)
        self.forward = torch.compile(self.model, dynamic=True) if compile else self.model
        self.pad_token_id = pad_token_id
        self.dtype = dtype
        self.link_pairs = link_pairs
        self.id2label = model.config.id2label
        self.uses_pixels = getattr(model.config, "use_visual_features", True)
        self.shares_images = takes_image_index(model)

    def __call__(self, pages: list[dict]) -> list[dict]:
        encoded = [p for p in pages if "error" not in p and _num_windows(p)]
        logits = iter(self._logits(encoded) if encoded else [])
        records = []
        for item in pages:
            if "error" in item:
                records.append({k: item[k] for k in ("source", "page", "num_pages", "error")})
                continue
            windows = next(logits) if _num_windows(item) else []
            decoded = decode_page(
                item["words"],
                item["boxes"],
                item["word_ids"] or [],
                windows,
                item["width"],
                item["height"],
                self.id2label,
            )
            record = {k: item[k] for k in ("source", "page", "num_pages", "width", "height", "words_from")}
            record.update(words=decoded["words"], entities=decoded["entities"])
            if self.link_pairs is not None:
                record["pairs"] = self.link_pairs(record, item)
            records.append(record)
        return records

    def _autocast(self) -> Any:
        if self.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def _logits(self, pages: list[dict]) -> list[list[torch.Tensor]]:
        """Per page, each window's float32 logits `(length, num_labels)`, from one forward pass over all windows."""
        length = max(p["windows"]["input_ids"].shape[1] for p in pages)
        inputs = {}
        for name in ("input_ids", "bbox", "attention_mask", "token_type_ids"):
            pad = self.pad_token_id if name == "input_ids" else _PAD_VALUES[name]
            rows = []
            for p in pages:
                tensor = p["windows"][name]
                extra = length - tensor.shape[1]
                rows.append(F.pad(tensor, (0, 0, 0, extra) if tensor.dim() == 3 else (0, extra), value=pad))
            inputs[name] = torch.cat(rows)  # (num_windows, length[, 4])
        image_index = torch.tensor([i for i, p in enumerate(pages) for _ in range(_num_windows(p))])
        if self.uses_pixels:
            pixel_values = torch.stack([p["pixel_values"] for p in pages])  # (num_pages, 3, size, size)
            if self.shares_images:
                inputs["pixel_values"], inputs["image_index"] = pixel_values, image_index
            else:
                inputs["pixel_values"] = pixel_values[image_index]
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        with self._autocast():
            logits = self.forward(**inputs).logits.float().cpu()  # (num_windows, length, num_labels)
        lengths = inputs["attention_mask"].sum(-1).tolist()
        out: list[list[torch.Tensor]] = [[] for _ in pages]
        for row, (page, n) in enumerate(zip(image_index.tolist(), lengths, strict=True)):
            out[page].append(logits[row, :n])
        return out
