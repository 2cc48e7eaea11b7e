"""What a checkpoint carries besides its weights: the whole `auto_map` (every Auto class answers with this package's
class for it) and, for the heads that label tokens, the document pipeline (`custom_pipelines` and the pipeline's
code), so that `pipeline(model=folder, trust_remote_code=True)` works where this package is not installed.

Travels with every checkpoint beside the modeling file, which imports it relatively.
"""

from __future__ import annotations

import os
import shutil

from transformers.dynamic_module_utils import get_relative_import_files

__all__ = [
    "PIPELINE_TASK",
    "PIPELINE_FILE",
    "PIPELINE_HEADS",
    "checkpoint_auto_map",
    "prepare_config_for_saving",
    "copy_pipeline_code",
]

# The document pipeline saved with every checkpoint (`pipeline_layoutlm_roialign.py`, registered by the package).
PIPELINE_TASK = "form-understanding"
PIPELINE_FILE = "pipeline_layoutlm_roialign.py"
PIPELINE_HEADS = ("LayoutLMRoIAlignForTokenClassification", "LayoutLMRoIAlignForRelationExtraction")
PIPELINE_INFO = {
    "impl": "pipeline_layoutlm_roialign.FormUnderstandingPipeline",
    "pt": ["AutoModelForTokenClassification"],
    "tf": [],
    "type": "multimodal",
}


def checkpoint_auto_map(head: type) -> dict[str, str]:
    """The `auto_map` of a checkpoint saved by `head`: `AutoModel` gives the base model (the fused token states),
    each task's Auto class its head (newly initialized where the checkpoint has another), and the head that saved
    the checkpoint keeps its own Auto class (the linking model answers `AutoModelForTokenClassification`)."""
    module = "modeling_layoutlm_roialign"
    auto_map = {
        "AutoConfig": "configuration_layoutlm_roialign.LayoutLMRoIAlignConfig",
        "AutoModel": f"{module}.LayoutLMRoIAlignModel",
        "AutoModelForTokenClassification": f"{module}.LayoutLMRoIAlignForTokenClassification",
        "AutoModelForSequenceClassification": f"{module}.LayoutLMRoIAlignForSequenceClassification",
        "AutoModelForMaskedLM": f"{module}.LayoutLMRoIAlignForMaskedLM",
    }
    auto_class = getattr(head, "_auto_class", None)
    if auto_class is not None:
        auto_map[auto_class] = f"{module}.{head.__name__}"
    return auto_map


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
