"""Pages per second of the archive labeller (`scripts/label.py`) against today's one-page-per-call loop.

Two corpora of `--pages` pages each (the PDFs `--pdf_pages`, where given), the same model for every measurement:

- `scans`: FUNSD-like scans read with OCR (Tesseract): the FUNSD training pages (`$LAYOUTLM_ROIALIGN_FUNSD`, default
  `../shared/data/funsd/training_data` beside the repository) when present (repeated under new names past its 149
  pages), else synthetic forms saved as PNG;
- `pdfs`: born-digital PDFs with a text layer (synthetic forms written with `pdf_layoutlm_roialign.write_pdf`, one page
  each, read back at 150 dpi like the labeller's default), so no OCR.

For each corpus, in the same run:

- `predict.py per page`: today's loop, `scripts/predict.py` invoked once per page (a process, the imports and the
  model load every page; a PDF page is first rendered to PNG with its text layer's words as `--words`, as a user's
  loop would, and that time is counted). It is measured on `--subprocess_pages` pages (its cost per page does not
  depend on how many there are) and reported as pages/s;
- `predict_page loop`: the same work in one process with the model loaded once: each page opened, OCR'd or its text
  layer read, and `inference.predict_page` run on it alone;
- `label.py`: `LabelRun.run` with `--num_workers` reader processes and `--batch_size` windows per forward pass, in a
  fresh process; its summary gives the share of the time the model waited for pages (blocked on the DataLoader).
- `label.py --engine ray` (with `--engines local,ray`, the default where Ray Data is installed): the same plan on a
  Ray of the machine's cores (`labelling.ray_run.label_on_ray`: reader tasks, one model replica), in a fresh process
  that joins it, as `label.py --ray_address` joins a running cluster. The Ray is started once, here, and has run one
  Ray Data job (which starts Ray Data's own actors), so neither is counted; starting the run's workers (each imports
  PyTorch and the package) and the replica's load of the checkpoint are.

The labeller runs twice per engine, on fewer pages and on all of them; the difference gives each engine's pages/s
past its start and the seconds its start costs (the line below the table).

The loop and the labeller run in fresh processes (one at a time), and the labeller twice, on half the pages and on all
of them, to show that its peak memory (the main process's `VmHWM`, and the largest reader worker's from
`RUSAGE_CHILDREN`) does not grow with the number of pages. The model is built here with random weights (LayoutLM-base
sizes + ResNet-101 `layer3` at 224 px, the package's defaults; `--model_size small` for a quick check) unless
`--model` names a checkpoint. Nothing needs a GPU; `--device cuda` runs the model there.

    python lab/benchmarks/label_bench.py --pages 200                          # the README's numbers
    python lab/benchmarks/label_bench.py --pages 120 --pdf_pages 480          # more PDF pages than scans
    python lab/benchmarks/label_bench.py --pages 12 --model_size small        # a smoke run (~2 min on 2 cores)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
# FUNSD's training split: the tests' environment variable, else beside the repository.
FUNSD_TRAIN = Path(
    os.environ.get("LAYOUTLM_ROIALIGN_FUNSD", REPO.parent / "shared" / "data" / "funsd" / "training_data")
)
FUNSD_IMAGES = FUNSD_TRAIN / "images"
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
BASE_BACKBONE = dict(backbone="resnet101", image_size=224)
SMALL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
SMALL_BACKBONE = dict(backbone="resnet18", image_size=224)


def build_model(folder: Path, size: str) -> str:
    """A checkpoint with random weights (a WordPiece vocabulary trained on the synthetic forms' words)."""
    from layoutlm_roialign.data import FUNSD_LABELS, render_synthetic_form
    from layoutlm_roialign.model_factory import build_model_and_processor

    words = [render_synthetic_form(0, i)[1] for i in range(20)]
    text, backbone = (BASE, BASE_BACKBONE) if size == "base" else (SMALL, SMALL_BACKBONE)
    model, processor = build_model_and_processor(
        FUNSD_LABELS, words, tokenizer_vocab_size=2000, max_position_embeddings=512, **text, **backbone
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def make_corpora(folder: Path, pages: int, pdf_pages: int | None = None) -> dict[str, list[str]]:
    """`scans`: `pages` PNG pages to OCR; `pdfs`: `pdf_pages` (default `pages`) one-page PDFs with a text layer."""
    import PIL.Image

    from layoutlm_roialign.data import render_synthetic_form
    from layoutlm_roialign.pdf_layoutlm_roialign import write_pdf

    (folder / "scans").mkdir(parents=True)
    (folder / "pdfs").mkdir()
    funsd = sorted(FUNSD_IMAGES.glob("*.png")) if FUNSD_IMAGES.is_dir() else []
    scans, pdfs = [], []
    for i in range(pages):
        path = folder / "scans" / f"scan{i:04d}.png"
        if funsd:
            shutil.copyfile(funsd[i % len(funsd)], path)
        else:
            render_synthetic_form(1, i)[0].save(path)
        scans.append(str(path))
    for i in range(pages if pdf_pages is None else pdf_pages):
        image, words, boxes, _ = render_synthetic_form(2, i)
        w, h = image.size
        pixel_boxes = [[b[0] * w / 1000, b[1] * h / 1000, b[2] * w / 1000, b[3] * h / 1000] for b in boxes]
        path = folder / "pdfs" / f"form{i:04d}.pdf"
        write_pdf(path, image, words, pixel_boxes, dpi=72)
        pdfs.append(str(path))
    with PIL.Image.open(scans[0]) as first:
        size = first.size
    return {
        "scans": scans,
        "pdfs": pdfs,
        "scan_source": "FUNSD training pages" if funsd else "synthetic forms",
        "scan_size": list(size),
    }


def peak_rss_mib() -> tuple[float, float]:
    """(this process's peak resident set, the largest finished child's), in MiB."""
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return hwm / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def page_words(path: str):
    """What one page needs before the model, as a loop does it: (page, words, boxes); words None to OCR."""
    from layoutlm_roialign.image_processing_layoutlm_roialign import normalize_boxes
    from layoutlm_roialign.pages_layoutlm_roialign import load_page
    from layoutlm_roialign.pdf_layoutlm_roialign import pdf_page_words, render_pdf_page

    if path.endswith(".pdf"):
        page = render_pdf_page(path, 0)
        words, pixel_boxes = pdf_page_words(path, 0)
        return page, words, normalize_boxes(pixel_boxes, *page.size)
    return load_page(path), None, None


def child(spec: dict) -> dict:
    """One measurement in a fresh process: the predict_page loop or the labeller."""
    import torch

    from layoutlm_roialign.inference import load_model_and_processor, predict_page

    model, processor = load_model_and_processor(spec["model"])
    model.to(spec["device"])
    files = spec["files"]
    if spec["kind"] == "loop":
        start = time.perf_counter()
        for path in files:
            page, words, boxes = page_words(path)
            predict_page(model, processor, page, words, boxes, batch_size=spec["batch_size"], dtype=spec["dtype"])
        seconds = time.perf_counter() - start
        result = {"pages": len(files), "seconds": seconds}
    else:
        from layoutlm_roialign.labelling import plan_run

        output = Path(spec["output"])
        for stale in output.parent.glob(output.stem + "*"):
            stale.unlink()
        plan = plan_run(str(output), files, process_index=0, num_processes=1)
        if spec["kind"] == "ray":
            import ray

            from layoutlm_roialign.labelling.ray_run import CheckpointSource, RayOptions, label_on_ray

            ray.init(address=spec["ray_address"], include_dashboard=False, log_to_driver=False)
            summary = label_on_ray(
                plan, model, processor, RayOptions(), spec["batch_size"], spec["dtype"], quiet=True,
                source=CheckpointSource(spec["model"]),  # as label.py: the replica loads the checkpoint
            )  # fmt: skip
            ray.shutdown()
        else:
            summary = plan.run(
                model, processor, spec["batch_size"], spec["workers"], spec["device"], spec["dtype"], quiet=True
            )
        result = {k: summary[k] for k in ("pages", "failed", "seconds", "input_wait_share", "words")}
    result["pages_per_second"] = result["pages"] / result["seconds"]
    result["peak_rss_mib"], result["peak_worker_rss_mib"] = peak_rss_mib()
    result["torch_threads"] = torch.get_num_threads()
    return result


def run_child(spec: dict, script: str = __file__, env: dict | None = None) -> dict:
    """`script --child <spec>` in a fresh process (with `env`, default this one's); its `RESULT` line, parsed."""
    out = subprocess.run(
        [sys.executable, script, "--child", json.dumps(spec)], capture_output=True, text=True, check=False, env=env
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{spec['kind']} failed:\n{out.stderr[-3000:]}")


def start_ray() -> str:
    """A Ray of this machine's cores, held by this process for the run, that has run one Ray Data job (as a cluster
    that runs already has); its address, for the measuring processes to join."""
    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)  # a new one
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.range(2).map_batches(lambda batch: batch).materialize()
    return ray.get_runtime_context().gcs_address


def past_start(small: dict, full: dict) -> tuple[float, float]:
    """(pages/s past the start, seconds the start costs) of one engine from its runs on fewer and on all pages."""
    rate = (full["pages"] - small["pages"]) / (full["seconds"] - small["seconds"])
    return rate, full["seconds"] - full["pages"] / rate


def hardware(device: str) -> str:
    """The CPU's name and core count, or the GPU's name."""
    import torch

    if device != "cpu":
        return torch.cuda.get_device_name()
    cpu = platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores"


def predict_script_loop(model: str, files: list[str], workdir: Path) -> dict:
    """scripts/predict.py once per page; a PDF page rendered to PNG and its words written first (timed too)."""
    start = time.perf_counter()
    for i, path in enumerate(files):
        argv = [sys.executable, str(REPO / "scripts" / "predict.py"), "--model", model, "--output_png", ""]
        if path.endswith(".pdf"):
            page, words, boxes = page_words(path)
            page.save(workdir / "page.png")
            (workdir / "words.json").write_text(json.dumps({"words": words, "boxes": boxes}))
            argv += ["--image", str(workdir / "page.png"), "--words", str(workdir / "words.json")]
        else:
            argv += ["--image", path]
        argv += ["--output_json", str(workdir / f"prediction{i}.json")]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"predict.py failed on {path}:\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    return {"pages": len(files), "seconds": seconds, "pages_per_second": len(files) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=20, help="pages per corpus")
    parser.add_argument(
        "--pdf_pages", type=int, default=None, help="pages of the PDF corpus, where it differs (default: --pages)"
    )
    parser.add_argument("--subprocess_pages", type=int, default=10, help="pages for the predict.py-per-page loop")
    parser.add_argument(
        "--loop_pages", type=int, default=None, help="pages for the in-process predict_page loop (default: all)"
    )
    parser.add_argument(
        "--small_run_pages",
        type=int,
        default=None,
        help="pages of the labeller's smaller run, for peak memory against page count (default: half)",
    )
    parser.add_argument("--model", default=None, help="a checkpoint folder (default: one built here)")
    parser.add_argument("--model_size", default="base", choices=("base", "small"))
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--corpora", default="scans,pdfs", help="comma-separated: scans, pdfs")
    parser.add_argument(
        "--engines", default=None, help="comma-separated: local, ray (default: both where Ray Data is installed)"
    )
    parser.add_argument(
        "--output", default="lab/benchmarks/results_label", help="writes <output>.md and <output>.json"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return

    engines = (args.engines or ("local,ray" if importlib.util.find_spec("ray") else "local")).split(",")
    wall = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="label_bench_"))
    ray_address = start_ray() if "ray" in engines else None
    try:
        model = args.model or build_model(workdir / "model", args.model_size)
        corpora = make_corpora(workdir / "pages", args.pages, args.pdf_pages)
        common = dict(model=model, device=args.device, batch_size=args.batch_size, dtype=args.dtype)
        results: dict = {}
        for corpus in args.corpora.split(","):
            files = corpora[corpus]
            row = {"subprocess": predict_script_loop(model, files[: args.subprocess_pages], workdir)}
            print(corpus, "predict.py per page", row["subprocess"], flush=True)
            row["loop"] = run_child({**common, "kind": "loop", "files": files[: args.loop_pages or len(files)]})
            print(corpus, "predict_page loop", row["loop"], flush=True)
            small = max(1, min(len(files), args.small_run_pages or len(files) // 2))
            for name, count in (("labeller_half", small), ("labeller", len(files))):
                row[name] = run_child(
                    {
                        **common,
                        "kind": "labeller",
                        "files": files[:count],
                        "workers": args.num_workers,
                        "output": str(workdir / f"{corpus}-{name}.jsonl"),
                    }
                )
                print(corpus, name, row[name], flush=True)
            for name, count in (("labeller_ray_half", small), ("labeller_ray", len(files))) if ray_address else ():
                spec = {**common, "kind": "ray", "files": files[:count], "ray_address": ray_address}
                row[name] = run_child({**spec, "output": str(workdir / f"{corpus}-{name}.jsonl")})
                print(corpus, name, row[name], flush=True)
            results[corpus] = row
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if ray_address:
            import ray

            ray.shutdown()
    import torch

    report = {
        "command": "python lab/benchmarks/label_bench.py " + " ".join(sys.argv[1:]),
        "hardware": hardware(args.device),
        "torch": torch.__version__,
        "model": args.model or f"built here, random weights ({args.model_size})",
        "scan_source": corpora["scan_source"],
        "scan_size": corpora["scan_size"],
        "settings": {
            k: getattr(args, k)
            for k in (
                "pages",
                "pdf_pages",
                "subprocess_pages",
                "loop_pages",
                "small_run_pages",
                "num_workers",
                "batch_size",
                "dtype",
            )
        },
        "engines": engines,
        "minutes": (time.perf_counter() - wall) / 60,
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(args.output + ".md").write_text(render(report))
    print(render(report))


def render(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"Command: `{report['command']}` ({report['minutes']:.1f} min). {report['hardware']}, torch {report['torch']}; "
        f"model: {report['model']}; scans: {report['scan_source']} ({report['scan_size'][0]}x{report['scan_size'][1]} "
        f"px), OCR'd; PDFs: synthetic forms with a text layer, rendered at 150 dpi. "
        + (
            f"{s['pages']} scans and {pdf} PDF pages "
            if (pdf := s.get("pdf_pages")) and pdf != s["pages"]
            else f"{s['pages']} pages per corpus "
        )
        + f"(predict.py per page: {s['subprocess_pages']}; predict_page loop: {s.get('loop_pages') or s['pages']}; "
        f"pages/s does not depend on the count for either); label.py with {s['num_workers']} workers, batches of "
        f"{s['batch_size']} windows, {s['dtype']}.",
        "",
        "| corpus | run | pages | pages/s | x predict.py per page | x predict_page loop | model waits on input "
        "| peak RSS MiB (main / largest worker) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "subprocess": "predict.py per page (today)",
        "loop": "predict_page loop, model loaded once",
        "labeller_half": "label.py, fewer pages",
        "labeller": "label.py",
        "labeller_ray_half": "label.py --engine ray, fewer pages",
        "labeller_ray": "label.py --engine ray (1 replica)",
    }
    for corpus, row in report["results"].items():
        base, loop = row["subprocess"]["pages_per_second"], row["loop"]["pages_per_second"]
        for key, name in names.items():
            if key not in row:
                continue
            r = row[key]
            wait = f"{r['input_wait_share']:.0%}" if "input_wait_share" in r else ""
            memory = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else ""
            if "input_wait_share" in r:
                memory += f" / {r['peak_worker_rss_mib']:.0f}"
            lines.append(
                f"| {corpus} | {name} | {r['pages']} | {r['pages_per_second']:.2f} | "
                f"{r['pages_per_second'] / base:.1f} | {r['pages_per_second'] / loop:.2f} | {wait} | {memory} |"
            )
    ratios = [
        f"{corpus} {row['labeller_ray']['pages_per_second'] / row['labeller']['pages_per_second']:.2f}"
        for corpus, row in report["results"].items()
        if "labeller_ray" in row
    ]
    if ratios:
        lines += ["", "pages/s of label.py --engine ray / label.py, same pages, same run: " + ", ".join(ratios) + "."]
    starts = []
    for corpus, row in report["results"].items():
        if "labeller_ray_half" in row and row["labeller_ray_half"]["pages"] < row["labeller_ray"]["pages"]:
            (local, local_start), (ray, ray_start) = (
                past_start(row[f"{key}_half"], row[key]) for key in ("labeller", "labeller_ray")
            )
            starts.append(
                f"{corpus}: label.py {local:.2f} pages/s (start {local_start:.1f} s), --engine ray {ray:.2f} pages/s "
                f"(start {ray_start:.1f} s), {ray / local:.2f}x"
            )
    if starts:
        lines += ["", "Past the start (from the runs on fewer and on all pages): " + "; ".join(starts) + "."]
    lines += [
        "",
        "Model waits on input: the share of label.py's run spent blocked on the DataLoader (reading, OCR, encoding "
        "not ready). Peak RSS: `VmHWM` of the measuring process (model included) and `RUSAGE_CHILDREN`'s largest "
        "finished child (a reader worker, forked from the main process, so it counts the pages it shares with it); "
        "fewer pages against all of them shows whether memory grows with the number of pages. `--engine ray`: its "
        "model waits on input is the driver's wait for records; its peak RSS the driver's (the Ray workers are not "
        "its children).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
