"""What a pre-training run reads and starts from (`PretrainingArguments`) and the script's training defaults
(`PRETRAIN_SCRIPT_DEFAULTS`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..labelling.reading import WORDS_FROM
from ..labelling.sources import PageSourceArguments

__all__ = ["PRETRAIN_SCRIPT_DEFAULTS", "PretrainingArguments"]

# TrainingArguments defaults of the pre-training script: one learning rate with 10 % warm-up (LayoutLM's 5e-5),
# checkpoints and held-out evaluation every 200 steps, so that a killed run resumes from at most 200 steps back.
PRETRAIN_SCRIPT_DEFAULTS = dict(
    learning_rate=5e-5,
    warmup_steps=0.1,
    weight_decay=0.01,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=8,
    num_train_epochs=1,
    eval_strategy="steps",
    eval_steps=200,
    save_strategy="steps",
    save_steps=200,
    logging_steps=20,
    save_total_limit=2,
    report_to="none",
    remove_unused_columns=False,
    train_sampling_strategy="group_by_length",  # windows of similar lengths in a batch: padding costs as much as text
)


def _is_path(name: str) -> bool:
    """Whether `name` can only be a local path: a Hub id is `name` or `owner/name`."""
    return name.startswith((".", "~", "/")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


@dataclass
class PretrainingArguments(PageSourceArguments):
    """Where the pages come from (`PageSourceArguments`), which model to start from and how to mask (the
    `TrainingArguments` say how to train)."""

    max_pages: int | None = field(
        default=None, metadata={"help": "Read only the first N pages of the sources (in their order)."}
    )
    num_workers: int = field(default=2, metadata={"help": "Processes reading, OCRing and encoding pages."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where the tokenized windows are kept (default <output_dir>/windows); reused when the "
                  "pages and reading settings are the same."},
    )  # fmt: skip
    max_length: int = field(default=512, metadata={"help": "Tokens per window."})
    stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a page."})
    text_model: str | None = field(
        default=None,
        metadata={"help": "Start from this BERT / MiniLM / LayoutLM checkpoint (folder or Hub id) and its tokenizer."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from one of this package's checkpoints (e.g. an earlier MVLM run)."}
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "Without --text_model: a tokenizer folder for a randomly initialized encoder."}
    )
    hidden_size: int | None = field(default=None, metadata={"help": "Encoder size (random encoder only)."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Encoder layers (random encoder only)."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Attention heads (random encoder only)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Feed-forward size (random encoder only)."})
    text_only: bool = field(default=False, metadata={"help": "No visual branch: pre-train text and layout only."})
    backbone: str = field(default="resnet101", metadata={"help": "torchvision backbone (with pixels)."})
    backbone_weights: str | None = field(
        default=None, metadata={"help": "Backbone weights: a torchvision weight name or a state-dict file."}
    )
    image_size: int = field(default=224, metadata={"help": "Side of the square page image the backbone sees."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of the tokens to predict."})
    whole_word_mask: bool = field(default=False, metadata={"help": "Choose whole words (all their sub-tokens)."})
    validation_windows: int = field(
        default=64, metadata={"help": "Windows held out (masked once) for the loss and masked-token accuracy."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.inputs and not self.dataset:
            raise ValueError("Give --inputs (folders, globs, list files, files) or --dataset, or both.")
        if self.words_from not in WORDS_FROM:
            raise ValueError(f"--words_from must be one of {WORDS_FROM}, got {self.words_from!r}.")
        if (self.words_column is None) != (self.boxes_column is None):
            raise ValueError("Give --words_column and --boxes_column together (the words and their 0-1000 boxes).")
        if sum(x is not None for x in (self.text_model, self.model_name_or_path, self.tokenizer)) != 1:
            raise ValueError(
                "Give exactly one of --text_model (a BERT/LayoutLM checkpoint), --model_name_or_path (one of this "
                "package's checkpoints) or --tokenizer (a tokenizer folder, for a randomly initialized encoder)."
            )
        for flag in ("text_model", "model_name_or_path", "tokenizer"):
            value = getattr(self, flag)
            if value is not None and _is_path(value) and not os.path.isdir(os.path.expanduser(value)):
                raise ValueError(
                    f"--{flag} {value!r} is not a folder: give a checkpoint folder or a Hub id (owner/name)."
                )
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if not 0 <= self.stride < self.max_length:
            raise ValueError(f"--stride must be in 0..--max_length - 1 ({self.max_length - 1}), got {self.stride}.")
        if self.max_pages is not None and self.max_pages < 1:
            raise ValueError(f"--max_pages must be positive, got {self.max_pages}.")
        if self.validation_windows < 0:
            raise ValueError(f"--validation_windows must be 0 or more, got {self.validation_windows}.")
