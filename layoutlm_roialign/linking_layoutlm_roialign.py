"""The key-value link head's building blocks, assembled by `LayoutLMRoIAlignForRelationExtraction`: its entity
representations (mean token state, box, RoIAlign box feature), which pairs it scores (`candidate_mask`), the biaffine
scorer with its box-geometry term, the per-value softmax over candidate keys and "no key", and its loss.

This file travels with every checkpoint (remote code, imported by the modeling file): it imports only torch,
transformers and its sibling configuration file.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as init

from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig

__all__ = [
    "NOT_A_CANDIDATE",
    "BOX_RELATION_FEATURES",
    "LayoutLMRoIAlignBiaffine",
    "ScaledLinear",
    "box_relation_features",
    "candidate_mask",
    "candidate_type_pairs",
    "init_scaled_linear",
    "entity_box_features",
    "entity_boxes",
    "entity_states",
    "link_log_probs",
    "link_loss",
]

NOT_A_CANDIDATE = -1.0e4  # the link log-probability of pairs that are never scored (probability 0; finite in fp16)
BOX_RELATION_FEATURES = ("dx", "dy", "gap_x", "gap_y", "abs_dx", "abs_dy", "key_width", "key_height")


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


def init_scaled_linear(module: ScaledLinear, initializer_range: float) -> None:
    """Initialize `module` (from the model's `_init_weights`): its parameters are drawn divided by `scale`, so that
    `scale * weight` has the usual initial distribution, N(0, `initializer_range`) with a zero bias, or PyTorch's own
    Linear init where the layer is marked `torch_default_init`."""
    scale = module.scale
    if getattr(module, "torch_default_init", False):
        # PyTorch's own Linear init (kaiming_uniform_ with a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))), for the
        # small MLP on box geometry (inputs of order 1): N(0, 0.02) would start its output near zero through two
        # layers.
        bound = 1 / math.sqrt(module.in_features)
        init.uniform_(module.weight, -bound / scale, bound / scale)
        if module.bias is not None:
            init.uniform_(module.bias, -bound / scale, bound / scale)
    else:
        init.normal_(module.weight, mean=0.0, std=initializer_range / scale)
        if module.bias is not None:
            init.zeros_(module.bias)


class LayoutLMRoIAlignBiaffine(nn.Module):
    """Biaffine pair scorer (Dozat & Manning, 2017; LayoutXLM's relation-extraction decoder): key and value MLPs,
    then `score(k, v) = k^T W v + u_k . k + u_v . v + b` for every (key, value) pair, and a "no key" score per value
    (`no_key`: a linear layer on the value's projection), the dummy option of coreference resolvers. Every layer is a
    `ScaledLinear` with `config.link_head_scale`."""

    def __init__(self, config: LayoutLMRoIAlignConfig):
        super().__init__()
        size = config.link_hidden_size or max(1, config.hidden_size // 2)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        scale = config.link_head_scale

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


def candidate_type_pairs(config: LayoutLMRoIAlignConfig) -> list[tuple[int, int]]:
    """`config.link_types` as `(key type, value type)` indices into `config.resolved_entity_types`; none when the config
    names no entity types at all (no `entity_types`, no `B-`/`I-` labels): its entities are untyped, and every pair
    of entities is a candidate.

    Raises:
        ValueError: if a link type is not an entity type.
    """
    types = config.resolved_entity_types
    if not types:
        return []
    unknown = sorted({t for pair in config.link_types for t in pair} - set(types))
    if unknown:
        raise ValueError(
            f"`config.link_types` {config.link_types} names types {unknown} that are not entity types {types} "
            "(`config.entity_types`, or the B-/I- labels of `id2label`)."
        )
    return [(types.index(key), types.index(value)) for key, value in config.link_types]


def candidate_mask(
    entity_spans: torch.Tensor,
    entity_labels: torch.Tensor | None,
    type_pairs: list[tuple[int, int]],
    num_types: int,
) -> torch.Tensor:
    """`(B, E, E)` bool: which (key, value) pairs are scored: both rows real entities, not the same entity, and
    (with `entity_labels`) their types one of `type_pairs` (`(key type, value type)` indices among `num_types`);
    without labels every pair of real entities is a candidate."""
    real = entity_spans[..., 1] > entity_spans[..., 0]  # (B, E); padding rows are (0, 0)
    mask = real[:, :, None] & real[:, None, :]
    mask = mask & ~torch.eye(entity_spans.shape[1], dtype=torch.bool, device=entity_spans.device)
    if entity_labels is not None:
        known = entity_labels >= 0
        types = entity_labels.clamp(min=0)
        size = num_types or 1
        table = torch.zeros(size, size, dtype=torch.bool, device=entity_spans.device)  # key type -> value type
        for key, value in type_pairs:
            table[key, value] = True
        allowed = table[types[:, :, None], types[:, None, :]]  # (B, E, E)
        mask = mask & allowed & known[:, :, None] & known[:, None, :]
    return mask


def _entity_members(entity_spans: torch.Tensor, seq_len: int) -> torch.Tensor:
    """`(B, E, 2)` spans `(first, last + 1)` -> `(B, E, L)` bool: the tokens of each entity."""
    positions = torch.arange(seq_len, device=entity_spans.device)
    start, end = entity_spans[..., 0:1], entity_spans[..., 1:2]  # (B, E, 1)
    return (positions >= start) & (positions < end)


def entity_states(
    sequence_output: torch.Tensor,
    entity_spans: torch.Tensor,
    entity_labels: torch.Tensor | None,
    type_embeddings: nn.Embedding | None,
) -> torch.Tensor:
    """`(B, E, hidden)`: the mean of each entity's token states `(B, L, hidden)`, plus the embedding of its type
    (`type_embeddings`, where `entity_labels` gives one; untyped entities have none)."""
    weights = _entity_members(entity_spans, sequence_output.shape[1]).to(sequence_output.dtype)  # (B, E, L)
    counts = weights.sum(-1, keepdim=True).clamp(min=1)
    entities = (weights @ sequence_output) / counts  # (B, E, hidden)
    if entity_labels is not None and type_embeddings is not None:
        types = type_embeddings(entity_labels.clamp(min=0))
        entities = entities + types * (entity_labels >= 0)[..., None].to(types.dtype)
    return entities


def entity_boxes(bbox: torch.Tensor, entity_spans: torch.Tensor) -> torch.Tensor:
    """`(B, L, 4)` token boxes and `(B, E, 2)` entity spans -> `(B, E, 4)` each entity's box: the union of its
    tokens' boxes, 0..1000."""
    inside = _entity_members(entity_spans, bbox.shape[1])[..., None]  # (B, E, L, 1)
    boxes = bbox[:, None].expand(-1, entity_spans.shape[1], -1, -1)  # (B, E, L, 4)
    low = torch.where(inside, boxes, torch.full_like(boxes, 1000)).amin(2)  # (B, E, 4)
    high = torch.where(inside, boxes, torch.zeros_like(boxes)).amax(2)
    return torch.cat([low[..., :2], high[..., 2:]], dim=-1)


def entity_box_features(
    visual: nn.Module,
    feature_map: torch.Tensor,
    boxes: torch.Tensor,
    entity_spans: torch.Tensor,
    image_index: torch.Tensor | None,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """`(B, E, hidden)`: the visual embedding (`LayoutLMRoIAlignVisualEmbeddings.embed_boxes`) of each real entity's
    box `(B, E, 4)` pooled from `feature_map` (sequence `b` reads page `image_index[b]`, default `b`); zeros on padding
    rows."""
    batch_size, num_entities, _ = boxes.shape
    real = (entity_spans[..., 1] > entity_spans[..., 0]).reshape(-1)  # (B*E,)
    page = image_index if image_index is not None else torch.arange(batch_size, device=boxes.device)
    page = page.to(boxes.device)[:, None].expand(-1, num_entities).reshape(-1)  # (B*E,)
    pooled = visual.embed_boxes(feature_map, boxes.reshape(-1, 4)[real], page[real], image_size)  # (num_real, hidden)
    features = pooled.new_zeros(real.shape[0], pooled.shape[-1]).index_copy(0, real.nonzero()[:, 0], pooled)
    return features.view(batch_size, num_entities, -1)


def link_log_probs(
    scores: torch.Tensor, no_key: torch.Tensor, candidates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(B, E, E)` pair scores, `(B, E)` "no key" scores and the candidate mask -> `(link_logits, log_probs)`:
    `log_probs` `(B, E + 1, E)` is each value's (column's) log-softmax over its candidate keys and "no key" (the last
    row); `link_logits` `(B, E, E)` are its key rows, `NOT_A_CANDIDATE` where the pair is not a candidate."""
    options = torch.cat([scores.masked_fill(~candidates, float("-inf")), no_key[:, None, :]], dim=1)
    log_probs = options.log_softmax(dim=1)  # (B, E + 1, E)
    return log_probs[:, :-1].masked_fill(~candidates, NOT_A_CANDIDATE), log_probs


def link_loss(log_probs: torch.Tensor, candidates: torch.Tensor, link_labels: torch.Tensor) -> torch.Tensor:
    """Mean over the values that have a candidate key and labels of -log of the probability of their gold key(s), or
    of "no key" for a value with no gold key among its candidates. Gold pairs that are not candidates are ignored."""
    gold = candidates & (link_labels == 1)
    has_gold = gold.any(dim=1)  # (B, E)
    target = torch.cat([gold, ~has_gold[:, None, :]], dim=1)  # (B, E + 1, E)
    chosen = log_probs.masked_fill(~target, float("-inf")).logsumexp(dim=1)  # (B, E)
    labelled = ((link_labels != -100) & candidates).any(dim=1)  # (B, E)
    return -chosen[labelled].sum() / labelled.sum().clamp(min=1) + 0.0 * log_probs[:, -1].sum()
