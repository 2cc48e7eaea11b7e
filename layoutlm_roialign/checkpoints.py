"""Models to fine-tune and the folders a run writes.

`build_model_and_processor` gives the model and processor a run starts from: one of our checkpoints (whose label set
must equal the dataset's; `check_label_set`) or pretrained parts. `last_complete_checkpoint` and `completed_run` read
what an earlier run in the same output folder left (to resume it, or to see that it is finished), and
`save_folder_atomically` writes the final folder so that an interruption never leaves a half-written one that loads;
`remove_stale_temporary_folders` clears what an interrupted save left behind, and `prepare_final_folder` refuses a
`final/` that holds anything a checkpoint save does not write (`is_written_checkpoint`). `map_state_dict_by_position` turns
backbone weights saved under other key names into a file the backbone loads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoProcessor, AutoTokenizer, PreTrainedModel, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig
from .configuration_layoutlm_roialign import label_names as config_label_names
from .image_processing_layoutlm_roialign import LayoutLMRoIAlignImageProcessor
from .modeling_layoutlm_roialign import LayoutLMRoIAlignForRelationExtraction, LayoutLMRoIAlignForTokenClassification
from .processing_layoutlm_roialign import LayoutLMRoIAlignProcessor
from .wordpiece import train_wordpiece_tokenizer

__all__ = [
    "FINAL_FOLDER",
    "TASK_MODELS",
    "build_model_and_processor",
    "check_label_set",
    "completed_run",
    "last_complete_checkpoint",
    "is_pretraining_checkpoint",
    "load_checkpoint_for_labels",
    "is_written_checkpoint",
    "map_state_dict_by_position",
    "prepare_final_folder",
    "remove_stale_temporary_folders",
    "save_folder_atomically",
]

logger = logging.getLogger(__name__)

FINAL_FOLDER = "final"
# `--task` -> the model class a run trains: the linking model is the token classifier plus a link head.
TASK_MODELS = {
    "token-classification": LayoutLMRoIAlignForTokenClassification,
    "linking": LayoutLMRoIAlignForRelationExtraction,
}
# The names of what a checkpoint save writes (`Trainer.save_model`: model, processor, tokenizer, code; our card and
# results): a folder holding anything else holds something of the user's, and is never replaced.
CHECKPOINT_FILE = re.compile(
    r"(config|generation_config|processor_config|preprocessor_config|tokenizer|tokenizer_config|special_tokens_map"
    r"|added_tokens|model\.safetensors\.index|eval_results|pretraining_results)\.json"
    r"|model(-\d+-of-\d+)?\.safetensors|training_args\.bin|vocab\.txt|chat_template\.jinja|README\.md"
    r"|[a-z_]+_layoutlm_roialign\.py"  # the code files; the other modules a checkpoint carries: `_is_checkpoint_file`
)
TEXT_SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


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


def is_pretraining_checkpoint(path: str, trust_remote_code: bool = False) -> bool:
    """Whether checkpoint `path` is a masked-LM pre-training checkpoint (`LayoutLMRoIAlignForMaskedLM`), which has
    no label set: a task model starts from its encoder with a new head."""
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return "LayoutLMRoIAlignForMaskedLM" in (getattr(config, "architectures", None) or [])


def load_checkpoint_for_labels(
    path: str, label_names: Sequence[str], source: str, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, Any]:
    """Load checkpoint `path` (a folder or Hub id) and its processor, and check that it labels words (a token
    classifier or linking model) and that its label set is `label_names` (`source` names the flag for the messages)."""
    from .loader import load_model_and_processor

    model, processor = load_model_and_processor(path, trust_remote_code=trust_remote_code, task="token-classification")
    check_label_set(config_label_names(model.config), label_names, source)
    return model, processor


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
        task: `"token-classification"` or `"linking"` (the token classifier plus the key-value link head; a
            token-classification checkpoint given as `model_name_or_path` then gets a fresh link head).
        config_kwargs: fields of `LayoutLMRoIAlignConfig` (`backbone`, `image_size`, `visual_init`, text sizes,
            ...); `None` values keep the config's defaults.

    Raises:
        ValueError: naming the flag, for a label set or size that does not fit, or a checkpoint path that is not a
            folder.
    """
    label_names = list(label_names)
    if task not in TASK_MODELS:
        raise ValueError(f"--task must be one of {sorted(TASK_MODELS)}, got {task!r}.")
    if num_labels is not None and num_labels != len(label_names):
        raise ValueError(
            f"--num_labels {num_labels} does not match the dataset, which has {len(label_names)} labels: "
            f"{label_names}."
        )
    if model_name_or_path is not None:
        return _continue_from_checkpoint(model_name_or_path, label_names, task, trust_remote_code)
    return _build_from_parts(
        label_names, training_words, text_model, backbone_weights, tokenizer_vocab_size, task, config_kwargs
    )


def _label_fields(label_names: list[str]) -> dict[str, Any]:
    """The config fields that give a model the labels `label_names` (in id order): `num_labels`, `id2label`,
    `label2id`."""
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def _continue_from_checkpoint(
    model_name_or_path: str, label_names: list[str], task: str, trust_remote_code: bool
) -> tuple[PreTrainedModel, Any]:
    """`build_model_and_processor` from checkpoint `model_name_or_path`: an MVLM pre-training checkpoint gets a new
    head for `label_names`; a task checkpoint must have that label set, and gets a fresh link head when `task` is
    `"linking"` and it has none.

    Raises:
        ValueError: for a path that is not a folder, or a label set that differs from `label_names`.
    """
    if os.path.sep in model_name_or_path and not os.path.isdir(model_name_or_path):
        raise ValueError(f"--model_name_or_path {model_name_or_path!r} is not a folder.")
    if is_pretraining_checkpoint(model_name_or_path, trust_remote_code):
        # An MVLM checkpoint (scripts/pretrain.py): its encoder and visual branch, a new head for these labels.
        model = TASK_MODELS[task].from_pretrained(model_name_or_path, **_label_fields(label_names))
        return model, AutoProcessor.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    model, processor = load_checkpoint_for_labels(
        model_name_or_path, label_names, f"--model_name_or_path {model_name_or_path}", trust_remote_code
    )
    if task == "linking" and not hasattr(model, "link_head"):
        model = LayoutLMRoIAlignForRelationExtraction.from_pretrained(model_name_or_path)
    return model, processor


def _build_from_parts(
    label_names: list[str],
    training_words: Sequence[Sequence[str]],
    text_model: str | None,
    backbone_weights: str | None,
    tokenizer_vocab_size: int,
    task: str,
    config_kwargs: dict[str, Any],
) -> tuple[PreTrainedModel, LayoutLMRoIAlignProcessor]:
    """`build_model_and_processor` from pretrained parts (its arguments, as it takes them): the text encoder and
    tokenizer of `text_model`, or a random encoder with a WordPiece tokenizer trained on `training_words`.

    Raises:
        ValueError: naming the flags, for text sizes given with `text_model`, or no training words without it.
    """
    config_kwargs = {k: v for k, v in config_kwargs.items() if v is not None}
    sizes = {k: config_kwargs[k] for k in TEXT_SIZE_FIELDS if k in config_kwargs}
    if text_model is not None:
        if sizes:
            raise ValueError(f"--{', --'.join(sizes)} cannot be combined with --text_model (it sets the sizes).")
        tokenizer = AutoTokenizer.from_pretrained(text_model, use_fast=True)
    else:
        corpus = [" ".join(words) for words in training_words]
        if not corpus:
            raise ValueError(
                "Without --text_model a WordPiece tokenizer is trained on the training words: none given."
            )
        tokenizer = train_wordpiece_tokenizer(corpus, vocab_size=tokenizer_vocab_size)
        config_kwargs["vocab_size"] = len(tokenizer)
        config_kwargs["pad_token_id"] = tokenizer.pad_token_id
    if backbone_weights is not None and not config_kwargs.get("use_visual_features", True):
        logger.warning("--backbone_weights is ignored with --use_visual_features false.")
        backbone_weights = None
    model = TASK_MODELS[task].from_pretrained_parts(
        text_model, backbone_weights, **_label_fields(label_names), **config_kwargs
    )
    image_processor = LayoutLMRoIAlignImageProcessor(size=model.config.image_size)
    return model, LayoutLMRoIAlignProcessor(image_processor, tokenizer)


def map_state_dict_by_position(source: dict, target: dict) -> dict:
    """Rename a state dict saved under other key names to `target`'s keys, in order, checking every shape: backbone
    weights exported under other names -> a state dict that `--backbone_weights` (`load_backbone_weights`) loads, e.g.
    `torch.save(map_state_dict_by_position(export, torchvision.models.resnet50().state_dict()), "weights.pt")`.

    `num_batches_tracked` entries are left out on both sides; tensors of `source` past the end of `target` (e.g. the
    layers after a backbone's return node) are ignored.

    Raises:
        ValueError: if `source` has fewer tensors than `target`, or a shape differs (naming both keys).
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) < len(tgt):
        raise ValueError(f"The weights have {len(src)} tensors, the target needs {len(tgt)}.")
    mapped = {}
    for (sk, sv), (tk, tv) in zip(src, tgt, strict=False):
        if sv.shape != tv.shape:
            raise ValueError(f"Weight {sk!r} {tuple(sv.shape)} does not fit {tk!r} {tuple(tv.shape)}.")
        mapped[tk] = sv
    return mapped


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


def resumes_last(resume: Any) -> bool:
    """Whether `--resume_from_checkpoint` asks for the last complete checkpoint (`true` / `last`)."""
    return isinstance(resume, str) and resume.lower() in ("true", "last")


def resume_checkpoint(resume: Any, output_dir: str | os.PathLike) -> Any:
    """`--resume_from_checkpoint` as `Trainer.train` takes it: `true` / `last` -> the last complete checkpoint folder
    of `output_dir`; a folder is checked to be a complete Trainer checkpoint; anything else is returned as it is.

    Raises:
        ValueError: naming the flag, when there is no complete checkpoint to resume from.
    """
    if resumes_last(resume):
        resume = last_complete_checkpoint(output_dir)
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint: no complete checkpoint in {output_dir}.")
    elif isinstance(resume, str) and not os.path.isfile(os.path.join(resume, "trainer_state.json")):
        raise ValueError(f"--resume_from_checkpoint {resume!r} is not a complete Trainer checkpoint folder.")
    return resume


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


def is_written_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds only what a checkpoint save of this package writes (`config.json` of our model type,
    weights, processor, code, card, results; see `CHECKPOINT_FILE`), or nothing: a folder a run may replace."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if not entries:
        return True
    if any(not _is_checkpoint_file(p) for p in entries):
        return False
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == LayoutLMRoIAlignConfig.model_type


def _is_checkpoint_file(path: Path) -> bool:
    """A file a checkpoint save writes: see `CHECKPOINT_FILE`, or a module of this package (the code a checkpoint
    carries: the modeling file and what it imports)."""
    if path.is_symlink() or not path.is_file():
        return False
    return bool(CHECKPOINT_FILE.fullmatch(path.name)) or (
        path.suffix == ".py" and (Path(__file__).parent / path.name).is_file()
    )


def prepare_final_folder(output_dir: str | os.PathLike, remove_stale: bool = True, flag: str = "--output_dir") -> Path:
    """`<output_dir>/final`, checked before a run starts: an existing one must be a checkpoint this package wrote
    (`is_written_checkpoint`), since the run replaces it. With `remove_stale`, what an interrupted save left beside
    it is cleared first (`remove_stale_temporary_folders`).

    Raises:
        ValueError: naming `flag` and the folder, when it holds anything a checkpoint save does not write (it is
            left as it is).
    """
    final_dir = Path(output_dir) / FINAL_FOLDER
    if remove_stale:
        remove_stale_temporary_folders(final_dir)
    _check_replaceable(final_dir, is_written_checkpoint, flag)
    return final_dir


def _check_replaceable(destination: Path, replaceable: Callable[[Path], bool], flag: str | None) -> None:
    if (destination.exists() or destination.is_symlink()) and not replaceable(destination):
        raise ValueError(
            f"{flag + ': ' if flag else ''}{destination} holds files this run did not write, and a run replaces that "
            f"folder; it was left as it is. Move it away{f', or give another {flag}' if flag else ''}, and run again."
        )


def save_folder_atomically(
    destination: str | os.PathLike,
    write: Callable[[Path], Any],
    replaceable: Callable[[Path], bool] | None = None,
) -> Path:
    """Call `write(folder)` on a fresh temporary folder beside `destination`, then rename it to `destination`
    (replacing an older one). An interruption leaves at most a `.<name>.tmp-*` folder, never a half-written
    `destination`; the next call (or `remove_stale_temporary_folders`) removes it.

    Args:
        replaceable: tells whether an existing `destination` may be replaced (e.g. `is_written_checkpoint`);
            `None`: any.

    Raises:
        ValueError: when `destination` exists and `replaceable` says no (nothing is written then).
    """
    destination = Path(destination)
    if replaceable is not None:
        _check_replaceable(destination, replaceable, None)
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
