"""The data arguments that `scripts/train.py` and `scripts/evaluate_checkpoint.py` share, and loading `--dataset` the same way
for both: every split the dataset has, plus a `validation` split held out of `train` by a seed when it has none, so
that the same `--split_seed` gives the same validation pages to training and to evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict

from ..labelstudio import LabelStudioArguments, is_labelstudio_file
from .funsd import load_dataset_spec, split_train_validation
from .labelstudio import load_labelstudio_export
from .synthetic import generate_synthetic_forms

__all__ = ["DataArguments", "load_training_data", "label_names_of", "describe_data"]


@dataclass
class DataArguments(LabelStudioArguments):
    """Which data to train and evaluate on, and how pages are cut into windows (and how a Label Studio export is
    read: `LabelStudioArguments`)."""

    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "A Hub dataset id (e.g. nielsr/funsd), a local FUNSD-layout folder (annotations/, "
            "images/), a FUNSD release root (training_data/, testing_data/), a `save_to_disk` folder, a Label "
            "Studio JSON export (.json), or 'synthetic' (generated forms; see layoutlm_roialign.data)."
        },
    )
    validation_size: float = field(
        default=0.2,
        metadata={
            "help": "Share (<1) or number (>=1) of pages held out for validation when the dataset has no "
            "validation split."
        },
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the train/validation split."})
    dataset_license: str | None = field(
        default=None,
        metadata={
            "help": "Licence of the dataset, for the model card (e.g. cc-by-4.0). Default: what its loader reports "
            "(FUNSD's non-commercial terms for a FUNSD folder, apache-2.0 for synthetic forms; Hub datasets: "
            "their metadata)."
        },
    )
    synthetic_pages: int = field(default=240, metadata={"help": "Number of synthetic pages (dataset=synthetic)."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic forms."})
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per window (long pages overflow); default: the model's, <= 512."}
    )
    stride: int | None = field(
        default=None, metadata={"help": "Tokens shared by consecutive windows of a page; default: max_length / 4."}
    )
    max_train_pages: int | None = field(default=None, metadata={"help": "Use only the first N training pages."})
    max_eval_pages: int | None = field(default=None, metadata={"help": "Use only the first N validation pages."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for datasets.map."})


def load_training_data(data_args: DataArguments) -> DatasetDict:
    """Load `--dataset` as a `DatasetDict` with every split it has, plus `validation` split off `train` (by
    `--split_seed`) when it has none: a FUNSD release root gives `train`, `validation` and `test`."""
    spec = data_args.dataset
    try:
        if spec == "synthetic":
            ds = generate_synthetic_forms(num_pages=data_args.synthetic_pages, seed=data_args.synthetic_seed)
        elif is_labelstudio_file(spec):
            ds = load_labelstudio_export(spec, data_args.images_dir, data_args.label_map, data_args.page_words_from)
        else:
            ds = load_dataset_spec(spec)
    except (FileNotFoundError, ValueError, OSError) as err:
        if is_labelstudio_file(spec):  # the message names the task and what is wrong with it
            raise ValueError(f"--dataset {spec!r} could not be loaded: {err}") from err
        raise ValueError(
            f"--dataset {spec!r} could not be loaded: {err} (give a Hub dataset id, a FUNSD-layout folder with "
            "annotations/ and images/, a Label Studio export, or 'synthetic')."
        ) from err
    if isinstance(ds, Dataset):
        ds = DatasetDict({"train": ds})
    if "train" not in ds:
        raise ValueError(f"--dataset {spec!r} has no 'train' split (splits: {sorted(ds)}).")
    if "validation" not in ds:
        size = data_args.validation_size
        size = int(size) if size >= 1 else size
        split = split_train_validation(ds["train"], validation_size=size, seed=data_args.split_seed)
        ds = DatasetDict({**split, **{name: part for name, part in ds.items() if name != "train"}})
    if data_args.max_train_pages is not None:
        ds["train"] = ds["train"].select(range(min(data_args.max_train_pages, len(ds["train"]))))
    if data_args.max_eval_pages is not None:
        ds["validation"] = ds["validation"].select(range(min(data_args.max_eval_pages, len(ds["validation"]))))
    return ds


def label_names_of(dataset: Dataset) -> list[str]:
    """The label names of a dataset's `ner_tags` column (a `Sequence(ClassLabel)`)."""
    feature = dataset.features["ner_tags"]
    inner = getattr(feature, "feature", None)
    names = getattr(inner, "names", None)
    if names is None:
        raise ValueError("The dataset's `ner_tags` must be a Sequence of ClassLabel (with label names).")
    return list(names)


def describe_data(data_args: DataArguments, raw: DatasetDict) -> dict:
    """What the model card says about the data: what `--dataset` was, the dataset's name and licence as its loader
    reported them (`--dataset_license` overrides the licence), page counts and the split."""
    info = raw["train"].info
    return {
        "dataset": data_args.dataset,
        "name": info.dataset_name or data_args.dataset,
        "license": data_args.dataset_license or info.license or None,
        "train_pages": len(raw["train"]),
        "validation_pages": len(raw["validation"]),
        "split": (
            f"validation split of {len(raw['validation'])} pages held out of the training pages "
            f"(--validation_size {data_args.validation_size}, --split_seed {data_args.split_seed})"
        ),
    }
