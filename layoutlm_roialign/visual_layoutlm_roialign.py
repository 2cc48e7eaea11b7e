"""The visual branch of LayoutLM with RoIAlign image embeddings: the torchvision backbone (built, its BatchNorm layers
replaced, its pretrained weights named and loaded) and the module that pools one RoIAlign feature per token box and
projects it to the hidden size (`LayoutLMRoIAlignVisualEmbeddings`).

This file travels with every checkpoint (remote code, imported by the modeling file): it imports only torch,
torchvision and its sibling configuration file.
"""

from __future__ import annotations

import math
import os

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d, roi_align

from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig

__all__ = [
    "LayoutLMRoIAlignVisualEmbeddings",
    "backbone_stages",
    "backbone_weights_name",
    "build_backbone",
    "load_backbone_weights",
]


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


def backbone_stages(backbone: nn.Module) -> dict[str, nn.Module]:
    """The stages of a backbone built by `build_backbone`, in input-to-output order: its top-level modules (`conv1`,
    `bn1`, `layer1`, ... for ResNets) and the blocks of a `features` sequence (`features.0`, `features.1`, ... for
    MobileNets, EfficientNets, ConvNeXt)."""
    stages = {}
    for name, child in backbone.named_children():
        for index, block in child.named_children() if name == "features" else [("", child)]:
            stages[f"{name}.{index}" if index else name] = block
    return stages


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


def _read_backbone_weights(weights: str | os.PathLike | dict, backbone_name: str) -> dict:
    """The state dict that `weights` (see `load_backbone_weights`) names."""
    if isinstance(weights, dict):
        return weights
    if os.path.isfile(str(weights)):
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        return state
    member = _torchvision_weights(str(weights), backbone_name)
    if member is None:
        raise ValueError(
            f"`backbone_weights`={weights!r} is neither a file nor a weight of {backbone_name} "
            f"(known: {[w.name for w in torchvision.models.get_model_weights(backbone_name)]} or 'DEFAULT')."
        )
    return member.get_state_dict(progress=True)


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
    state = _read_backbone_weights(weights, backbone_name)
    target = backbone.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"Backbone weights miss {len(missing)} of the {backbone_name} backbone's tensors, e.g. {missing[:3]} "
            "(they must use torchvision's key names; `layoutlm_roialign.assembly.map_state_dict_by_position` "
            "renames an export under other names)."
        )
    for key in target:
        if key in state and state[key].shape != target[key].shape:
            raise ValueError(
                f"Backbone weight {key!r} {tuple(state[key].shape)} does not fit the backbone's "
                f"{tuple(target[key].shape)}."
            )
    backbone.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)


def _may_be_reentrant(checkpoint_func) -> bool:
    """Whether `checkpoint_func` (what `gradient_checkpointing_enable` sets: `torch.utils.checkpoint.checkpoint` with
    its keyword arguments bound by `functools.partial`) may checkpoint reentrantly: unless it says
    `use_reentrant=False`, torch's default or a custom function might."""
    return getattr(checkpoint_func, "keywords", {}).get("use_reentrant") is not False


class LayoutLMRoIAlignVisualEmbeddings(nn.Module):
    """Backbone + RoIAlign + projection: one visual embedding per token box.

    RoIs are built from LayoutLM's `bbox` inside the model, so text and image boxes can never disagree. Only tokens
    with `attention_mask == 1` are pooled, and each distinct (page, box) once (sub-word tokens share their word's
    box), in a single `roi_align` call for the whole batch.

    Performance switches (attributes, all on by default; each gives the same output as the straightforward path, to
    float32 rounding, and `lab/benchmarks/bench.py` measures them):

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
        # (B*L,); an expand, not `repeat_interleave`, which the ONNX exporter translates for a fixed batch only
        page_index = image_index.to(bbox.device, bbox.dtype)[:, None].expand(batch_size, seq_len).reshape(-1)
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
        weight = self.projection.weight  # a method of an int8 (dynamically quantized) projection, which takes float32
        pooled = pooled.to(weight.dtype) if isinstance(weight, torch.Tensor) else pooled
        if self.feature_norm is not None:
            pooled = self.feature_norm(pooled)
        pooled = self.dropout(pooled)
        embeddings = self.projection(pooled)
        if self.layer_norm is not None:
            embeddings = self.layer_norm(embeddings)
        if self.gate is not None:
            embeddings = embeddings * self.gate
        return embeddings

    def embed_boxes(
        self, feature_map: torch.Tensor, boxes: torch.Tensor, page: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """The visual embeddings of other boxes than the tokens' (e.g. whole entities) pooled from `feature_map`:
        `boxes` `(N, 4)` in 0..1000 on pages `page` `(N,)` of images of side `image_size` `(height, width)` ->
        `(N, hidden)`."""
        height, width = image_size
        scale = torch.tensor([width / 1000, height / 1000, width / 1000, height / 1000], device=boxes.device)
        rois = torch.cat([page[:, None].float(), boxes.float() * scale], dim=1)  # (N, 5)
        return self.embed(self.pool(feature_map, rois))

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
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            if not pixel_values.requires_grad and _may_be_reentrant(self._gradient_checkpointing_func):
                # Reentrant checkpointing back-propagates only through the inputs that require grad, and the page
                # images never do: the backbone, the projection and its norms would get no gradient at all and
                # train as if frozen. An alias of the images that requires grad (what transformers'
                # `enable_input_require_grads` does for the text embeddings) keeps the branch checkpointed, which is
                # the point: the backbone's feature maps are the largest activations of the model. Running the
                # branch unwrapped would keep them all; the gradient of the images costs one transposed first
                # convolution, to 3 channels, and is discarded.
                pixel_values = pixel_values.detach().requires_grad_()
            args = (pixel_values, bbox, attention_mask, image_index, return_feature_map)
            return self._gradient_checkpointing_func(self._forward, *args)
        return self._forward(pixel_values, bbox, attention_mask, image_index, return_feature_map)
