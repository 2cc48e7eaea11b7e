#!/usr/bin/env python
"""Label an archive: every page of folders, globs, list files, PDFs, multi-page TIFFs and datasets, into JSON Lines.

    python scripts/label.py --model runs/main/final --inputs scans/ --output labels.jsonl
    python scripts/label.py --model runs/main/final --inputs "archive/**/*.pdf" --output labels.jsonl --png_dir png/
    python scripts/label.py --model runs/main/final --dataset user/forms --split test --output labels.jsonl
    python scripts/label.py --model runs/main/onnx --runtime onnx --inputs scans/ --output labels.jsonl  # an export
    accelerate launch --num_processes 8 scripts/label.py ... --output labels.jsonl   # then: --merge
    python scripts/label.py --merge --output labels.jsonl
    python scripts/label.py --engine ray --ray_address head:6379 --model ... --output labels.jsonl  # a Ray cluster

A rerun with the same `--output` skips the pages it holds. Exit status: 0 when every page was labelled, 1 when
some pages failed (listed with their reasons in `<output stem>.failures.jsonl`), 2 for bad arguments, 130 when
interrupted (Ctrl-C: the pages written so far are kept, and the same command resumes).
"""

import json
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from layoutlm_roialign.compute_fields import dtype_field, runtime_field
from layoutlm_roialign.labelling import merge_shards, plan_run
from layoutlm_roialign.labelling.pipeline import check_run_arguments, process_share
from layoutlm_roialign.labelling.ray_run import (
    CheckpointSource,
    RayOptions,
    check_engine_flags,
    label_on_ray,
    ray_session,
)
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
    dtype: str = dtype_field()
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ...; default: this process's."})
    compile: bool = field(default=False, metadata={"help": "Run the model through torch.compile."})
    runtime: str = runtime_field()
    quiet: bool = field(default=False, metadata={"help": "No progress bar (none either when stderr is no terminal)."})
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per window (default: the model's, <= 512)."}
    )
    stride: int | None = field(default=None, metadata={"help": "Tokens shared by consecutive windows (max_length/4)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own code (Hub ids)."})
    merge: bool = field(default=False, metadata={"help": "Only join the shards of a multi-process run into --output."})
    engine: str = field(
        default="local",
        metadata={
            "help": "local: reader processes and the model here; ray: on a Ray cluster.",
            "choices": ["local", "ray"],
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "--engine ray: the cluster's head (default: $RAY_ADDRESS, else a Ray running here, else local)."
        },
    )
    num_cpus_per_reader: float = field(default=1.0, metadata={"help": "--engine ray: CPUs per page-reading task."})
    num_replicas: int = field(default=1, metadata={"help": "--engine ray: model replicas (an actor each)."})
    num_gpus_per_replica: float | None = field(
        default=None, metadata={"help": "--engine ray: GPUs per replica (default: 1 if the cluster has GPUs, else 0)."}
    )


def main(argv=None) -> dict:
    parser = HfArgumentParser((LabelArguments, PageSourceArguments))
    try:
        args, sources = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    except ValueError as err:  # PageSourceArguments checks its fields when it is built (--ocr_lang)
        parser.error(str(err))
    try:
        check_engine_flags(args.engine, sys.argv[1:] if argv is None else argv, process_share()[1])
    except ValueError as err:
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
        summary = _label(args, sources)
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
        + ("the driver waited for records" if "retried" in summary else "the model waited for pages")
        + f" {summary['input_wait_share']:.0%} of the time -> {summary['output']}"
        + (f" (failures: {summary['failures_output']})" if summary["failed"] else "")
        + (f"; on Ray, {summary['retried']} pages retried" if "retried" in summary else "")
    )
    print(json.dumps(summary))
    if summary["failed"]:
        sys.exit(EXIT_FAILURES)
    return summary


def _label(args: LabelArguments, sources: PageSourceArguments) -> dict:
    """Plan the run and label its pages with the chosen engine; returns the summary. Every check that needs nothing
    read comes first (an unreachable `--ray_address` included), so that a bad argument leaves no file behind."""
    check_run_arguments(args.batch_size, args.num_workers)  # before any output is created
    if args.runtime == "onnx" and args.compile:
        raise ValueError("--compile runs torch.compile, which --runtime onnx does not use: drop one of them.")
    if args.engine == "ray":
        options = RayOptions(args.ray_address, args.num_cpus_per_reader, args.num_replicas, args.num_gpus_per_replica)
        options.check()
        with ray_session(options, args.quiet):
            plan = _plan(args, sources, process_index=0, num_processes=1)  # one driver: no shards
            source = _checkpoint(args)  # the replicas load it too, where they can
            model, processor = source.load_model_and_processor()
            return label_on_ray(plan, model, processor, options, args.batch_size, args.dtype, args.compile,
                                args.quiet, source)  # fmt: skip
    device = check_device(args.device or ("cpu" if args.runtime == "onnx" else _default_device()))
    plan = _plan(args, sources)
    model, processor = _checkpoint(args).load_model_and_processor()  # linking: pairs too
    return plan.run(
        model, processor, args.batch_size, args.num_workers, device, args.dtype, args.compile, args.quiet
    )  # fmt: skip


def _plan(args: LabelArguments, sources: PageSourceArguments, **share: int):
    """`plan_run` with this command's arguments (`share`: `process_index` / `num_processes`, else the launcher's)."""
    return plan_run(
        args.output,
        sources.inputs,
        sources.dataset,
        sources.split,
        read=sources.read_options(),
        windows=WindowOptions(args.max_length, args.stride),
        png_dir=args.png_dir,
        labelstudio=labelstudio_options(sources),
        **share,
    )


def _checkpoint(args: LabelArguments) -> CheckpointSource:
    """`--model` with the loader's arguments of this command."""
    return CheckpointSource(args.model, args.trust_remote_code, args.runtime)


def _default_device() -> str:
    """This process's GPU under `accelerate launch` (LOCAL_RANK), or the first GPU, else the CPU."""
    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
