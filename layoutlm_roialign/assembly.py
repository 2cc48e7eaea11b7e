"""Assembling a model from pretrained parts: a text encoder from a LayoutLM, BERT or LayoutLM-RoIAlign checkpoint and
backbone weights from torchvision or a state-dict file, loaded after `post_init` (which would re-initialize them); `map_state_dict_by_position` turns backbone weights saved
under other key names into a file the backbone loads.

`LayoutLMRoIAlignPreTrainedModel.from_pretrained_parts` calls `from_pretrained_parts` here. This module belongs to
the package, not to checkpoints: a checkpoint's code loads trained weights and never needs it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel, LayoutLMModel
from transformers.utils import logging

from .configuration_layoutlm_roialign import BACKBONE_NORMS, LayoutLMRoIAlignConfig
from .visual_layoutlm_roialign import backbone_weights_name, load_backbone_weights

if TYPE_CHECKING:  # modeling calls into this module; it is not imported from here
    from .modeling_layoutlm_roialign import LayoutLMRoIAlignPreTrainedModel

logger = logging.get_logger(__name__)

__all__ = ["TEXT_CONFIG_KEYS", "from_pretrained_parts", "map_state_dict_by_position", "text_encoder_state"]

# The config fields that a text checkpoint decides (its sizes, vocabulary, dropout, ...).
TEXT_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)


def text_encoder_state(text_model_name_or_path: str | os.PathLike) -> tuple[dict, dict]:
    """The text checkpoint's config fields (`TEXT_CONFIG_KEYS` it has) and its encoder's state dict under
    `LayoutLMModel`'s key names: a LayoutLM checkpoint's as is, a BERT checkpoint's (the same names, without the 2-D
    position embeddings), or the `layoutlm.*` tensors of one of this package's checkpoints."""
    text_config = AutoConfig.from_pretrained(text_model_name_or_path)
    fields = {key: getattr(text_config, key) for key in TEXT_CONFIG_KEYS if hasattr(text_config, key)}
    if text_config.model_type == "layoutlm":
        return fields, LayoutLMModel.from_pretrained(text_model_name_or_path).state_dict()
    if text_config.model_type == LayoutLMRoIAlignConfig.model_type:
        # One of ours (e.g. an MVLM pre-training checkpoint): its text encoder, `layoutlm.*` of the base model
        # (`AutoModel` gives `LayoutLMRoIAlignModel`: importing the package registered it).
        state = AutoModel.from_pretrained(text_model_name_or_path).state_dict()
        return fields, {k[len("layoutlm.") :]: v for k, v in state.items() if k.startswith("layoutlm.")}
    return fields, AutoModel.from_pretrained(text_model_name_or_path).state_dict()


def _load_text_encoder(layoutlm: LayoutLMModel, text_state: dict, source: str | os.PathLike) -> None:
    """Load the tensors of `text_state` that fit `layoutlm`; fail when fewer than half of its tensors do."""
    target = layoutlm.state_dict()
    usable = {k: v for k, v in text_state.items() if k in target and v.shape == target[k].shape}
    layoutlm.load_state_dict(usable, strict=False)
    fresh = sorted(k for k in target if k not in usable and not k.endswith("position_ids"))
    if len(usable) < len(target) // 2:
        raise ValueError(
            f"`text_model_name_or_path`={source!r} gave only {len(usable)} of the text encoder's {len(target)} "
            "tensors; is it a BERT or LayoutLM checkpoint?"
        )
    if fresh:
        logger.info(f"Text encoder tensors not in the text checkpoint (start fresh): {fresh}")


def from_pretrained_parts(
    cls: type[LayoutLMRoIAlignPreTrainedModel],
    text_model_name_or_path: str | os.PathLike | None = None,
    backbone_weights: str | os.PathLike | None = None,
    **config_kwargs,
) -> LayoutLMRoIAlignPreTrainedModel:
    """Build a `cls` model from a pretrained text encoder and pretrained backbone weights
    (`cls.from_pretrained_parts(text_model_name_or_path, backbone_weights, **config_kwargs)` calls this).

    Args:
        cls: the model class to build (a head of `modeling_layoutlm_roialign`).
        text_model_name_or_path: a LayoutLM checkpoint (e.g. `"microsoft/layoutlm-base-uncased"`), a plain BERT
            checkpoint (LayoutLM is BERT plus 2-D position embeddings, which then start fresh), or one of this
            package's checkpoints (its text encoder only, e.g. after MVLM pre-training with `scripts/pretrain.py`),
            as a Hub id or a local folder. `None` leaves the text encoder randomly initialized.
        backbone_weights: torchvision weights of `backbone` (`"DEFAULT"`, `"IMAGENET1K_V2"`, ...; downloaded by
            torchvision) or a path to a state-dict file. `None` leaves the backbone random.
        config_kwargs: fields of [`LayoutLMRoIAlignConfig`] (`backbone`, `num_labels`, `id2label`, ...). Text sizes
            are taken from the text checkpoint.
    """
    text_state = None
    if text_model_name_or_path is not None:
        fields, text_state = text_encoder_state(text_model_name_or_path)
        for key, value in fields.items():
            config_kwargs.setdefault(key, value)
    config = LayoutLMRoIAlignConfig(**config_kwargs)
    if backbone_weights is not None:
        config.backbone_weights = backbone_weights_name(backbone_weights, config.backbone)
    if config.resolved_backbone_norm in BACKBONE_NORMS:
        # Published configs say which norm was built instead of leaving it to the weights' name.
        config.backbone_norm = config.resolved_backbone_norm
    model = cls(config)
    # Pretrained parts load after `post_init`, which would otherwise re-initialize them.
    base = getattr(model, model.base_model_prefix, model)
    if text_state is not None:
        _load_text_encoder(base.layoutlm, text_state, text_model_name_or_path)
    if backbone_weights is not None:
        load_backbone_weights(base.visual_embeddings.backbone, backbone_weights, config.backbone)
    return model


def map_state_dict_by_position(source: dict, target: dict) -> dict:
    """Rename a state dict saved under other key names to `target`'s keys, in order, checking every shape: backbone
    weights exported under other names -> a state dict that `--backbone_weights` (`load_backbone_weights`) loads, e.g.
    `torch.save(map_state_dict_by_position(export, torchvision.models.resnet50().state_dict()), "weights.pt")`.

    `num_batches_tracked` entries are left out on both sides; tensors of `source` past the end of `target` (e.g. the
    layers after a backbone's return node) are ignored.

    Raises:
        ValueError: if `source` has fewer tensors than `target`, or a shape differs (naming both keys).
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) < len(tgt):
        raise ValueError(f"The weights have {len(src)} tensors, the target needs {len(tgt)}.")
    mapped = {}
    for (sk, sv), (tk, tv) in zip(src, tgt, strict=False):
        if sv.shape != tv.shape:
            raise ValueError(f"Weight {sk!r} {tuple(sv.shape)} does not fit {tk!r} {tuple(tv.shape)}.")
        mapped[tk] = sv
    return mapped
