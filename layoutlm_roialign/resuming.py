"""What an earlier run in the same output folder left: `last_complete_checkpoint` and `resume_checkpoint` (to resume
it) and `completed_run` (to see that it is finished and give its results).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from transformers import TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .checkpoint_files import is_complete_checkpoint
from .final_folder import FINAL_FOLDER

__all__ = ["completed_run", "last_complete_checkpoint", "resume_checkpoint", "resumes_last"]

logger = logging.getLogger(__name__)


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


def completed_run(output_dir: str | os.PathLike, training_args: TrainingArguments) -> dict | None:
    """The results of a run in `output_dir` that already trained as far as `training_args` ask and saved its final
    folder, or `None`. Complete means: `final/` exists and the last complete checkpoint reached the end of its own
    schedule, which is no shorter than the one asked for now (a longer `--max_steps` or `--num_train_epochs`
    continues the run)."""
    final_dir = Path(output_dir) / FINAL_FOLDER
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is None or not is_complete_checkpoint(final_dir):
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
