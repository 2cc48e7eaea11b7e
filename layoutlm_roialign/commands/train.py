"""The fine-tuning run of `scripts/train.py`: its arguments (`ModelArguments`, `TRAIN_SCRIPT_DEFAULTS`) and
`run_training`, which the script, `scripts/quickstart.py` and the tests call.

`run_training` loads the data (`layoutlm_roialign.data`), builds the model and processor
(`layoutlm_roialign.model_factory`), encodes the pages (`layoutlm_roialign.data.encoding`), trains with a learning rate
per part of the model (`layoutlm_roialign.trainer`), scores entities word by word with the package's `evaluate` metrics
(`layoutlm_roialign.metrics`), and writes the final folder (model + processor + code + model card) beside its
destination, renamed into place so that an interruption never leaves a half-written folder that loads. Only the main
process writes and pushes it.

`task="linking"` trains the key-value linking model instead (`LayoutLMRoIAlignForRelationExtraction`: the token
classifier plus a link head, one checkpoint for both; token loss + link loss on the gold entities and links of a
dataset that has them: a FUNSD release folder or `synthetic`). It keeps the best epoch by the mean of entity F1 and
link F1 with gold entities (`linking_f1`, unless `metric_for_best_model` says otherwise), and after training also
scores pairs end to end (entities predicted by the same checkpoint, then linked) on the validation pages.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments, set_seed

from ..checkpoint_files import is_written_checkpoint
from ..configuration_layoutlm_roialign import VISUAL_INITS, LayoutLMRoIAlignConfig
from ..data import DataArguments, describe_data, has_links, label_names_of, load_training_data
from ..data.encoding import DataCollatorForLayoutLMRoIAlign, encode_dataset
from ..final_folder import FINAL_FOLDER, prepare_final_folder, save_folder_atomically
from ..heads_layoutlm_roialign import task_links
from ..hub import HubError, check_push_arguments, push_folder_to_hub, write_model_card
from ..metrics import LinkingMetrics, WordLevelEntityMetrics, argmax_logits, argmax_logits_keep_links
from ..model_factory import build_model_and_processor
from ..options_layoutlm_roialign import window_sizes
from ..resuming import completed_run, resume_checkpoint, resumes_last
from ..trainer import (
    PARAMETER_GROUPS,
    LayoutLMRoIAlignTrainer,
    check_bf16,
    check_resumed_precision,
    freeze_backbone_until,
    training_precision,
)

__all__ = [
    "TRAIN_SCRIPT_DEFAULTS",
    "ModelArguments",
    "hyperparameters",
    "run_training",
    "use_cpu_processes_without_gpus",
]

logger = logging.getLogger(__name__)

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


def _config_default(name: str):
    """The default of a `LayoutLMRoIAlignConfig` field, so the flags follow the config instead of repeating it."""
    return inspect.signature(LayoutLMRoIAlignConfig.__init__).parameters[name].default


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
        default=_config_default("backbone"),
        metadata={"help": "torchvision backbone: resnet18/50/101, mobilenet_v2, ..."},
    )
    image_size: int = field(
        default=_config_default("image_size"), metadata={"help": "Side of the square page image the backbone sees."}
    )
    use_visual_features: bool = field(
        default=True, metadata={"help": "Use the visual branch; false gives the text-only ablation."}
    )
    visual_init: str = field(
        default=_config_default("visual_init"),
        metadata={"help": f"How the visual term starts (the config's `visual_init`): {', '.join(VISUAL_INITS)}."},
    )
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
    task: str = field(
        default="token-classification",
        metadata={
            "help": "token-classification (label words), or linking (label words and link question -> answer "
            "entities: one checkpoint for both; needs a dataset with entity links)."
        },
    )

    def model_kwargs(self) -> dict:
        """The fields that say which model to build (`build_model_and_processor`'s keywords), without those that
        say how to train it (learning rates, freezing)."""
        training = {f"{part}_learning_rate" for part in PARAMETER_GROUPS}
        return {k: v for k, v in asdict(self).items() if k not in training | {"freeze_backbone_until"}}


def use_cpu_processes_without_gpus() -> None:
    """Under a multi-process launcher (`accelerate launch --multi_gpu --num_processes N`, `torchrun`) on a machine
    without GPUs, make `TrainingArguments` set up DDP over CPU processes (gloo) instead of N unrelated single-process
    runs. Call before parsing the arguments (their device is fixed when they are created)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict:
    """Fine-tune, evaluate, save the final folder (`<output_dir>/final`: model, processor, code, model card) and
    push it with `--push_to_hub`. Returns `{"train": ..., "eval": ..., "entity_scores": ..., "link_scores": ...,
    "final_dir": ...}`.

    `--resume_from_checkpoint` continues from a checkpoint folder, or with `true` from the last complete
    `checkpoint-N` of `--output_dir`; on a run that already finished it trains nothing and returns that run's summary.
    """
    token = check_push_arguments(training_args)
    check_bf16(training_args)
    push, training_args.push_to_hub = training_args.push_to_hub, False  # we push the final folder ourselves
    prepare_final_folder(training_args.output_dir, remove_stale=training_args.should_save)
    done = _finished_run(training_args)
    if done is not None:
        return done
    set_seed(training_args.seed)

    raw = load_training_data(data_args)
    linking = task_links(model_args.task)
    if linking and not all(has_links(raw[name]) for name in ("train", "validation")):
        raise ValueError(
            f"--task {model_args.task} needs entity links in the data; --dataset {data_args.dataset!r} has none (use a "
            "FUNSD release folder, a save_to_disk copy of one, or 'synthetic')."
        )
    model, processor = build_model_and_processor(
        label_names_of(raw["train"]), raw["train"]["words"], **model_args.model_kwargs()
    )
    if model_args.freeze_backbone_until:
        freeze_backbone_until(model, model_args.freeze_backbone_until)
    max_length, stride = window_sizes(model.config, data_args.max_length, data_args.stride)  # the model's by default
    data_args = replace(data_args, max_length=max_length, stride=stride)
    trainer, metrics = _build_trainer(model_args, data_args, training_args, raw, model, processor, callbacks)
    resume = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_resumed_precision(resume, training_args)
    train_result = trainer.train(resume_from_checkpoint=resume)
    eval_metrics = trainer.evaluate()
    scores = metrics.entity_metrics.last_scores if linking else metrics.last_scores
    link_scores = _link_scores(trainer, processor, raw["validation"], data_args, metrics) if linking else None

    final_dir = Path(training_args.output_dir) / FINAL_FOLDER
    result = {
        "train": train_result.metrics,
        "eval": eval_metrics,
        "entity_scores": scores,
        "link_scores": link_scores,
        "global_step": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "final_dir": str(final_dir),
        "parameter_groups": trainer.parameter_groups_summary,
    }
    if trainer.is_world_process_zero():
        card = {
            "scores": scores,
            "data": describe_data(data_args, raw),
            "hyperparameters": hyperparameters(model_args, data_args, training_args, model),
            "repo_id": training_args.hub_model_id,
            "link_scores": link_scores,
        }
        _save_final_folder(trainer, final_dir, card, eval_metrics)
        (Path(training_args.output_dir) / "all_results.json").write_text(json.dumps(result, indent=2, default=str))
        logger.info(f"Saved the final model, processor, code and model card to {final_dir}")
        if push:
            result["pushed"] = _push(final_dir, training_args, token)
    return result


def _finished_run(training_args: TrainingArguments) -> dict | None:
    """With `--resume_from_checkpoint true` on a run whose final folder is complete: that run's summary (logged as
    nothing to resume). Otherwise `None`."""
    if not resumes_last(training_args.resume_from_checkpoint):
        return None
    done = completed_run(training_args.output_dir, training_args)
    if done is not None:
        logger.warning(
            f"The run in {training_args.output_dir} is complete (step {done['global_step']}; its final folder is "
            f"{done['final_dir']}): nothing to resume. Ask for more steps or epochs to continue it, or give "
            "another --output_dir to train again."
        )
    return done


def _build_trainer(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    raw: Any,
    model: PreTrainedModel,
    processor: Any,
    callbacks: Sequence[TrainerCallback],
) -> tuple[LayoutLMRoIAlignTrainer, WordLevelEntityMetrics | LinkingMetrics]:
    """The encoded train and validation windows, the task's `compute_metrics`, and the trainer over them."""
    linking = task_links(model_args.task)
    entity_types = model.config.resolved_entity_types if linking else None
    with training_args.main_process_first(desc="encoding"):
        train_set, eval_set = (
            encode_dataset(
                raw[name],
                processor,
                data_args.max_length,
                data_args.stride,
                data_args.preprocessing_num_workers,
                entity_types=entity_types,
            )
            for name in ("train", "validation")
        )
    collator = DataCollatorForLayoutLMRoIAlign(pad_token_id=processor.tokenizer.pad_token_id)
    if linking:
        # One entity count for every batch, so that evaluation's link logits concatenate across batches.
        collator.max_entities = max(len(row) for part in (train_set, eval_set) for row in part["entity_index"])
        metrics = LinkingMetrics(eval_set, raw["validation"], model.config)
        training_args.label_names = ["labels", "link_labels"]
        if training_args.metric_for_best_model in ("f1", "eval_f1"):
            # Entity F1 and link F1 with gold entities, averaged: end-to-end pairs need both (by link F1 alone, the
            # synthetic forms' run kept its first epoch, where every link is found but entities are not yet).
            training_args.metric_for_best_model = "linking_f1"
    else:
        metrics = WordLevelEntityMetrics(eval_set, raw["validation"], model.config.id2label)
    trainer = LayoutLMRoIAlignTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=processor,
        compute_metrics=metrics,
        preprocess_logits_for_metrics=argmax_logits_keep_links if linking else argmax_logits,
        callbacks=list(callbacks),
        learning_rates={part: getattr(model_args, f"{part}_learning_rate") for part in PARAMETER_GROUPS},
    )
    return trainer, metrics


def _link_scores(
    trainer: LayoutLMRoIAlignTrainer, processor: Any, pages: Any, data_args: DataArguments, metrics: LinkingMetrics
) -> dict:
    """The last evaluation's pair scores with gold entities, plus pairs end to end (between the entities the trained
    model finds) on `pages`, at the config's threshold (`end_to_end`) and at each of the metric's thresholds."""
    from ..dataset_predictions import end_to_end_scores

    link_scores = dict(metrics.last_scores)
    threshold = trainer.model.config.link_threshold
    by_threshold = end_to_end_scores(
        trainer.model,
        processor,
        pages,
        data_args.max_length,
        data_args.stride,
        thresholds=sorted({*metrics.THRESHOLDS, threshold}),
        dtype="bfloat16" if trainer.args.bf16 else "float32",  # the precision the run trained and chose its epoch in
    )
    link_scores["end_to_end"] = by_threshold[threshold]
    link_scores["end_to_end_by_threshold"] = by_threshold
    return link_scores


def _save_final_folder(trainer: LayoutLMRoIAlignTrainer, final_dir: Path, card: dict, eval_metrics: dict) -> None:
    """Write model (+ code, `auto_map`), processor (+ code), the model card (`card`: `write_model_card`'s keywords)
    and `eval_results.json` into `final_dir`, atomically."""

    def write(folder: Path) -> None:
        trainer.save_model(str(folder))
        write_model_card(folder, **card)
        results = {"eval": eval_metrics, "entity_scores": card["scores"], "link_scores": card["link_scores"]}
        (folder / "eval_results.json").write_text(json.dumps(results, indent=2))

    save_folder_atomically(final_dir, write, replaceable=is_written_checkpoint)


def _push(final_dir: Path, training_args: TrainingArguments, token: str | None) -> str:
    """Push the final folder to `--hub_model_id`; returns the commit's URL.

    Raises:
        HubError: one line saying what failed, that the trained folder is kept, and how to publish it later.
    """
    try:
        commit = push_folder_to_hub(
            final_dir, training_args.hub_model_id, token=token, private=training_args.hub_private_repo
        )
    except HubError as err:
        raise HubError(
            f"{err}; the trained model is kept in {final_dir} (scripts/publish.py --model {final_dir} "
            f"--repo_id {training_args.hub_model_id} publishes it)"
        ) from err
    return str(getattr(commit, "commit_url", commit))


def hyperparameters(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments, model: PreTrainedModel
) -> dict:
    """The model card's hyper-parameter rows of a run: what was trained (text encoder, backbone and its weights,
    sizes) and how (epochs, batch size, learning rates per part, window, seed, precision). A local `--text_model` folder is named,
    never its path on this machine."""
    config = model.config
    text = model_args.text_model or model_args.model_name_or_path
    if text and os.path.exists(text):  # a card on the Hub names the folder, never this machine's path
        text = f"{os.path.basename(os.path.normpath(text))} (a local folder)"
    hyper = {
        "text encoder": text or "random init (no --text_model)",
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
        f"learning rates ({' / '.join(PARAMETER_GROUPS)})": " / ".join(
            str(training_args.learning_rate if rate is None else rate)
            for rate in (getattr(model_args, f"{part}_learning_rate") for part in PARAMETER_GROUPS)
        ),
        "warmup": training_args.warmup_steps,
        "weight decay": training_args.weight_decay,
        "window / stride (tokens)": f"{data_args.max_length} / {data_args.stride}",
        "seed": training_args.seed,
        "precision (training, and the evaluations that choose the kept epoch)": training_precision(training_args),
    }
    if task_links(model_args.task):
        hyper["task"] = f"{model_args.task} (token labels + key-value links, one checkpoint)"
        hyper["link types / threshold / one key per value"] = (
            f"{config.link_types} / {config.link_threshold} / {config.link_one_value_key}"
        )
    return hyper
