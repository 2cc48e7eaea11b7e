#!/usr/bin/env python
"""Label an archive: every page of folders, globs, list files, PDFs, multi-page TIFFs and datasets, into JSON Lines.

    python scripts/label.py --model runs/main/final --inputs scans/ --output labels.jsonl
    python scripts/label.py --model runs/main/final --inputs "archive/**/*.pdf" --output labels.jsonl --png_dir png/
    python scripts/label.py --model runs/main/final --dataset user/forms --split test --output labels.jsonl
    accelerate launch --num_processes 8 scripts/label.py ... --output labels.jsonl   # then: --merge
    python scripts/label.py --merge --output labels.jsonl

A rerun with the same `--output` skips the pages it holds. Exit status: 0 when every page was labelled, 1 when
some pages failed (listed with their reasons in `<output stem>.failures.jsonl`), 2 for bad arguments, 130 when
interrupted (Ctrl-C: the pages written so far are kept, and the same command resumes).
"""

import json
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from layoutlm_roialign.inference import DTYPES
from layoutlm_roialign.labelling import merge_shards, plan_run
from layoutlm_roialign.labelling.pipeline import check_run_arguments
from layoutlm_roialign.labelling.runner import check_device
from layoutlm_roialign.labelling.sources import PageSourceArguments
from layoutlm_roialign.labelstudio import labelstudio_options
from layoutlm_roialign.options_layoutlm_roialign import WindowOptions

EXIT_FAILURES = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


@dataclass
class LabelArguments:
    output: str = field(metadata={"help": "The JSON Lines file, one record per page (appended to; reruns resume)."})
    model: str | None = field(default=None, metadata={"help": "Checkpoint folder or Hub id."})
    png_dir: str | None = field(default=None, metadata={"help": "Also draw each page's entities into this folder."})
    batch_size: int = field(default=8, metadata={"help": "Windows per forward pass (whole pages)."})
    num_workers: int = field(default=2, metadata={"help": "Processes reading, OCRing and encoding pages ahead."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "What the model computes in: auto (bf16 where the device computes it natively, else float32), "
            "float32, bfloat16 (autocast), int8 (dynamic quantization of the Linear layers, CPU only).",
            "choices": list(DTYPES),
        },
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ...; default: this process's."})
    compile: bool = field(default=False, metadata={"help": "Run the model through torch.compile."})
    quiet: bool = field(default=False, metadata={"help": "No progress bar (none either when stderr is no terminal)."})
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per window (default: the model's, <= 512)."}
    )
    stride: int | None = field(default=None, metadata={"help": "Tokens shared by consecutive windows (max_length/4)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own code (Hub ids)."})
    merge: bool = field(default=False, metadata={"help": "Only join the shards of a multi-process run into --output."})


def main(argv=None) -> dict:
    parser = HfArgumentParser((LabelArguments, PageSourceArguments))
    try:
        args, sources = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    except ValueError as err:  # PageSourceArguments checks its fields when it is built (--ocr_lang)
        parser.error(str(err))
    if args.merge:
        try:
            merged = merge_shards(args.output)
        except ValueError as err:
            parser.error(str(err))
        print(f"merged {len(merged['shards'])} shards: {merged['records']} pages, {merged['failures']} failures")
        return merged
    if not args.model:
        parser.error("--model is required (a checkpoint folder or Hub id), except with --merge.")
    try:
        check_run_arguments(args.batch_size, args.num_workers)  # before any output is created
        device = check_device(args.device or _default_device())
        plan = plan_run(
            args.output,
            sources.inputs,
            sources.dataset,
            sources.split,
            read=sources.read_options(),
            windows=WindowOptions(args.max_length, args.stride),
            png_dir=args.png_dir,
            labelstudio=labelstudio_options(sources),
        )
        from layoutlm_roialign.inference import load_model_and_processor

        model, processor = load_model_and_processor(args.model, args.trust_remote_code)  # linking: pairs too
        summary = plan.run(
            model,
            processor,
            args.batch_size,
            args.num_workers,
            device,
            args.dtype,
            args.compile,
            args.quiet,
        )
    except (ValueError, ImportError) as err:
        parser.error(str(err))
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the pages labelled so far are kept in {args.output}; run the same command again to resume.",
            file=sys.stderr,
        )
        sys.exit(EXIT_INTERRUPTED)
    print(
        f"{summary['pages']} pages labelled ({summary['skipped']} already done), {summary['failed']} failed, "
        f"{summary['words']} words, {summary['entities']} entities, {summary['pages_per_second']} pages/s, "
        f"the model waited for pages {summary['input_wait_share']:.0%} of the time -> {summary['output']}"
        + (f" (failures: {summary['failures_output']})" if summary["failed"] else "")
    )
    print(json.dumps(summary))
    if summary["failed"]:
        sys.exit(EXIT_FAILURES)
    return summary


def _default_device() -> str:
    """This process's GPU under `accelerate launch` (LOCAL_RANK), or the first GPU, else the CPU."""
    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
