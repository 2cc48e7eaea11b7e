"""The road from a page to its answer and the loader of a checkpoint, in one import.

    from layoutlm_roialign.inference import load_model_and_processor, predict_page
    model, processor = load_model_and_processor("runs/main/final")
    prediction = predict_page(model, processor, "form.png")

Each part lives in a module with one job: `loader` (`load_model_and_processor`: a checkpoint and its processor),
`road_layoutlm_roialign` (the steps a page takes: `encode_page`, `predict_windows` (the windows of many pages,
batched), `decode_page`, and `label_pages`, which composes them, `group_pages`), `engine_layoutlm_roialign` (`Engine`,
which runs `label_pages` on pages from the page reader, and `predict_page`, one page through it) and
`entities_layoutlm_roialign` (words into entities and the key-value pairs among them: `group_entities`,
`given_entities`, `link_pages`, `pair_records`). Pages are read by `pages_layoutlm_roialign.read_page`.
"""

from .engine_layoutlm_roialign import Engine, predict_page, read_and_encode
from .entities_layoutlm_roialign import NOT_LINKED, given_entities, group_entities, link_pages, pair_records
from .loader import load_model_and_processor
from .road_layoutlm_roialign import (
    DTYPES,
    decode_page,
    encode_page,
    group_pages,
    is_linking_model,
    label_pages,
    num_windows,
    predict_windows,
)
from .windowing_layoutlm_roialign import WINDOW_INPUTS

__all__ = [
    "DTYPES",
    "Engine",
    "read_and_encode",
    "NOT_LINKED",
    "WINDOW_INPUTS",
    "load_model_and_processor",
    "is_linking_model",
    "predict_page",
    "encode_page",
    "predict_windows",
    "decode_page",
    "given_entities",
    "group_entities",
    "group_pages",
    "label_pages",
    "link_pages",
    "num_windows",
    "pair_records",
]
