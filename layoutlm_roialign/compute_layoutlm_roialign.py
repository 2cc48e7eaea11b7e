"""The number format a checkpoint computes in on the road, resolved once for every driver.

`dtype` (every inference driver's option, `ComputeOptions.dtype`) is one of `DTYPES`:

- `"auto"` (the default): bf16 autocast where the device computes bf16 natively, float32 elsewhere
  (`native_bf16`: a CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16 that oneDNN is allowed to use);
- `"float32"`: float32 throughout;
- `"bfloat16"`: bf16 autocast wherever asked (RoIAlign stays in float32);
- `"int8"`: dynamic quantization of the Linear layers (int8 weights, activations quantized per batch; CPU only),
  applied once to a copy of the model (`model_for`); the backbone's convolutions stay float32.

`resolve_dtype` turns the option into what runs (`RESOLVED`), which the drivers write into their outputs. This
module travels with every checkpoint beside the pipeline.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
import weakref
from typing import Any

import torch

__all__ = [
    "CPU_BF16_ENV",
    "DTYPES",
    "RESOLVED",
    "autocast",
    "cpu_native_bf16",
    "model_for",
    "native_bf16",
    "resolve_dtype",
]

DTYPES = ("auto", "float32", "bfloat16", "int8")
RESOLVED = ("float32", "bfloat16", "int8")  # what `auto` and the others resolve to
CPU_BF16_ENV = "LAYOUTLM_ROIALIGN_CPU_BF16"  # "0": `auto` (and training's bf16 default) treat the CPU as lacking bf16
_TORCH_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.int8: "int8", torch.qint8: "int8"}
# oneDNN's `ONEDNN_MAX_CPU_ISA` caps below these hide its native bf16 kernels (bf16 is then emulated, or not used).
_BF16_ISAS = (
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX10_1_512",
    "AVX10_2_512",
    "ALL",
    "DEFAULT",
)


def dtype_name(dtype: Any) -> str:
    """`dtype` (a name of `DTYPES`, a `torch.dtype` among float32 / bfloat16 / int8, or `None` for `"auto"`) as a
    name of `DTYPES`.

    Raises:
        ValueError: naming `dtype` and the accepted values.
    """
    if dtype is None:
        return "auto"
    if isinstance(dtype, torch.dtype) and dtype in _TORCH_DTYPES:
        return _TORCH_DTYPES[dtype]
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    raise ValueError(
        f"`dtype` must be one of {DTYPES} (or torch.float32 / torch.bfloat16 / torch.int8), got {dtype!r}: "
        "'auto' picks bf16 where the device computes it natively, else float32."
    )


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16, by torch's CPU checks) and oneDNN may use those
    instructions (torch's oneDNN bf16 check, and no `ONEDNN_MAX_CPU_ISA` / `DNNL_MAX_CPU_ISA` cap below
    AVX512_CORE_BF16: oneDNN would emulate bf16 there, slower than float32). `LAYOUTLM_ROIALIGN_CPU_BF16=0` in the
    environment says no, whatever the CPU (float32 for `auto` everywhere on the machine)."""
    if os.environ.get(CPU_BF16_ENV, "").strip() == "0":
        return False
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if not cap.startswith(_BF16_ISAS):
        return False
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU with bf16 (`torch.cuda.is_bf16_supported`), or a CPU
    with `cpu_native_bf16`; any other device is taken not to."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_native_bf16()


def resolve_dtype(dtype: Any, device: torch.device | str) -> str:
    """What a model on `device` computes in for the option `dtype` (see the module docstring): one of `RESOLVED`.

    Raises:
        ValueError: naming `dtype`, for an unknown value or `"int8"` on a device other than the CPU.
    """
    name = dtype_name(dtype)
    device = torch.device(device)
    if name == "int8" and device.type != "cpu":
        raise ValueError(
            f"`dtype='int8'` (dynamic quantization) runs on the CPU only, and the model is on {device}: use "
            "dtype='auto' or 'bfloat16' there, or move the model to the CPU for int8."
        )
    if name == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return name


def resolve_for(dtype: Any, model: Any) -> str:
    """`resolve_dtype` for where `model` runs. A model that is not a torch module (an ONNX Runtime export) computes
    as it was exported: `"float32"` for `"auto"` / `"float32"`, and other requests are refused.

    Raises:
        ValueError: naming `dtype` (see `resolve_dtype`).
    """
    if isinstance(model, torch.nn.Module):
        return resolve_dtype(dtype, next(model.parameters()).device)
    name = dtype_name(dtype)
    if name not in ("auto", "float32"):
        raise ValueError(
            f"`dtype={name!r}` applies to PyTorch models; {type(model).__name__} runs as it was exported (int8: "
            "export with scripts/export_onnx.py's int8 quantization): leave `dtype` at 'auto'."
        )
    return "float32"


def autocast(device: torch.device, dtype: str) -> Any:
    """The context a forward pass runs in for a resolved `dtype`: bf16 autocast for `"bfloat16"`, else none."""
    if dtype not in RESOLVED:
        raise ValueError(f"`dtype` must be resolved to one of {RESOLVED} first (`resolve_dtype`), got {dtype!r}.")
    if dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


_QUANTIZED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its weights' versions, int8 copy)
_COPIES: weakref.WeakSet = weakref.WeakSet()  # the int8 copies made here


def model_for(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """The model that runs for a resolved `dtype`: `model` itself, or for `"int8"` a copy with its Linear layers
    dynamically quantized, made once per model (again only after its weights change)."""
    if dtype != "int8" or model in _COPIES:
        return model
    versions = tuple(p._version for p in model.parameters())
    cached = _QUANTIZED.get(model)
    if cached is not None and cached[0] == versions:
        return cached[1]
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as err:
        raise ValueError(
            f"`dtype='int8'` needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} lacks: "
            "use dtype='auto' or 'bfloat16'."
        ) from err
    with warnings.catch_warnings():  # torch marks its eager quantization API deprecated; it is what runs here
        warnings.filterwarnings(
            "ignore", message=r".*torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        quantized = quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear}, dtype=torch.qint8)
    _QUANTIZED[model] = (versions, quantized)
    _COPIES.add(quantized)
    return quantized
