#!/usr/bin/env python
"""Label the words of a page and draw its entities.

    python scripts/predict.py --model runs/main/final --image page.png --output_json page.json --output_png page.pred.png
    python scripts/predict.py ... --words page_words.json   # {"words": [...], "boxes": [[x0, y0, x1, y1], ...]}
    python scripts/predict.py ... --image report.pdf --page 2   # words from the PDF's text layer (OCR for a scan)
    python scripts/predict.py --model runs/main/onnx --runtime onnx ...   # an export (scripts/export_onnx.py)

A linking checkpoint (`scripts/train.py --task linking`) also links the entities it finds: the JSON gets `"pairs"`
(`{"key": {...}, "value": {...}, "score": ...}`, each end an entity with its text and boxes) and the PNG an arrow
from each key to its value, from the same pass of the model. Without `--words` the words come from a PDF's text
layer, else Tesseract OCR. Boxes in `--words` are on LayoutLM's 0-1000 grid, or in page pixels under the key
`"pixel_boxes"`; a box that does not fit the page is an error unless `--clamp_boxes`.
Everything that can be checked is checked before the model loads, and the JSON and the drawing are written together
(temporary files renamed once both are ready): a failure leaves earlier outputs as they were. `--dtype` says what the
model computes in (default `auto`: bf16 where the device computes it natively, else float32); the JSON's `"dtype"`
says what ran.
"""

import json
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from layoutlm_roialign.compute_fields import dtype_field, runtime_field
from layoutlm_roialign.configuration_layoutlm_roialign import label_names
from layoutlm_roialign.drawing import draw_prediction
from layoutlm_roialign.inference import load_model_and_processor, predict_page
from layoutlm_roialign.outputs import check_output_paths, write_files
from layoutlm_roialign.page_words_layoutlm_roialign import read_words_json
from layoutlm_roialign.pages_layoutlm_roialign import DEFAULT_DPI, WORDS_FROM, read_page


@dataclass
class PredictArguments:
    model: str = field(metadata={"help": "Checkpoint folder or Hub id."})
    image: str = field(metadata={"help": "The page: an image file (any frame of a TIFF) or a PDF."})
    page: int = field(default=1, metadata={"help": "The page number, from 1 (a PDF's page, a TIFF's frame)."})
    words: str | None = field(
        default=None, metadata={"help": "JSON with words and boxes; default: the PDF's text layer, else OCR."}
    )
    words_from: str = field(
        default="auto",
        metadata={"help": f"Without --words: one of {WORDS_FROM} (auto: a PDF's text layer, else OCR)."},
    )
    dpi: float = field(default=DEFAULT_DPI, metadata={"help": "Resolution PDF pages are rendered at."})
    output_json: str = field(default="prediction.json", metadata={"help": "Where to write the words and entities."})
    output_png: str | None = field(
        default="prediction.png", metadata={"help": "Where to draw the entities (PNG, JPEG, ...); '' for none."}
    )
    ocr_lang: str | None = field(default=None, metadata={"help": "Tesseract language, e.g. eng."})
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per window (default: the model's, <= 512)."}
    )
    stride: int | None = field(default=None, metadata={"help": "Tokens shared by consecutive windows (max_length/4)."})
    clamp_boxes: bool = field(
        default=False, metadata={"help": "Pin --words boxes that cross the page edge to it, instead of refusing them."}
    )
    dtype: str = dtype_field()
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own code (Hub ids)."})
    runtime: str = runtime_field()


def main(argv=None) -> dict:
    parser = HfArgumentParser(PredictArguments)
    (args,) = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    try:
        check_output_paths({"--output_json": args.output_json, "--output_png": args.output_png})
        png_format = _image_format(args.output_png) if args.output_png else None
        if args.words:  # the page reader checks the boxes against the page (its own pixels for `pixel_boxes`)
            words, field, given = read_words_json(args.words)
            page = read_page(args.image, args.page, words, **{field: given}, dpi=args.dpi, name=args.image,
                             clamp_boxes=args.clamp_boxes)  # fmt: skip
        else:
            page = read_page(args.image, args.page, words_from=args.words_from, dpi=args.dpi, ocr_lang=args.ocr_lang,
                             name=args.image)  # fmt: skip
        words, boxes = page["words"], page["boxes"]
        model, processor = load_model_and_processor(args.model, args.trust_remote_code, runtime=args.runtime)
        prediction = predict_page(
            model, processor, page["image"], words, boxes, args.max_length, args.stride, dtype=args.dtype
        )
        prediction.update(
            words_from="the words file" if args.words else page["words_from"], page=args.page, runtime=args.runtime
        )
    except (ValueError, ImportError, OSError) as err:  # OCR without pytesseract or the tesseract binary
        parser.error(str(err))
    writers = {args.output_json: lambda f: f.write(json.dumps(prediction, indent=2).encode())}
    if args.output_png:
        drawing = draw_prediction(page["image"], prediction, label_names(model.config))
        writers[args.output_png] = lambda f: drawing.save(f, format=png_format)
    write_files(writers)
    print(
        f"{len(prediction['words'])} words, {len(prediction['entities'])} entities"
        + (f", {len(prediction['pairs'])} pairs" if "pairs" in prediction else "")
        + f" -> {args.output_json}"
        + (f", {args.output_png}" if args.output_png else "")
    )
    return prediction


def _image_format(path: str) -> str:
    import PIL.Image

    extension = os.path.splitext(path)[1].lower()
    fmt = PIL.Image.registered_extensions().get(extension)
    if fmt is None or fmt not in PIL.Image.SAVE:
        raise ValueError(
            f"--output_png {path!r}: PIL cannot write {extension or 'files without an extension'}; use .png."
        )
    return fmt


if __name__ == "__main__":
    main()
