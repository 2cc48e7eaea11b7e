"""LayoutLM with RoIAlign image embeddings, as a Hugging Face-native model package.

Importing the package registers the config, models, image processor and processor with transformers' Auto
classes, and marks them for `save_pretrained` to write `auto_map` and copy their code into every checkpoint, so a
checkpoint loads anywhere with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForTokenClassification, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from . import modeling_layoutlm_roialign
from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig
from .heads_layoutlm_roialign import register_auto_classes, register_head
from .image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor, normalize_box, normalize_boxes
from .modeling_layoutlm_roialign import (
    LayoutLMRoIAlignForMaskedLM,
    LayoutLMRoIAlignForRelationExtraction,
    LayoutLMRoIAlignForSequenceClassification,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignModel,
    LayoutLMRoIAlignModelOutput,
    LayoutLMRoIAlignPreTrainedModel,
    LayoutLMRoIAlignRelationExtractionOutput,
)
from .pipeline_layoutlm_roialign import FormUnderstandingPipeline
from .processing_layoutlm_roialign import LayoutLMRoIAlignProcessor, merge_window_predictions
from .saving_layoutlm_roialign import PIPELINE_TASK
from .visual_layoutlm_roialign import backbone_weights_name, build_backbone, load_backbone_weights

__version__ = "0.1.0"  # written only here: pyproject.toml reads it from this line

AutoConfig.register(LayoutLMRoIAlignConfig.model_type, LayoutLMRoIAlignConfig, exist_ok=True)
# Every head (`heads_layoutlm_roialign.HEADS`) with its Auto class, each marked for `save_pretrained`'s `auto_map`.
register_auto_classes(LayoutLMRoIAlignConfig, vars(modeling_layoutlm_roialign))
# One implementation serves both image-processor backends; registering it only as the default ("pil") one makes
# AutoImageProcessor warn on every load that the torchvision backend is unavailable.
AutoImageProcessor.register(
    LayoutLMRoIAlignConfig,
    image_processor_classes={"torchvision": LayoutLMRoIAlignImageProcessor, "pil": LayoutLMRoIAlignImageProcessor},
    exist_ok=True,
)
AutoProcessor.register(LayoutLMRoIAlignConfig, LayoutLMRoIAlignProcessor, exist_ok=True)

LayoutLMRoIAlignConfig.register_for_auto_class()
LayoutLMRoIAlignImageProcessor.register_for_auto_class("AutoImageProcessor")
LayoutLMRoIAlignProcessor.register_for_auto_class("AutoProcessor")
# `pipeline("form-understanding", ...)`; checkpoints carry it too (`custom_pipelines`, see `save_pretrained`).
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK,
    pipeline_class=FormUnderstandingPipeline,
    pt_model=AutoModelForTokenClassification,
    type="multimodal",
)

__all__ = [
    "FormUnderstandingPipeline",
    "PIPELINE_TASK",
    "register_head",
    "LayoutLMRoIAlignConfig",
    "LayoutLMRoIAlignPreTrainedModel",
    "LayoutLMRoIAlignModel",
    "LayoutLMRoIAlignModelOutput",
    "LayoutLMRoIAlignForTokenClassification",
    "LayoutLMRoIAlignForSequenceClassification",
    "LayoutLMRoIAlignForMaskedLM",
    "LayoutLMRoIAlignForRelationExtraction",
    "LayoutLMRoIAlignRelationExtractionOutput",
    "LayoutLMRoIAlignImageProcessor",
    "LayoutLMRoIAlignProcessor",
    "backbone_weights_name",
    "build_backbone",
    "load_backbone_weights",
    "merge_window_predictions",
    "normalize_box",
    "normalize_boxes",
]
