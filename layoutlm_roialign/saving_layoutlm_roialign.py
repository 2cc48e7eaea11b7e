"""What a checkpoint carries besides its weights: the whole `auto_map` (every Auto class answers with this package's
class for it) and, for the heads that label tokens, the document pipeline (`custom_pipelines` and the pipeline's
code), so that `pipeline(model=folder, trust_remote_code=True)` works where this package is not installed; and
`AUTO_CLASS_HEADS`, the table of which Auto class loads which head.

Travels with every checkpoint beside the modeling file, which imports it relatively.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

import transformers
from transformers import PreTrainedConfig
from transformers.dynamic_module_utils import get_relative_import_files

__all__ = [
    "PIPELINE_TASK",
    "PIPELINE_FILE",
    "PIPELINE_HEADS",
    "AUTO_CLASS_HEADS",
    "auto_class_of_head",
    "checkpoint_auto_map",
    "register_heads",
    "prepare_config_for_saving",
    "copy_pipeline_code",
]

# The document pipeline saved with every checkpoint (`pipeline_layoutlm_roialign.py`, registered by the package).
PIPELINE_TASK = "form-understanding"
PIPELINE_FILE = "pipeline_layoutlm_roialign.py"
# Each Auto class's heads, by class name: the first is the one it gives a checkpoint saved by another head, the others
# load as themselves (as `config.architectures` names them). There is no Auto class for linking: the linking model is
# a token classifier (its `logits` are the token logits) with a second output.
AUTO_CLASS_HEADS = {
    "AutoModel": ("LayoutLMRoIAlignModel",),
    "AutoModelForTokenClassification": (
        "LayoutLMRoIAlignForTokenClassification",
        "LayoutLMRoIAlignForRelationExtraction",
    ),
    "AutoModelForSequenceClassification": ("LayoutLMRoIAlignForSequenceClassification",),
    "AutoModelForMaskedLM": ("LayoutLMRoIAlignForMaskedLM",),
}
# The heads that label tokens: those that carry the document pipeline, and the only ones the package labels pages with.
PIPELINE_HEADS = AUTO_CLASS_HEADS["AutoModelForTokenClassification"]
PIPELINE_INFO = {
    "impl": "pipeline_layoutlm_roialign.FormUnderstandingPipeline",
    "pt": ["AutoModelForTokenClassification"],
    "tf": [],
    "type": "multimodal",
}


def auto_class_of_head(name: str) -> str | None:
    """The Auto class that loads the head class named `name` (a `config.architectures` entry), or `None`."""
    return next((auto for auto, heads in AUTO_CLASS_HEADS.items() if name in heads), None)


def checkpoint_auto_map(head: type) -> dict[str, str]:
    """The `auto_map` of a checkpoint saved by `head`: `AutoModel` gives the base model (the fused token states),
    each task's Auto class its head (newly initialized where the checkpoint has another), and the head that saved
    the checkpoint keeps its own Auto class (the linking model answers `AutoModelForTokenClassification`)."""
    module = "modeling_layoutlm_roialign"
    auto_map = {"AutoConfig": "configuration_layoutlm_roialign.LayoutLMRoIAlignConfig"}
    for auto_class, heads in AUTO_CLASS_HEADS.items():
        auto_map[auto_class] = f"{module}.{head.__name__ if head.__name__ in heads else heads[0]}"
    return auto_map


def register_heads(config: Any, auto_class: str | None, classes: Mapping[str, type]) -> None:
    """Map `config`'s class, for Auto class `auto_class`, to each of its heads (`AUTO_CLASS_HEADS`, looked up in
    `classes`), as the package's `__init__` does, when `auto_class` has several; does nothing for `config=None`.

    An Auto class that loads a checkpoint's code maps the config's class to the class it loaded, and for the next
    checkpoint with the same code (the same config class: transformers names the module after the folder and the
    code, and every run saves to `final/`) it gives that class whatever `config.architectures` says: a linking
    checkpoint after a token one lost its link head. Mapped to all its heads, it picks the one the config names.
    """
    heads = AUTO_CLASS_HEADS.get(auto_class or "", ())
    if not isinstance(config, PreTrainedConfig) or len(heads) < 2:
        return
    for name in heads:  # as transformers marks the class it loads, so that saving it copies its code again
        classes[name].register_for_auto_class(auto_class)
    getattr(transformers, auto_class).register(type(config), tuple(classes[name] for name in heads), exist_ok=True)


def _pipeline_file() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), PIPELINE_FILE)


def prepare_config_for_saving(model) -> bool:
    """Set `model.config.auto_map` to the checkpoint's whole map and, where the pipeline's file lies beside this one
    and the model labels tokens (`PIPELINE_HEADS`), `custom_pipelines`; returns whether the checkpoint carries the
    pipeline."""
    config = model.config
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **checkpoint_auto_map(type(model))}
    carries_pipeline = os.path.isfile(_pipeline_file()) and type(model).__name__ in PIPELINE_HEADS
    if carries_pipeline:
        config.custom_pipelines = {PIPELINE_TASK: dict(PIPELINE_INFO)}
    elif hasattr(config, "custom_pipelines"):
        del config.custom_pipelines
    return carries_pipeline


def copy_pipeline_code(save_directory: str | os.PathLike) -> None:
    """Copy the pipeline's file and its relative imports into `save_directory`."""
    pipeline_file = _pipeline_file()
    for file in [pipeline_file, *get_relative_import_files(pipeline_file)]:
        shutil.copy(file, os.path.join(save_directory, os.path.basename(file)))
