"""Labels and key-value pairs from one pass (the one road) against the two passes of an earlier commit, in one run.

Two checkpoints with random weights at the package's default sizes (LayoutLM-base + ResNet-101 `layer3` at 224 px;
`--model_size small` for a quick check): a token classifier and a linking model (token head + link head). Two
corpora of `--pages` pages, as `label_bench.py` makes them: `scans` (FUNSD training pages when ../shared has them,
else synthetic forms; OCR'd) and `pdfs` (synthetic forms with a text layer). Each measurement runs in a fresh
process, with the package imported from this tree (`after`) or from a `git worktree` of `--before` (`before`, the
commit whose linking ran the encoder and the backbone twice), the two interleaved:

- `label.py`: `LabelRun.run` over the corpus (`--num_workers` reader processes, `--batch_size` windows per pass),
  linking and token checkpoints; pages/s, and the model's share of the time (1 - the share spent waiting for pages);
- `one page at a time`: the linking checkpoint on each page in turn, the model loaded once (`predict_pairs` before,
  `predict_page` after), on words read beforehand (the scans' OCR done once, outside the timing), so the time is
  the model's.

    python lab/benchmarks/road_bench.py --pages 12                      # the README's numbers (~15 min on 2 cores)
    python lab/benchmarks/road_bench.py --pages 4 --model_size small    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]

# this script's sibling (`python lab/benchmarks/road_bench.py` puts the script's folder first on `sys.path`)
import label_bench  # noqa: E402
from label_bench import BASE, BASE_BACKBONE, SMALL, SMALL_BACKBONE, make_corpora  # noqa: E402


def build_checkpoints(folder: Path, size: str) -> dict[str, str]:
    """A token and a linking checkpoint with random weights, one WordPiece vocabulary (the synthetic forms' words)."""
    from layoutlm_roialign.data import FUNSD_LABELS, render_synthetic_form
    from layoutlm_roialign.model_factory import build_model_and_processor

    words = [render_synthetic_form(0, i)[1] for i in range(20)]
    text, backbone = (BASE, BASE_BACKBONE) if size == "base" else (SMALL, SMALL_BACKBONE)
    out = {}
    for task, name in (("token-classification", "token"), ("linking", "linking")):
        model, processor = build_model_and_processor(
            FUNSD_LABELS, words, task=task, tokenizer_vocab_size=2000, max_position_embeddings=512, **text, **backbone
        )
        model.save_pretrained(folder / name)
        processor.save_pretrained(folder / name)
        out[name] = str(folder / name)
    return out


def read_words(files: list[str], folder: Path) -> str:
    """Every page's words and 0-1000 boxes (a PDF's text layer, else OCR), read once, in a JSON file."""
    from layoutlm_roialign.pages_layoutlm_roialign import read_page

    pages = []
    for path in files:
        page = read_page(path)
        pages.append({"path": path, "words": page["words"], "boxes": page["boxes"]})
    target = folder / f"words-{len(pages)}-{abs(hash(tuple(files)))}.json"
    target.write_text(json.dumps(pages))
    return str(target)


def child(spec: dict) -> dict:
    """One measurement in a fresh process, with whichever package version PYTHONPATH gives."""
    import torch

    import layoutlm_roialign.inference as inference

    try:  # the earlier commit measured against has `linking.load_linking_model` / `predict_pairs`
        import layoutlm_roialign.linking as linking
    except ImportError:  # current code: no such module
        linking = None
    from layoutlm_roialign.pages_layoutlm_roialign import load_page
    from layoutlm_roialign.pdf_layoutlm_roialign import render_pdf_page

    torch.set_num_threads(spec["threads"]) if spec.get("threads") else None
    two_pass_code = linking is not None and hasattr(linking, "load_linking_model")  # the earlier commit's API
    if spec["checkpoint"] == "linking" and two_pass_code:
        model, processor = linking.load_linking_model(spec["model"])
    else:
        model, processor = inference.load_model_and_processor(spec["model"])
    model.to(spec["device"]).eval()
    if spec["kind"] == "loop":
        pages = json.loads(Path(spec["words"]).read_text())
        predict = linking.predict_pairs if two_pass_code else inference.predict_page
        images = [render_pdf_page(p["path"], 0) if p["path"].endswith(".pdf") else load_page(p["path"]) for p in pages]
        start = time.perf_counter()
        pairs = 0
        with torch.inference_mode():
            for page, image in zip(pages, images, strict=True):
                pairs += len(predict(model, processor, image, page["words"], page["boxes"])["pairs"])
        seconds = time.perf_counter() - start
        return {"pages": len(pages), "seconds": seconds, "pages_per_second": len(pages) / seconds,
                "model_seconds_per_page": seconds / len(pages), "pairs": pairs}  # fmt: skip
    from layoutlm_roialign.labelling import plan_run

    output = Path(spec["output"])
    for stale in output.parent.glob(output.stem + "*"):
        stale.unlink()
    plan = plan_run(str(output), spec["files"], process_index=0, num_processes=1)
    summary = plan.run(model, processor, spec["batch_size"], spec["workers"], spec["device"], quiet=True)
    model_seconds = summary["seconds"] * (1 - summary["input_wait_share"])
    return {"pages": summary["pages"], "failed": summary["failed"], "seconds": summary["seconds"],
            "pages_per_second": summary["pages"] / summary["seconds"], "input_wait_share": summary["input_wait_share"],
            "model_seconds_per_page": model_seconds / max(1, summary["pages"])}  # fmt: skip


def run_child(spec: dict, tree: str) -> dict:
    """A measurement in a fresh process that imports the package from `tree`."""
    return label_bench.run_child(spec, __file__, {**os.environ, "PYTHONPATH": tree})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=12, help="pages per corpus")
    parser.add_argument("--before", default="86b6ffd", help="the commit to compare with (two passes for pairs)")
    parser.add_argument("--model_size", default="base", choices=("base", "small"))
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--corpora", default="scans,pdfs")
    parser.add_argument("--output", default="lab/benchmarks/results_road", help="writes <output>.md and <output>.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return

    wall = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="road_bench_"))
    before_tree = workdir / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(before_tree), args.before],
                   check=True)  # fmt: skip
    trees = {"before": str(before_tree), "after": str(REPO)}
    try:
        checkpoints = build_checkpoints(workdir / "models", args.model_size)
        corpora = make_corpora(workdir / "pages", args.pages)
        results: dict = {}
        for corpus in args.corpora.split(","):
            files = corpora[corpus]
            words = read_words(files, workdir)
            row: dict = {}
            for checkpoint in ("linking", "token"):
                for version in ("before", "after"):  # interleaved: a slower stretch of the machine hits both
                    spec = {"kind": "labeller", "checkpoint": checkpoint, "model": checkpoints[checkpoint],
                            "files": files, "batch_size": args.batch_size, "workers": args.num_workers,
                            "device": args.device, "output": str(workdir / f"{corpus}-{checkpoint}-{version}.jsonl")}  # fmt: skip
                    row[f"label.py {checkpoint} {version}"] = result = run_child(spec, trees[version])
                    print(corpus, checkpoint, version, "label.py", result, flush=True)
            for version in ("before", "after"):
                spec = {"kind": "loop", "checkpoint": "linking", "model": checkpoints["linking"], "words": words,
                        "device": args.device}  # fmt: skip
                row[f"one page at a time linking {version}"] = result = run_child(spec, trees[version])
                print(corpus, version, "one page at a time", result, flush=True)
            results[corpus] = row
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before_tree)], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    import torch

    report = {
        "command": "python lab/benchmarks/road_bench.py " + " ".join(sys.argv[1:]),
        "hardware": label_bench.hardware(args.device),
        "torch": torch.__version__,
        "model": f"built here, random weights ({args.model_size})",
        "before": args.before,
        "scan_source": corpora["scan_source"],
        "settings": {k: getattr(args, k) for k in ("pages", "num_workers", "batch_size")},
        "minutes": (time.perf_counter() - wall) / 60,
        "results": results,
    }
    Path(args.output + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(args.output + ".md").write_text(render(report))
    print(render(report))


def render(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"Command: `{report['command']}` ({report['minutes']:.1f} min). {report['hardware']}, torch {report['torch']}; "
        f"model: {report['model']}; before = commit {report['before']} (pairs by a second pass); scans: "
        f"{report['scan_source']}, OCR'd; PDFs: synthetic forms with a text layer. {s['pages']} pages per corpus; "
        f"label.py with {s['num_workers']} workers, batches of {s['batch_size']} windows.",
        "",
        "| corpus | run | checkpoint | pages/s before | pages/s after | x | model s/page before | model s/page after "
        "| x (model) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for corpus, row in report["results"].items():
        for run, checkpoint in (("label.py", "linking"), ("label.py", "token"), ("one page at a time", "linking")):
            b, a = row[f"{run} {checkpoint} before"], row[f"{run} {checkpoint} after"]
            lines.append(
                f"| {corpus} | {run} | {checkpoint} | {b['pages_per_second']:.3f} | {a['pages_per_second']:.3f} | "
                f"{a['pages_per_second'] / b['pages_per_second']:.2f} | {b['model_seconds_per_page']:.2f} | "
                f"{a['model_seconds_per_page']:.2f} | "
                f"{b['model_seconds_per_page'] / a['model_seconds_per_page']:.2f} |"
            )
    lines += [
        "",
        "Model s/page: label.py's run time less the time it waited for pages (reading, OCR, encoding), per page; for "
        "one page at a time, the whole time (the words were read beforehand).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
