"""What the files of a checkpoint folder say about it. Two questions, kept apart:

- `check_complete_checkpoint` / `is_complete_checkpoint`: does the folder hold a whole checkpoint that loads (config,
  undamaged weights, processor, the code its configs name)? Asked by the loader, the Hub push and resume.
- `is_written_checkpoint`: does the folder hold only what a checkpoint save of this package writes (so a run may
  replace it)?
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .configuration_layoutlm_roialign import LayoutLMRoIAlignConfig

__all__ = [
    "CHECKPOINT_FILE",
    "check_complete_checkpoint",
    "checkpoint_code_files",
    "is_complete_checkpoint",
    "is_written_checkpoint",
]

# The names of what a checkpoint save writes (`Trainer.save_model`: model, processor, tokenizer, code; our card and
# results): a folder holding anything else holds something of the user's, and is never replaced.
CHECKPOINT_FILE = re.compile(
    r"(config|generation_config|processor_config|preprocessor_config|tokenizer|tokenizer_config|special_tokens_map"
    r"|added_tokens|model\.safetensors\.index|eval_results|pretraining_results)\.json"
    r"|model(-\d+-of-\d+)?\.safetensors|training_args\.bin|vocab\.txt|chat_template\.jinja|README\.md"
    r"|[a-z_]+_layoutlm_roialign\.py"  # the code files; the other modules a checkpoint carries: `_is_checkpoint_file`
)


def check_complete_checkpoint(folder: str | os.PathLike, flag: str | None = None, also: Sequence[str] = ()) -> None:
    """Check that `folder` holds a whole checkpoint: `config.json`, its weights (each file listed by the shard index
    present, each safetensors file as long as its header says), `processor_config.json`, the code files its configs
    name (`checkpoint_code_files`), and the files named in `also` (e.g. the card, to publish it).

    Raises:
        ValueError: naming `flag` (e.g. `"--model"`) and the folder, and what is missing or damaged.
    """
    folder = os.fspath(folder)
    who = f"{flag} {folder!r}" if flag else folder
    if not os.path.isfile(os.path.join(folder, "config.json")):
        inside = sorted(d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "config.json")))
        hint = f" It holds saved models in {inside}: give one of them." if inside else ""
        raise ValueError(f"{who} has no config.json: it is not a folder written by `save_pretrained`.{hint}")
    _check_weights(folder, who)
    names = set(os.listdir(folder))
    missing = sorted({"processor_config.json", *checkpoint_code_files(folder), *also} - names)
    if missing:
        hint = ""
        if "processor_config.json" in missing:
            hint = (
                " The folders scripts/train.py writes hold model and processor; save one beside the model with "
                "`processor.save_pretrained(folder)`."
            )
        raise ValueError(f"{who} is not a complete checkpoint folder; missing {missing}.{hint}")


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a whole checkpoint (`check_complete_checkpoint` passes)."""
    try:
        check_complete_checkpoint(folder)
    except (ValueError, OSError):
        return False
    return True


def _check_weights(folder: str, who: str) -> None:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"{who}: {index} is damaged ({err}); save or copy the model again.") from err
        files = [os.path.join(folder, shard) for shard in shards]
        for file in files:
            if not os.path.isfile(file):
                raise ValueError(f"{who}: the weights file {file} listed in {index} is missing.")
    else:
        files = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".safetensors")]
        if not files and not any(n.endswith(".bin") and n.startswith("pytorch_model") for n in os.listdir(folder)):
            raise ValueError(f"{who} has no weights (model.safetensors): save or copy the model again.")
    for file in files:
        _check_safetensors(file)


def _check_safetensors(file: str) -> None:
    """A safetensors file is an 8-byte header length, a JSON header giving each tensor's byte range, and the bytes:
    a file cut short (an interrupted copy, download or save) is shorter than its header says."""
    size = os.path.getsize(file)
    problem = None
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 2 or 8 + length > size:
                problem = f"it is {size} bytes, too short for its header"
            else:
                header = json.loads(f.read(length))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                if size < 8 + length + end:
                    problem = f"it is {size} bytes but its header describes {8 + length + end}"
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        problem = f"its header cannot be read ({err})"
    if problem:
        raise ValueError(
            f"The weights file {file} is damaged or incomplete: {problem} (an interrupted save, copy or download?). "
            "Copy or download the model again, or save it again."
        )


def checkpoint_code_files(folder: str | os.PathLike) -> list[str]:
    """The code files a checkpoint folder must carry for `trust_remote_code`: the modules its configs name (`auto_map`
    of config.json and processor_config.json, `custom_pipelines`) and every module they import relatively."""
    from transformers.dynamic_module_utils import get_relative_imports

    folder = Path(folder)
    modules: set[str] = set()
    for name in ("config.json", "processor_config.json"):
        try:
            config = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        refs = list((config.get("auto_map") or {}).values())
        refs += [task.get("impl") for task in (config.get("custom_pipelines") or {}).values()]
        for ref in refs:
            for item in ref if isinstance(ref, (list, tuple)) else [ref]:
                if isinstance(item, str) and "." in item:
                    modules.add(item.split("--")[-1].rsplit(".", 1)[0] + ".py")
    files, todo = set(modules), list(modules)
    while todo:  # the relative imports of each present file (a missing one is reported by the caller)
        module = folder / todo.pop()
        if module.is_file():
            found = {f"{name}.py" for name in get_relative_imports(str(module))} - files
            files |= found
            todo += found
    return sorted(files)


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
