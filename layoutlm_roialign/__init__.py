"""LayoutLM with RoIAlign image embeddings, as a Hugging Face-native model package.

Importing the package registers the config, models, image processor and processor with transformers' Auto
classes, and marks them for `save_pretrained` to write `auto_map` and copy their code into every checkpoint, so a
checkpoint loads anywhere with `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig
from .modeling_layoutlm_roialign import (
    LayoutLMRoIAlignForSequenceClassification,
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignModel,
    LayoutLMRoIAlignModelOutput,
    LayoutLMRoIAlignPreTrainedModel,
    build_backbone,
    load_backbone_weights,
)

__version__ = "0.1.0"

AutoConfig.register(LayoutLMRoIAlignConfig.model_type, LayoutLMRoIAlignConfig, exist_ok=True)
AutoModel.register(LayoutLMRoIAlignConfig, LayoutLMRoIAlignModel, exist_ok=True)
AutoModelForTokenClassification.register(
    LayoutLMRoIAlignConfig, LayoutLMRoIAlignForTokenClassification, exist_ok=True
)
AutoModelForSequenceClassification.register(
    LayoutLMRoIAlignConfig, LayoutLMRoIAlignForSequenceClassification, exist_ok=True
)
LayoutLMRoIAlignConfig.register_for_auto_class()
LayoutLMRoIAlignModel.register_for_auto_class("AutoModel")
LayoutLMRoIAlignForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
LayoutLMRoIAlignForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "LayoutLMRoIAlignConfig",
    "LayoutLMRoIAlignPreTrainedModel",
    "LayoutLMRoIAlignModel",
    "LayoutLMRoIAlignModelOutput",
    "LayoutLMRoIAlignForTokenClassification",
    "LayoutLMRoIAlignForSequenceClassification",
    "build_backbone",
    "load_backbone_weights",
]
