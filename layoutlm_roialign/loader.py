"""Loading a checkpoint: `load_model_and_processor` loads a folder written by `save_pretrained` or a Hub
id as the class its config names, with its processor, and says which path is missing or which file is damaged
instead of a message about reaching huggingface.co.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .checkpoint_files import check_complete_checkpoint
from .heads_layoutlm_roialign import auto_class_of_head, heads_of, is_masked_lm, token_labelling_heads
from .onnx_runtime import EXPORT_RECORD, RUNTIMES

__all__ = ["TASKS", "load_model_and_processor"]

# `task` of the loader: the checkpoint's own class, its base model, or its own class where it labels words.
TASKS = (None, "feature-extraction", "token-classification")


def _architecture_of(model: str, trust_remote_code: bool) -> str:
    """The head a checkpoint's `config.architectures` names (the first of this package's; the token classifier when
    it names none, or the config cannot be read: the load itself then says what is wrong)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return token_labelling_heads()[0]
    names = [n for n in getattr(config, "architectures", None) or [] if auto_class_of_head(n)]
    return names[0] if names else token_labelling_heads()[0]


def _check_labels_tokens(model: str, architecture: str) -> None:
    """Refuse a checkpoint whose head (`architecture`) does not label words, naming it and the kinds that do."""
    heads = token_labelling_heads()
    if architecture in heads:
        return
    if is_masked_lm(architecture):  # scripts/pretrain.py's checkpoints: fine-tuning starts there
        hint = f"Fine-tune one from it: scripts/train.py --model_name_or_path {model}"
    else:
        hint = "Train one with scripts/train.py"
    raise ValueError(
        f"--model {model!r} is a {architecture} checkpoint, which does not label words: labelling needs a "
        f"token-classification or linking checkpoint ({' or '.join(heads)}). {hint} "
        "(--task token-classification or linking)."
    )


def load_model_and_processor(
    model: str | os.PathLike,
    trust_remote_code: bool = False,
    *,
    task: str | None = None,
    dtype: Any = None,
    runtime: str = "torch",
) -> tuple[Any, Any]:
    """Load a checkpoint (a folder written by `save_pretrained` or a Hub id) as the class its `config.architectures`
    names (token classifier, linking model, sequence classifier), and its processor. Every driver of the package loads checkpoints through it.

    Args:
        model: the folder or Hub id (`user/name`).
        trust_remote_code: run the checkpoint's own code (needed where this package is not installed).
        task: `None` for the checkpoint's own class, `"feature-extraction"` for the base model (the fused token
            states, whatever head the checkpoint has), or `"token-classification"` for the checkpoint's own class
            where it labels words (`heads_layoutlm_roialign.labels_tokens`: token classifier, linking model), refusing any other kind.
        dtype: the weights' dtype (e.g. `torch.bfloat16`); default float32.
        runtime: `"torch"`, or `"onnx"` for a folder `scripts/export_onnx.py` wrote, run by ONNX Runtime
            (`onnx_runtime.load_onnx_model`: called like the model, on the CPU; `task` and `dtype` do not apply).

    Raises:
        ValueError: naming `--model` and the path, when a local path does not exist (rather than a message about
            reaching huggingface.co), the folder holds no saved model, a weights file is damaged or incomplete, or
            (with `task="token-classification"`) the checkpoint's head does not label words.
    """
    import transformers
    from transformers import AutoProcessor

    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime must be one of {RUNTIMES}, got {runtime!r}.")
    model = os.fspath(model)
    if runtime == "onnx":
        return _load_onnx(model, trust_remote_code)
    local = os.path.isdir(model)
    if local and os.path.isfile(os.path.join(model, EXPORT_RECORD)):
        raise ValueError(f"--model {model!r} is an ONNX export (scripts/export_onnx.py): run it with --runtime onnx.")
    if local:
        check_complete_checkpoint(model, "--model")
    elif os.path.exists(model):
        raise ValueError(f"--model {model!r} is a file; give the folder that holds its config.json.")
    elif _looks_like_a_path(model):
        raise ValueError(
            f"--model {model!r} does not exist (no folder {os.path.abspath(model)!r}). Give the folder that "
            "scripts/train.py wrote (e.g. runs/main/final) or a Hub id (user/name)."
        )
    architecture = (
        heads_of("AutoModel")[0] if task == "feature-extraction" else _architecture_of(model, trust_remote_code)
    )
    if task == "token-classification":
        _check_labels_tokens(model, architecture)
    auto_class = getattr(transformers, auto_class_of_head(architecture))
    try:
        net = auto_class.from_pretrained(model, trust_remote_code=trust_remote_code, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as err:
        if local:
            raise ValueError(f"--model {model!r}: the folder cannot be loaded ({_first_line(err)}).") from err
        raise ValueError(
            f"--model {model!r}: no folder of that name exists here ({os.path.abspath(model)!r} does not exist), "
            f"and as a Hub id it could not be loaded ({_first_line(err)})."
        ) from err
    try:
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"--model {model!r}: the model loads but its processor does not ({_first_line(err)}). The folders "
            "scripts/train.py writes hold both; save one beside the model with `processor.save_pretrained(folder)`."
        ) from err
    return net, processor


def _load_onnx(model: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """An exported folder (`onnx_runtime.load_onnx_model`) and its processor."""
    from transformers import AutoProcessor

    from .onnx_runtime import load_onnx_model

    if not os.path.isdir(model):
        raise ValueError(
            f"--model {model!r} is not a folder: --runtime onnx runs a folder scripts/export_onnx.py wrote "
            f"(python scripts/export_onnx.py CHECKPOINT {model})."
        )
    net = load_onnx_model(model)
    try:
        processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"--model {model!r}: the exported model has no readable processor ({_first_line(err)})."
        ) from err
    return net, processor


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _looks_like_a_path(model: str) -> bool:
    """Whether `model` can only be a local path: a Hub id is `name` or `user/name`, of letters, digits, `-_.`."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model) or model.startswith((".", "~")) or ".." in model:
        return True
    return "/" in model and os.path.isdir(model.split("/")[0])  # `models/nope` while `models/` exists here
