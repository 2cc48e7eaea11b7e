"""LayoutLM with RoIAlign image embeddings, as a Hugging Face-native model package.

Importing the package registers the config, models, image processor and processor with transformers' Auto
classes, and marks them for `save_pretrained` to write `auto_map` and copy their code into every checkpoint, so a
checkpoint loads anywhere with `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig
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
AutoModel.register(LayoutLMRoIAlignConfig, LayoutLMRoIAlignModel, exist_ok=True)
# The class `config.architectures` names: a linking checkpoint loads as the joint model (token head + link head).
AutoModelForTokenClassification.register(
    LayoutLMRoIAlignConfig,
    (LayoutLMRoIAlignForTokenClassification, LayoutLMRoIAlignForRelationExtraction),
    exist_ok=True,
)
AutoModelForSequenceClassification.register(
    LayoutLMRoIAlignConfig, LayoutLMRoIAlignForSequenceClassification, exist_ok=True
)
# One implementation serves both image-processor backends; registering it only as the default ("pil") one makes
# AutoImageProcessor warn on every load that the torchvision backend is unavailable.
AutoImageProcessor.register(
    LayoutLMRoIAlignConfig,
    image_processor_classes={"torchvision": LayoutLMRoIAlignImageProcessor, "pil": LayoutLMRoIAlignImageProcessor},
    exist_ok=True,
)
AutoModelForMaskedLM.register(LayoutLMRoIAlignConfig, LayoutLMRoIAlignForMaskedLM, exist_ok=True)
AutoProcessor.register(LayoutLMRoIAlignConfig, LayoutLMRoIAlignProcessor, exist_ok=True)

LayoutLMRoIAlignConfig.register_for_auto_class()
LayoutLMRoIAlignModel.register_for_auto_class("AutoModel")
LayoutLMRoIAlignForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
LayoutLMRoIAlignForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
LayoutLMRoIAlignForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
# There is no Auto class for relation extraction. The linking model is a token classifier (its `logits` are the
# token logits) with a second output, so its checkpoints map AutoModelForTokenClassification to it: with
# `trust_remote_code=True` that loads the joint model, link head included (see `linking_layoutlm_roialign`).
LayoutLMRoIAlignForRelationExtraction.register_for_auto_class("AutoModelForTokenClassification")
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
