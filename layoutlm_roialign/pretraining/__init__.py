"""Masked visual-language model (MVLM) pre-training on unlabelled pages: the logic behind `scripts/pretrain.py`.

The LayoutLM paper pre-trains its 2-D position embeddings with a masked visual-language model: 15 % of the tokens are
chosen, their text is hidden (80 % `[MASK]`, 10 % a random token, 10 % unchanged) but their boxes are kept, and the
model predicts them from the words and the layout around them. This package does that on a user's own pages:

- `windows.read_pretraining_windows`: the pages of folders, globs, list files, PDFs (text layer), images (OCR) and `datasets`
  datasets, named as the labeller takes them (`labelling.sources`) and read by the labeller's `PageReader` (which
  reads a page: text layer or OCR, the processor's 512-token windows), kept as a `datasets` folder on disk keyed by
  the pages and the reading settings, so that a second epoch, a rerun or a resumed run never re-reads a PDF; while
  they are read, each batch is kept on disk (`parts.PageParts`), so that a rerun after a kill reads only the rest.
- `masking.DataCollatorForMaskedVisualLanguageModeling`: pads windows and masks them (token or whole-word masking); the
  masked tokens keep their boxes; `[CLS]`, `[SEP]`, `[PAD]` and every other special token are never chosen.
- **What a masked token's visual feature is.** A token's RoI shows its own word, so with the visual branch on the
  pixels would give the masked text away. The collator therefore blanks the boxes of every token to predict in that
  window's page image (filled with white paper, normalized as the image processor does) before the backbone sees
  it, as LayoutLMv2 does for its MVLM: a chosen token's visual feature is then the feature of blank paper at its box.
  It applies to all chosen tokens (the 10 % kept unchanged too), so the blank marks a position to predict but never
  shows its word.
- `run.run_pretraining`: `Trainer` (one learning rate, warm-up, bf16 where the GPU has it, resumable, `accelerate
  launch`), masked-token accuracy on held-out windows masked once, and an atomic final folder (model, processor,
  code, a model card saying what it was pre-trained on) that `scripts/train.py --text_model` or
  `--model_name_or_path` fine-tunes; `arguments.PretrainingArguments` says what it reads and starts from.
"""

from .arguments import PRETRAIN_SCRIPT_DEFAULTS, PretrainingArguments
from .masking import DataCollatorForMaskedVisualLanguageModeling, MaskedTokenAccuracy, blank_boxes, blank_fill_value
from .run import build_pretraining_model, run_pretraining, write_pretraining_card
from .windows import read_pretraining_windows

__all__ = [
    "PretrainingArguments",
    "DataCollatorForMaskedVisualLanguageModeling",
    "MaskedTokenAccuracy",
    "blank_boxes",
    "blank_fill_value",
    "build_pretraining_model",
    "read_pretraining_windows",
    "run_pretraining",
    "write_pretraining_card",
    "PRETRAIN_SCRIPT_DEFAULTS",
]
