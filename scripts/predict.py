#!/usr/bin/env python
"""Label the words of a page image and draw its entities.

    python scripts/predict.py --model runs/main/final --image page.png --output_json page.json --output_png page.pred.png
    python scripts/predict.py ... --words page_words.json   # {"words": [...], "boxes": [[x0, y0, x1, y1], ...]}

Without `--words` the page is OCR'd with Tesseract. Boxes in `--words` are on LayoutLM's 0-1000 grid, or in page
pixels under the key `"pixel_boxes"`.
"""

import json
import os
import sys

# This folder holds `evaluate.py`: keep it off the import path so that `import evaluate` means the library.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
from dataclasses import dataclass, field  # noqa: E402

from transformers import HfArgumentParser  # noqa: E402

from layoutlm_roialign.inference import draw_entities, load_words_json, predict_page  # noqa: E402


@dataclass
class PredictArguments:
    model: str = field(metadata={"help": "Checkpoint folder or Hub id."})
    image: str = field(metadata={"help": "The page image."})
    words: str | None = field(default=None, metadata={"help": "JSON with words and boxes; default: OCR."})
    output_json: str = field(default="prediction.json", metadata={"help": "Where to write the words and entities."})
    output_png: str | None = field(default="prediction.png", metadata={"help": "Where to draw the entities."})
    ocr_lang: str | None = field(default=None, metadata={"help": "Tesseract language, e.g. eng."})
    max_length: int = field(default=512, metadata={"help": "Tokens per window."})
    stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own code (Hub ids)."})


def main(argv=None) -> dict:
    parser = HfArgumentParser(PredictArguments)
    (args,) = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    import PIL.Image
    from transformers import AutoModelForTokenClassification, AutoProcessor

    try:
        page = PIL.Image.open(args.image).convert("RGB")
        words, boxes = load_words_json(args.words, *page.size) if args.words else (None, None)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    model = AutoModelForTokenClassification.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    try:
        prediction = predict_page(
            model, processor, page, words, boxes, args.max_length, args.stride, ocr_lang=args.ocr_lang
        )
    except ValueError as err:
        parser.error(str(err))
    with open(args.output_json, "w") as f:
        json.dump(prediction, f, indent=2)
    if args.output_png:
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        draw_entities(page, prediction, labels).save(args.output_png)
    print(
        f"{len(prediction['words'])} words, {len(prediction['entities'])} entities -> {args.output_json}"
        + (f", {args.output_png}" if args.output_png else "")
    )
    return prediction


if __name__ == "__main__":
    main()
