"""Builds the model and processor a run starts from: `build_model_and_processor` for fine-tuning (a head of
`heads_layoutlm_roialign.HEADS` chosen by `--task`) and `build_pretraining_model` for pre-training (the masked-LM
head), each from one of our checkpoints (`model_from_checkpoint`) or from pretrained parts (`model_from_parts`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from transformers import AutoConfig, AutoProcessor, AutoTokenizer, PreTrainedModel

from . import modeling_layoutlm_roialign
from .heads_layoutlm_roialign import HEADS, head_classes, is_masked_lm, task_heads
from .image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor
from .label_sets import load_checkpoint_for_labels
from .processing_layoutlm_roialign import LayoutLMRoIAlignProcessor
from .wordpiece import train_wordpiece_tokenizer

__all__ = [
    "TEXT_SIZE_FIELDS",
    "build_model_and_processor",
    "build_pretraining_model",
    "head_class",
    "is_pretraining_checkpoint",
    "model_from_checkpoint",
    "model_from_parts",
    "task_model",
]

logger = logging.getLogger(__name__)

# The config fields that size the text encoder: set by `text_model` when one is given.
TEXT_SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def head_class(name: str) -> type:
    """The class of the registered head named `name`."""
    return head_classes(vars(modeling_layoutlm_roialign))[name]


def task_model(task: str) -> type:
    """The head class that `--task` `task` trains (`Head.task` of the registry).

    Raises:
        ValueError: naming `--task` and the tasks there are.
    """
    tasks = task_heads()
    if task not in tasks:
        raise ValueError(f"--task must be one of {sorted(tasks)}, got {task!r}.")
    return head_class(tasks[task])


def is_pretraining_checkpoint(path: str, trust_remote_code: bool = False) -> bool:
    """Whether checkpoint `path` was saved by a masked-LM (pre-training) head, which has no label set: a task model
    starts from its encoder with a new head."""
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return any(is_masked_lm(name) for name in getattr(config, "architectures", None) or [])


@contextlib.contextmanager
def names_the_flag(flag: str, value: str | None) -> Iterator[None]:
    """Turn a checkpoint or tokenizer that cannot be loaded (`OSError`: no such folder or Hub model, a file missing)
    into a `ValueError` naming `flag`."""
    try:
        yield
    except OSError as err:
        raise ValueError(f"{flag} {value!r} cannot be loaded: {err}") from err


def model_from_checkpoint(
    head: type, path: str, flag: str = "--model_name_or_path", trust_remote_code: bool = False, **config_fields: Any
) -> tuple[PreTrainedModel, Any]:
    """Head class `head` with the weights of checkpoint `path` (a head it lacks starts fresh), and the checkpoint's
    processor; `config_fields` override its config (e.g. a new label set).

    Raises:
        ValueError: naming `flag`, when `path` cannot be loaded.
    """
    with names_the_flag(flag, path):
        model = head.from_pretrained(path, **config_fields)
        return model, AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)


def model_from_parts(
    head: type,
    tokenizer: Any,
    text_model: str | None = None,
    backbone_weights: str | None = None,
    **config_kwargs: Any,
) -> tuple[PreTrainedModel, LayoutLMRoIAlignProcessor]:
    """Head class `head` built from pretrained parts (`from_pretrained_parts`): the text encoder of `text_model`
    (`None`: a random one of the sizes in `config_kwargs`, its vocabulary `tokenizer`'s) and the backbone weights,
    with a processor of `tokenizer`. `config_kwargs` are fields of `LayoutLMRoIAlignConfig`; `None` values keep the
    defaults.

    Raises:
        ValueError: naming the flags, for text sizes given with `text_model`.
    """
    config_kwargs = {k: v for k, v in config_kwargs.items() if v is not None}
    _check_text_sizes(text_model, config_kwargs)
    if text_model is None:
        config_kwargs.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if backbone_weights is not None and not config_kwargs.get("use_visual_features", True):
        logger.warning("--backbone_weights is ignored without the visual branch (--use_visual_features false).")
        backbone_weights = None
    with names_the_flag("--text_model", text_model):
        model = head.from_pretrained_parts(text_model, backbone_weights, **config_kwargs)
    image_processor = LayoutLMRoIAlignImageProcessor(size=model.config.image_size)
    return model, LayoutLMRoIAlignProcessor(image_processor, tokenizer)


def _check_text_sizes(text_model: str | None, config_kwargs: dict[str, Any]) -> None:
    sizes = [k for k in TEXT_SIZE_FIELDS if config_kwargs.get(k) is not None]
    if text_model is not None and sizes:
        raise ValueError(f"--{', --'.join(sizes)} cannot be combined with --text_model (it sets the sizes).")


def label_fields(label_names: Sequence[str]) -> dict[str, Any]:
    """The config fields that give a model the labels `label_names` (in id order): `num_labels`, `id2label`,
    `label2id`."""
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def build_model_and_processor(
    label_names: Sequence[str],
    training_words: Sequence[Sequence[str]] = (),
    *,
    model_name_or_path: str | None = None,
    trust_remote_code: bool = False,
    text_model: str | None = None,
    backbone_weights: str | None = None,
    tokenizer_vocab_size: int = 1000,
    num_labels: int | None = None,
    task: str = "token-classification",
    **config_kwargs: Any,
) -> tuple[PreTrainedModel, LayoutLMRoIAlignProcessor]:
    """The model and processor to fine-tune on a dataset with labels `label_names`.

    Args:
        label_names: the dataset's labels in id order.
        training_words: the training pages' words; without `text_model` a WordPiece tokenizer is trained on them.
        model_name_or_path: one of our checkpoints to continue from (its label set is checked), or an MVLM
            pre-training checkpoint (`scripts/pretrain.py`; the task head starts fresh); the arguments below are then
            unused.
        trust_remote_code: run that checkpoint's own code.
        text_model: a pretrained LayoutLM or BERT checkpoint for the text encoder and its tokenizer (`None`: a
            random encoder of the sizes in `config_kwargs`).
        backbone_weights: torchvision weight name or state-dict file of the backbone (`None`: random).
        tokenizer_vocab_size: size of the WordPiece vocabulary trained without `text_model`.
        num_labels: the expected number of labels, checked against `label_names`.
        task: a `--task` of the registry (`"token-classification"`, or `"linking"`: the token classifier plus the
            key-value link head; a token-classification checkpoint given as `model_name_or_path` then gets a fresh
            link head).
        config_kwargs: fields of `LayoutLMRoIAlignConfig` (`backbone`, `image_size`, `visual_init`, text sizes,
            ...); `None` values keep the config's defaults.

    Raises:
        ValueError: naming the flag, for a label set or size that does not fit, or a checkpoint path that is not a
            folder.
    """
    label_names = list(label_names)
    head = task_model(task)
    if num_labels is not None and num_labels != len(label_names):
        raise ValueError(
            f"--num_labels {num_labels} does not match the dataset, which has {len(label_names)} labels: "
            f"{label_names}."
        )
    if model_name_or_path is not None:
        return _continue_from_checkpoint(model_name_or_path, label_names, head, trust_remote_code)
    _check_text_sizes(text_model, config_kwargs)
    if text_model is not None:
        with names_the_flag("--text_model", text_model):
            tokenizer = AutoTokenizer.from_pretrained(text_model, use_fast=True)
    else:
        corpus = [" ".join(words) for words in training_words]
        if not corpus:
            raise ValueError(
                "Without --text_model a WordPiece tokenizer is trained on the training words: none given."
            )
        tokenizer = train_wordpiece_tokenizer(corpus, vocab_size=tokenizer_vocab_size)
    return model_from_parts(
        head, tokenizer, text_model, backbone_weights, **label_fields(label_names), **config_kwargs
    )


def _continue_from_checkpoint(
    model_name_or_path: str, label_names: list[str], head: type, trust_remote_code: bool
) -> tuple[PreTrainedModel, Any]:
    """`build_model_and_processor` from checkpoint `model_name_or_path`: a pre-training checkpoint gets a new `head`
    for `label_names`; a task checkpoint must have that label set, and becomes a `head` that links (a fresh link
    head) when `head` links and it does not.

    Raises:
        ValueError: for a path that is not a folder, or a label set that differs from `label_names`.
    """
    if os.path.sep in model_name_or_path and not os.path.isdir(model_name_or_path):
        raise ValueError(f"--model_name_or_path {model_name_or_path!r} is not a folder.")
    if is_pretraining_checkpoint(model_name_or_path, trust_remote_code):
        # An MVLM checkpoint (scripts/pretrain.py): its encoder and visual branch, a new head for these labels.
        return model_from_checkpoint(
            head, model_name_or_path, trust_remote_code=trust_remote_code, **label_fields(label_names)
        )
    model, processor = load_checkpoint_for_labels(
        model_name_or_path, label_names, f"--model_name_or_path {model_name_or_path}", trust_remote_code
    )
    saved = HEADS.get(type(model).__name__)
    if HEADS[head.__name__].links and not (saved and saved.links):
        model = model_from_checkpoint(head, model_name_or_path, trust_remote_code=trust_remote_code)[0]
    return model, processor


def build_pretraining_model(args: Any) -> tuple[PreTrainedModel, LayoutLMRoIAlignProcessor]:
    """The masked-LM model and its processor for pre-training arguments `args` (`PretrainingArguments`): one of our
    checkpoints (`model_name_or_path`; a head is added if it has none), a pretrained text encoder (`text_model`, its
    2-D position embeddings fresh when it is a BERT), or a random encoder of the given sizes with `tokenizer`."""
    head = head_class(next(name for name in HEADS if is_masked_lm(name)))
    if args.model_name_or_path is not None:
        return model_from_checkpoint(head, args.model_name_or_path)
    config: dict[str, Any] = {"backbone": args.backbone, "image_size": args.image_size}
    config["use_visual_features"] = not args.text_only
    config.update({k: getattr(args, k) for k in TEXT_SIZE_FIELDS})
    _check_text_sizes(args.text_model, config)
    flag = "--text_model" if args.text_model is not None else "--tokenizer"
    with names_the_flag(flag, args.text_model or args.tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(args.text_model or args.tokenizer, use_fast=True)
    if args.text_model is None:
        config["max_position_embeddings"] = max(512, args.max_length)
    weights = None if args.text_only else args.backbone_weights
    return model_from_parts(head, tokenizer, args.text_model, weights, **config)
