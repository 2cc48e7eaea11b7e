"""Helpers that several test modules share (test modules never import each other): tiny checkpoints whose pixels
matter, pages and PDFs with known words, the labeller's script run in and out of process, and a Hub stand-in."""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import pytest
import torch
from conftest import REPO_ROOT, TINY_TRAINING_MODEL
from huggingface_hub import HfApi

from layoutlm_roialign.data import FUNSD_LABELS
from layoutlm_roialign.model_factory import build_model_and_processor
from layoutlm_roialign.pdf_layoutlm_roialign import write_pdf

LAB = REPO_ROOT / "lab"


def lab_module(path: str):
    """The lab's file `lab/<path>` (not part of the package) as a module, as its scripts import their siblings."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, LAB / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tesseract_available() -> bool:
    """pytesseract importable and the tesseract binary it calls found (the binary is apt's, not pip's)."""
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
    except (ImportError, OSError, RuntimeError):  # TesseractNotFoundError is an OSError
        return False
    return True


requires_tesseract = pytest.mark.skipif(
    not tesseract_available(), reason="OCR needs pytesseract and the tesseract binary (apt-get install tesseract-ocr)"
)


VOCAB = ["date", "name", "total", "amount", "signature", "received", "invoice", "phone"]


def make_pixels_matter(model) -> None:
    """Random visual projection (and gate, where the config has one): a fresh model's visual branch starts at zero,
    and these tests need the page pixels to change the predictions."""
    visual = model.layoutlm_roialign.visual_embeddings
    torch.nn.init.normal_(visual.projection.weight, std=0.2)
    if getattr(visual, "gate", None) is not None:
        torch.nn.init.normal_(visual.gate, std=1.0)


TEXT_PAGES = [["date", "name", "total"], ["invoice", "amount", "signature", "phone", "received"]]


def save_tiny_checkpoint(folder, **overrides) -> str:
    """A tiny checkpoint whose pixels change its predictions, saved in `folder` (`overrides`: of its config, such as
    a larger `image_size` for a slower model)."""
    torch.manual_seed(0)
    model, processor = build_model_and_processor(
        FUNSD_LABELS, [VOCAB * 3], **{**TINY_TRAINING_MODEL, "tokenizer_vocab_size": 120, **overrides}
    )
    make_pixels_matter(model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def draw_words(words: list[str], seed=0) -> tuple[PIL.Image.Image, list[list[float]]]:
    """A page (400 x 300 pixels, taller for more than 6 words) with `words` written on it in a line each, and their
    pixel boxes."""
    image = PIL.Image.new("RGB", (400, max(300, 40 + 40 * len(words))), "white")
    draw = PIL.ImageDraw.Draw(image)
    font = PIL.ImageFont.load_default(size=24)
    boxes = []
    for i, word in enumerate(words):
        x, y = 30 + 40 * (seed % 3), 20 + 40 * i
        draw.text((x, y), word, fill="black", font=font)
        boxes.append([float(v) for v in draw.textbbox((x, y), word, font=font)])
    return image, boxes


def write_text_pdf(path, pages: list[list[str]]) -> None:
    """A PDF with one page per word list, each word drawn and in the text layer."""
    import pypdfium2

    merged = pypdfium2.PdfDocument.new()
    for i, words in enumerate(pages):
        image, boxes = draw_words(words, seed=i)
        single = path.parent / f".{path.stem}-{i}.pdf"
        write_pdf(single, image, words, boxes, dpi=72)
        source = pypdfium2.PdfDocument(str(single))
        merged.import_pages(source)
        source.close()
        single.unlink()
    merged.save(str(path))
    merged.close()


def make_archive(folder) -> dict[str, int]:
    """The acceptance folder: PNG, JPEG, a 2-page PDF with a text layer, a scanned-only PDF, a 3-page TIFF, a corrupt
    PNG and an empty PDF; returns the readable files and their page counts."""
    folder.mkdir(parents=True, exist_ok=True)
    draw_words(["total", "amount"])[0].save(folder / "a.png")
    draw_words(["name", "date"], seed=1)[0].save(folder / "b.jpg", quality=90)
    write_text_pdf(folder / "c_text.pdf", TEXT_PAGES)
    write_pdf(folder / "d_scan.pdf", draw_words(["received"])[0], dpi=72)  # pixels only, no text layer
    frames = [draw_words([w], seed=i)[0] for i, w in enumerate(["phone", "invoice", "date"])]
    frames[0].save(folder / "e.tif", save_all=True, append_images=frames[1:])
    png = (folder / "a.png").read_bytes()
    (folder / "f_corrupt.png").write_bytes(png[: len(png) // 3])  # cut short: the header reads, the pixels do not
    (folder / "g_empty.pdf").write_bytes(b"")
    (folder / "notes.md").write_text("not a page: folders give only image and PDF files")
    return {"a.png": 1, "b.jpg": 1, "c_text.pdf": 2, "d_scan.pdf": 1, "e.tif": 3}


def run_script(*argv: str, check_exit: int | None = 0) -> tuple[int, str]:
    """scripts/label.py in a subprocess: (exit status, stderr then stdout, whose last line is the JSON summary)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "label.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check_exit is not None:
        assert out.returncode == check_exit, out.stdout[-2000:] + out.stderr[-3000:]
    return out.returncode, out.stderr + out.stdout


def by_key(records: list[dict]) -> dict:
    return {(r["source"], r["page"]): r for r in records}


def label_in_process(checkpoint, argv: list[str]) -> dict:
    """scripts/label.py's `main` in this process (no exit on success); returns the summary."""
    main = runpy.run_path(str(REPO_ROOT / "scripts" / "label.py"), run_name="script")["main"]
    return main(["--model", checkpoint, "--quiet", "--num_workers", "0", *argv])


def assert_same_records(one: list[dict], other: list[dict]) -> None:
    one, other = by_key(one), by_key(other)
    assert one.keys() == other.keys() and len(one) > 0
    for key, record in one.items():
        twin = other[key]
        assert {k: v for k, v in record.items() if k not in ("words", "entities")} == {
            k: v for k, v in twin.items() if k not in ("words", "entities")
        }
        assert [(w["text"], w["box"], w["label"]) for w in record["words"]] == [
            (w["text"], w["box"], w["label"]) for w in twin["words"]
        ]
        assert [w["score"] for w in record["words"]] == pytest.approx([w["score"] for w in twin["words"]], abs=1e-5)


SCORES = {
    "precision": 0.5,
    "recall": 0.25,
    "f1": 1 / 3,
    "accuracy": 0.75,
    "per_type": {
        "QUESTION": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "number": 4},
        "ANSWER": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 4},
    },
}


class Intercepted:
    """Records `create_repo` and `create_commit` calls instead of sending them."""

    def __init__(self, monkeypatch):
        self.repos, self.commits, self.whoami = [], [], []
        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: self.repos.append((repo_id, kw)))
        monkeypatch.setattr(HfApi, "whoami", lambda api, *a, **kw: self.whoami.append(api.token) or {"name": "me"})

        def create_commit(api, repo_id, operations, **kw):
            self.commits.append({"repo_id": repo_id, "operations": list(operations), **kw})
            return f"https://huggingface.co/{repo_id}/commit/0"

        monkeypatch.setattr(HfApi, "create_commit", create_commit)

    def files(self, commit: int = -1) -> set[str]:
        return {op.path_in_repo for op in self.commits[commit]["operations"]}
