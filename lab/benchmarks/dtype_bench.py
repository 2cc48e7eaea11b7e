"""What each `dtype` (and ONNX Runtime, where the package exports to it) buys against float32, in one run.

The same checkpoint (random weights at the package's default sizes, LayoutLM-base + ResNet-101 `layer3` at 224 px;
`--model_size small` for a quick check; or `--model`) and the two corpora of `label_bench.py` (`make_corpora`: `scans`,
FUNSD training pages or synthetic forms to OCR; `pdfs`, synthetic forms with a text layer). In one process, round by
round (one warm-up round, the order of the variants rotating every round, medians):

- `label.py` pages/s (`LabelRun.run`, `--num_workers` readers, `--batch_size` windows per pass) on each corpus, and on
  the scans the model's share of the time (1 - the share spent waiting for OCR'd pages: where it is small, OCR bounds);
- pipeline seconds per page (`FormUnderstandingPipeline` over the PDF pages, text layer, no OCR);
- for the variants float32, bfloat16 (autocast), int8 (dynamic quantization of the Linear layers) and, when the
  package has ONNX export and `runtime="onnx"`, ONNX float32 and ONNX int8 (skipped with a line saying so otherwise);
- one training step (forward + backward + AdamW, 4 windows of a PDF page) in float32 and under bf16 autocast.

Every ratio is against float32 measured in the same run. `--onednn_isa AVX512_CORE_VNNI AVX2` runs the same again in
a fresh process per value with `ONEDNN_MAX_CPU_ISA` set (bf16 hidden from oneDNN, as on older CPUs), to show what
`dtype="auto"` picks there and that it is never slower than float32.

    python lab/benchmarks/dtype_bench.py --pages 20 --onednn_isa AVX512_CORE_VNNI AVX2 --output results_dtype.md
    python lab/benchmarks/dtype_bench.py --quick      # a smoke run: small model, 1 page per corpus, 1 round
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from label_bench import build_model, hardware, make_corpora, run_child  # noqa: E402

TORCH_DTYPES = ("float32", "bfloat16", "int8")


def onnx_exports(checkpoint: str, folder: Path) -> tuple[dict[str, str], str | None]:
    """`{"onnx float32": folder, "onnx int8": folder}` exported from `checkpoint`, or `({}, why not)`."""
    from layoutlm_roialign.loader import load_model_and_processor

    try:
        export_onnx = importlib.import_module("layoutlm_roialign.onnx_export").export_onnx
    except ImportError:
        return {}, "ONNX rows skipped: this package has no ONNX export (layoutlm_roialign.onnx_export)"
    if "runtime" not in inspect.signature(load_model_and_processor).parameters:
        return {}, "ONNX rows skipped: the engine does not run runtime='onnx' here"
    out = {}
    for name, quantize in (("onnx float32", None), ("onnx int8", "int8")):
        target = folder / name.replace(" ", "-")
        try:
            export_onnx(checkpoint, target, quantize=quantize, log=lambda *args: None)
        except ValueError as err:  # the [onnx] extra missing, a backbone that cannot export, the check failing
            return {}, f"ONNX rows skipped: {err}"
        out[name] = str(target)
    return out, None


def train_steps(model, processor, pdf: str, rounds: int, frozen_backbone: bool = False) -> dict[str, float]:
    """Median seconds of one training step in float32 and under bf16 autocast (bench.py's steps, interleaved); with
    `frozen_backbone`, the backbone gets no gradients (`--backbone_learning_rate 0`, as the README's recipe)."""
    import copy

    import torch
    from bench import interleaved, make_step

    from layoutlm_roialign.engine_layoutlm_roialign import read_and_encode
    from layoutlm_roialign.options_layoutlm_roialign import ReadOptions, WindowOptions

    page = read_and_encode(processor, pdf, read=ReadOptions(), windows=WindowOptions().resolve(model.config))
    rows = torch.arange(4) % len(page["windows"]["input_ids"])  # 4 windows (the page's, repeated if fewer)
    windows = {k: v[rows] for k, v in page["windows"].items()}
    inputs = {**windows, "pixel_values": page["pixel_values"][None], "image_index": torch.zeros(4, dtype=torch.long)}
    inputs["labels"] = torch.randint(0, model.config.num_labels, windows["input_ids"].shape)
    if frozen_backbone:
        parts = model.parameter_groups()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(parts[name] != "backbone")
    steps = {
        name: make_step(copy.deepcopy(model), inputs, "train", "cpu", dtype)
        for name, dtype in (("float32", "fp32"), ("bfloat16", "bf16-autocast"))
    }
    return interleaved(steps, 1, rounds, "cpu")


def child(spec: dict) -> dict:
    """Every measurement of one setting (`ONEDNN_MAX_CPU_ISA` as this process has it), interleaved."""
    import torch

    from layoutlm_roialign.compute_layoutlm_roialign import resolve_dtype
    from layoutlm_roialign.inference import load_model_and_processor
    from layoutlm_roialign.labelling import plan_run
    from layoutlm_roialign.pipeline_layoutlm_roialign import FormUnderstandingPipeline

    model, processor = load_model_and_processor(spec["model"])
    variants = {name: (model, processor, name) for name in TORCH_DTYPES}
    for name, folder in spec["onnx"].items():
        variants[name] = (*load_model_and_processor(folder, runtime="onnx"), "float32")
    work = Path(spec["workdir"])
    corpora = {name: spec[name] for name in ("pdfs", "scans") if spec[name]}
    times: dict[str, dict[str, list]] = {name: {} for name in variants}

    def measure(name: str) -> None:
        net, proc, dtype = variants[name]
        for corpus, files in corpora.items():
            output = work / f"{name.replace(' ', '-')}-{corpus}.jsonl"
            for stale in work.glob(output.stem + "*"):
                stale.unlink()
            plan = plan_run(str(output), files, process_index=0, num_processes=1)
            summary = plan.run(net, proc, spec["batch_size"], spec["workers"], "cpu", dtype, quiet=True)
            times[name].setdefault(f"{corpus} pages/s", []).append(summary["pages_per_second"])
            times[name].setdefault(f"{corpus} model share", []).append(1 - summary["input_wait_share"])
        pipe = FormUnderstandingPipeline(model=net, processor=proc, dtype=dtype)
        start = time.perf_counter()
        pipe(list(spec["pdfs"]), batch_size=spec["batch_size"])
        times[name].setdefault("pipeline s/page", []).append((time.perf_counter() - start) / len(spec["pdfs"]))

    names = list(variants) if not spec.get("train_only") else []
    for round_ in range(spec["rounds"] + 1 if names else 0):  # the first round warms up and is dropped
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            measure(name)
        if round_ == 0:
            times = {name: {} for name in variants}
    medians = {name: {k: sorted(v)[len(v) // 2] for k, v in row.items()} for name, row in times.items()}
    return {
        "auto": resolve_dtype("auto", "cpu"),
        "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(not set)"),
        "variants": medians,
        "train_step_s": train_steps(model, processor, spec["pdfs"][0], spec["rounds"], spec["frozen_backbone"]),
        "threads": torch.get_num_threads(),
    }


def render(report: dict) -> str:
    """The report as Markdown: per setting, a table of the variants with ratios to float32."""
    lines = [f"Command: `{report['command']}`. {report['hardware']}; torch {report['torch']}.", ""]
    if report["onnx_skipped"]:
        lines += [f"{report['onnx_skipped']}.", ""]
    for run in report["runs"]:
        if not run["variants"]["float32"]:  # --train_only
            train = run["train_step_s"]
            lines += [f"ONEDNN_MAX_CPU_ISA {run['isa']}, {run['threads']} threads, `auto` picks {run['auto']}: training "
                      f"step float32 {train['float32'] * 1000:.0f} ms, bf16 autocast {train['bfloat16'] * 1000:.0f} ms "
                      f"(x{train['float32'] / train['bfloat16']:.2f}).", ""]  # fmt: skip
            continue
        base, auto = run["variants"]["float32"], run["auto"]
        pick = run["variants"][auto]
        slower = pick["pipeline s/page"] > base["pipeline s/page"]
        lines += [
            f"ONEDNN_MAX_CPU_ISA {run['isa']}, {run['threads']} threads: `auto` picks {auto} "
            f"(pipeline x{base['pipeline s/page'] / pick['pipeline s/page']:.2f} of float32"
            f"{', slower than float32' if slower else ''}).",
            "",
            "| variant | label.py PDFs pages/s | x | label.py scans pages/s | x | model share (scans) "
            "| pipeline s/page | x |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in run["variants"].items():
            cells = [name]
            for key in ("pdfs pages/s", "scans pages/s"):
                value = row.get(key)
                cells += ["-", "-"] if value is None else [f"{value:.2f}", f"{value / base[key]:.2f}"]
            share = row.get("scans model share")
            cells.append("-" if share is None else f"{share:.0%}")
            cells += [f"{row['pipeline s/page']:.3f}", f"{base['pipeline s/page'] / row['pipeline s/page']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        train = run["train_step_s"]
        lines += [
            "",
            f"Training step (4 windows): float32 {train['float32'] * 1000:.0f} ms, bf16 autocast "
            f"{train['bfloat16'] * 1000:.0f} ms (x{train['float32'] / train['bfloat16']:.2f}).",
            "",
        ]
    lines.append("x: speed against float32 in the same run (higher is faster). Medians over interleaved rounds.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=20, help="pages per corpus")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--model_size", choices=("base", "small"), default="base")
    parser.add_argument("--model", help="a checkpoint to measure instead of random weights")
    parser.add_argument("--no_scans", action="store_true", help="leave out the OCR'd corpus (no Tesseract needed)")
    parser.add_argument("--onednn_isa", nargs="*", default=[], help="also run with ONEDNN_MAX_CPU_ISA set to each")
    parser.add_argument("--train_only", action="store_true", help="only the training step (with --model: its sizes)")
    parser.add_argument("--frozen_backbone", action="store_true", help="train step without backbone gradients")
    parser.add_argument("--quick", action="store_true", help="small model, 1 page per corpus, 1 round, no scans")
    parser.add_argument("--output", help="write the Markdown table here (and the JSON beside it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.quick:
        args.pages, args.rounds, args.model_size, args.no_scans, args.num_workers = 1, 1, "small", True, 0
    import torch

    folder = Path(tempfile.mkdtemp(prefix="dtype-bench-"))
    try:
        checkpoint = args.model or build_model(folder / "model", args.model_size)
        corpora = make_corpora(folder / "corpora", args.pages)
        onnx, skipped = ({}, None) if args.train_only else onnx_exports(checkpoint, folder)
        if skipped:
            print(skipped, flush=True)
        spec = dict(model=checkpoint, pdfs=corpora["pdfs"], scans=[] if args.no_scans else corpora["scans"],
                    onnx=onnx, train_only=args.train_only, frozen_backbone=args.frozen_backbone, rounds=args.rounds, batch_size=args.batch_size, workers=args.num_workers,
                    workdir=str(folder))  # fmt: skip
        runs = []
        for isa in [None, *args.onednn_isa]:
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
            }
            if isa:
                env["ONEDNN_MAX_CPU_ISA"] = isa
            runs.append(run_child({**spec, "kind": f"dtype ({isa or 'no cap'})"}, __file__, env))
            print(f"ONEDNN_MAX_CPU_ISA {isa or '(not set)'}: auto -> {runs[-1]['auto']}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = {"command": "python lab/benchmarks/dtype_bench.py " + " ".join(sys.argv[1:]), "runs": runs,
              "hardware": hardware("cpu"), "torch": torch.__version__, "onnx_skipped": skipped}  # fmt: skip
    text = render(report)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).with_suffix(".json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
