"""LayoutLM with RoIAlign image embeddings.

The design is the LayoutLM paper's "+image" model (Xu et al., 2020, section 2.2) as popularized by the FUNSD
image-embedding tutorial: a torchvision backbone cut at a stride-16 stage (ResNet-101 `layer3`) runs on the page
resized to `image_size`; `torchvision.ops.roi_align` pools one feature per token box; a linear layer maps it to
the hidden size and the result is added to LayoutLM's last hidden states. The text encoder *is*
`transformers.LayoutLMModel`, the backbone *is* a torchvision model and the pooling *is* `roi_align`: this file is
the glue, the input checks and the parts that make the sum safe to train (see `visual_init`).

This file is copied into every checkpoint (remote code): it imports only torch, torchvision, transformers and its
sibling configuration file.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d, roi_align
from transformers import AutoConfig, AutoModel, LayoutLMModel, PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.models.layoutlm.modeling_layoutlm import LayoutLMLMPredictionHead, LayoutLMOnlyMLMHead
from transformers.utils import can_return_tuple, logging

from .configuration_layoutlm_roialign import BACKBONE_NORMS, LayoutLMRoIAlignConfig

logger = logging.get_logger(__name__)

__all__ = [
    "LayoutLMRoIAlignPreTrainedModel",
    "LayoutLMRoIAlignModel",
    "LayoutLMRoIAlignForTokenClassification",
    "LayoutLMRoIAlignForSequenceClassification",
    "LayoutLMRoIAlignForMaskedLM",
    "LayoutLMRoIAlignForRelationExtraction",
    "LayoutLMRoIAlignRelationExtractionOutput",
    "LayoutLMRoIAlignModelOutput",
    "LayoutLMRoIAlignVisualEmbeddings",
    "backbone_weights_name",
    "build_backbone",
    "load_backbone_weights",
]

_TEXT_KEYS = (
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


def _replace_batch_norms(module: nn.Module, kind: str) -> int:
    """Replace every `BatchNorm2d` below `module` by the `kind` of `config.backbone_norm`, in place (keeping each
    layer's eps: MobileNetV3 and EfficientNet-V2 use 1e-3). Returns how many layers there were."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            count += 1
            if kind == "frozen_batch_norm":
                setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
            elif kind == "group_norm":
                # 32 groups where the channel count allows (ResNet stems have 64), fewer for narrow MobileNet layers.
                setattr(module, name, nn.GroupNorm(math.gcd(32, child.num_features), child.num_features))
            elif kind != "batch_norm":
                raise ValueError(f"Unknown backbone_norm {kind!r}.")
        else:
            count += _replace_batch_norms(child, kind)
    return count


def build_backbone(config: LayoutLMRoIAlignConfig) -> tuple[nn.Module, int, int]:
    """Build the torchvision backbone cut at `config.backbone_return_node`, randomly initialized.

    Returns:
        `(feature_extractor, out_channels, stride)`: a module mapping `(B, 3, H, W)` to `{"features": (B, C, h, w)}`,
        and the channels and stride of that node, measured on a meta-device probe (no compute, no memory).
    """
    builder = getattr(torchvision.models, config.backbone, None)
    if builder is None or config.backbone not in torchvision.models.list_models(torchvision.models):
        raise ValueError(
            f"`config.backbone`={config.backbone!r} is not a torchvision classification model; choose one of "
            f"torchvision.models.list_models(torchvision.models), e.g. 'resnet101'."
        )
    net = builder(weights=None)
    norm = config.resolved_backbone_norm
    if norm not in ("layer_norm", "none") and _replace_batch_norms(net, norm) == 0:
        raise ValueError(
            f"`config.backbone_norm` resolves to {norm!r}, but {config.backbone} has no BatchNorm layers to replace."
        )
    try:
        extractor = create_feature_extractor(net, return_nodes={config.backbone_return_node: "features"})
    except ValueError as err:
        raise ValueError(
            f"`config.backbone_return_node`={config.backbone_return_node!r} is not a node of {config.backbone}: {err}"
        ) from err

    # Channels and stride of the return node, from a shape-only pass on the meta device.
    probe = 256
    meta_state = {k: torch.empty_like(v, device="meta") for k, v in extractor.state_dict(keep_vars=True).items()}
    with torch.no_grad():
        out = torch.func.functional_call(
            extractor, meta_state, (torch.empty(1, 3, probe, probe, device="meta"),), strict=False
        )["features"]
    if out.dim() != 4:
        raise ValueError(
            f"`config.backbone_return_node`={config.backbone_return_node!r} gives a {out.dim()}-d output; RoIAlign "
            "needs a (batch, channels, height, width) feature map."
        )
    return extractor, out.shape[1], probe // out.shape[-1]


def _torchvision_weights(weights: str, backbone_name: str):
    """The torchvision weights enum member named `weights` (`"DEFAULT"`, `"IMAGENET1K_V2"`, ...), or `None`."""
    try:
        return torchvision.models.get_model_weights(backbone_name)[str(weights)]
    except (KeyError, ValueError):
        return None


def backbone_weights_name(weights: str | os.PathLike, backbone_name: str) -> str:
    """What `config.backbone_weights` records for `weights`: the torchvision weight name (`"DEFAULT"` resolved, e.g.
    `"IMAGENET1K_V2"`) or the state-dict file's base name, never a local path (the config is published)."""
    member = None if os.path.isfile(str(weights)) else _torchvision_weights(str(weights), backbone_name)
    return member.name if member is not None else os.path.basename(str(weights))


def load_backbone_weights(backbone: nn.Module, weights: str | os.PathLike | dict, backbone_name: str) -> None:
    """Load pretrained weights into a backbone built by `build_backbone`.

    Args:
        backbone: the feature extractor (its keys are the torchvision model's, cut at the return node).
        weights: a torchvision weight name of `backbone_name` (`"DEFAULT"`, `"IMAGENET1K_V2"`, ...; downloaded by
            torchvision), a path to a state-dict file, or a state dict, under torchvision's key names. Keys of
            layers after the return node (e.g. `layer4`, `fc`) are ignored.

    Raises:
        ValueError: for an unknown weight name, or weights that lack a tensor of the backbone or do not fit it.
    """
    if isinstance(weights, dict):
        state = weights
    elif os.path.isfile(str(weights)):
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    else:
        member = _torchvision_weights(str(weights), backbone_name)
        if member is None:
            raise ValueError(
                f"`backbone_weights`={weights!r} is neither a file nor a weight of {backbone_name} "
                f"(known: {[w.name for w in torchvision.models.get_model_weights(backbone_name)]} or 'DEFAULT')."
            )
        state = member.get_state_dict(progress=True)
    target = backbone.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"Backbone weights miss {len(missing)} of the {backbone_name} backbone's tensors, e.g. {missing[:3]} "
            "(they must use torchvision's key names; `layoutlm_roialign.checkpoints.map_state_dict_by_position` "
            "renames an export under other names)."
        )
    for key in target:
        if key in state and state[key].shape != target[key].shape:
            raise ValueError(
                f"Backbone weight {key!r} {tuple(state[key].shape)} does not fit the backbone's "
                f"{tuple(target[key].shape)}."
            )
    backbone.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)


@dataclass
class LayoutLMRoIAlignModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
        LayoutLM's last hidden states plus each token's visual embedding.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        LayoutLM's pooler applied to the fused first token ([CLS], whose RoI is the whole page).
    visual_embeddings (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
        The visual term that was added (zeros on padding), or `None` when the visual branch is off.
    feature_map (`torch.FloatTensor` of shape `(num_images, channels, height, width)`, *optional*):
        The backbone's feature map, with `output_feature_map=True` (and the visual branch on).
    """

    visual_embeddings: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None


class LayoutLMRoIAlignVisualEmbeddings(nn.Module):
    """Backbone + RoIAlign + projection: one visual embedding per token box.

    RoIs are built from LayoutLM's `bbox` inside the model, so text and image boxes can never disagree. Only tokens
    with `attention_mask == 1` are pooled, and each distinct (page, box) once (sub-word tokens share their word's
    box), in a single `roi_align` call for the whole batch.

    Performance switches (attributes, all on by default; each gives the same output as the straightforward path, to
    float32 rounding, and `benchmarks/bench.py` measures them):

    - `skip_padding`: pool and project only tokens with `attention_mask == 1` (padding gets a zero visual term
      either way).
    - `share_boxes`: pool and project each distinct (page, box) once and gather it for every token carrying it.
    - `channels_last`: run the backbone on channels-last images (oneDNN's and cuDNN's preferred layout; the
      weights stay contiguous, so checkpoints are unchanged).

    Under `torch.compile` the data-dependent steps (`nonzero`, `unique`) are replaced by their static-shape
    equivalent (every token pooled, padding zeroed), so the visual branch compiles without graph breaks.
    """

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__()
        self.config = config
        self.backbone, self.out_channels, self.stride = build_backbone(config)
        self.spatial_scale = config.roi_spatial_scale if config.roi_spatial_scale is not None else 1.0 / self.stride
        self.output_size = tuple(config.roi_output_size)
        pooled_size = self.out_channels * self.output_size[0] * self.output_size[1]
        # eps 1e-5, not LayoutLM's 1e-12: pooled features of blank paper can vary very little across channels.
        self.feature_norm = nn.LayerNorm(pooled_size, eps=1e-5) if config.visual_feature_norm else None
        if self.feature_norm is not None and config.visual_init == "normed_zero_projection":
            # The norm's weight starts at sqrt(hidden / pooled): under Adam a zero layer's output moves in proportion
            # to its fan-in, and a pooled RoI feature has 9,216 inputs (ResNet `layer3`, 3x3) where LayoutLM's own
            # layers have `hidden_size`; this makes the visual term grow at their pace. Read by `_init_weights`.
            self.feature_norm.init_scale = math.sqrt(config.hidden_size / pooled_size)
        self.dropout = nn.Dropout(config.visual_dropout)
        self.projection = nn.Linear(pooled_size, config.hidden_size)
        # Read by `_init_weights`.
        self.projection.zero_init = config.visual_init in ("zero_projection", "normed_zero_projection")
        self.layer_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.visual_layer_norm else None
        )
        self.gate = nn.Parameter(torch.zeros(config.hidden_size)) if config.visual_init == "zero_gate" else None
        self.gradient_checkpointing = False
        self.skip_padding = True
        self.share_boxes = True
        self.channels_last = True

    def rois(
        self,
        bbox: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        height: int,
        width: int,
        image_index: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Turn LayoutLM boxes into RoIAlign boxes; sequence `b` reads image `image_index[b]` (default: image `b`).

        Returns:
            `(rois, token_index, inverse)`: `rois` `(num_rois, 5)` float rows `(page, x0, y0, x1, y1)` in image
            pixels; `token_index` `(num_tokens,)` positions in the flattened `(batch * seq_len)` tokens that get a
            feature; `inverse` `(num_tokens,)` the RoI row of each of those tokens.
        """
        batch_size, seq_len, _ = bbox.shape
        # nonzero/unique have data-dependent shapes (a host sync, a graph break); compiled graphs pool every token.
        static = torch.compiler.is_compiling()
        boxes = bbox
        if self.config.visual_cls_is_page:
            page = torch.tensor([0, 0, 1000, 1000], dtype=bbox.dtype, device=bbox.device)
            boxes = torch.cat([page.expand(batch_size, 1, 4), bbox[:, 1:]], dim=1)
        if image_index is None:
            image_index = torch.arange(batch_size, device=bbox.device)
        page_index = image_index.to(bbox.device, bbox.dtype).repeat_interleave(seq_len)  # (B*L,)
        rows = torch.cat([page_index[:, None], boxes.reshape(-1, 4)], dim=1)  # (B*L, 5) long
        if self.skip_padding and attention_mask is not None and not static:
            token_index = attention_mask.reshape(-1).nonzero().squeeze(1)
            rows = rows[token_index]
        else:
            token_index = torch.arange(batch_size * seq_len, device=bbox.device)
        if self.share_boxes and not static:
            rows, inverse = torch.unique(rows, dim=0, return_inverse=True)
        else:
            inverse = torch.arange(rows.shape[0], device=bbox.device)
        scale = torch.tensor([1.0, width / 1000, height / 1000, width / 1000, height / 1000], device=bbox.device)
        return rows.float() * scale, token_index, inverse

    def pool(self, feature_map: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """RoIAlign in float32 (torchvision has no bfloat16 kernel). Returns `(num_rois, C * oh * ow)`."""
        pooled = roi_align(
            feature_map.float(),
            rois,
            output_size=self.output_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.config.roi_sampling_ratio,
            aligned=self.config.roi_aligned,
        )  # (num_rois, C, oh, ow)
        return pooled.flatten(1)

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Normalize pooled RoI features, project them to the hidden size, then normalize and gate them as the config
        says. `(N, C*oh*ow) -> (N, hidden)`."""
        pooled = pooled.to(self.projection.weight.dtype)
        if self.feature_norm is not None:
            pooled = self.feature_norm(pooled)
        pooled = self.dropout(pooled)
        embeddings = self.projection(pooled)
        if self.layer_norm is not None:
            embeddings = self.layer_norm(embeddings)
        if self.gate is not None:
            embeddings = embeddings * self.gate
        return embeddings

    def _forward(
        self,
        pixel_values: torch.Tensor,
        bbox: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        image_index: torch.LongTensor | None = None,
        return_feature_map: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch_size, seq_len, _ = bbox.shape
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        feature_map = self.backbone(pixel_values)["features"]  # (num_images, C, H/stride, W/stride)
        height, width = pixel_values.shape[-2:]
        rois, token_index, inverse = self.rois(bbox, attention_mask, height, width, image_index)
        embeddings = self.embed(self.pool(feature_map, rois))  # (num_rois, hidden)
        embeddings = embeddings[inverse]  # (num_tokens, hidden)
        if token_index.shape[0] == batch_size * seq_len:
            # Every token was pooled: zero padding, as the path that skips it does.
            out = embeddings.view(batch_size, seq_len, -1)  # (B, L, hidden)
            out = out if attention_mask is None else out * attention_mask[..., None].to(out.dtype)
        else:
            out = embeddings.new_zeros(batch_size * seq_len, embeddings.shape[-1])
            out = out.index_copy(0, token_index, embeddings).view(batch_size, seq_len, -1)  # (B, L, hidden)
        return (out, feature_map) if return_feature_map else out

    def forward(
        self,
        pixel_values: torch.Tensor,
        bbox: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        image_index: torch.LongTensor | None = None,
        return_feature_map: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`pixel_values` (B, 3, H, W), `bbox` (B, L, 4) in 0..1000 -> visual embeddings (B, L, hidden).

        With `image_index` (B,), `pixel_values` holds `num_images` pages (num_images, 3, H, W) and sequence `b`
        pools from page `image_index[b]`: the backbone runs once per page however many windows it has.
        `return_feature_map=True` also returns the backbone's feature map `(num_images, C, h, w)` (the linking head
        pools entity boxes from it).
        """
        args = (pixel_values, bbox, attention_mask, image_index, return_feature_map)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(self._forward, *args)
        return self._forward(*args)


def _check_inputs(
    config: LayoutLMRoIAlignConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    bbox: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    pixel_values: torch.Tensor | None,
    image_index: torch.Tensor | None = None,
) -> None:
    """Raise a `ValueError` naming the argument for inputs that would otherwise fail deep inside torch."""
    if input_ids is not None:
        shape = tuple(input_ids.shape)
    elif inputs_embeds is not None:
        shape = tuple(inputs_embeds.shape[:-1])
    else:
        raise ValueError("You have to specify either `input_ids` or `inputs_embeds`.")
    if len(shape) != 2:
        raise ValueError(f"`input_ids` must be (batch_size, sequence_length), got shape {shape}.")
    if shape[1] > config.max_position_embeddings:
        raise ValueError(
            f"Sequence length {shape[1]} exceeds `max_position_embeddings`={config.max_position_embeddings}; "
            "truncate, or split long pages into windows (the processor's `return_overflowing_tokens=True, stride=`)."
        )
    if attention_mask is not None and tuple(attention_mask.shape) != shape:
        raise ValueError(f"`attention_mask` must have shape {shape}, got {tuple(attention_mask.shape)}.")
    if bbox is None:
        if config.use_visual_features:
            raise ValueError("`bbox` is required: each token's (x0, y0, x1, y1) box normalized to 0..1000.")
    else:
        if tuple(bbox.shape) != (*shape, 4):
            raise ValueError(
                f"`bbox` must have shape (batch_size, sequence_length, 4) = {(*shape, 4)}, got {tuple(bbox.shape)}."
            )
        if bbox.is_floating_point():
            raise ValueError("`bbox` must hold integers (boxes normalized to 0..1000), got a floating-point tensor.")
    if config.use_visual_features:
        if pixel_values is None:
            raise ValueError(
                "`pixel_values` is required (the page images, (batch_size, 3, image_size, image_size), from the "
                "processor); pass `config.use_visual_features=False` for a text-only model."
            )
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"`pixel_values` must be (batch_size, 3, height, width) RGB images, got shape {tuple(pixel_values.shape)}."
            )
        if image_index is None and pixel_values.shape[0] != shape[0]:
            raise ValueError(
                f"`pixel_values` holds {pixel_values.shape[0]} images for {shape[0]} sequences; give one image per "
                "sequence (repeat a page's image for each of its windows, via `overflow_to_sample_mapping`), or "
                "one per page with `image_index` saying which page each sequence reads."
            )
        if image_index is not None:
            if tuple(image_index.shape) != shape[:1] or image_index.is_floating_point():
                raise ValueError(
                    f"`image_index` must be an integer tensor of shape (batch_size,) = {shape[:1]} (the image in "
                    f"`pixel_values` of each sequence), got {image_index.dtype} of shape {tuple(image_index.shape)}."
                )
            if (
                not torch.compiler.is_compiling()
                and ((image_index < 0) | (image_index >= pixel_values.shape[0])).any()
            ):
                raise ValueError(
                    f"`image_index` must be in 0..{pixel_values.shape[0] - 1} (`pixel_values` holds "
                    f"{pixel_values.shape[0]} images), got {image_index.tolist()}."
                )
    elif image_index is not None:
        raise ValueError("`image_index` was given to a text-only model (`use_visual_features=False`): drop it.")

    if torch.compiler.is_compiling():
        return  # value checks need a host sync; a compiled graph trusts its inputs
    if bbox is None:
        return
    # One host sync for the value checks; details are computed only when something is wrong.
    x0, y0, x1, y1 = bbox.unbind(-1)
    out_of_range = (bbox < 0) | (bbox > 1000)
    inverted = (x1 < x0) | (y1 < y0)
    if not (out_of_range.any() | inverted.any()).item():
        return
    if out_of_range.any():
        where = out_of_range.any(-1).nonzero()[0].tolist()
        raise ValueError(
            f"`bbox` coordinates must be within 0..1000 (LayoutLM's normalized page coordinates); sequence "
            f"{where[0]}, token {where[1]} has {bbox[where[0], where[1]].tolist()}. Normalize pixel boxes with "
            "1000 * x / page_width and clamp to 0..1000."
        )
    where = inverted.nonzero()[0].tolist()
    raise ValueError(
        f"`bbox` must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0; sequence {where[0]}, token {where[1]} has "
        f"{bbox[where[0], where[1]].tolist()}."
    )


def _check_labels(labels: torch.Tensor, num_labels: int, shape: tuple[int, ...]) -> None:
    """Token labels: the inputs' shape, values in 0..num_labels-1 or -100."""
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"`labels` must have the inputs' shape {tuple(shape)}, got {tuple(labels.shape)}.")
    if torch.compiler.is_compiling():
        return
    bad = (labels != -100) & ((labels < 0) | (labels >= num_labels))
    if bad.any():
        raise ValueError(
            f"`labels` must be in 0..{num_labels - 1} or -100 (ignored), got {labels[bad].unique().tolist()}; "
            "check that the dataset's label set matches `config.id2label`."
        )


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


class LayoutLMRoIAlignPreTrainedModel(PreTrainedModel):
    config: LayoutLMRoIAlignConfig
    config_class = LayoutLMRoIAlignConfig
    base_model_prefix = "layoutlm_roialign"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["LayoutLMLayer", "LayoutLMRoIAlignVisualEmbeddings"]

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, writing the checkpoint's whole `auto_map` (`checkpoint_auto_map`: the
        base model for `AutoModel`, this head for its Auto class, the other heads for theirs) and, where the
        pipeline's file lies beside this one and the head labels tokens (`PIPELINE_HEADS`), `custom_pipelines` and the
        pipeline's code, so that `pipeline(model=folder, trust_remote_code=True)` works where this package is not
        installed."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **checkpoint_auto_map(type(self))}
        pipeline_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), PIPELINE_FILE)
        # The pipeline reads token labels: a token classifier's or a linking model's checkpoint carries it.
        carries_pipeline = os.path.isfile(pipeline_file) and type(self).__name__ in PIPELINE_HEADS
        if carries_pipeline:
            self.config.custom_pipelines = {PIPELINE_TASK: dict(PIPELINE_INFO)}
        elif hasattr(self.config, "custom_pipelines"):
            del self.config.custom_pipelines
        super().save_pretrained(save_directory, *args, **kwargs)
        if carries_pipeline and self._auto_class is not None:
            for file in [pipeline_file, *get_relative_import_files(pipeline_file)]:
                shutil.copy(file, os.path.join(save_directory, os.path.basename(file)))

    def _init_weights(self, module: nn.Module) -> None:
        # The backbone keeps torchvision's initialization (He init for convolutions): the generic N(0, 0.02) would
        # make a deep random ResNet's activations vanish.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, FrozenBatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
        elif isinstance(module, LayoutLMRoIAlignVisualEmbeddings):
            # Start as the text model (config.visual_init): the fused representation equals LayoutLM's at init.
            if module.gate is not None:
                init.zeros_(module.gate)
        elif isinstance(module, nn.LayerNorm) and hasattr(module, "init_scale"):
            init.constant_(module.weight, module.init_scale)
            init.zeros_(module.bias)
        elif isinstance(module, ScaledLinear):
            # Parameters drawn divided by `scale`, so that `scale * weight` has the usual initial distribution.
            scale = module.scale
            if getattr(module, "torch_default_init", False):
                # PyTorch's own Linear init (kaiming_uniform_ with a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))),
                # for the small MLP on box geometry (inputs of order 1): N(0, 0.02) would start its output near zero
                # through two layers.
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.weight, -bound / scale, bound / scale)
                if module.bias is not None:
                    init.uniform_(module.bias, -bound / scale, bound / scale)
            else:
                init.normal_(module.weight, mean=0.0, std=self.config.initializer_range / scale)
                if module.bias is not None:
                    init.zeros_(module.bias)
        elif isinstance(module, LayoutLMLMPredictionHead):
            init.zeros_(module.bias)  # the masked-LM head's output bias, as LayoutLM's own `_init_weights` does
        elif isinstance(module, nn.Linear) and getattr(module, "zero_init", False):
            # The projection is zeroed here, on the Linear itself: for remote code, transformers skips
            # `_init_weights` on a module without direct parameters (the visual module when it has no gate).
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    @classmethod
    def from_pretrained_parts(
        cls,
        text_model_name_or_path: str | os.PathLike | None = None,
        backbone_weights: str | os.PathLike | None = None,
        **config_kwargs,
    ) -> LayoutLMRoIAlignPreTrainedModel:
        """Build the model from a pretrained text encoder and pretrained backbone weights.

        Args:
            text_model_name_or_path: a LayoutLM checkpoint (e.g. `"microsoft/layoutlm-base-uncased"`), a plain
                BERT checkpoint (LayoutLM is BERT plus 2-D position embeddings, which then start fresh), or one of
                this package's checkpoints (its text encoder only, e.g. after MVLM pre-training with
                `scripts/pretrain.py`), as a Hub id or a local folder. `None` leaves the text encoder randomly
                initialized.
            backbone_weights: torchvision weights of `backbone` (`"DEFAULT"`, `"IMAGENET1K_V2"`, ...; downloaded by
                torchvision) or a path to a state-dict file. `None` leaves the backbone random.
            config_kwargs: fields of [`LayoutLMRoIAlignConfig`] (`backbone`, `num_labels`, `id2label`, ...). Text
                sizes are taken from the text checkpoint.
        """
        text_state = None
        if text_model_name_or_path is not None:
            text_config = AutoConfig.from_pretrained(text_model_name_or_path)
            for key in _TEXT_KEYS:
                if hasattr(text_config, key):
                    config_kwargs.setdefault(key, getattr(text_config, key))
            if text_config.model_type == "layoutlm":
                text_state = LayoutLMModel.from_pretrained(text_model_name_or_path).state_dict()
            elif text_config.model_type == LayoutLMRoIAlignConfig.model_type:
                # One of ours (e.g. an MVLM pre-training checkpoint): its text encoder, `layoutlm.*` of the base model.
                state = LayoutLMRoIAlignModel.from_pretrained(text_model_name_or_path).state_dict()
                text_state = {k[len("layoutlm.") :]: v for k, v in state.items() if k.startswith("layoutlm.")}
            else:
                text_state = AutoModel.from_pretrained(text_model_name_or_path).state_dict()
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
            target = base.layoutlm.state_dict()
            usable = {k: v for k, v in text_state.items() if k in target and v.shape == target[k].shape}
            base.layoutlm.load_state_dict(usable, strict=False)
            fresh = sorted(k for k in target if k not in usable and not k.endswith("position_ids"))
            if len(usable) < len(target) // 2:
                raise ValueError(
                    f"`text_model_name_or_path`={text_model_name_or_path!r} gave only {len(usable)} of the text "
                    f"encoder's {len(target)} tensors; is it a BERT or LayoutLM checkpoint?"
                )
            if fresh:
                logger.info(f"Text encoder tensors not in the text checkpoint (start fresh): {fresh}")
        if backbone_weights is not None:
            load_backbone_weights(base.visual_embeddings.backbone, backbone_weights, config.backbone)
        return model

    def parameter_groups(self) -> dict[str, str]:
        """Each parameter's part of the model, by name (as `named_parameters` gives it): `"backbone"`, `"visual"`
        (the rest of the visual branch: projection, norms, gate), `"text"` (the LayoutLM encoder) or `"head"`
        (everything else: the classifier). Training code gives each part its own learning rate from this."""
        base = getattr(self, self.base_model_prefix, self)
        part = {id(p): "text" for p in base.layoutlm.parameters()}
        if base.visual_embeddings is not None:
            part.update({id(p): "visual" for p in base.visual_embeddings.parameters()})
            part.update({id(p): "backbone" for p in base.visual_embeddings.backbone.parameters()})
        return {name: part.get(id(p), "head") for name, p in self.named_parameters()}

    def backbone_stages(self) -> dict[str, list[str]]:
        """The backbone's stages in input-to-output order, each with its parameters' names (as `named_parameters`
        gives them): top-level modules (`conv1`, `bn1`, `layer1`, ... for ResNets) and the blocks of a `features`
        sequence (`features.0`, `features.1`, ... for MobileNets, EfficientNets, ConvNeXt). Empty without the visual
        branch."""
        base = getattr(self, self.base_model_prefix, self)
        if base.visual_embeddings is None:
            return {}
        backbone = base.visual_embeddings.backbone
        names = {id(p): n for n, p in self.named_parameters()}
        stages = {}
        for name, child in backbone.named_children():
            parts = child.named_children() if name == "features" else [("", child)]
            for index, block in parts:
                params = [names[id(p)] for p in block.parameters() if id(p) in names]
                if params:
                    stages[f"{name}.{index}" if index else name] = params
        return stages


class LayoutLMRoIAlignModel(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM whose token representations get each token box's RoIAlign-pooled image feature added."""

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.config = config
        self.layoutlm = LayoutLMModel(config)
        self.visual_embeddings = LayoutLMRoIAlignVisualEmbeddings(config) if config.use_visual_features else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.layoutlm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.layoutlm.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        image_index: torch.LongTensor | None = None,
        output_feature_map: bool = False,
        **kwargs,
    ) -> LayoutLMRoIAlignModelOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box `(x0, y0, x1, y1)` normalized to 0..1000 (LayoutLM's convention); every sub-word token
            carries its word's box. The same boxes, scaled to the image, are the RoIs of the visual branch; the first
            token's RoI is the whole page (`config.visual_cls_is_page`).
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized (see `LayoutLMRoIAlignImageProcessor`), one per sequence; or one
            per page `(num_images, 3, image_size, image_size)` with `image_index`.
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` that each sequence reads, so that the windows of one long page share one
            image and one backbone run (e.g. `overflow_to_sample_mapping` with `pixel_values` per page). Default:
            image `b` for sequence `b`.
        output_feature_map (`bool`, *optional*, defaults to `False`):
            Also return the backbone's feature map (`feature_map`), for heads that pool other boxes from it.
        """
        _check_inputs(self.config, input_ids, inputs_embeds, bbox, attention_mask, pixel_values, image_index)
        text_outputs = self.layoutlm(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        sequence_output = text_outputs.last_hidden_state  # (B, L, hidden)
        visual = feature_map = None
        if self.visual_embeddings is not None:
            visual = self.visual_embeddings(
                pixel_values.to(self.dtype), bbox, attention_mask, image_index, return_feature_map=output_feature_map
            )
            if output_feature_map:
                visual, feature_map = visual
            sequence_output = sequence_output + visual.to(sequence_output.dtype)
            pooled_output = self.layoutlm.pooler(sequence_output)
        else:
            pooled_output = text_outputs.pooler_output
        return LayoutLMRoIAlignModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=text_outputs.hidden_states,
            attentions=text_outputs.attentions,
            visual_embeddings=visual,
            feature_map=feature_map,
        )


class LayoutLMRoIAlignForTokenClassification(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM + RoIAlign image embeddings with a token classification head (e.g. FUNSD entity labelling)."""

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.layoutlm_roialign.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box normalized to 0..1000; see [`LayoutLMRoIAlignModel.forward`].
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized, one per sequence (or one per page with `image_index`).
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token labels in `[0, num_labels - 1]`; -100 is ignored (padding, special and non-first sub-word tokens).
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` each sequence reads; see [`LayoutLMRoIAlignModel.forward`].
        """
        if labels is not None:
            shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
            _check_labels(labels, self.num_labels, shape)
        outputs = self.layoutlm_roialign(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            image_index=image_index,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))  # (B, L, num_labels)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels).float(), labels.view(-1))
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class LayoutLMRoIAlignForSequenceClassification(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM + RoIAlign image embeddings with a document classification head (e.g. RVL-CDIP).

    The head reads the pooled first token, whose visual feature is the whole page.
    """

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.layoutlm_roialign.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box normalized to 0..1000; see [`LayoutLMRoIAlignModel.forward`].
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized, one per sequence (or one per page with `image_index`).
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Document labels in `[0, num_labels - 1]` (cross-entropy), or floats for regression (`num_labels == 1`)
            or multi-label classification (`config.problem_type`).
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` each sequence reads; see [`LayoutLMRoIAlignModel.forward`].
        """
        outputs = self.layoutlm_roialign(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            image_index=image_index,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = MSELoss()(logits.squeeze(-1).float(), labels.float().view(-1))
            elif self.config.problem_type == "single_label_classification":
                if not torch.compiler.is_compiling() and ((labels < 0) | (labels >= self.num_labels)).any():
                    raise ValueError(f"`labels` must be in 0..{self.num_labels - 1}, got {labels.tolist()}.")
                loss = CrossEntropyLoss()(logits.view(-1, self.num_labels).float(), labels.view(-1))
            else:
                loss = BCEWithLogitsLoss()(logits.float(), labels.float())
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class LayoutLMRoIAlignForMaskedLM(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM + RoIAlign image embeddings with a masked-language-model head: the masked visual-language model
    (MVLM) of the LayoutLM paper (section 2.3). Masked tokens keep their boxes, and the head predicts them from the
    fused states (text, layout and, with the visual branch on, each token's RoI feature).

    The head is LayoutLM's own (`LayoutLMOnlyMLMHead`: dense, activation, LayerNorm, then a decoder tied to the word
    embeddings, as BERT's is). The encoder sits under `layoutlm_roialign`, as in the task heads, so a checkpoint of
    this class loads into [`LayoutLMRoIAlignForTokenClassification`], [`LayoutLMRoIAlignForSequenceClassification`]
    and [`LayoutLMRoIAlignForRelationExtraction`] with only their heads newly initialized.

    A masked token's own RoI shows the word it hides; `layoutlm_roialign.pretraining` therefore blanks the boxes of
    the tokens to predict in the page image before the backbone sees it (as LayoutLMv2 does).
    """

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "layoutlm_roialign.layoutlm.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config)
        self.cls = LayoutLMOnlyMLMHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.layoutlm_roialign.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box normalized to 0..1000, masked tokens included (they keep their word's box); see
            [`LayoutLMRoIAlignModel.forward`].
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized, with the boxes of the tokens to predict blanked (see the class
            docstring); one per sequence (or one per page with `image_index`).
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The original token ids at the positions to predict, in `[0, vocab_size - 1]`; -100 elsewhere. In
            training with `config.mlm_sparse_prediction`, `logits` are those positions' only.
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` each sequence reads; see [`LayoutLMRoIAlignModel.forward`].
        """
        if labels is not None:
            shape = tuple(input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1])
            if tuple(labels.shape) != shape:
                raise ValueError(f"`labels` must have the inputs' shape {shape}, got {tuple(labels.shape)}.")
            if not torch.compiler.is_compiling():
                bad = (labels != -100) & ((labels < 0) | (labels >= self.config.vocab_size))
                if bad.any():
                    raise ValueError(
                        f"`labels` must be token ids in 0..{self.config.vocab_size - 1} (the masked tokens' original "
                        f"ids) or -100 (not predicted), got {labels[bad].unique().tolist()}; is the tokenizer the "
                        "model's?"
                    )
        outputs = self.layoutlm_roialign(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            image_index=image_index,
            **kwargs,
        )
        sequence_output = outputs.last_hidden_state
        if labels is not None and self.training and self.config.mlm_sparse_prediction:
            predicted = labels != -100
            sequence_output, labels = sequence_output[predicted], labels[predicted]  # (num_predicted, hidden)
        logits = self.cls(sequence_output)  # (B, L, vocab_size), or (num_predicted, vocab_size)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size).float(), labels.reshape(-1))
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


@dataclass
class LayoutLMRoIAlignRelationExtractionOutput(TokenClassifierOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*):
        The token cross-entropy (with `labels`) plus `config.link_loss_weight` times the link loss (with
        `link_labels`).
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_labels)`):
        Token classification scores, as [`LayoutLMRoIAlignForTokenClassification`] gives them.
    link_logits (`torch.FloatTensor` of shape `(batch_size, num_entities, num_entities)`, *optional*):
        `link_logits[b, k, v]`: log p(key `k` | value `v`), the log-softmax of the pair scores over the candidate
        keys of value `v` and one "no key" option (so `exp` sums to at most 1 over `k`, and 1 minus that sum is the
        probability that `v` has no key). `exp(link_logits) > config.link_threshold` predicts the pair. Pairs that
        are not candidates (types outside `config.link_types`, padding rows, an entity with itself) hold
        `NOT_A_CANDIDATE` (-10000). `None` without `entity_spans`.
    fused_states (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
        The token states the heads read (LayoutLM's last hidden states plus the visual term), with
        `output_link_states=True`: [`~LayoutLMRoIAlignForRelationExtraction.link_logits_from_states`] links any
        entities from them without another encoder pass.
    feature_map (`torch.FloatTensor` of shape `(num_images, channels, height, width)`, *optional*):
        The backbone's feature map, with `output_link_states=True` (and the visual branch).
    """

    link_logits: torch.FloatTensor | None = None
    fused_states: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None


NOT_A_CANDIDATE = -1.0e4  # the link log-probability of pairs that are never scored (probability 0; finite in fp16)


class ScaledLinear(nn.Linear):
    """A linear layer computing `x @ (scale * weight).T + scale * bias`: its parameters are stored divided by `scale`
    (`_init_weights` draws them so), so the function at initialization is unchanged while Adam's steps, which are
    about `lr` per parameter whatever its size, move the effective weights `scale` times faster (muP's output
    multiplier). The link head uses it to learn from scratch at the pretrained encoder's learning rate."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, scale: float = 1.0) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.scale = scale

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.scale
        return nn.functional.linear(input, self.weight * self.scale, bias)


class LayoutLMRoIAlignBiaffine(nn.Module):
    """Biaffine pair scorer (Dozat & Manning, 2017; LayoutXLM's relation-extraction decoder): key and value MLPs,
    then `score(k, v) = k^T W v + u_k . k + u_v . v + b` for every (key, value) pair, and a "no key" score per value
    (`no_key`: a linear layer on the value's projection), the dummy option of coreference resolvers."""

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__()
        size = config.link_hidden_size or max(1, config.hidden_size // 2)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        scale = getattr(config, "link_head_scale", 1.0)

        def linear(fan_in: int, fan_out: int, bias: bool = True) -> ScaledLinear:
            return ScaledLinear(fan_in, fan_out, bias=bias, scale=scale)

        self.key = nn.Sequential(linear(config.hidden_size, size), nn.ReLU(), nn.Dropout(dropout))
        self.value = nn.Sequential(linear(config.hidden_size, size), nn.ReLU(), nn.Dropout(dropout))
        self.bilinear = linear(size, size, bias=False)
        self.key_linear = linear(size, 1)
        self.value_linear = linear(size, 1, bias=False)
        self.no_key = linear(size, 1)
        self.box_relation = None
        if config.link_box_relation:
            self.box_relation = nn.Sequential(linear(len(BOX_RELATION_FEATURES), size), nn.ReLU(), linear(size, 1))
            for layer in (self.box_relation[0], self.box_relation[2]):
                layer.torch_default_init = True  # read by `_init_weights`

    def forward(self, entities: torch.Tensor, boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, E, hidden)` entity representations (and `(B, E, 4)` entity boxes, 0..1000) -> `(B, E, E)` scores of
        (key row, value column) and `(B, E)` "no key" scores of each value."""
        keys, values = self.key(entities), self.value(entities)  # (B, E, size)
        scores = self.bilinear(keys) @ values.transpose(1, 2)  # (B, E, E)
        scores = scores + self.key_linear(keys) + self.value_linear(values).transpose(1, 2)
        if self.box_relation is not None and boxes is not None:
            scores = scores + self.box_relation(box_relation_features(boxes).to(keys.dtype)).squeeze(-1)
        return scores, self.no_key(values).squeeze(-1)


BOX_RELATION_FEATURES = ("dx", "dy", "gap_x", "gap_y", "abs_dx", "abs_dy", "key_width", "key_height")


def box_relation_features(boxes: torch.Tensor) -> torch.Tensor:
    """`(B, E, 4)` boxes (0..1000) -> `(B, E, E, 8)` where the value (column) sits relative to the key (row), in
    tenths of the page side (order 1 for neighbours): centre offsets, the gaps between the facing edges (negative
    when they overlap), their sizes, and the key's size (BOX_RELATION_FEATURES)."""
    b = boxes.float() / 100
    key, value = b[:, :, None], b[:, None, :]  # (B, E, 1, 4), (B, 1, E, 4)
    centre_k = (key[..., :2] + key[..., 2:]) / 2
    centre_v = (value[..., :2] + value[..., 2:]) / 2
    d = centre_v - centre_k  # (B, E, E, 2)
    gap = (value[..., :2] - key[..., 2:]).expand_as(d)  # value's left/top edge minus key's right/bottom edge
    size = (key[..., 2:] - key[..., :2]).expand_as(d)
    return torch.cat([d, gap, d.abs(), size], dim=-1)


def _check_entities(
    entity_spans: torch.Tensor,
    entity_labels: torch.Tensor | None,
    link_labels: torch.Tensor | None,
    shape: tuple[int, int],
    num_types: int,
) -> None:
    """Raise a `ValueError` naming the argument for entity inputs the linking head cannot read."""
    batch_size, seq_len = shape
    if entity_spans.dim() != 3 or entity_spans.shape[0] != batch_size or entity_spans.shape[2] != 2:
        raise ValueError(
            f"`entity_spans` must have shape (batch_size, num_entities, 2) = ({batch_size}, E, 2), got "
            f"{tuple(entity_spans.shape)}."
        )
    if entity_spans.is_floating_point():
        raise ValueError("`entity_spans` must hold integer token positions (first, last + 1), not floats.")
    num_entities = entity_spans.shape[1]
    if entity_labels is not None and tuple(entity_labels.shape) != (batch_size, num_entities):
        raise ValueError(
            f"`entity_labels` must have shape (batch_size, num_entities) = {(batch_size, num_entities)}, got "
            f"{tuple(entity_labels.shape)}."
        )
    if link_labels is not None and tuple(link_labels.shape) != (batch_size, num_entities, num_entities):
        raise ValueError(
            f"`link_labels` must have shape (batch_size, num_entities, num_entities) = "
            f"{(batch_size, num_entities, num_entities)}, got {tuple(link_labels.shape)}."
        )
    if torch.compiler.is_compiling() or num_entities == 0:
        return
    start, end = entity_spans.unbind(-1)
    padding = (start == 0) & (end == 0)
    bad = ~padding & ((start < 1) | (end <= start) | (end > seq_len))
    if bad.any():
        b, e = bad.nonzero()[0].tolist()
        raise ValueError(
            f"`entity_spans` sequence {b}, entity {e} is {entity_spans[b, e].tolist()}: a span is (first token, last "
            f"token + 1) with 1 <= first < last + 1 <= sequence length {seq_len} (position 0 is [CLS]), or (0, 0) "
            "for a padding row. An entity past the sequence belongs to another window (the processor keeps only "
            "the entities whose tokens a window holds)."
        )
    if entity_labels is not None:
        wrong = (entity_labels != -100) & ((entity_labels < 0) | (entity_labels >= num_types))
        if wrong.any():
            raise ValueError(
                f"`entity_labels` must be in 0..{num_types - 1} (indices into `config.resolved_entity_types`) or "
                f"-100, got {entity_labels[wrong].unique().tolist()}."
            )
    if link_labels is not None:
        wrong = (link_labels != -100) & (link_labels != 0) & (link_labels != 1)
        if wrong.any():
            raise ValueError(
                f"`link_labels` must be 1 (a gold pair), 0 (not a pair) or -100 (ignored), got "
                f"{link_labels[wrong].unique().tolist()}."
            )


class LayoutLMRoIAlignForRelationExtraction(LayoutLMRoIAlignPreTrainedModel):
    """LayoutLM + RoIAlign image embeddings with two heads: the token classifier of
    [`LayoutLMRoIAlignForTokenClassification`] (same parameter names, so its checkpoints load into this class) and a
    key-value linking head (LayoutXLM-style relation extraction).

    One checkpoint does both tasks: label the words, group them into entities, then score (key, value) pairs among
    those entities (or among gold entities, given as `entity_spans`). Each entity is represented by the mean of its
    tokens' fused states, plus a learned embedding of its type (`entity_labels`), plus (`link_entity_box_feature`,
    with the visual branch) the RoIAlign feature of its whole box, pooled from the same backbone feature map as the
    token features; a biaffine layer scores every ordered pair, plus (`link_box_relation`) a small MLP of where the
    value's box sits relative to the key's. Candidates are the pairs whose types are in
    `config.link_types` (default question -> answer), within one window; the other pairs get `NOT_A_CANDIDATE`.
    Each value chooses among its candidate keys and a learned "no key" option (a softmax; the loss is its
    cross-entropy with the gold key, or "no key" for a value without one), and a pair is predicted when
    p(key | value) > `config.link_threshold`. "No answer" is a key that no value chose; a key may get several values,
    a value at most one key (`config.link_one_value_key`).
    """

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.layoutlm_roialign = LayoutLMRoIAlignModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        types = config.resolved_entity_types
        unknown = sorted({t for pair in config.link_types for t in pair} - set(types))
        if unknown:
            raise ValueError(
                f"`config.link_types` {config.link_types} names types {unknown} that are not entity types {types} "
                "(`config.entity_types`, or the B-/I- labels of `id2label`)."
            )
        self.entity_type_embeddings = nn.Embedding(max(1, len(types)), config.hidden_size)
        # (key type, value type) index pairs; not a buffer: `from_pretrained` builds on the meta device and would
        # leave a non-persistent buffer unset.
        self.candidate_type_pairs = [(types.index(key), types.index(value)) for key, value in config.link_types]
        self.use_box_feature = config.use_visual_features and config.link_entity_box_feature
        self.link_head = LayoutLMRoIAlignBiaffine(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.layoutlm_roialign.get_input_embeddings()

    def candidate_mask(self, entity_spans: torch.Tensor, entity_labels: torch.Tensor | None) -> torch.Tensor:
        """`(B, E, E)` bool: which (key, value) pairs are scored: both rows real entities, not the same entity, and
        (with `entity_labels`) their types a pair of `config.link_types`; without labels every pair of real
        entities is a candidate."""
        real = entity_spans[..., 1] > entity_spans[..., 0]  # (B, E); padding rows are (0, 0)
        mask = real[:, :, None] & real[:, None, :]
        mask = mask & ~torch.eye(entity_spans.shape[1], dtype=torch.bool, device=entity_spans.device)
        if entity_labels is not None:
            known = entity_labels >= 0
            types = entity_labels.clamp(min=0)
            size = len(self.config.resolved_entity_types) or 1
            table = torch.zeros(size, size, dtype=torch.bool, device=entity_spans.device)  # key type -> value type
            for key, value in self.candidate_type_pairs:
                table[key, value] = True
            allowed = table[types[:, :, None], types[:, None, :]]  # (B, E, E)
            mask = mask & allowed & known[:, :, None] & known[:, None, :]
        return mask

    def entity_representations(
        self,
        sequence_output: torch.Tensor,
        bbox: torch.LongTensor | None,
        entity_spans: torch.LongTensor,
        entity_labels: torch.LongTensor | None,
        feature_map: torch.Tensor | None,
        image_index: torch.LongTensor | None,
        image_size: tuple[int, int] | None,
    ) -> torch.Tensor:
        """Mean of each entity's token states + its type embedding + its box's RoIAlign feature: `(B, E, hidden)`;
        and each entity's box (the union of its tokens' boxes, 0..1000): `(B, E, 4)`."""
        batch_size, seq_len, _ = sequence_output.shape
        positions = torch.arange(seq_len, device=sequence_output.device)
        start, end = entity_spans[..., 0:1], entity_spans[..., 1:2]  # (B, E, 1)
        members = (positions >= start) & (positions < end)  # (B, E, L)
        weights = members.to(sequence_output.dtype)
        counts = weights.sum(-1, keepdim=True).clamp(min=1)
        entities = (weights @ sequence_output) / counts  # (B, E, hidden)
        if entity_labels is not None:
            types = self.entity_type_embeddings(entity_labels.clamp(min=0))
            entities = entities + types * (entity_labels >= 0)[..., None].to(types.dtype)
        union = None
        if bbox is not None:
            inside = members[..., None]  # (B, E, L, 1)
            boxes = bbox[:, None].expand(-1, entity_spans.shape[1], -1, -1)  # (B, E, L, 4)
            low = torch.where(inside, boxes, torch.full_like(boxes, 1000)).amin(2)  # (B, E, 4)
            high = torch.where(inside, boxes, torch.zeros_like(boxes)).amax(2)
            union = torch.cat([low[..., :2], high[..., 2:]], dim=-1)  # (B, E, 4): the entity's box, 0..1000
        if self.use_box_feature and feature_map is not None and entity_spans.shape[1] > 0:
            visual = self.layoutlm_roialign.visual_embeddings
            real = (entity_spans[..., 1] > entity_spans[..., 0]).reshape(-1)
            page = image_index if image_index is not None else torch.arange(batch_size, device=bbox.device)
            page = page.to(bbox.device)[:, None].expand(-1, entity_spans.shape[1]).reshape(-1)
            height, width = image_size
            scale = torch.tensor([width / 1000, height / 1000, width / 1000, height / 1000], device=bbox.device)
            rois = torch.cat([page[:, None].float(), union.reshape(-1, 4).float() * scale], dim=1)[real]
            pooled = visual.embed(visual.pool(feature_map, rois))  # (num_entities, hidden)
            box_features = pooled.new_zeros(real.shape[0], pooled.shape[-1]).index_copy(
                0, real.nonzero()[:, 0], pooled
            )
            entities = entities + box_features.view(batch_size, -1, pooled.shape[-1]).to(entities.dtype)
        return entities, union

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bbox: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        entity_spans: torch.LongTensor | None = None,
        entity_labels: torch.LongTensor | None = None,
        link_labels: torch.LongTensor | None = None,
        output_link_states: bool = False,
        **kwargs,
    ) -> LayoutLMRoIAlignRelationExtractionOutput:
        r"""
        bbox (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`):
            Each token's box normalized to 0..1000; see [`LayoutLMRoIAlignModel.forward`].
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            The page images, ImageNet-normalized, one per sequence (or one per page with `image_index`).
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token labels in `[0, num_labels - 1]`; -100 is ignored.
        image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image of `pixel_values` each sequence reads; see [`LayoutLMRoIAlignModel.forward`].
        entity_spans (`torch.LongTensor` of shape `(batch_size, num_entities, 2)`, *optional*):
            Each entity's token positions `(first, last + 1)` in its sequence (the processor's `entities=` writes
            them); padding rows are `(0, 0)`. Without them only the token logits are computed.
        entity_labels (`torch.LongTensor` of shape `(batch_size, num_entities)`, *optional*):
            Each entity's type, an index into `config.resolved_entity_types` (-100: unknown or padding): gold types
            at training, predicted ones end to end. They decide the candidate pairs (`config.link_types`); without
            them every pair of entities is a candidate.
        link_labels (`torch.LongTensor` of shape `(batch_size, num_entities, num_entities)`, *optional*):
            1 where entity `v` is the value of key entity `k`, 0 where not, -100 to ignore. The link loss is, per
            value with a candidate key, the cross-entropy of the softmax over its candidate keys and "no key" with
            its gold key (or "no key"); gold pairs that are not candidates are ignored.
        output_link_states (`bool`, *optional*, defaults to `False`):
            Also return `fused_states` and `feature_map`, from which `link_logits_from_states` scores the pairs of
            entities decided after this pass (labels and pairs from one encoder and one backbone pass).
        """
        shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:-1])
        if labels is not None:
            _check_labels(labels, self.num_labels, shape)
        if entity_spans is None and (entity_labels is not None or link_labels is not None):
            raise ValueError("`entity_labels` and `link_labels` need `entity_spans` (which tokens form each entity).")
        if entity_spans is not None:
            _check_entities(entity_spans, entity_labels, link_labels, shape, len(self.config.resolved_entity_types))
        want_map = (entity_spans is not None or output_link_states) and self.use_box_feature
        outputs = self.layoutlm_roialign(
            input_ids=input_ids,
            bbox=bbox,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
            image_index=image_index,
            output_feature_map=want_map,
            **kwargs,
        )
        sequence_output = outputs.last_hidden_state
        logits = self.classifier(self.dropout(sequence_output))  # (B, L, num_labels)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels).float(), labels.view(-1))
        link_logits = None
        if entity_spans is not None:
            image_size = tuple(pixel_values.shape[-2:]) if pixel_values is not None else None
            link_logits, log_probs, candidates = self._link(
                sequence_output, bbox, entity_spans, entity_labels, outputs.feature_map, image_index, image_size
            )
            if link_labels is not None:
                # Values that have a candidate key and labels: -log of the probability of their gold key(s), or of
                # "no key" for a value with no gold key among its candidates.
                gold = candidates & (link_labels == 1)
                has_gold = gold.any(dim=1)  # (B, E)
                target = torch.cat([gold, ~has_gold[:, None, :]], dim=1)  # (B, E + 1, E)
                chosen = log_probs.masked_fill(~target, float("-inf")).logsumexp(dim=1)  # (B, E)
                labelled = ((link_labels != -100) & candidates).any(dim=1)  # (B, E)
                link_loss = -chosen[labelled].sum() / labelled.sum().clamp(min=1) + 0.0 * log_probs[:, -1].sum()
                link_loss = self.config.link_loss_weight * link_loss
                loss = link_loss if loss is None else loss + link_loss
        return LayoutLMRoIAlignRelationExtractionOutput(
            loss=loss,
            logits=logits,
            link_logits=link_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            fused_states=sequence_output if output_link_states else None,
            feature_map=outputs.feature_map if output_link_states else None,
        )

    def _link(
        self,
        sequence_output: torch.Tensor,
        bbox: torch.LongTensor | None,
        entity_spans: torch.LongTensor,
        entity_labels: torch.LongTensor | None,
        feature_map: torch.Tensor | None,
        image_index: torch.LongTensor | None,
        image_size: tuple[int, int] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(link_logits, log_probs, candidates)`: the link head on token states; `log_probs` `(B, E + 1, E)` is
        each value's log-softmax over its candidate keys and "no key" (the last row)."""
        entity_spans = entity_spans.long()
        entity_labels = entity_labels.long() if entity_labels is not None else None
        entities, boxes = self.entity_representations(
            sequence_output, bbox, entity_spans, entity_labels, feature_map, image_index, image_size
        )
        scores, no_key = self.link_head(self.dropout(entities), boxes)  # (B, E, E), (B, E)
        scores, no_key = scores.float(), no_key.float()
        candidates = self.candidate_mask(entity_spans, entity_labels)
        # Per value (column): a softmax over its candidate keys (rows) and "no key" (the last row).
        options = torch.cat([scores.masked_fill(~candidates, float("-inf")), no_key[:, None, :]], dim=1)
        log_probs = options.log_softmax(dim=1)  # (B, E + 1, E)
        link_logits = log_probs[:, :-1].masked_fill(~candidates, NOT_A_CANDIDATE)
        return link_logits, log_probs, candidates

    def link_logits_from_states(
        self,
        fused_states: torch.Tensor,
        bbox: torch.LongTensor,
        entity_spans: torch.LongTensor,
        entity_labels: torch.LongTensor | None = None,
        feature_map: torch.Tensor | None = None,
        image_index: torch.LongTensor | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """The `link_logits` of `forward` from what an earlier `forward(..., output_link_states=True)` returned:
        its `fused_states` and `feature_map`, the same `bbox` and `image_index`, and the entities as `forward`
        takes them (decided after that pass, e.g. from its token labels). `image_size` is the `pixel_values`
        side `(height, width)` (default `config.image_size`)."""
        shape = tuple(fused_states.shape[:2])
        _check_entities(entity_spans, entity_labels, None, shape, len(self.config.resolved_entity_types))
        if feature_map is not None and image_size is None:
            image_size = (self.config.image_size, self.config.image_size)
        return self._link(fused_states, bbox, entity_spans, entity_labels, feature_map, image_index, image_size)[0]
