"""Datasets in FUNSD's schema (`id`, `words`, 0-1000 `bboxes`, IOB `ner_tags`, `image`): the original release
folder, Hub copies, `save_to_disk` folders, and synthetic forms whose labels need the pixels; `--dataset` loaded
with its splits (`DataArguments`, `load_training_data`). Encoding pages into model windows is
`layoutlm_roialign.data.encoding`."""

from .funsd import (
    FUNSD_ENTITY_TYPES,
    FUNSD_LABELS,
    FUNSD_LICENSE,
    funsd_features,
    funsd_info,
    has_links,
    load_dataset_spec,
    load_funsd_folder,
    load_hub_funsd,
    parse_funsd_annotation,
    split_train_validation,
    to_funsd_schema,
)
from .loading import DataArguments, describe_data, label_names_of, load_training_data
from .synthetic import generate_synthetic_forms, render_synthetic_form, render_synthetic_form_with_links

__all__ = [
    "DataArguments",
    "describe_data",
    "label_names_of",
    "load_training_data",
    "FUNSD_ENTITY_TYPES",
    "FUNSD_LABELS",
    "FUNSD_LICENSE",
    "funsd_features",
    "funsd_info",
    "generate_synthetic_forms",
    "has_links",
    "load_dataset_spec",
    "load_funsd_folder",
    "load_hub_funsd",
    "parse_funsd_annotation",
    "render_synthetic_form",
    "render_synthetic_form_with_links",
    "split_train_validation",
    "to_funsd_schema",
]
