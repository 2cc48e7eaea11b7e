"""Fine-tuning LayoutLM-RoIAlign on forms with `transformers.Trainer`: the logic behind `scripts/train.py`.

What is here: the script's argument dataclasses; dataset encoding with the processor (`datasets.map`, long pages
split into overlapping windows); a padding data collator; word-level entity metrics (windows merged back to one
prediction per word, then seqeval); a `Trainer` whose optimizer has one learning rate per part of the model
(backbone, visual projection, text encoder, head; 0 freezes a part); the label-set check for checkpoints; and the
final folder (model + processor + code + model card), written beside its destination and renamed into place so an
interruption never leaves a half-written folder that loads.

Everything runs unchanged under `accelerate launch` (DDP): the Trainer handles the processes, and only the main
process writes the final folder and pushes it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from datasets import Array3D, Dataset, DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoProcessor,
    AutoTokenizer,
    EvalPrediction,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor
from .metrics import entity_scores, flatten_entity_scores
from .modeling_layoutlm_roialign import LayoutLMRoIAlignForTokenClassification
from .processing_layoutlm_roialign import IGNORE_INDEX, LayoutLMRoIAlignProcessor, merge_window_predictions
from .wordpiece import train_wordpiece_tokenizer

__all__ = [
    "ModelArguments",
    "DataArguments",
    "DataCollatorForLayoutLMRoIAlign",
    "LayoutLMRoIAlignTrainer",
    "WordLevelEntityMetrics",
    "build_model_and_processor",
    "check_label_set",
    "encode_dataset",
    "evaluate_checkpoint",
    "freeze_backbone_until",
    "last_complete_checkpoint",
    "load_training_data",
    "parameter_group_names",
    "run_training",
    "save_folder_atomically",
    "use_cpu_processes_without_gpus",
    "TRAIN_SCRIPT_DEFAULTS",
]

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values", "labels")
TEXT_SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
FINAL_FOLDER = "final"

# TrainingArguments defaults of the train script: evaluate and save every epoch, keep the best by entity F1.
TRAIN_SCRIPT_DEFAULTS = dict(
    output_dir="runs/layoutlm-roialign",
    eval_strategy="epoch",
    save_strategy="epoch",
    logging_strategy="epoch",
    load_best_model_at_end=True,
    metric_for_best_model="f1",
    greater_is_better=True,
    save_total_limit=2,
    report_to="none",
)


@dataclass
class ModelArguments:
    """Which model to fine-tune: pretrained parts (or none, for a from-scratch run) or one of our checkpoints."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A LayoutLM-RoIAlign checkpoint (folder or Hub id) to continue from; its label set must "
            "equal the dataset's. Leave unset to build the model from --text_model and --backbone_weights."
        },
    )
    text_model: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained text encoder (LayoutLM or BERT checkpoint, Hub id or folder), e.g. "
            "microsoft/layoutlm-base-uncased; its tokenizer is used. Unset: a random encoder of the sizes "
            "below and a WordPiece tokenizer trained on the training words (fully offline)."
        },
    )
    backbone_weights: str | None = field(
        default=None,
        metadata={
            "help": "Backbone weights: a torchvision weight name (DEFAULT, IMAGENET1K_V2, ...) or a "
            "state-dict file. Unset: a random backbone."
        },
    )
    backbone: str = field(
        default="resnet101", metadata={"help": "torchvision backbone: resnet18/50/101, mobilenet_v2, ..."}
    )
    image_size: int = field(default=224, metadata={"help": "Side of the square page image the backbone sees."})
    use_visual_features: bool = field(
        default=True, metadata={"help": "Use the visual branch; false gives the text-only ablation."}
    )
    visual_init: str = field(default="zero_gate", metadata={"help": "zero_gate, zero_projection or normal."})
    hidden_size: int | None = field(default=None, metadata={"help": "Text encoder size (without --text_model)."})
    num_hidden_layers: int | None = field(
        default=None, metadata={"help": "Text encoder layers (without --text_model)."}
    )
    num_attention_heads: int | None = field(default=None, metadata={"help": "Attention heads (without --text_model)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Feed-forward size (without --text_model)."})
    tokenizer_vocab_size: int = field(
        default=1000, metadata={"help": "Vocabulary size of the WordPiece tokenizer trained without --text_model."}
    )
    num_labels: int | None = field(
        default=None, metadata={"help": "Expected number of labels; checked against the dataset's label set."}
    )
    backbone_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the backbone (default --learning_rate; 0 freezes it)."}
    )
    visual_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the visual projection, its layer norm and gate (default "
            "--learning_rate; 0 freezes them)."
        },
    )
    text_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the text encoder (default --learning_rate; 0 freezes)."}
    )
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the classifier (default --learning_rate; 0 freezes)."}
    )
    freeze_backbone_until: str | None = field(
        default=None,
        metadata={
            "help": "Freeze the backbone up to and including this stage (e.g. layer2 for ResNets, "
            "features.7 for MobileNetV2); later stages train at the backbone learning rate."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow the code of a --model_name_or_path checkpoint from the Hub to run."}
    )


@dataclass
class DataArguments:
    """Which data to train and evaluate on, and how pages are cut into windows."""

    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "A Hub dataset id (e.g. nielsr/funsd), a local FUNSD-layout folder (annotations/, "
            "images/), or 'synthetic' (generated forms; see layoutlm_roialign.data)."
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
    max_length: int = field(default=512, metadata={"help": "Tokens per window (long pages overflow)."})
    stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a page."})
    max_train_pages: int | None = field(default=None, metadata={"help": "Use only the first N training pages."})
    max_eval_pages: int | None = field(default=None, metadata={"help": "Use only the first N validation pages."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for datasets.map."})


# --------------------------------------------------------------------------------------------------------- data


def load_training_data(data_args: DataArguments) -> DatasetDict:
    """Load `--dataset` as a `DatasetDict` with every split it has, plus `validation` split off `train` (by
    `--split_seed`) when it has none: a FUNSD release root gives `train`, `validation` and `test`."""
    from . import data

    spec = data_args.dataset
    try:
        if spec == "synthetic":
            ds = data.generate_synthetic_forms(num_pages=data_args.synthetic_pages, seed=data_args.synthetic_seed)
        else:
            ds = data.load_dataset_spec(spec)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise ValueError(
            f"--dataset {spec!r} could not be loaded: {err} (give a Hub dataset id, a FUNSD-layout folder with "
            "annotations/ and images/, or 'synthetic')."
        ) from err
    if isinstance(ds, Dataset):
        ds = DatasetDict({"train": ds})
    if "train" not in ds:
        raise ValueError(f"--dataset {spec!r} has no 'train' split (splits: {sorted(ds)}).")
    if "validation" not in ds:
        size = data_args.validation_size
        size = int(size) if size >= 1 else size
        split = data.split_train_validation(ds["train"], validation_size=size, seed=data_args.split_seed)
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


def _page_image(image: Any) -> Any:
    if isinstance(image, dict) and ("bytes" in image or "path" in image):  # undecoded datasets Image
        if image.get("bytes"):
            import io

            return PIL.Image.open(io.BytesIO(image["bytes"]))
        return PIL.Image.open(image["path"])
    return image


def encode_dataset(
    dataset: Dataset,
    processor: LayoutLMRoIAlignProcessor,
    max_length: int = 512,
    stride: int = 128,
    num_proc: int | None = None,
    desc: str = "Encoding pages",
) -> Dataset:
    """Pages (`words`, `bboxes` 0-1000, `ner_tags`, `image`) -> one row per window with the model inputs, plus
    `word_ids` (-1 for special tokens and padding) and `page` (the row's page index in `dataset`), which
    `WordLevelEntityMetrics` uses to score each word once."""
    size = processor.image_processor.size
    features = Features(
        {
            "input_ids": SequenceFeature(Value("int32")),
            "bbox": SequenceFeature(SequenceFeature(Value("int16"), length=4)),
            "attention_mask": SequenceFeature(Value("int8")),
            "token_type_ids": SequenceFeature(Value("int8")),
            "labels": SequenceFeature(Value("int32")),
            "pixel_values": Array3D(shape=(3, size, size), dtype="float32"),
            "word_ids": SequenceFeature(Value("int32")),
            "page": Value("int32"),
        }
    )

    def encode(batch: dict, indices: list[int]) -> dict:
        encoded = processor(
            [_page_image(image) for image in batch["image"]],
            batch["words"],
            batch["bboxes"],
            word_labels=batch["ner_tags"],
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_tensors=None,
        )
        mapping = list(encoded["overflow_to_sample_mapping"])
        rows = len(encoded["input_ids"])
        out = {key: encoded[key] for key in ("input_ids", "bbox", "attention_mask", "token_type_ids", "labels")}
        out["pixel_values"] = [np.asarray(encoded["pixel_values"][i], dtype=np.float32) for i in range(rows)]
        out["word_ids"] = [[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(rows)]
        out["page"] = [indices[m] for m in mapping]
        return out

    return dataset.map(
        encode,
        batched=True,
        batch_size=16,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=features,
        num_proc=num_proc,
        desc=desc,
    )


@dataclass
class DataCollatorForLayoutLMRoIAlign:
    """Pads windows to the longest of the batch (rounded up to `pad_to_multiple_of`) and stacks the pages.

    Padding tokens get `pad_token_id`, box (0, 0, 0, 0), attention 0 and label -100; keys other than the model's
    inputs (`word_ids`, `page`, ...) are dropped.
    """

    pad_token_id: int = 0
    pad_to_multiple_of: int | None = 8

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = int(math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}
        batch: dict[str, torch.Tensor] = {}
        for key, value in pads.items():
            if key not in features[0]:
                continue
            rows = [torch.as_tensor(f[key], dtype=torch.long) for f in features]
            padded = torch.full((len(rows), length), value, dtype=torch.long)
            for i, row in enumerate(rows):
                padded[i, : len(row)] = row
            batch[key] = padded
        boxes = torch.zeros(len(features), length, 4, dtype=torch.long)
        for i, f in enumerate(features):
            row = torch.as_tensor(f["bbox"], dtype=torch.long).reshape(-1, 4)
            boxes[i, : len(row)] = row
        batch["bbox"] = boxes
        if "pixel_values" in features[0]:
            batch["pixel_values"] = torch.stack(
                [torch.as_tensor(np.asarray(f["pixel_values"]), dtype=torch.float32) for f in features]
            )
        return batch


# ------------------------------------------------------------------------------------------------------ metrics


def argmax_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: keep label ids, not logits, across evaluation batches."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


class WordLevelEntityMetrics:
    """`compute_metrics` for `Trainer`: token predictions of every window -> one label per word of each page (read
    on the word's first sub-token, from the window where it has the most context, as `merge_window_predictions`
    does) -> seqeval entity precision/recall/F1, overall and per type.

    Args:
        encoded: the encoded evaluation dataset (`encode_dataset` output), in evaluation order.
        pages: the evaluation pages it came from (their `ner_tags` are the references).
        id2label: the model's label names.
    """

    def __init__(self, encoded: Dataset, pages: Dataset, id2label: dict[int, str]):
        self.word_ids = [[None if w < 0 else w for w in row] for row in encoded["word_ids"]]
        self.page_of_row = list(encoded["page"])
        self.id2label = {int(k): v for k, v in id2label.items()}
        self.references = [[self.id2label[int(t)] for t in tags] for tags in pages["ner_tags"]]
        self.last_scores: dict | None = None
        self.last_predictions: list[list[str]] | None = None

    def word_predictions(self, token_predictions: Any) -> list[list[str]]:
        """Token label ids (or logits) of every window -> label names per word of each page (uncovered words
        count as O)."""
        merged = merge_window_predictions(
            self.word_ids,
            token_predictions,
            self.page_of_row,
            [len(page) for page in self.references],
            fill_value=IGNORE_INDEX,
        )
        return [[self.id2label.get(i, "O") if i != IGNORE_INDEX else "O" for i in page] for page in merged]

    def __call__(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        if len(predictions) != len(self.word_ids):
            raise ValueError(
                f"Got predictions for {len(predictions)} windows, the evaluation set has {len(self.word_ids)}."
            )
        self.last_predictions = self.word_predictions(predictions)
        self.last_scores = entity_scores(self.references, self.last_predictions)
        return flatten_entity_scores(self.last_scores)


# ------------------------------------------------------------------------------------------------ the optimizer

PARAMETER_GROUPS = ("backbone", "visual", "text", "head")


def parameter_group_names(model: PreTrainedModel) -> dict[str, str]:
    """Parameter name -> part of the model: `backbone`, `visual` (projection, its layer norm, gate), `text`
    (the LayoutLM encoder) or `head` (everything else: the classifier)."""
    groups = {}
    prefix = model.base_model_prefix
    for name, _ in model.named_parameters():
        inner = name[len(prefix) + 1 :] if name.startswith(prefix + ".") else name
        if inner.startswith("visual_embeddings.backbone."):
            groups[name] = "backbone"
        elif inner.startswith("visual_embeddings."):
            groups[name] = "visual"
        elif inner.startswith("layoutlm."):
            groups[name] = "text"
        else:
            groups[name] = "head"
    return groups


def freeze_backbone_until(model: PreTrainedModel, stage: str) -> list[str]:
    """Freeze the backbone's parameters up to and including stage `stage` (e.g. `"layer2"`: conv1, bn1, layer1,
    layer2). Returns the frozen parameter names.

    Raises:
        ValueError: naming `--freeze_backbone_until` and the known stages, if `stage` is not one.
    """
    base = getattr(model, model.base_model_prefix, model)
    visual = getattr(base, "visual_embeddings", None)
    if visual is None:
        raise ValueError("--freeze_backbone_until needs the visual branch (--use_visual_features true).")
    names = [n for n, _ in visual.backbone.named_parameters()]
    stages = list(dict.fromkeys(_stage_of(n) for n in names))
    if stage not in stages:
        raise ValueError(f"--freeze_backbone_until {stage!r} is not a stage of the backbone; stages: {stages}.")
    last = stages.index(stage)
    frozen = []
    for name, param in visual.backbone.named_parameters():
        if stages.index(_stage_of(name)) <= last:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def _stage_of(name: str) -> str:
    parts = name.split(".")
    # `features.3.conv...` (MobileNet/EfficientNet/ConvNeXt) -> `features.3`; `layer2.0.conv1...` -> `layer2`
    return ".".join(parts[:2]) if parts[0] == "features" and len(parts) > 2 else parts[0]


class LayoutLMRoIAlignTrainer(Trainer):
    """`Trainer` whose optimizer gives each part of the model its own learning rate.

    Args:
        learning_rates: `{"backbone", "visual", "text", "head"}` -> learning rate; a missing or `None` entry takes
            `args.learning_rate`, and 0 freezes that part (its parameters stop requiring gradients and stay out of
            the optimizer). Weight decay follows `Trainer`'s rule (none on biases and norms).
        All other arguments are `Trainer`'s.
    """

    def __init__(self, *args, learning_rates: dict[str, float | None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rates = {
            part: (self.args.learning_rate if (learning_rates or {}).get(part) is None else learning_rates[part])
            for part in PARAMETER_GROUPS
        }
        unknown = set(learning_rates or {}) - set(PARAMETER_GROUPS)
        if unknown:
            raise ValueError(f"Unknown learning-rate groups {sorted(unknown)}; known: {PARAMETER_GROUPS}.")
        for part, lr in self.learning_rates.items():
            if lr < 0:
                raise ValueError(f"--{part}_learning_rate must be >= 0 (0 freezes), got {lr}.")
        # Freeze before the model is wrapped for DDP, which must know which parameters get gradients.
        parts = parameter_group_names(self.model)
        for name, param in self.model.named_parameters():
            if self.learning_rates[parts[name]] == 0:
                param.requires_grad_(False)
        self.parameter_groups_summary: list[dict] = []

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        parts = parameter_group_names(opt_model)
        groups = []
        self.parameter_groups_summary = []
        for part in PARAMETER_GROUPS:
            for with_decay in (True, False):
                params = [
                    p
                    for n, p in opt_model.named_parameters()
                    if parts.get(n) == part and p.requires_grad and (n in decay) == with_decay
                ]
                if not params:
                    continue
                weight_decay = self.args.weight_decay if with_decay else 0.0
                groups.append(
                    {"params": params, "lr": self.learning_rates[part], "weight_decay": weight_decay, "name": part}
                )
        for part in PARAMETER_GROUPS:
            total = sum(p.numel() for n, p in opt_model.named_parameters() if parts.get(n) == part)
            trained = sum(
                p.numel() for n, p in opt_model.named_parameters() if parts.get(n) == part and p.requires_grad
            )
            if total:
                self.parameter_groups_summary.append(
                    {"group": part, "lr": self.learning_rates[part], "parameters": total, "trained": trained}
                )
        if self.args.should_log:  # once, at train start
            logger.info(
                "Learning rates per parameter group (0 = frozen):\n"
                + "\n".join(
                    f"  {s['group']:<9} lr {s['lr']:.2e}: {s['trained']:,} of {s['parameters']:,} parameters trained"
                    for s in self.parameter_groups_summary
                )
            )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)  # each group has its own
        self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer


# ----------------------------------------------------------------------------------- model, labels, checkpoints


def check_label_set(model_labels: Sequence[str], dataset_labels: Sequence[str], source: str) -> None:
    """Raise a `ValueError` that names the differing labels if a checkpoint and a dataset have different label sets.

    Args:
        model_labels: the checkpoint's labels in id order (`config.id2label`).
        dataset_labels: the dataset's labels in id order.
        source: what the checkpoint is, for the message (e.g. `"--model_name_or_path runs/x"`).
    """
    if list(model_labels) == list(dataset_labels):
        return
    only_model = [name for name in model_labels if name not in dataset_labels]
    only_data = [name for name in dataset_labels if name not in model_labels]
    if only_model or only_data:
        raise ValueError(
            f"The label set of {source} differs from the dataset's: only in the checkpoint {only_model}, only in the "
            f"dataset {only_data}. Fine-tune from pretrained parts (--text_model, --backbone_weights) for a new label "
            "set."
        )
    raise ValueError(
        f"{source} numbers its labels {list(model_labels)} but the dataset numbers them {list(dataset_labels)}: "
        "same labels, different ids."
    )


def build_model_and_processor(
    model_args: ModelArguments, label_names: Sequence[str], training_words: Sequence[Sequence[str]] = ()
) -> tuple[PreTrainedModel, LayoutLMRoIAlignProcessor]:
    """The model and processor to fine-tune: a checkpoint of ours (`--model_name_or_path`; its label set is checked)
    or pretrained parts (`--text_model`, `--backbone_weights`, or random ones; without `--text_model` a WordPiece
    tokenizer is trained on `training_words`)."""
    label_names = list(label_names)
    if model_args.num_labels is not None and model_args.num_labels != len(label_names):
        raise ValueError(
            f"--num_labels {model_args.num_labels} does not match the dataset, which has {len(label_names)} labels: "
            f"{label_names}."
        )
    id2label = dict(enumerate(label_names))
    label2id = {name: i for i, name in id2label.items()}
    if model_args.model_name_or_path is not None:
        path = model_args.model_name_or_path
        if os.path.sep in path and not os.path.isdir(path):
            raise ValueError(f"--model_name_or_path {path!r} is not a folder.")
        remote = model_args.trust_remote_code
        config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
        names = [config.id2label[i] for i in range(config.num_labels)]
        check_label_set(names, label_names, f"--model_name_or_path {path}")
        model = AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=remote)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=remote)
        return model, processor

    sizes = {k: getattr(model_args, k) for k in TEXT_SIZE_FIELDS if getattr(model_args, k) is not None}
    if model_args.text_model is not None:
        if sizes:
            raise ValueError(f"--{', --'.join(sizes)} cannot be combined with --text_model (it sets the sizes).")
        tokenizer = AutoTokenizer.from_pretrained(model_args.text_model, use_fast=True)
    else:
        corpus = [" ".join(words) for words in training_words]
        if not corpus:
            raise ValueError(
                "Without --text_model a WordPiece tokenizer is trained on the training words: none given."
            )
        tokenizer = train_wordpiece_tokenizer(corpus, vocab_size=model_args.tokenizer_vocab_size)
        sizes["vocab_size"] = len(tokenizer)
        sizes["pad_token_id"] = tokenizer.pad_token_id
    backbone_weights = model_args.backbone_weights if model_args.use_visual_features else None
    if model_args.backbone_weights is not None and not model_args.use_visual_features:
        logger.warning("--backbone_weights is ignored with --use_visual_features false.")
    model = LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
        model_args.text_model,
        backbone_weights,
        backbone=model_args.backbone,
        image_size=model_args.image_size,
        use_visual_features=model_args.use_visual_features,
        visual_init=model_args.visual_init,
        num_labels=len(label_names),
        id2label=id2label,
        label2id=label2id,
        **sizes,
    )
    processor = LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(size=model_args.image_size), tokenizer)
    return model, processor


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The latest `checkpoint-N` of `output_dir` that was saved completely, or `None`.

    `Trainer` writes `trainer_state.json` last (after model, optimizer, scheduler and RNG states), so a folder
    without it was interrupted while saving and is skipped.
    """
    if not os.path.isdir(output_dir):
        return None
    candidates = []
    for name in os.listdir(output_dir):
        prefix, _, step = name.partition("-")
        if prefix != PREFIX_CHECKPOINT_DIR or not step.isdigit():
            continue
        folder = os.path.join(output_dir, name)
        if os.path.isfile(os.path.join(folder, "trainer_state.json")):
            candidates.append((int(step), folder))
        else:
            logger.warning(f"Skipping {folder}: it has no trainer_state.json (interrupted while saving).")
    return max(candidates)[1] if candidates else None


def remove_stale_temporary_folders(destination: str | os.PathLike) -> list[Path]:
    """Clean up after an interrupted `save_folder_atomically(destination)`: remove the `.<name>.tmp-<pid>` folders
    beside `destination`, and its `.<name>.old-<pid>` ones (the previous folder, moved aside just before the new one
    took its place), but put such a previous folder back if `destination` itself is missing. Nothing else is
    touched. Returns the removed folders."""
    destination = Path(destination)
    if not destination.parent.is_dir():
        return []
    stale = re.compile(rf"\.{re.escape(destination.name)}\.(tmp|old)-\d+")
    removed = []
    for path in sorted(destination.parent.iterdir()):
        if not stale.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        if path.name.startswith(f".{destination.name}.old-") and not destination.exists():
            os.replace(path, destination)
            logger.warning(f"Restored {destination} from {path.name}, left by an interrupted save.")
            continue
        shutil.rmtree(path)
        removed.append(path)
        logger.warning(f"Removed {path}, left by an interrupted save.")
    return removed


def save_folder_atomically(destination: str | os.PathLike, write: Any) -> Path:
    """Call `write(folder)` on a fresh temporary folder beside `destination`, then rename it to `destination`
    (replacing an older one). An interruption leaves at most a `.<name>.tmp-*` folder, never a half-written
    `destination`; the next call (or `remove_stale_temporary_folders`) removes it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_folders(destination)
    tmp = destination.parent / f".{destination.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if destination.exists():
        old = destination.parent / f".{destination.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(destination, old)
    os.replace(tmp, destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return destination


def completed_run(output_dir: str | os.PathLike, training_args: TrainingArguments) -> dict | None:
    """The results of a run in `output_dir` that already trained as far as `training_args` ask and saved its final
    folder, or `None`. Complete means: `final/` exists and the last complete checkpoint reached the end of its own
    schedule, which is no shorter than the one asked for now (a longer `--max_steps` or `--num_train_epochs`
    continues the run)."""
    final_dir = Path(output_dir) / FINAL_FOLDER
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is None or not (final_dir / "config.json").is_file():
        return None
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    step, last = state.get("global_step", 0), state.get("max_steps", 0)
    if not 0 < last <= step:
        return None
    if training_args.max_steps > 0 and training_args.max_steps > step:
        return None
    if training_args.max_steps <= 0 and training_args.num_train_epochs > state.get("num_train_epochs", 0):
        return None
    results = Path(output_dir) / "all_results.json"
    if results.is_file():
        result = json.loads(results.read_text())
    else:  # interrupted between the final folder and the results file
        evaluated = json.loads((final_dir / "eval_results.json").read_text())
        result = {"eval": evaluated["eval"], "entity_scores": evaluated["entity_scores"], "final_dir": str(final_dir)}
    return {**result, "global_step": step, "already_complete": True}


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


# -------------------------------------------------------------------------------------------------- the main job


def use_cpu_processes_without_gpus() -> None:
    """Under a multi-process launcher (`accelerate launch --multi_gpu --num_processes N`, `torchrun`) on a machine
    without GPUs, make `TrainingArguments` set up DDP over CPU processes (gloo) instead of N unrelated single-process
    runs. Call before parsing the arguments (their device is fixed when they are created)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def check_push_arguments(training_args: TrainingArguments) -> str | None:
    """With `--push_to_hub`, return the token to push with; raise a `ValueError` naming the missing flag."""
    if not training_args.push_to_hub:
        return None
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (the repository to create or update, e.g. user/name).")
    from huggingface_hub import get_token

    token = training_args.hub_token or get_token()
    if not token:
        raise ValueError(
            "--push_to_hub needs a Hugging Face token: pass --hub_token, set HF_TOKEN, or run `hf auth login`."
        )
    return token


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict:
    """Fine-tune, evaluate, save the final folder (`<output_dir>/final`: model, processor, code, model card) and
    push it with `--push_to_hub`. Returns `{"train": ..., "eval": ..., "entity_scores": ..., "final_dir": ...}`.

    `--resume_from_checkpoint` continues from a checkpoint folder, or with `true` from the last complete
    `checkpoint-N` of `--output_dir`.
    """
    token = check_push_arguments(training_args)
    push, training_args.push_to_hub = training_args.push_to_hub, False  # we push the final folder ourselves
    if training_args.should_save:
        remove_stale_temporary_folders(Path(training_args.output_dir) / FINAL_FOLDER)
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        done = completed_run(training_args.output_dir, training_args)
        if done is not None:
            logger.warning(
                f"The run in {training_args.output_dir} is complete (step {done['global_step']}; its final folder is "
                f"{done['final_dir']}): nothing to resume. Ask for more steps or epochs to continue it, or give "
                "another --output_dir to train again."
            )
            return done
    set_seed(training_args.seed)

    raw = load_training_data(data_args)
    label_names = label_names_of(raw["train"])
    model, processor = build_model_and_processor(model_args, label_names, raw["train"]["words"])
    if model_args.freeze_backbone_until:
        freeze_backbone_until(model, model_args.freeze_backbone_until)
    with training_args.main_process_first(desc="encoding"):
        train_set = encode_dataset(
            raw["train"], processor, data_args.max_length, data_args.stride, data_args.preprocessing_num_workers
        )
        eval_set = encode_dataset(
            raw["validation"], processor, data_args.max_length, data_args.stride, data_args.preprocessing_num_workers
        )
    metrics = WordLevelEntityMetrics(eval_set, raw["validation"], model.config.id2label)
    trainer = LayoutLMRoIAlignTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorForLayoutLMRoIAlign(pad_token_id=processor.tokenizer.pad_token_id),
        processing_class=processor,
        compute_metrics=metrics,
        preprocess_logits_for_metrics=argmax_logits,
        callbacks=list(callbacks),
        learning_rates={
            "backbone": model_args.backbone_learning_rate,
            "visual": model_args.visual_learning_rate,
            "text": model_args.text_learning_rate,
            "head": model_args.head_learning_rate,
        },
    )

    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = last_complete_checkpoint(training_args.output_dir)
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint: no complete checkpoint in {training_args.output_dir}.")
    elif isinstance(resume, str) and not os.path.isfile(os.path.join(resume, "trainer_state.json")):
        raise ValueError(f"--resume_from_checkpoint {resume!r} is not a complete Trainer checkpoint folder.")
    train_result = trainer.train(resume_from_checkpoint=resume)
    eval_metrics = trainer.evaluate()
    scores = metrics.last_scores

    final_dir = Path(training_args.output_dir) / FINAL_FOLDER
    result = {
        "train": train_result.metrics,
        "eval": eval_metrics,
        "entity_scores": scores,
        "global_step": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "final_dir": str(final_dir),
        "parameter_groups": trainer.parameter_groups_summary,
    }
    if trainer.is_world_process_zero():
        from .hub import write_model_card

        data_info = describe_data(data_args, raw)
        hyper = _hyperparameters(model_args, data_args, training_args, model)

        def write(folder: Path) -> None:
            trainer.save_model(str(folder))  # model (+ code, auto_map) and processor (+ code)
            write_model_card(
                folder,
                scores=scores,
                data=data_info,
                hyperparameters=hyper,
                repo_id=training_args.hub_model_id,
            )
            (folder / "eval_results.json").write_text(
                json.dumps({"eval": eval_metrics, "entity_scores": scores}, indent=2)
            )

        save_folder_atomically(final_dir, write)
        (Path(training_args.output_dir) / "all_results.json").write_text(json.dumps(result, indent=2, default=str))
        logger.info(f"Saved the final model, processor, code and model card to {final_dir}")
        if push:
            from .hub import push_folder_to_hub

            commit = push_folder_to_hub(
                final_dir, training_args.hub_model_id, token=token, private=training_args.hub_private_repo
            )
            result["pushed"] = str(getattr(commit, "commit_url", commit))
    return result


def _hyperparameters(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments, model: PreTrainedModel
) -> dict:
    config = model.config
    hyper = {
        "text encoder": model_args.text_model or model_args.model_name_or_path or "random init (no --text_model)",
        "backbone": f"{config.backbone} cut at {config.backbone_return_node}" if config.use_visual_features else "-",
        "backbone weights": (config.backbone_weights or "random init") if config.use_visual_features else "-",
        "visual branch": config.use_visual_features,
        "image size": config.image_size,
        "hidden size / layers / heads": f"{config.hidden_size} / {config.num_hidden_layers} / "
        f"{config.num_attention_heads}",
        "epochs": training_args.num_train_epochs
        if training_args.max_steps <= 0
        else f"{training_args.max_steps} steps",
        "batch size per device": training_args.per_device_train_batch_size,
        "learning rate": training_args.learning_rate,
        "learning rates (backbone / visual / text / head)": " / ".join(
            str(training_args.learning_rate if v is None else v)
            for v in (
                model_args.backbone_learning_rate,
                model_args.visual_learning_rate,
                model_args.text_learning_rate,
                model_args.head_learning_rate,
            )
        ),
        "warmup": training_args.warmup_steps,
        "weight decay": training_args.weight_decay,
        "window / stride (tokens)": f"{data_args.max_length} / {data_args.stride}",
        "seed": training_args.seed,
    }
    return hyper


def namespace_dict(*dataclasses_: Any) -> dict:
    """The merged fields of argument dataclasses (for logs)."""
    merged = {}
    for item in dataclasses_:
        merged.update(asdict(item))
    return merged


# ------------------------------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict_windows(
    model: PreTrainedModel, encoded: Dataset, pad_token_id: int, batch_size: int = 8
) -> list[np.ndarray]:
    """Token label ids of every window of an encoded dataset (one array per window, its own length)."""
    model.eval()
    device = next(model.parameters()).device
    collator = DataCollatorForLayoutLMRoIAlign(pad_token_id=pad_token_id, pad_to_multiple_of=None)
    columns = [c for c in MODEL_INPUTS if c in encoded.column_names and c != "labels"]
    out = []
    for start in range(0, len(encoded), batch_size):
        rows = encoded.select_columns(columns).select(range(start, min(start + batch_size, len(encoded))))
        batch = collator([rows[i] for i in range(len(rows))])
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        ids = logits.argmax(-1).cpu().numpy()
        out.extend(ids[i, : len(rows[i]["input_ids"])] for i in range(len(rows)))
    return out


def evaluate_checkpoint(
    model: str,
    dataset: str = "synthetic",
    split: str = "validation",
    validation_size: float = 0.2,
    split_seed: int = 0,
    synthetic_pages: int = 240,
    synthetic_seed: int = 0,
    max_length: int = 512,
    stride: int = 128,
    batch_size: int = 8,
    trust_remote_code: bool = False,
    return_predictions: bool = False,
    **unused: Any,
) -> dict:
    """Score checkpoint `model` on `split` of `dataset` (loaded as `scripts/train.py` loads it, so the same
    `--split_seed` gives the same validation pages). Returns the JSON report: entity precision/recall/F1 overall
    and per type, word accuracy, page count (and the per-page word labels with `return_predictions`)."""
    data_args = DataArguments(
        dataset=dataset,
        validation_size=validation_size,
        split_seed=split_seed,
        synthetic_pages=synthetic_pages,
        synthetic_seed=synthetic_seed,
    )
    raw = load_training_data(data_args)
    if split not in raw:
        raise ValueError(f"--split {split!r} is not a split of --dataset {dataset!r}: {sorted(raw)}.")
    pages = raw[split]
    if not os.path.isdir(model) and os.path.sep in model:
        raise ValueError(f"--model {model!r} is not a folder.")
    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    check_label_set([config.id2label[i] for i in range(config.num_labels)], label_names_of(pages), f"--model {model}")
    net = AutoModelForTokenClassification.from_pretrained(model, trust_remote_code=trust_remote_code)
    processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    if torch.cuda.is_available():
        net = net.cuda()
    encoded = encode_dataset(pages, processor, max_length, stride, desc=f"Encoding {split}")
    metrics = WordLevelEntityMetrics(encoded, pages, net.config.id2label)
    predictions = metrics.word_predictions(predict_windows(net, encoded, processor.tokenizer.pad_token_id, batch_size))
    scores = entity_scores(metrics.references, predictions)
    report = {
        "model": model,
        "dataset": dataset,
        "split": split,
        "pages": len(pages),
        "windows": len(encoded),
        **scores,
    }
    if return_predictions:
        report["predictions"] = predictions
        report["references"] = metrics.references
    return report
