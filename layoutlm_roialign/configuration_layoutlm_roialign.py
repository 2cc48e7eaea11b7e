"""Configuration of LayoutLM with RoIAlign image embeddings.

The text settings are LayoutLM's own (this class subclasses `LayoutLMConfig`); the fields added here describe
the visual branch of the LayoutLM paper's "+image" model: a torchvision backbone cut at a named node, one
`torchvision.ops.roi_align` feature per token box, a projection to the hidden size, and how that feature is
fused with LayoutLM's output.
"""

from __future__ import annotations

from typing import Any

from transformers import LayoutLMConfig

__all__ = [
    "LayoutLMRoIAlignConfig",
    "DEFAULT_RETURN_NODES",
    "BACKBONE_NORMS",
    "VISUAL_INITS",
    "DEFAULT_LINK_TYPES",
    "label_names",
]

# The node each known backbone is cut at: the last stage whose stride is 16, as in the paper's ResNet `layer3`.
DEFAULT_RETURN_NODES = {
    "resnet18": "layer3",
    "resnet34": "layer3",
    "resnet50": "layer3",
    "resnet101": "layer3",
    "resnet152": "layer3",
    "resnext50_32x4d": "layer3",
    "resnext101_32x8d": "layer3",
    "wide_resnet50_2": "layer3",
    "wide_resnet101_2": "layer3",
    "mobilenet_v2": "features.13",
    "mobilenet_v3_large": "features.12",
    "mobilenet_v3_small": "features.8",
    "convnext_tiny": "features.5",
    "convnext_small": "features.5",
    "efficientnet_b0": "features.5",
}

BACKBONE_NORMS = ("auto", "frozen_batch_norm", "batch_norm", "group_norm")
# Backbones whose normalization is not BatchNorm, which `backbone_norm` replaces: it must stay "auto" for them, and
# `resolved_backbone_norm` reports what they are built with.
LAYER_NORM_BACKBONES = ("convnext", "swin", "vit_", "maxvit")
NORM_FREE_BACKBONES = ("alexnet", "squeezenet1_0", "squeezenet1_1", "vgg11", "vgg13", "vgg16", "vgg19")
VISUAL_INITS = ("normed_zero_projection", "zero_gate", "zero_projection", "normal")
# The (key type, value type) pairs the linking head scores by default: FUNSD's question -> answer links.
DEFAULT_LINK_TYPES = (("QUESTION", "ANSWER"),)


class LayoutLMRoIAlignConfig(LayoutLMConfig):
    r"""Configuration for [`LayoutLMRoIAlignModel`] and its heads.

    Every argument of [`~transformers.LayoutLMConfig`] is accepted (hidden size, layers, heads, vocabulary,
    `max_2d_position_embeddings`, ...). The visual branch adds:

    Args:
        backbone (`str`, defaults to `"resnet101"`):
            Name of a torchvision classification model (`torchvision.models.<backbone>`), e.g. resnet18/34/50/101/152,
            mobilenet_v2, convnext_tiny.
        backbone_return_node (`str`, *optional*):
            The graph node the backbone is cut at (`torchvision.models.feature_extraction` naming). Defaults to the
            stride-16 stage of known backbones (`layer3` for ResNets, `features.13` for mobilenet_v2, ...).
        backbone_weights (`str`, *optional*):
            Where the backbone's pretrained weights came from, as a name (a torchvision weight name such as
            `"IMAGENET1K_V2"`, or a state-dict file's base name; never a local path); `None` means randomly
            initialized. It only decides `backbone_norm="auto"`; weights always load from the checkpoint.
        backbone_norm (`str`, defaults to `"auto"`):
            Normalization layers that replace every BatchNorm layer of the backbone: `"frozen_batch_norm"`,
            `"batch_norm"`, `"group_norm"` (32 groups), or `"auto"`: frozen batch norm when `backbone_weights` is
            set, group norm otherwise. Backbones built with LayerNorm (ConvNeXt) or without normalization (VGG
            without `_bn`) keep their own and only accept `"auto"`.
        image_size (`int`, defaults to 224):
            Side of the square page image the processor produces and the backbone sees.
        roi_output_size (`int` or `(int, int)`, defaults to `(3, 3)`):
            Output size (height, width) of RoIAlign per token box.
        roi_spatial_scale (`float`, *optional*):
            Scale from image pixels to feature-map cells. Defaults to `1 / stride` of the return node (1/16 for
            ResNet `layer3`).
        roi_sampling_ratio (`int`, defaults to 2):
            Sampling points per bin side (fixed, so the cost does not depend on box size).
        roi_aligned (`bool`, defaults to `True`):
            Shift boxes by -0.5 feature pixel (torchvision's `aligned=True`), so a box edge samples the feature map
            where that pixel's centre is.
        visual_init (`str`, defaults to `"normed_zero_projection"`):
            How the visual term starts. Every choice but `"normal"` makes the fused token representations equal
            LayoutLM's at initialization.
            `"normed_zero_projection"`: LayerNorm the pooled RoI features, then a projection whose weights and bias
            start at zero; the norm's weight starts at `sqrt(hidden_size / (C * oh * ow))`.
            `"zero_gate"`: a learned per-channel gate, initialized to zero, on the layer-normalized projected
            feature (kept for checkpoints saved with it).
            `"zero_projection"`: projection weights start at zero; no norm, no gate.
            `"normal"`: a randomly initialized projection, added as is.
        visual_feature_norm (`bool`, *optional*):
            LayerNorm the pooled RoI features (`C * oh * ow` values per box) before the projection. Defaults to
            `True` with `"normed_zero_projection"`, `False` otherwise.
        visual_layer_norm (`bool`, *optional*):
            LayerNorm the projected visual feature before the gate. Defaults to `True` with `"zero_gate"`, `False`
            otherwise.
        visual_dropout (`float`, defaults to 0.1):
            Dropout on the pooled RoI features before the projection.
        visual_cls_is_page (`bool`, defaults to `True`):
            The first token of every sequence ([CLS]) gets the whole page as its RoI, as in the LayoutLM paper.
        use_visual_features (`bool`, defaults to `True`):
            Run the visual branch. `False` gives the text-only model with the same parameters (an ablation switch).
        classifier_dropout (`float`, *optional*):
            Dropout before the classification heads. Defaults to `hidden_dropout_prob`.

    The key-value linking head ([`LayoutLMRoIAlignForRelationExtraction`]) adds:

    Args:
        entity_types (`list[str]`, *optional*):
            The entity types that `entity_labels` index, in id order. Defaults to the types of the `B-`/`I-` labels
            of `id2label` in label-id order (FUNSD's labels give `["HEADER", "QUESTION", "ANSWER"]`). With neither,
            entities are untyped: `link_types` is not used and every pair of entities is a candidate.
        link_types (`list[[str, str]]`, defaults to `[["QUESTION", "ANSWER"]]`):
            The candidate pairs: an entity of the first type (the key) may link to an entity of the second (the
            value) in the same window. Pairs of other types are never scored or predicted.
        link_hidden_size (`int`, *optional*):
            Width of the key and value projections of the biaffine scorer. Defaults to `hidden_size // 2`.
        link_threshold (`float`, defaults to 0.3):
            A candidate pair is predicted when p(key | value) exceeds this: the softmax over the value's candidate
            keys and a learned "no key" option. A key that no value chose has no answer.
        link_one_value_key (`bool`, defaults to `True`):
            Keep, for each value, only its best key among the pairs above `link_threshold`.
        link_entity_box_feature (`bool`, defaults to `True`):
            Add to each entity's representation the RoIAlign feature of its whole box (the union of its words'
            boxes), pooled from the same backbone feature map and projected by the visual branch. Only with
            `use_visual_features`.
        link_box_relation (`bool`, defaults to `True`):
            Add to each pair's score a small MLP of the two entity boxes' relative geometry (centre offsets, gaps
            between facing edges, the key's size).
        link_head_scale (`float`, defaults to 20.0):
            The link head's weights are stored divided by this and multiplied back in its forward pass, so under
            Adam(W) at one learning rate they move this many times faster than the encoder. The function computed
            at initialization does not depend on it.
        link_loss_weight (`float`, defaults to 1.0):
            Weight of the link loss (per value: cross-entropy of its gold key, or "no key", among its candidate
            keys) added to the token loss.
        mlm_sparse_prediction (`bool`, defaults to `False`):
            [`LayoutLMRoIAlignForMaskedLM`] in training mode with `labels`: compute the vocabulary logits of the
            tokens to predict only, returned as `(num_predicted, vocab_size)`; evaluation and inference always
            return `(batch_size, sequence_length, vocab_size)`.

    Why these defaults, and what was measured: `docs/design.md` and `docs/results.md`.
    """

    model_type = "layoutlm_roialign"

    def __init__(
        self,
        backbone: str = "resnet101",
        backbone_return_node: str | None = None,
        backbone_weights: str | None = None,
        backbone_norm: str = "auto",
        image_size: int = 224,
        roi_output_size: int | tuple[int, int] | list[int] = (3, 3),
        roi_spatial_scale: float | None = None,
        roi_sampling_ratio: int = 2,
        roi_aligned: bool = True,
        visual_init: str = "normed_zero_projection",
        visual_feature_norm: bool | None = None,
        visual_layer_norm: bool | None = None,
        visual_dropout: float = 0.1,
        visual_cls_is_page: bool = True,
        use_visual_features: bool = True,
        classifier_dropout: float | None = None,
        entity_types: list[str] | None = None,
        link_types: list[list[str]] | tuple = DEFAULT_LINK_TYPES,
        link_hidden_size: int | None = None,
        link_threshold: float = 0.3,
        link_one_value_key: bool = True,
        link_entity_box_feature: bool = True,
        link_box_relation: bool = True,
        link_head_scale: float = 20.0,
        link_loss_weight: float = 1.0,
        mlm_sparse_prediction: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        backbone_return_node, roi_output_size = _checked_visual_fields(
            backbone,
            backbone_return_node,
            backbone_norm,
            image_size,
            roi_output_size,
            roi_spatial_scale,
            roi_sampling_ratio,
            visual_init,
            visual_dropout,
            classifier_dropout,
        )
        if self.max_2d_position_embeddings < 1001:
            raise ValueError(
                "`max_2d_position_embeddings` must be > 1000: boxes are normalized to 0..1000, got "
                f"{self.max_2d_position_embeddings}."
            )
        _check_link_fields(
            entity_types, link_types, link_hidden_size, link_threshold, link_head_scale, link_loss_weight
        )

        self.backbone = backbone
        self.backbone_return_node = backbone_return_node
        self.backbone_weights = backbone_weights
        self.backbone_norm = backbone_norm
        self.image_size = image_size
        self.roi_output_size = list(roi_output_size)
        self.roi_spatial_scale = roi_spatial_scale
        self.roi_sampling_ratio = roi_sampling_ratio
        self.roi_aligned = roi_aligned
        self.visual_init = visual_init
        self.visual_feature_norm = (
            (visual_init == "normed_zero_projection") if visual_feature_norm is None else visual_feature_norm
        )
        self.visual_layer_norm = (visual_init == "zero_gate") if visual_layer_norm is None else visual_layer_norm
        self.visual_dropout = visual_dropout
        self.visual_cls_is_page = visual_cls_is_page
        self.use_visual_features = use_visual_features
        self.classifier_dropout = classifier_dropout
        self.entity_types = list(entity_types) if entity_types is not None else None
        self.link_types = [list(pair) for pair in link_types]
        self.link_hidden_size = link_hidden_size
        self.link_threshold = link_threshold
        self.link_one_value_key = link_one_value_key
        self.link_entity_box_feature = link_entity_box_feature
        self.link_box_relation = link_box_relation
        self.link_head_scale = float(link_head_scale)
        self.link_loss_weight = link_loss_weight
        self.mlm_sparse_prediction = bool(mlm_sparse_prediction)

    @property
    def resolved_entity_types(self) -> list[str]:
        """`entity_types`, or the types of the `B-`/`I-` labels of `id2label` in label-id order."""
        if self.entity_types is not None:
            return list(self.entity_types)
        types: list[str] = []
        for label in map(str, label_names(self)):
            if label[:2] in ("B-", "I-") and label[2:] not in types:
                types.append(label[2:])
        return types

    @property
    def resolved_backbone_norm(self) -> str:
        """The backbone normalization actually built: `backbone_norm` with `"auto"` resolved, or the backbone's own
        (`"layer_norm"`, `"none"`) where it has no BatchNorm to replace."""
        own = _own_norm(self.backbone)
        if own is not None:
            return own
        if self.backbone_norm != "auto":
            return self.backbone_norm
        return "frozen_batch_norm" if self.backbone_weights else "group_norm"


def label_names(config: Any) -> list[str]:
    """The label names of `config` in label-id order (`id2label[0]`, `id2label[1]`, ...). A function rather than a
    property, so that it also reads configs of checkpoints saved with older code (loaded with their remote code)."""
    return [config.id2label[key] for key in sorted(config.id2label, key=int)]


def _checked_visual_fields(
    backbone: Any,
    backbone_return_node: str | None,
    backbone_norm: str,
    image_size: Any,
    roi_output_size: Any,
    roi_spatial_scale: float | None,
    roi_sampling_ratio: Any,
    visual_init: str,
    visual_dropout: float,
    classifier_dropout: float | None,
) -> tuple[str, tuple[int, int]]:
    """The visual branch's fields of `LayoutLMRoIAlignConfig` checked (arguments as its `__init__` takes them):
    returns `backbone_return_node` (the backbone's default when `None`) and `roi_output_size` as `(height, width)`.

    Raises:
        ValueError: naming the first field that cannot work.
    """
    if not isinstance(backbone, str) or not backbone:
        raise ValueError(f"`backbone` must be a torchvision model name such as 'resnet101', got {backbone!r}.")
    if backbone_return_node is None:
        if backbone not in DEFAULT_RETURN_NODES:
            raise ValueError(
                f"`backbone`={backbone!r} has no default return node; known backbones: "
                f"{sorted(DEFAULT_RETURN_NODES)}. Pass `backbone_return_node` (a node name from "
                "torchvision.models.feature_extraction.get_graph_node_names) to use another torchvision model."
            )
        backbone_return_node = DEFAULT_RETURN_NODES[backbone]
    if backbone_norm not in BACKBONE_NORMS:
        raise ValueError(f"`backbone_norm` must be one of {BACKBONE_NORMS}, got {backbone_norm!r}.")
    if backbone_norm != "auto" and _own_norm(backbone) is not None:
        raise ValueError(
            f"`backbone_norm`={backbone_norm!r} cannot be applied to {backbone}, which is built with "
            f"{_own_norm(backbone)} (no BatchNorm layers to replace); leave it 'auto'."
        )
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 32:
        raise ValueError(f"`image_size` must be an int >= 32, got {image_size!r}.")
    if isinstance(roi_output_size, int):
        roi_output_size = (roi_output_size, roi_output_size)
    roi_output_size = tuple(roi_output_size)
    if len(roi_output_size) != 2 or not all(isinstance(s, int) and s > 0 for s in roi_output_size):
        raise ValueError(f"`roi_output_size` must be a positive int or (height, width), got {roi_output_size!r}.")
    if roi_spatial_scale is not None and not roi_spatial_scale > 0:
        raise ValueError(f"`roi_spatial_scale` must be > 0 (or None to infer it), got {roi_spatial_scale!r}.")
    if not isinstance(roi_sampling_ratio, int) or roi_sampling_ratio <= 0:
        raise ValueError(
            f"`roi_sampling_ratio` must be a positive int (a fixed number of samples per bin side), "
            f"got {roi_sampling_ratio!r}."
        )
    if visual_init not in VISUAL_INITS:
        raise ValueError(f"`visual_init` must be one of {VISUAL_INITS}, got {visual_init!r}.")
    if not 0.0 <= visual_dropout < 1.0:
        raise ValueError(f"`visual_dropout` must be in [0, 1), got {visual_dropout!r}.")
    if classifier_dropout is not None and not 0.0 <= classifier_dropout < 1.0:
        raise ValueError(f"`classifier_dropout` must be in [0, 1) or None, got {classifier_dropout!r}.")
    return backbone_return_node, roi_output_size


def _check_link_fields(
    entity_types: Any,
    link_types: Any,
    link_hidden_size: Any,
    link_threshold: float,
    link_head_scale: Any,
    link_loss_weight: float,
) -> None:
    """Check the linking head's fields of `LayoutLMRoIAlignConfig` (arguments as its `__init__` takes them).

    Raises:
        ValueError: naming the first field that cannot work.
    """
    if entity_types is not None and (
        not isinstance(entity_types, (list, tuple))
        or not all(isinstance(t, str) and t for t in entity_types)
        or len(set(entity_types)) != len(entity_types)
    ):
        raise ValueError(f"`entity_types` must be a list of distinct non-empty names, got {entity_types!r}.")
    if not isinstance(link_types, (list, tuple)) or not all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) and t for t in pair)
        for pair in link_types
    ):
        raise ValueError(
            f"`link_types` must be a list of [key_type, value_type] name pairs, e.g. [['QUESTION', 'ANSWER']], "
            f"got {link_types!r}."
        )
    if link_hidden_size is not None and (not isinstance(link_hidden_size, int) or link_hidden_size < 1):
        raise ValueError(f"`link_hidden_size` must be a positive int (or None), got {link_hidden_size!r}.")
    if not 0.0 < link_threshold < 1.0:
        raise ValueError(f"`link_threshold` must be a probability in (0, 1), got {link_threshold!r}.")
    if not (isinstance(link_head_scale, (int, float)) and link_head_scale > 0):
        raise ValueError(f"`link_head_scale` must be a positive number, got {link_head_scale!r}.")
    if not link_loss_weight >= 0:
        raise ValueError(f"`link_loss_weight` must be >= 0, got {link_loss_weight!r}.")


def _own_norm(backbone: str) -> str | None:
    """`"layer_norm"` or `"none"` for backbones without BatchNorm layers; `None` for the others."""
    if backbone.startswith(LAYER_NORM_BACKBONES):
        return "layer_norm"
    if backbone in NORM_FREE_BACKBONES:
        return "none"
    return None
