#!/usr/bin/env python
"""The unlabelled pages of issue 21's measurement, written outside the repository (never committed).

- `funsd_train`: FUNSD's 119 training pages of the 119 / 30 split (`--validation_size 30 --split_seed 0`, as every
  fine-tune here uses), words and 0-1000 boxes kept, labels dropped, as a `save_to_disk` folder for
  `scripts/pretrain.py --dataset <folder> --words_column words --boxes_column bboxes`.
- `debian_pdfs.txt`: a list file of the born-digital PDFs of Debian's `texlive-latex-base-doc` package
  (`apt-get install texlive-latex-base-doc`), for `scripts/pretrain.py --inputs <list file>`, and
  `debian_sample.txt`, the short PDFs (at most 12 pages) of that list in a random order (seed 0) until
  `--sample_pages` pages: the Debian part of the measurement in docs/results.md.

    .venv/bin/python lab/experiments/pretraining_pages.py --output ../pretraining-pages
"""

import argparse
import os
import random
import subprocess
from pathlib import Path

from layoutlm_roialign.data import DataArguments, load_training_data
from layoutlm_roialign.pdf_layoutlm_roialign import pdf_page_count

# FUNSD's training split: the tests' environment variable, else beside the repository.
FUNSD_TRAIN = os.environ.get(
    "LAYOUTLM_ROIALIGN_FUNSD", str(Path(__file__).resolve().parents[3] / "shared" / "data" / "funsd" / "training_data")
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="Folder for funsd_train/ and debian_pdfs.txt.")
    parser.add_argument("--funsd", default=FUNSD_TRAIN, help="FUNSD's training_data.")
    parser.add_argument("--sample_pages", type=int, default=150, help="Pages of debian_sample.txt (at least).")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    train = load_training_data(DataArguments(dataset=args.funsd, validation_size=30, split_seed=0))["train"]
    train.select_columns(["id", "words", "bboxes", "image"]).save_to_disk(str(out / "funsd_train"))
    listing = subprocess.run(["dpkg", "-L", "texlive-latex-base-doc"], capture_output=True, text=True, check=True)
    pdfs = sorted(line for line in listing.stdout.splitlines() if line.endswith(".pdf"))
    (out / "debian_pdfs.txt").write_text("\n".join(pdfs) + "\n")
    counts = [(pdf_page_count(path), path) for path in pdfs]
    random.Random(0).shuffle(counts)
    sample, pages = [], 0
    for count, path in counts:
        if 1 <= count <= 12 and pages < args.sample_pages:
            sample.append(path)
            pages += count
    (out / "debian_sample.txt").write_text("\n".join(sample) + "\n")
    print(f"{sum(c for c, _ in counts)} pages in the {len(pdfs)} PDFs; sample: {len(sample)} PDFs, {pages} pages")
    print(f"{len(train)} FUNSD training pages -> {out / 'funsd_train'}; {len(pdfs)} PDFs -> {out / 'debian_pdfs.txt'}")


if __name__ == "__main__":
    main()
