"""The command-line fields that say what a checkpoint computes in (`--dtype`) and on which runtime (`--runtime`),
shared by `scripts/predict.py`, `scripts/label.py` and `scripts/evaluate_checkpoint.py` (their argument dataclasses,
read by `HfArgumentParser`)."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from .compute_layoutlm_roialign import DTYPES
from .onnx_runtime import RUNTIMES

__all__ = ["dtype_field", "runtime_field"]


def dtype_field() -> Any:
    """`--dtype`: `auto` (the default), `float32`, `bfloat16` or `int8` (`compute_layoutlm_roialign.resolve_dtype`)."""
    return field(
        default="auto",
        metadata={
            "help": "What the model computes in: auto (bf16 where the device computes it natively, else float32), "
            "float32, bfloat16 (autocast), int8 (dynamic quantization of the Linear layers, CPU only).",
            "choices": list(DTYPES),
        },
    )


def runtime_field() -> Any:
    """`--runtime`: `torch` (the default) or `onnx` (a folder `scripts/export_onnx.py` wrote)."""
    return field(
        default="torch",
        metadata={"help": "torch, or onnx: --model is a folder scripts/export_onnx.py wrote.", "choices": RUNTIMES},
    )
