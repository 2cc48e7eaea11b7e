"""The model side of the labeller: batches of encoded pages through the engine (`Engine.label_batch`).

`PageLabeller` labels a batch that `road_layoutlm_roialign.group_pages` gathered (windows of several pages per forward
pass, each page's image once, in the `dtype` asked for (`"auto"`: bf16 where the device computes it natively),
`torch.compile` on request), with the decoding `predict_page` uses, and, for a linking checkpoint, the key-value pairs
from the same pass; it returns one JSON-ready record per page.
"""

from __future__ import annotations

from typing import Any

import torch

from ..compute_layoutlm_roialign import DTYPES
from ..engine_layoutlm_roialign import Engine
from ..options_layoutlm_roialign import ComputeOptions

__all__ = ["PageLabeller", "check_device"]


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a `torch.device`, once a tensor could be put there.

    Raises:
        ValueError: naming `--device`, for a name torch does not know or a device this machine does not have (CUDA
            on a machine without a GPU, a GPU index past the last one).
    """
    try:
        device = torch.device(device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as err:  # AssertionError: "Torch not compiled with CUDA"
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(
            f"--device {device!s}: no such device here ({str(err).splitlines()[0]}); this machine has "
            + (f"{gpus} GPU(s) (cuda:0 .. cuda:{gpus - 1}) and the CPU" if gpus else "no GPU: use --device cpu")
            + "."
        ) from err
    return device


class PageLabeller:
    """Labels batches of encoded pages (`PageReader` items) and returns one JSON-ready record per page.

    Args:
        model: a token-classification or linking checkpoint (moved to `device`, put in eval mode).
        processor: its processor.
        batch_size: windows per forward pass.
        device: where the model runs (default: where it is).
        dtype: what the model computes in, one of `DTYPES` (`ComputeOptions`; resolved once: `self.dtype`).
        compile: run the forward pass through `torch.compile`.

    Records: `{"source", "page", "num_pages", "width", "height", "words_from", "runtime", "dtype", "words",
    "entities"[, "pairs"]}`, the words, entities and pairs as `predict_page` gives them, `runtime` `"torch"` or
    `"onnx"` (an export run by ONNX Runtime), `dtype` what ran; a page the reader could not read: `{"source", "page",
    "num_pages", "error"}`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        batch_size: int = 8,
        device: str | torch.device | None = None,
        dtype: str = "auto",
        compile: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {DTYPES}, got {dtype!r}.")
        self.device = check_device(device) if device is not None else next(model.parameters()).device
        self.model = model.eval().to(self.device)
        try:  # a page longer than a batch comes alone: its windows still go `batch_size` at a time
            self.engine = Engine(self.model, processor, compute=ComputeOptions(dtype), batch_size=max(batch_size, 1))
        except ValueError as err:  # int8 on a GPU: name the flag
            raise ValueError(f"--dtype {dtype}: {err}") from err
        self.dtype = self.engine.dtype
        if compile:
            self.engine.forward = torch.compile(self.engine.runner, dynamic=True)

    def __call__(self, pages: list[dict]) -> list[dict]:
        readable = [p for p in pages if "error" not in p]
        labelled = iter(self.engine.label_batch(readable) if readable else [])
        records = []
        for item in pages:
            if "error" in item:
                records.append({k: item[k] for k in ("source", "page", "num_pages", "error")})
                continue
            result = next(labelled)
            record = {k: item[k] for k in ("source", "page", "num_pages", "width", "height", "words_from")}
            record["runtime"] = getattr(self.model, "runtime", "torch")
            record["dtype"] = self.dtype
            record.update(words=result["words"], entities=result["entities"])
            if "pairs" in result:
                record["pairs"] = result["pairs"]
            records.append(record)
        return records
