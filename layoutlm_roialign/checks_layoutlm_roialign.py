"""Input checks of LayoutLM with RoIAlign image embeddings: each raises a `ValueError` that names the argument and
says what it must hold, for inputs that would otherwise fail deep inside torch.
Value checks need a host sync and are skipped while `torch.compile` traces (a compiled graph trusts its inputs).

This file travels with every checkpoint (remote code, imported by the modeling file): it imports only torch and its
sibling configuration file.
"""

from __future__ import annotations

import torch

from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig

__all__ = ["check_entities", "check_inputs", "check_labels", "check_link_inputs", "input_shape"]


def input_shape(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> tuple[int, ...]:
    """The inputs' `(batch_size, sequence_length)`, from `input_ids` or `inputs_embeds`."""
    if input_ids is not None:
        return tuple(input_ids.shape)
    if inputs_embeds is not None:
        return tuple(inputs_embeds.shape[:-1])
    raise ValueError("You have to specify either `input_ids` or `inputs_embeds`.")


def check_inputs(
    config: LayoutLMRoIAlignConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    bbox: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    pixel_values: torch.Tensor | None,
    image_index: torch.Tensor | None = None,
) -> None:
    """Raise a `ValueError` naming the argument for inputs that would otherwise fail deep inside torch."""
    shape = input_shape(input_ids, inputs_embeds)
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
        _check_image_inputs(pixel_values, image_index, shape[0])
    elif image_index is not None:
        raise ValueError("`image_index` was given to a text-only model (`use_visual_features=False`): drop it.")
    if bbox is not None and not torch.compiler.is_compiling():  # a compiled graph trusts its inputs
        _check_box_values(bbox)


def _check_box_values(bbox: torch.Tensor) -> None:
    """Boxes within 0..1000 and not inverted: one host sync, details computed only when something is wrong."""
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


def check_labels(
    labels: torch.Tensor,
    num_labels: int,
    shape: tuple[int, ...],
    expected: str | None = None,
    hint: str = "check that the dataset's label set matches `config.id2label`",
) -> None:
    """Token labels: the inputs' shape, values in 0..num_labels-1 or -100 (`expected` says so in the error)."""
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"`labels` must have the inputs' shape {tuple(shape)}, got {tuple(labels.shape)}.")
    if torch.compiler.is_compiling():
        return
    bad = (labels != -100) & ((labels < 0) | (labels >= num_labels))
    if bad.any():
        expected = expected or f"in 0..{num_labels - 1} or -100 (ignored)"
        raise ValueError(f"`labels` must be {expected}, got {labels[bad].unique().tolist()}; {hint}.")


def _check_image_inputs(pixel_values: torch.Tensor | None, image_index: torch.Tensor | None, batch_size: int) -> None:
    """Raise a `ValueError` naming the argument for page images the visual branch cannot read for `batch_size`
    sequences."""
    if pixel_values is None:
        raise ValueError(
            "`pixel_values` is required (the page images, (batch_size, 3, image_size, image_size), from the "
            "processor); pass `config.use_visual_features=False` for a text-only model."
        )
    if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
        raise ValueError(
            f"`pixel_values` must be (batch_size, 3, height, width) RGB images, got shape {tuple(pixel_values.shape)}."
        )
    num_images = pixel_values.shape[0]
    if image_index is None:
        if num_images != batch_size:
            raise ValueError(
                f"`pixel_values` holds {num_images} images for {batch_size} sequences; give one image per "
                "sequence (repeat a page's image for each of its windows, via `overflow_to_sample_mapping`), or "
                "one per page with `image_index` saying which page each sequence reads."
            )
        return
    if tuple(image_index.shape) != (batch_size,) or image_index.is_floating_point():
        raise ValueError(
            f"`image_index` must be an integer tensor of shape (batch_size,) = {(batch_size,)} (the image in "
            f"`pixel_values` of each sequence), got {image_index.dtype} of shape {tuple(image_index.shape)}."
        )
    if not torch.compiler.is_compiling() and ((image_index < 0) | (image_index >= num_images)).any():
        raise ValueError(
            f"`image_index` must be in 0..{num_images - 1} (`pixel_values` holds {num_images} images), got "
            f"{image_index.tolist()}."
        )


def check_entities(
    entity_spans: torch.Tensor,
    entity_labels: torch.Tensor | None,
    link_labels: torch.Tensor | None,
    shape: tuple[int, int],
    num_types: int,
) -> None:
    """Raise a `ValueError` naming the argument for entity inputs the link head cannot read, for inputs of
    `shape` `(batch_size, sequence_length)` and `num_types` entity types."""
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
    if entity_labels is not None and num_types == 0 and (entity_labels != -100).any():
        raise ValueError(
            "`entity_labels` index entity types, and the config names none: set `config.entity_types` (e.g. "
            "['QUESTION', 'ANSWER']) or give `id2label` B-/I- labels, or leave `entity_labels` out (every pair of "
            "entities is then a candidate)."
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


def check_link_inputs(
    shape: tuple[int, ...],
    num_labels: int,
    num_types: int,
    labels: torch.Tensor | None,
    entity_spans: torch.Tensor | None,
    entity_labels: torch.Tensor | None,
    link_labels: torch.Tensor | None,
) -> None:
    """The linking model's labels and entity inputs (`check_labels`, `check_entities`): entity labels and link labels
    need `entity_spans`."""
    if labels is not None:
        check_labels(labels, num_labels, shape)
    if entity_spans is None and (entity_labels is not None or link_labels is not None):
        raise ValueError("`entity_labels` and `link_labels` need `entity_spans` (which tokens form each entity).")
    if entity_spans is not None:
        check_entities(entity_spans, entity_labels, link_labels, shape, num_types)
