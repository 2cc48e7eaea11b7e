"""The label set of a checkpoint against a dataset's: `check_label_set` compares them, `load_checkpoint_for_labels`
loads a checkpoint that labels words with the dataset's labels (to fine-tune or evaluate it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel

from .configuration_layoutlm_roialign import label_names as config_label_names

__all__ = ["check_label_set", "load_checkpoint_for_labels"]


def check_label_set(model_labels: Sequence[str], dataset_labels: Sequence[str], source: str) -> None:
    """Raise a `ValueError` that names the differing labels if a checkpoint and a dataset have different label sets.

    Args:
        model_labels: the checkpoint's labels in id order (`config.id2label`).
        dataset_labels: the dataset's labels in id order.
        source: what the checkpoint is, for the message (e.g. `"--model_name_or_path runs/x"`).
    """
    if list(model_labels) == list(dataset_labels):
        return
    only_model = [name for name in model_labels if name not in dataset_labels]
    only_data = [name for name in dataset_labels if name not in model_labels]
    if only_model or only_data:
        raise ValueError(
            f"The label set of {source} differs from the dataset's: only in the checkpoint {only_model}, only in the "
            f"dataset {only_data}. Fine-tune from pretrained parts (--text_model, --backbone_weights) for a new label "
            "set."
        )
    raise ValueError(
        f"{source} numbers its labels {list(model_labels)} but the dataset numbers them {list(dataset_labels)}: "
        "same labels, different ids."
    )


def load_checkpoint_for_labels(
    path: str, label_names: Sequence[str], source: str, trust_remote_code: bool = False, runtime: str = "torch"
) -> tuple[PreTrainedModel, Any]:
    """Load checkpoint `path` (a folder or Hub id; with `runtime="onnx"` an exported folder) and its processor, and
    check that it labels words (a token classifier or linking model) and that its label set is `label_names`
    (`source` names the flag for the messages)."""
    from .loader import load_model_and_processor

    model, processor = load_model_and_processor(
        path, trust_remote_code=trust_remote_code, task="token-classification", runtime=runtime
    )
    check_label_set(config_label_names(model.config), label_names, source)
    return model, processor
