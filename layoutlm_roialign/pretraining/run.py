"""The pre-training run: the MVLM model to start from (`build_pretraining_model`), `Trainer` over the cached windows
with held-out windows masked once (`run_pretraining`), and the final folder with its model card
(`write_pretraining_card`)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainingArguments, set_seed

from ..checkpoint_files import is_written_checkpoint
from ..final_folder import FINAL_FOLDER, prepare_final_folder, save_folder_atomically
from ..metrics import argmax_logits
from ..model_factory import build_pretraining_model
from ..modeling_layoutlm_roialign import LayoutLMRoIAlignForMaskedLM
from ..processing_layoutlm_roialign import LayoutLMRoIAlignProcessor
from ..resuming import last_complete_checkpoint, resume_checkpoint, resumes_last
from ..trainer import check_bf16, check_resumed_precision, training_precision
from .arguments import PretrainingArguments
from .masking import DataCollatorForMaskedVisualLanguageModeling, MaskedTokenAccuracy, blank_fill_value, premask
from .windows import has_read_pages, public_name, read_pretraining_windows

__all__ = ["RUN_ARGUMENTS", "build_pretraining_model", "resume_hint", "run_pretraining", "write_pretraining_card"]

logger = logging.getLogger(__name__)

# What a run records in its output folder when it starts: the arguments that shape its model and data, which a
# resumed run must repeat. The others (`num_workers`, `cache_dir`) only say how and where pages are read.
RUN_ARGUMENTS = "pretraining_arguments.json"
NOT_SHAPING = ("num_workers", "cache_dir")


def write_pretraining_card(folder: str | os.PathLike, summary: dict) -> Path:
    """`<folder>/README.md`: what the checkpoint was pre-trained on (sources, pages, windows, tokens), how
    (steps, epochs, learning rate, masking, pixels), how it ended (held-out MVLM loss and masked-token accuracy),
    and how to fine-tune it."""
    data, train = summary["data"], summary["training"]
    rows = [
        ("sources", ", ".join(data["sources"])),
        ("documents / pages (with words + without words + failed)", f"{data['documents']} / {data['pages']} "
         f"({data['pages_with_words']} + {data['pages_without_words']} + {data['failed_pages']})"),
        ("words / windows / tokens", f"{data['words']} / {data['windows']} / {data['tokens']}"),
        ("held-out windows", summary["validation_windows"]),
        ("text encoder started from", summary["started_from"]),
        ("visual branch", summary["visual"]),
        ("masking", summary["masking"]),
        ("steps / epochs", f"{train['global_step']} / {train['epochs']:.2f}"),
        ("batch size (all processes) / learning rate / warm-up", f"{train['total_batch_size']} / "
         f"{train['learning_rate']} / {train['warmup_steps']}"),
        ("windows seen / train time (wall, CPU)", f"{train['windows_seen']} / {train['train_seconds']:.0f} s, "
         f"{train['train_cpu_seconds']:.0f} s"),
        ("throughput / precision", f"{train['windows_per_second']:.2f} windows/s / {train['precision']}"),
        ("held-out MVLM loss / masked-token accuracy (first -> last evaluation)", summary["curve"]),
    ]  # fmt: skip
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = f"""---
library_name: transformers
tags:
- layoutlm
- masked-lm
- document-ai
- remote-code
pipeline_tag: fill-mask
---

# LayoutLM-RoIAlign pre-trained with a masked visual-language model

A `LayoutLMRoIAlignForMaskedLM` checkpoint: LayoutLM (text + 2-D positions){" + RoIAlign image features" if summary["visual"] != "off" else ""}
with a masked-LM head, pre-trained on unlabelled pages with MVLM (the LayoutLM paper's objective: masked words
keep their boxes and are predicted from the text and layout around them).

## Pre-trained on

| | |
|---|---|
{table}

## Use

Fine-tune it like a text encoder: `python scripts/train.py --text_model <this folder> ...` (its text encoder, 2-D
position embeddings included), or `--model_name_or_path <this folder>` (the whole model, visual branch included;
the task head starts fresh). Without the package: `AutoModelForMaskedLM.from_pretrained(folder,
trust_remote_code=True)`. The pages' own licences apply to what this model learned from them.
"""
    path = Path(folder) / "README.md"
    path.write_text(text)
    return path


def run_pretraining(args: PretrainingArguments, training_args: TrainingArguments, callbacks: Sequence = ()) -> dict:
    """Read (or reuse) the windows, pre-train with MVLM and write `<output_dir>/final` (model, processor, code,
    model card, `pretraining_results.json`). `--resume_from_checkpoint true` continues from the last complete
    checkpoint of `output_dir` (before the first checkpoint: from the pages read so far, training from step 0), and
    refuses arguments that differ from the run's (`RUN_ARGUMENTS`). Returns the summary written to
    `<output_dir>/pretraining_results.json`.

    Raises:
        ValueError: naming the argument, for an `--output_dir` / `--cache_dir` that cannot be a folder, a
            `final/` holding files a checkpoint save does not write, nothing to resume, or changed arguments.
    """
    output_dir = Path(training_args.output_dir)
    cache_dir = args.cache_dir or str(output_dir / "windows")
    for flag, folder in (("--output_dir", output_dir), ("--cache_dir", Path(cache_dir))):
        _check_folder(folder, flag)
    prepare_final_folder(output_dir, remove_stale=training_args.should_save)
    check_bf16(training_args)
    resume = _resume_point(args, training_args, output_dir, cache_dir)
    set_seed(training_args.seed)
    model, processor = build_pretraining_model(args)
    model.config.mlm_sparse_prediction = True  # the vocabulary decoder on the predicted tokens only, in training
    pixels = bool(model.config.use_visual_features)
    if not training_args.resume_from_checkpoint and training_args.should_save:
        _record_run_arguments(output_dir, args)
    with training_args.main_process_first(desc="reading pages"):
        windows, data_stats = read_pretraining_windows(args, processor, cache_dir, pixels)
    trainer, held_out = _trainer(args, training_args, model, processor, windows, callbacks)
    before = _evaluation_before(trainer, resume, output_dir)
    start, cpu_start = time.perf_counter(), time.process_time()
    train_result = trainer.train(resume_from_checkpoint=resume)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if trainer.eval_dataset is not None and not any(
        h.get("step") == trainer.state.global_step and "eval_loss" in h for h in trainer.state.log_history
    ):
        trainer.evaluate()
    summary = {
        "data": {k: v for k, v in data_stats.items() if k != "failures"},
        "failures": data_stats.get("failures", []),
        "validation_windows": held_out,
        "started_from": _started_from(args),
        "visual": f"{model.config.backbone} ({model.config.backbone_weights or 'random init'})" if pixels else "off",
        "masking": f"{args.mlm_probability:.0%} of the tokens{' (whole words)' if args.whole_word_mask else ''}, "
        "80 % [MASK] / 10 % random / 10 % kept, boxes kept"
        + (", chosen boxes blanked in the page image" if pixels else ""),
        "training": _training_summary(training_args, trainer, train_result, resume, seconds, cpu_seconds),
        **_curves(trainer.state.log_history, before),
        "arguments": {k: v for k, v in asdict(args).items()},
    }
    summary["curve"] = _curve_text(summary["eval_curve"])
    summary["final_dir"] = str(output_dir / FINAL_FOLDER)
    if trainer.is_world_process_zero():
        _save_final(trainer, output_dir, summary)
    return summary


def _trainer(
    args: PretrainingArguments, training_args: TrainingArguments, model: LayoutLMRoIAlignForMaskedLM,
    processor: LayoutLMRoIAlignProcessor, windows: Any, callbacks: Sequence,
) -> tuple[Trainer, int]:  # fmt: skip
    """The `Trainer` of the run and the number of windows held out (masked once) for its evaluations."""
    collator = DataCollatorForMaskedVisualLanguageModeling(
        processor.tokenizer,
        mlm_probability=args.mlm_probability,
        whole_word_mask=args.whole_word_mask,
        fill_value=blank_fill_value(processor.image_processor),
    )
    held_out = min(args.validation_windows, len(windows) // 10)
    eval_set = None
    if held_out:
        split = windows.train_test_split(test_size=held_out, seed=0)
        windows, eval_set = split["train"], premask(split["test"], collator, seed=0)
    else:
        training_args.eval_strategy = "no"
    if windows.num_rows == 0:
        raise ValueError("No training windows are left after holding out --validation_windows; read more pages.")
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=windows,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=processor,
        compute_metrics=MaskedTokenAccuracy() if eval_set is not None else None,
        preprocess_logits_for_metrics=argmax_logits if eval_set is not None else None,
        callbacks=list(callbacks),
    )
    return trainer, held_out


def _evaluation_before(trainer: Trainer, resume: str | None, output_dir: Path) -> dict | None:
    """The curve's step 0, the loss and accuracy before pre-training (kept beside the checkpoints for a resumed
    run); `None` without held-out windows."""
    before, before_path = None, output_dir / "eval_before_pretraining.json"
    if trainer.eval_dataset is not None and resume is None:
        before = trainer.evaluate()
        if trainer.is_world_process_zero():
            before_path.write_text(json.dumps(before))
    elif before_path.is_file():
        before = json.loads(before_path.read_text())
    return before


def _started_from(args: PretrainingArguments) -> str:
    """How the card names the encoder the run started from."""
    if args.tokenizer is not None:
        return f"random init (tokenizer {public_name(args.tokenizer)})"
    return public_name(args.text_model or args.model_name_or_path or "")


def _training_summary(
    training_args: TrainingArguments, trainer: Trainer, train_result: Any, resume: str | None, seconds: float,
    cpu_seconds: float,
) -> dict:  # fmt: skip
    """Steps, epochs, batch size, learning rate, windows seen, time and throughput of the run."""
    total_batch = training_args.per_device_train_batch_size * training_args.world_size
    total_batch *= training_args.gradient_accumulation_steps
    steps = trainer.state.global_step
    return {
        "resumed_from": os.path.basename(resume) if resume else None,
        "global_step": steps,
        "epochs": float(trainer.state.epoch or 0.0),
        "total_batch_size": total_batch,
        "learning_rate": training_args.learning_rate,
        "warmup_steps": training_args.warmup_steps,
        "windows_seen": steps * total_batch,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,  # this process's CPU time (all its threads) while training
        "train_metrics": train_result.metrics,
        "windows_per_second": train_result.metrics.get("train_samples_per_second", 0.0),
        "precision": training_precision(training_args),
    }


def _curves(history: list[dict], before: dict | None) -> dict:
    """`eval` (the last evaluation's metrics), `eval_curve` (held-out loss and masked-token accuracy by step, from
    step 0 when evaluated before training) and `train_curve` (training loss by step) from the Trainer's log."""
    points = {  # by step: the final evaluation repeats the last step's when that step was evaluated
        h["step"]: {"step": h["step"], "loss": h["eval_loss"], "masked_accuracy": h.get("eval_masked_accuracy")}
        for h in ([{**before, "step": 0}] if before else []) + history
        if "eval_loss" in h
    }
    return {
        "eval": next((h for h in reversed(history) if "eval_loss" in h), {}),
        "eval_curve": [points[step] for step in sorted(points)],
        "train_curve": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
    }


def _curve_text(curve: list[dict]) -> str:
    """The card's line for the held-out curve: first and last evaluation."""
    if not curve:
        return "not evaluated (no held-out windows)"
    first, last = curve[0], curve[-1]
    return (
        f"{first['loss']:.3f} / {first['masked_accuracy']:.3f} at step {first['step']} -> "
        f"{last['loss']:.3f} / {last['masked_accuracy']:.3f} at step {last['step']}"
    )


def _save_final(trainer: Trainer, output_dir: Path, summary: dict) -> None:
    """Write `<output_dir>/final` atomically (model, processor, code, card, results) and the results beside it."""
    final_dir = output_dir / FINAL_FOLDER

    def write(folder: Path) -> None:
        trainer.save_model(str(folder))  # model (+ code, auto_map) and processor (+ code)
        write_pretraining_card(folder, summary)
        (folder / "pretraining_results.json").write_text(json.dumps(summary, indent=2, default=str))

    save_folder_atomically(final_dir, write, replaceable=is_written_checkpoint)
    (output_dir / "pretraining_results.json").write_text(json.dumps(summary, indent=2, default=str))
    logger.info(f"Saved the pre-trained model, processor, code and model card to {final_dir}")


def _check_folder(folder: Path, flag: str) -> None:
    """Refuse a `folder` that cannot be created or used as one: it, or the nearest of its parents that exists, is
    not a folder."""
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        what = "is a file" if existing == folder else f"is under {existing}, a file"
        raise ValueError(f"{flag} {str(folder)!r} {what}, not a folder: give a folder (it is created if missing).")


def _shaping_arguments(args: PretrainingArguments) -> dict:
    return json.loads(json.dumps({k: v for k, v in asdict(args).items() if k not in NOT_SHAPING}))


def _resume_point(
    args: PretrainingArguments, training_args: TrainingArguments, output_dir: Path, cache_dir: str
) -> str | None:
    """The checkpoint `--resume_from_checkpoint` asks for (`None`: train from step 0); a resumed run is checked
    against the arguments its run recorded (`RUN_ARGUMENTS`). `true` before the first checkpoint resumes
    the reading of the pages (those already read are reused) when some were read, and is refused otherwise."""
    flag = training_args.resume_from_checkpoint
    if not flag:
        return None
    if resumes_last(flag) and last_complete_checkpoint(output_dir) is None:
        if not has_read_pages(cache_dir):
            raise ValueError(
                f"--resume_from_checkpoint: nothing to resume in {output_dir}: no complete checkpoint and no pages "
                "read yet. Run without --resume_from_checkpoint to start."
            )
        _check_run_arguments(output_dir, args)
        logger.warning(
            f"No complete checkpoint in {output_dir} yet: the pages read so far are reused (the others are read) and "
            "training starts at step 0."
        )
        return None
    resume = resume_checkpoint(flag, output_dir)
    _check_run_arguments(Path(resume).parent, args)
    check_resumed_precision(resume, training_args)
    return resume


def _record_run_arguments(output_dir: Path, args: PretrainingArguments) -> None:
    """Write `<output_dir>/RUN_ARGUMENTS` (atomically): the arguments a resumed run must repeat."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f".{RUN_ARGUMENTS}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(_shaping_arguments(args), indent=2))
    os.replace(tmp, output_dir / RUN_ARGUMENTS)


def _check_run_arguments(run_dir: Path, args: PretrainingArguments) -> None:
    """Refuse to resume the run of `run_dir` with arguments that shape the model or data differently."""
    path = run_dir / RUN_ARGUMENTS
    if not path.is_file():
        logger.warning(f"{run_dir} has no {RUN_ARGUMENTS}: the arguments of the run being resumed are not checked.")
        return
    recorded, now = json.loads(path.read_text()), _shaping_arguments(args)
    changed = [k for k in now if k in recorded and recorded[k] != now[k]]
    if changed:
        raise ValueError(
            f"The run in {run_dir} was started with other arguments: "
            + "; ".join(f"--{k} {now[k]!r} (the run has {recorded[k]!r})" for k in changed)
            + ". Resume with the run's arguments, or give another --output_dir to start a new run."
        )


def resume_hint(script: str, argv: Sequence[str], output_dir: str | os.PathLike) -> str:
    """The line printed when a run is interrupted: what was kept and the command that goes on from there."""
    argv = list(argv)
    checkpoint = last_complete_checkpoint(output_dir)
    if len(argv) == 1 and argv[0].endswith(".json"):
        command = f"python {shlex.join([script, *argv])}"
        if checkpoint is not None:
            command += ' (with "resume_from_checkpoint": "true" in the file)'
    else:
        kept, i = [], 0
        while i < len(argv):  # without --resume_from_checkpoint: it is added back below when there is a checkpoint
            if argv[i] == "--resume_from_checkpoint":
                i += 2
                continue
            if not argv[i].startswith("--resume_from_checkpoint="):
                kept.append(argv[i])
            i += 1
        resume = ["--resume_from_checkpoint", "true"] if checkpoint is not None else []
        command = shlex.join(["python", script, *kept, *resume])
    kept = f"{os.path.basename(checkpoint)} is kept" if checkpoint else "the pages read so far are kept"
    return f"Interrupted; {kept}. To go on from there, run: {command}"
