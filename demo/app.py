#!/usr/bin/env python
"""Label the words of a form in the browser: a Gradio app, and the Hugging Face Space of a published checkpoint.

    python demo/app.py --model runs/quickstart/final        # then open http://127.0.0.1:7860
    MODEL_ID=user/name python demo/app.py                   # a Hub id; on a Space, the README's `models:` entry

Drop in a page image or a PDF (a page picker chooses the page). The words come from a words JSON if one is given
(`{"words": [...], "boxes": [...]}` on the 0-1000 grid or `"pixel_boxes"`, as `scripts/predict.py --words` reads),
else from the PDF's text layer, else from Tesseract OCR. The app shows the page with each entity's box in its label's
colour (`layoutlm_roialign.drawing.draw_prediction`, as predict.py draws it), the entities, the words with their
labels and scores, the key-value pairs where the checkpoint links entities (a prediction with `"pairs"`), and the
prediction as JSON to download. The checkpoint runs its own code (`trust_remote_code=True`); this package provides
the page reading, the window loop and the drawing (on a Space, `scripts/publish.py` uploads it beside this file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # runs offline: no telemetry calls

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402

from layoutlm_roialign.configuration_layoutlm_roialign import label_names  # noqa: E402
from layoutlm_roialign.drawing import draw_prediction  # noqa: E402
from layoutlm_roialign.inference import DTYPES, load_model_and_processor, predict_page  # noqa: E402
from layoutlm_roialign.page_words_layoutlm_roialign import read_words_json  # noqa: E402
from layoutlm_roialign.pages_layoutlm_roialign import PageNotFound, read_page  # noqa: E402
from layoutlm_roialign.pdf_layoutlm_roialign import is_pdf  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL_ENV = "MODEL_ID"
EXAMPLE_SEED = 12345  # the quickstart's unseen pages: no training run of the package draws from this seed
WORD_COLUMNS = ["#", "word", "label", "score", "box (0-1000)"]
ENTITY_COLUMNS = ["label", "text", "score"]
PAIR_COLUMNS = ["key", "value", "score"]
logger = logging.getLogger("layoutlm_roialign.demo")


class BadInput(ValueError):
    """A problem with what the user gave: shown to them as a message, never as a traceback."""


# ------------------------------------------------------------------------------------------- model and its page


def resolve_model_id(argument: str | None = None, readme: Path = HERE / "README.md") -> str:
    """The checkpoint to serve: `--model`, else `$MODEL_ID`, else the first `models:` entry of the Space's README
    (which `scripts/publish.py --space` sets to the model it publishes)."""
    if argument:
        return argument
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    if readme.is_file():
        from huggingface_hub import SpaceCard

        models = SpaceCard.load(readme).data.to_dict().get("models") or []
        if models:
            return models[0]
    raise SystemExit(f"No checkpoint given: pass --model <folder or Hub id> or set ${MODEL_ENV}.")


class Labeller:
    """A checkpoint (token classifier or linking model) and its processor, loaded once with their own code, and what
    it computes in (`dtype`: `"auto"`, `"float32"`, `"bfloat16"`, `"int8"`; the prediction's `"dtype"` says what ran)."""

    def __init__(self, model_id: str, dtype: str = "auto"):
        import torch

        from layoutlm_roialign.compute_layoutlm_roialign import resolve_dtype

        self.model_id, self.dtype = model_id, dtype
        self.model, self.processor = load_model_and_processor(
            model_id, trust_remote_code=True, task="token-classification"
        )
        self.model.eval()
        if torch.cuda.is_available():
            self.model.cuda()
        resolve_dtype(dtype, self.model.device)  # a bad --dtype stops the app before it serves
        self.labels = label_names(self.model.config)


def pdf_pages(path: str | os.PathLike | None) -> int:
    """Pages of an uploaded PDF (0 for anything else), for the page picker."""
    if not path or not os.path.isfile(path) or not is_pdf(path):
        return 0
    from layoutlm_roialign.pdf_layoutlm_roialign import pdf_page_count

    try:
        return pdf_page_count(path)
    except (ValueError, ImportError):
        return 0


def read_form(
    path: str | os.PathLike, page_number: int = 1, words_path: str | os.PathLike | None = None
) -> tuple[dict, list[str] | None, list[list[int]] | None, str]:
    """The page to label (`pages_layoutlm_roialign.read_page`, with the words file's words and boxes: its
    `pixel_boxes` are the file's own pixels, before a large page is shrunk), the words file's words and 0-1000 boxes
    (`None` without one) and where the words come from.

    Raises:
        BadInput: the file cannot be read, the page does not exist, the page is blank, the words file is wrong.
    """
    name = Path(path).name
    if page_number < 1:
        raise BadInput(f"Pages count from 1: choose page 1 or more of {name}, not {page_number}.")
    given: dict = {}
    if words_path:
        try:
            words, field, boxes = read_words_json(str(words_path))
        except ValueError as err:
            raise BadInput(f"The words file {Path(words_path).name} cannot be used: {err}") from err
        given = {"words": words, field: boxes}
    try:
        page = read_page(path, page_number, name=name, **given)
    except PageNotFound as err:
        raise BadInput(f"{name} has {err.count} page(s): choose a page from 1 to {err.count}.") from err
    except ValueError as err:
        if given and _reads_without_words(path, page_number, name):  # the page is fine: its words do not fit it
            raise BadInput(f"The words file {Path(words_path).name} cannot be used: {err}") from err
        if os.path.isfile(path) and is_pdf(path):
            raise BadInput(f"{name} cannot be read as a PDF: it is damaged or encrypted ({err}).") from err
        raise BadInput(f"{name} cannot be read as a page image (PNG, JPEG, TIFF, ...) or a PDF: {err}") from err
    except (ImportError, OSError) as err:  # pytesseract, the tesseract binary or pypdfium2 missing
        raise BadInput(
            f"Reading the words needs OCR, which is not available here ({err}). Upload a PDF with a text layer, "
            "or give the words as a JSON file."
        ) from err
    source = {"text": "the PDF's text layer", "ocr": "OCR", "none": "OCR"}.get(page["words_from"], "OCR")
    words = boxes = None
    if given:
        words, boxes, source = page["words"], page["boxes"], "the words file"
    grey = np.asarray(page["image"].convert("L"))
    if grey.size == 0 or int(grey.max()) - int(grey.min()) < 8:
        raise BadInput(f"The page of {name} is empty: it is one flat colour, with nothing to read.")
    return page, words, boxes, source


def _reads_without_words(path: str | os.PathLike, page_number: int, name: str) -> bool:
    """Whether the page reads without words (then an error reading it with a words file's words was theirs)."""
    try:
        read_page(path, page_number, [], [], name=name)
    except (ValueError, ImportError, OSError):
        return False
    return True


def label_page(
    labeller: Labeller, path: str | os.PathLike, page_number: int = 1, words_path: str | os.PathLike | None = None
) -> tuple[PIL.Image.Image, dict]:
    """Read the page and label its words (and link its entities, for a linking checkpoint): `(page image,
    prediction)`, the prediction as `inference.predict_page` (an `Engine` run on one page) gives it plus `model`,
    `file`, `page` and `words_from`.

    Raises:
        BadInput: see `read_form`; also when no words are found.
    """
    page, words, boxes, source = read_form(path, page_number, words_path)
    if words is None:
        words, boxes = page["words"], page["boxes"]
    if not words:
        raise BadInput(f"No words were found on this page ({source} gave none): nothing to label.")
    prediction = predict_page(
        labeller.model, labeller.processor, page["image"], words, boxes, dtype=labeller.dtype
    )  # the model's windows
    prediction = {"model": labeller.model_id, "file": Path(path).name, "page": page_number, **prediction,
                  "words_from": source}  # fmt: skip
    return page["image"], prediction


# ----------------------------------------------------------------------------------------------- what is shown


def word_rows(prediction: dict) -> list[list]:
    return [
        [i, w["text"], w["label"], round(w["score"], 3), " ".join(map(str, w["box"]))]
        for i, w in enumerate(prediction["words"], start=1)
    ]


def entity_rows(prediction: dict) -> list[list]:
    return [[e["label"], e["text"], round(e["score"], 3)] for e in prediction["entities"]]


def _pair_end(prediction: dict, end: Any) -> dict:
    """A pair's key or value: an entity index, or an entity-like dict (`text`, `pixel_box` or `box`)."""
    if isinstance(end, int):
        return prediction["entities"][end]
    return end


def pair_rows(prediction: dict) -> list[list]:
    """One row per key-value pair of a linking checkpoint's prediction (`"pairs"`: `{"key", "value", "score"}`)."""
    rows = []
    for pair in prediction.get("pairs") or []:
        key, value = _pair_end(prediction, pair["key"]), _pair_end(prediction, pair["value"])
        rows.append([key.get("text", ""), value.get("text", ""), round(float(pair.get("score", 1.0)), 3)])
    return rows


def write_json(prediction: dict, folder: str | os.PathLike) -> str:
    """Save the prediction as `<file stem>[.page<N>].prediction.json` in `folder`; returns the path."""
    stem = re.sub(r"[^\w.-]+", "_", Path(prediction["file"]).stem) or "page"
    paged = str(prediction["file"]).lower().endswith(".pdf") or prediction["page"] != 1
    suffix = f".page{prediction['page']}" if paged else ""
    path = Path(tempfile.mkdtemp(dir=folder)) / f"{stem}{suffix}.prediction.json"
    path.write_text(json.dumps(prediction, indent=2))
    return str(path)


def analyse(
    labeller: Labeller,
    file: str | None,
    page_number: float | None,
    words_file: str | None,
    json_folder: str | os.PathLike | None = None,
) -> dict:
    """Everything the page shows after a click, as a dict: `picture`, `words`, `entities`, `pairs` (rows), `json` (a
    path in `json_folder`, default the temporary folder), `has_pairs` and `status` (a message; the only thing set
    when the input is bad)."""
    empty = {"picture": None, "words": [], "entities": [], "pairs": [], "json": None, "has_pairs": False}
    if not file:
        return {**empty, "status": "Upload a page image or a PDF first (or click an example)."}
    try:
        page, prediction = label_page(labeller, file, 1 if page_number is None else int(page_number), words_file)
    except BadInput as err:
        return {**empty, "status": str(err)}
    except Exception as err:  # anything else: a message for the user, the traceback for the log
        logger.error("Labelling %s failed:\n%s", file, traceback.format_exc())
        return {**empty, "status": f"Labelling failed ({type(err).__name__}: {err})."}
    entities = len(prediction["entities"])
    status = (
        f"{len(prediction['words'])} words from {prediction['words_from']}, {entities} "
        f"entit{'y' if entities == 1 else 'ies'}"
        + (f", {len(prediction['pairs'])} pairs." if "pairs" in prediction else ".")
    )
    return {
        "picture": draw_prediction(page, prediction, labeller.labels),
        "words": word_rows(prediction),
        "entities": entity_rows(prediction),
        "pairs": pair_rows(prediction),
        "json": write_json(prediction, json_folder or tempfile.gettempdir()),
        "status": status,
        "has_pairs": "pairs" in prediction,
    }


# ------------------------------------------------------------------------------------------------------ examples


def write_examples(folder: str | os.PathLike, count: int = 3) -> list[list]:
    """Write `count` synthetic forms (PNG + words JSON) and one as a PDF with a text layer into `folder`; returns the
    rows of `gr.Examples` (file, page, words file)."""
    from layoutlm_roialign.data import render_synthetic_form

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count + 1):
        image, words, boxes, _ = render_synthetic_form(seed=EXAMPLE_SEED, index=index)
        if index < count:
            image.save(folder / f"synthetic_form_{index + 1}.png")
            (folder / f"synthetic_form_{index + 1}.words.json").write_text(
                json.dumps({"words": words, "boxes": boxes})
            )
            rows.append(
                [
                    str(folder / f"synthetic_form_{index + 1}.png"),
                    1,
                    str(folder / f"synthetic_form_{index + 1}.words.json"),
                ]
            )
            continue
        try:
            from layoutlm_roialign.pdf_layoutlm_roialign import write_pdf
        except ImportError:
            break
        width, height = image.size
        pixel_boxes = [
            [b[0] * width / 1000, b[1] * height / 1000, b[2] * width / 1000, b[3] * height / 1000] for b in boxes
        ]
        try:
            write_pdf(folder / "synthetic_form.pdf", image, words, pixel_boxes, dpi=72)
        except ImportError:  # no pypdfium2: no PDF example
            break
        rows.append([str(folder / "synthetic_form.pdf"), 1, None])
    return rows


# ----------------------------------------------------------------------------------------------------------- app


def build_demo(labeller: Labeller, examples_dir: str | os.PathLike) -> gr.Blocks:
    """The Gradio page around `analyse`."""
    types = sorted({label.split("-", 1)[-1] for label in labeller.labels if label != "O"})
    with gr.Blocks(title="LayoutLM-RoIAlign: label a form") as demo:
        gr.Markdown(
            "# Label the words of a form\n"
            f"Model: `{labeller.model_id}` (LayoutLM with RoIAlign image embeddings). Entity types: "
            f"{', '.join(types) or '-'}. Upload a page image or a PDF; the words come from a words JSON if you give "
            "one, else the PDF's text layer, else OCR (Tesseract)."
        )
        with gr.Row():
            with gr.Column(scale=1):
                file = gr.File(label="Form: page image or PDF", file_types=["image", ".pdf"], elem_id="form-file")
                page = gr.Number(label="PDF page", value=1, precision=0, minimum=1, elem_id="page-number")
                words_file = gr.File(
                    label="Words and boxes (optional JSON)", file_types=[".json"], elem_id="words-file"
                )
                button = gr.Button("Label the form", variant="primary", elem_id="run")
                status = gr.Markdown(elem_id="status")
                download = gr.File(label="Prediction (JSON)", interactive=False, elem_id="download")
            with gr.Column(scale=2):
                picture = gr.Image(label="Entities", type="pil", format="png", interactive=False, elem_id="picture")
                pairs = gr.Dataframe(headers=PAIR_COLUMNS, label="Key-value pairs", visible=False, elem_id="pairs")
                entities = gr.Dataframe(headers=ENTITY_COLUMNS, label="Entities", elem_id="entities")
                words = gr.Dataframe(headers=WORD_COLUMNS, label="Words", elem_id="words")

        def run(file_path, page_number, words_path):
            result = analyse(labeller, file_path, page_number, words_path, examples_dir)
            if result["picture"] is None:
                gr.Warning(result["status"])
            return (
                result["picture"],
                gr.Dataframe(value=result["pairs"] or None, visible=bool(result.get("has_pairs"))),
                result["entities"] or None,
                result["words"] or None,
                result["json"],
                result["status"],
            )

        def on_file(file_path):
            count = pdf_pages(file_path)
            label = f"PDF page (1 to {count})" if count else "PDF page"
            return gr.Number(value=1, maximum=max(count, 1), label=label)

        outputs = [picture, pairs, entities, words, download, status]
        button.click(run, [file, page, words_file], outputs)
        file.upload(on_file, file, page)
        gr.Examples(
            write_examples(examples_dir),
            inputs=[file, page, words_file],
            outputs=outputs,
            fn=run,
            run_on_click=True,
            cache_examples=False,
            label="Synthetic forms (made by the package; click one)",
        )
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help=f"checkpoint folder or Hub id (default: ${MODEL_ENV}, else the README's)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--examples_dir", help="where to write the example forms (default: a temporary folder)")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPES,
        help="what the model computes in (auto: bf16 where the device computes it natively, else float32)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    model_id = resolve_model_id(args.model)
    try:
        labeller = Labeller(model_id, args.dtype)
    except ValueError as err:  # says which path is missing or which file is damaged
        raise SystemExit(str(err)) from err
    examples_dir = args.examples_dir or tempfile.mkdtemp(prefix="layoutlm-roialign-examples-")
    demo = build_demo(labeller, examples_dir)
    demo.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(examples_dir)], ssr_mode=False)


if __name__ == "__main__":
    sys.exit(main())
