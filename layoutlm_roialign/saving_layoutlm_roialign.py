"""What a checkpoint carries besides its weights: the whole `auto_map` (every Auto class answers with this package's
class for it) and, for the heads that label tokens, the document pipeline (`custom_pipelines` and the pipeline's
code), so that `pipeline(model=folder, trust_remote_code=True)` works where this package is not installed. Both are
read from the registry of heads (`heads_layoutlm_roialign.HEADS`).

Travels with every checkpoint beside the modeling file, which imports it relatively.
"""

from __future__ import annotations

import os
import shutil

from transformers.dynamic_module_utils import get_relative_import_files

from .heads_layoutlm_roialign import auto_classes, heads_of, labels_tokens, module_of, register_heads

__all__ = [
    "PIPELINE_TASK",
    "PIPELINE_FILE",
    "checkpoint_auto_map",
    "prepare_config_for_saving",
    "copy_checkpoint_code",
    "register_heads",  # the modeling file's hook in `from_pretrained` (`heads_layoutlm_roialign.register_heads`)
]

# The document pipeline saved with every checkpoint (`pipeline_layoutlm_roialign.py`, registered by the package).
PIPELINE_TASK = "form-understanding"
PIPELINE_FILE = "pipeline_layoutlm_roialign.py"
PIPELINE_INFO = {
    "impl": "pipeline_layoutlm_roialign.FormUnderstandingPipeline",
    "pt": ["AutoModelForTokenClassification"],
    "tf": [],
    "type": "multimodal",
}


def checkpoint_auto_map(head: type) -> dict[str, str]:
    """The `auto_map` of a checkpoint saved by `head`: `AutoModel` gives the base model (the fused token states),
    each task's Auto class its default head (newly initialized where the checkpoint has another; left out where that
    head is not a class of the modeling file, which every checkpoint carries), and the head that saved the checkpoint
    keeps its own Auto class, from its own module (the linking model answers `AutoModelForTokenClassification`)."""
    modeling = "modeling_layoutlm_roialign"
    auto_map = {"AutoConfig": "configuration_layoutlm_roialign.LayoutLMRoIAlignConfig"}
    for auto_class in auto_classes():
        heads = heads_of(auto_class)
        if head.__name__ in heads:
            auto_map[auto_class] = f"{head.__module__.rsplit('.', 1)[-1]}.{head.__name__}"
        elif module_of(heads[0]) == modeling:
            auto_map[auto_class] = f"{modeling}.{heads[0]}"
    return auto_map


def _pipeline_file() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), PIPELINE_FILE)


def prepare_config_for_saving(model) -> bool:
    """Set `model.config.auto_map` to the checkpoint's whole map and, where the pipeline's file lies beside this one
    and the model labels tokens (`heads_layoutlm_roialign.labels_tokens`), `custom_pipelines`; returns whether the checkpoint carries the
    pipeline."""
    config = model.config
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **checkpoint_auto_map(type(model))}
    carries_pipeline = os.path.isfile(_pipeline_file()) and labels_tokens(type(model).__name__)
    if carries_pipeline:
        config.custom_pipelines = {PIPELINE_TASK: dict(PIPELINE_INFO)}
    elif hasattr(config, "custom_pipelines"):
        del config.custom_pipelines
    return carries_pipeline


def copy_checkpoint_code(save_directory: str | os.PathLike, carries_pipeline: bool) -> None:
    """Copy the modeling file (which `auto_map` names for every Auto class, also where the saving head is defined
    elsewhere) and, where the checkpoint carries the pipeline, the pipeline's file, with their relative imports,
    into `save_directory`."""
    here = os.path.dirname(os.path.abspath(__file__))
    entries = [os.path.join(here, "modeling_layoutlm_roialign.py")] + ([_pipeline_file()] if carries_pipeline else [])
    for entry in entries:
        for file in [entry, *get_relative_import_files(entry)]:
            shutil.copy(file, os.path.join(save_directory, os.path.basename(file)))
