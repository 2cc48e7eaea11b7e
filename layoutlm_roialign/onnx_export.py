"""Export a token-classification or linking checkpoint to ONNX, checked against PyTorch before it is kept.

    export_onnx("runs/main/final", "runs/main/onnx")                    # float32
    export_onnx("runs/main/final", "runs/main/onnx-int8", quantize="int8")  # ONNX Runtime dynamic quantization

The folder holds `model.onnx` (windows of several pages in, token logits out: `road._window_batch`'s inputs, dynamic
batch, sequence and page axes), for a linking checkpoint `link_head.onnx` (the link head over the kept states, dynamic
batch, sequence, entity and page axes), the checkpoint's `config.json` and processor, `onnx_export.json` and a
README saying how it was made. `onnx_runtime.load_onnx_model` runs it. The graphs come from `torch.onnx.export` with
the dynamo exporter (`docs/design.md` says why). Before the folder is kept, ONNX Runtime runs it on windows of
synthetic pages built with the checkpoint's processor, and the export fails (writing nothing) when it differs from
PyTorch by more than the tolerance it prints.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint_files import CHECKPOINT_FILE
from .entities_layoutlm_roialign import _link_logits
from .final_folder import save_folder_atomically
from .onnx_runtime import (
    EXPORT_RECORD,
    LINK_FILE,
    MODEL_FILE,
    import_onnxruntime,
    is_linking_config,
    link_inputs,
    load_onnx_model,
    token_inputs,
    token_outputs,
)
from .road_layoutlm_roialign import _window_batch, encode_page, predict_windows

__all__ = ["DEFAULT_OPSET", "FLOAT32_TOLERANCE", "INT8_MARGIN", "QUANTIZATIONS", "export_onnx", "is_onnx_export"]

DEFAULT_OPSET = 18
QUANTIZATIONS = (None, "int8")
# The largest |ONNX - PyTorch| allowed on token logits and link logits in float32, unless PyTorch's own float32 noise
# on the model (its logits at 1 against 4 windows per pass) is larger: then `NOISE_FACTOR` times that noise.
FLOAT32_TOLERANCE = 1e-4
NOISE_FACTOR = 2.0
INT8_MARGIN = 1.0  # int8: a token whose two best float32 logits are this far apart must keep its label
SAMPLE_PAGES = 3  # synthetic pages of the check, each cut into windows of different lengths


def is_onnx_export(folder: str | os.PathLike) -> bool:
    """Whether `folder` is empty or holds only what `export_onnx` writes (with its `onnx_export.json`): a folder an
    export may replace."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if not entries:
        return True
    ours = {MODEL_FILE, LINK_FILE, EXPORT_RECORD}
    if not all(p.is_file() and (p.name in ours or CHECKPOINT_FILE.fullmatch(p.name)) for p in entries):
        return False
    try:
        return json.loads((folder / EXPORT_RECORD).read_text()).get("format") == "layoutlm-roialign-onnx"
    except (OSError, ValueError, AttributeError):
        return False


class _TokenGraph(torch.nn.Module):
    """The model's forward with the road's inputs, returning what the road reads (`token_outputs`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.linking = model, is_linking_config(model.config)

    def forward(self, input_ids, bbox, attention_mask, token_type_ids, pixel_values=None, image_index=None):
        extra = {"output_link_states": True} if self.linking else {}
        out = self.model(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         pixel_values=pixel_values, image_index=image_index, **extra)  # fmt: skip
        if not self.linking:
            return out.logits
        return (out.logits, out.fused_states) + ((out.feature_map,) if out.feature_map is not None else ())


class _LinkGraph(torch.nn.Module):
    """The link head on kept states (`link_logits_from_states` without its input checks, which the road's inputs
    pass), for pages of the config's `image_size`."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fused_states, bbox, entity_spans, entity_labels, feature_map=None, image_index=None):
        size = (self.model.config.image_size,) * 2 if feature_map is not None else None
        return self.model._link(fused_states, bbox, entity_spans, entity_labels, feature_map, image_index, size)[0]


def export_onnx(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    *,
    trust_remote_code: bool = False,
    tolerance: float | None = None,
    log: Any = print,
) -> dict:
    """Export `checkpoint` (a token-classification or linking checkpoint) into `output_dir`, check it, keep it.

    Args:
        quantize: `None` (float32) or `"int8"` (ONNX Runtime's dynamic quantization of the float32 graphs).
        opset: the ONNX opset (the dynamo exporter needs 18 or more).
        tolerance: the largest |ONNX - PyTorch| on the logits a float32 export may show (default:
            `FLOAT32_TOLERANCE`, 1e-4, or twice PyTorch's own float32 noise on the model where that is larger).
        log: where the check's numbers are printed.

    Returns:
        The export record written as `onnx_export.json` (source, opset, quantization, the check's differences).

    Raises:
        ValueError: naming the argument and the fix: ONNX export packages missing, `output_dir` holding anything an
            export does not write, a checkpoint that does not label words, a backbone that cannot be exported, or
            the check above its tolerance (nothing is written then).
    """
    from .loader import load_model_and_processor

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"--quantize must be one of {[q for q in QUANTIZATIONS if q]} or left out, got {quantize!r}.")
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < DEFAULT_OPSET:
        raise ValueError(f"--opset must be an int >= {DEFAULT_OPSET} (the dynamo exporter's), got {opset!r}.")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                  or not tolerance > 0):  # fmt: skip
        raise ValueError(f"--tolerance must be a positive number (logit units), got {tolerance!r}.")
    import_onnxruntime("scripts/export_onnx.py")
    _import_exporter()
    output_dir = Path(output_dir)
    if (output_dir.exists() or output_dir.is_symlink()) and not is_onnx_export(output_dir):
        raise ValueError(
            f"OUTPUT_DIR {str(output_dir)!r} exists and is not a folder scripts/export_onnx.py wrote; it was left as it"
            " is. Give a new folder (or an earlier export to replace)."
        )
    model, processor = load_model_and_processor(checkpoint, trust_remote_code, task="token-classification")
    model.eval().float()
    pages = sample_pages(processor, model.config)

    def write(folder: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            float_dir = Path(scratch) if quantize else folder
            _export_graphs(model, pages, float_dir, opset)
            if quantize:
                _quantize(float_dir, folder, is_linking_config(model.config))
        model.config.save_pretrained(folder)
        processor.save_pretrained(folder)
        exported = load_onnx_model(folder, "OUTPUT_DIR")
        check = check_export(model, processor, exported, pages, quantize, log, tolerance)
        record = {
            "format": "layoutlm-roialign-onnx", "source": os.fspath(checkpoint), "architecture":
            type(model).__name__, "opset": opset, "exporter": "torch.onnx.export(dynamo=True)", "quantization":
            quantize or "float32", "check": check, "package_version": __version__, "torch": torch.__version__,
            "onnxruntime": import_onnxruntime().__version__, "files": [MODEL_FILE] + ([LINK_FILE] if
            is_linking_config(model.config) else []),
        }  # fmt: skip
        (folder / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        (folder / "README.md").write_text(export_card(record))

    save_folder_atomically(output_dir, write, replaceable=is_onnx_export)
    log(f"Exported {checkpoint} -> {output_dir} ({quantize or 'float32'}, opset {opset}).")
    return json.loads((output_dir / EXPORT_RECORD).read_text())


def _import_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ValueError(
            "scripts/export_onnx.py needs onnx and onnxscript (torch's ONNX exporter), which are not installed: "
            "pip install 'layoutlm-roialign[onnx]'."
        ) from err


def sample_pages(processor: Any, config: Any, num_pages: int = SAMPLE_PAGES) -> list[dict]:
    """Synthetic form pages of different lengths encoded with `processor` into windows, as the road encodes them, with
    entities of every type to link: windows of at most 128 tokens, shorter where no page would have two."""
    from .data.synthetic import render_synthetic_form

    forms = [render_synthetic_form(seed=26, index=index) for index in range(num_pages)]
    types = list(config.resolved_entity_types) or [None]
    length = min(128, config.max_position_embeddings)
    while True:
        pages = []
        for index, (image, words, boxes, _) in enumerate(forms):
            words, boxes = words[: 40 + 60 * index], boxes[: 40 + 60 * index]  # pages of different lengths
            encoded = encode_page(processor, image.convert("RGB"), words, boxes, length, length // 4)
            entities = [{"word_indices": [i, i + 1], "label": types[(i // 2) % len(types)]}
                        for i in range(0, len(words) - 1, 2)]  # fmt: skip
            pages.append({"words": words, "boxes": boxes, "entities": entities, **encoded})
        if max(len(p["word_ids"]) for p in pages) > 1 or length <= 16:
            return pages
        length //= 2


def _export_graphs(model: torch.nn.Module, pages: Sequence[dict], folder: Path, opset: int) -> None:
    """Write `model.onnx` (and `link_head.onnx` for a linking model) into `folder`, exported on sample inputs that
    span two pages (so no axis is specialized to one)."""
    from torch.export import Dim

    config = model.config
    longest = max(range(len(pages)), key=lambda p: len(pages[p]["word_ids"]))
    rows = [(0 if longest else 1, 0), (longest, 0), (longest, 1)]  # windows of two pages, two of one page
    inputs, _ = _window_batch(pages, rows, 0, config.use_visual_features)
    batch, sequence, images = Dim("batch"), Dim("sequence"), Dim("pages")
    axes = {"input_ids": {0: batch, 1: sequence}, "bbox": {0: batch, 1: sequence},
            "attention_mask": {0: batch, 1: sequence}, "token_type_ids": {0: batch, 1: sequence},
            "pixel_values": {0: images}, "image_index": {0: batch}}  # fmt: skip
    names = token_inputs(config)
    visual = model.layoutlm_roialign.visual_embeddings
    static = {"skip_padding": False, "share_boxes": False}  # their data-dependent shapes do not export
    saved = {k: getattr(visual, k) for k in static} if visual is not None else {}
    try:
        for key, value in static.items() if visual is not None else ():
            setattr(visual, key, value)
        _export(_TokenGraph(model).eval(), {k: inputs[k] for k in names}, {k: axes[k] for k in names},
                token_outputs(config), folder / MODEL_FILE, opset, config)  # fmt: skip
        if is_linking_config(config):
            link_sample, link_axes = _link_sample(model, pages, rows, inputs)
            names = link_inputs(config)
            _export(_LinkGraph(model).eval(), {k: link_sample[k] for k in names}, {k: link_axes[k] for k in names},
                    ("link_logits",), folder / LINK_FILE, opset, config)  # fmt: skip
    finally:
        for key, value in saved.items():
            setattr(visual, key, value)


def _link_sample(model, pages, rows, inputs) -> tuple[dict, dict]:
    """Inputs of the link head for the windows `rows` (states from the model on `inputs`) and their dynamic axes."""
    from torch.export import Dim

    with torch.no_grad():
        out = model(**inputs, output_link_states=True)
    count = 3
    spans = torch.tensor([[[1, 2], [3, 5], [6, 7]]] * len(rows))
    labels = torch.arange(count).remainder(max(1, len(model.config.resolved_entity_types))).repeat(len(rows), 1)
    sample = {"fused_states": out.fused_states, "bbox": inputs["bbox"], "entity_spans": spans,
              "entity_labels": labels, "feature_map": out.feature_map, "image_index": inputs.get("image_index")}  # fmt: skip
    batch, sequence, entities, images = Dim("batch"), Dim("sequence"), Dim("entities"), Dim("pages")
    axes = {"fused_states": {0: batch, 1: sequence}, "bbox": {0: batch, 1: sequence},
            "entity_spans": {0: batch, 1: entities}, "entity_labels": {0: batch, 1: entities},
            "feature_map": {0: images}, "image_index": {0: batch}}  # fmt: skip
    return sample, axes


def _export(module, sample, axes, outputs, path: Path, opset: int, config: Any) -> None:
    """`torch.onnx.export` with the dynamo exporter; a failure names the backbone (the part that varies) and the fix."""
    try:
        torch.onnx.export(
            module, (), str(path), kwargs=sample, dynamo=True, opset_version=opset, dynamic_shapes=axes,
            input_names=list(sample), output_names=list(outputs), external_data=False, verbose=False,
        )  # fmt: skip
    except Exception as err:  # the exporter raises its own error types from deep inside torch.export / onnxscript
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ValueError(
            f"The checkpoint's backbone {config.backbone!r} (with this model) cannot be exported to ONNX: "
            f"torch.onnx.export failed ({type(err).__name__}: {first}). Train with a backbone that exports "
            "(--backbone resnet18 / resnet50 / resnet101 / mobilenet_v2 are tested), or run it with --runtime torch."
        ) from err


def _quantize(float_dir: Path, folder: Path, linking: bool) -> None:
    """ONNX Runtime's dynamic int8 quantization (weights int8, activations quantized per batch) of each graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in (MODEL_FILE, LINK_FILE) if linking else (MODEL_FILE,):
        quantize_dynamic(str(float_dir / name), str(folder / name), weight_type=QuantType.QInt8)


@torch.no_grad()
def check_export(
    model: torch.nn.Module,
    processor: Any,
    exported: Any,
    pages: Sequence[dict],
    quantize: str | None,
    log: Any = print,
    tolerance: float | None = None,
) -> dict:
    """Run PyTorch and the export on the windows of `pages` (4 windows per pass, across pages) through the road's
    window loop (and the link head on the entities of `pages`), print the largest differences, and raise a
    `ValueError` above the tolerance: float32, `tolerance` on token logits and link logits (default:
    `FLOAT32_TOLERANCE`, or `NOISE_FACTOR` times PyTorch's own float32 noise where that is larger); int8, every token whose two best float32 logits differ by more than `INT8_MARGIN` keeps its label (its
    differences are reported). PyTorch's own float32 noise is its largest logit difference between 1 and 4 windows
    per pass. Returns the numbers."""
    linking = is_linking_config(model.config)
    pad = processor.tokenizer.pad_token_id
    want = predict_windows(model, pages, 4, pad_token_id=pad, dtype="float32", keep_link_states=linking)
    got = predict_windows(exported, pages, 4, pad_token_id=pad, keep_link_states=linking)
    alone = predict_windows(model, pages, 1, pad_token_id=pad, dtype="float32")
    expected = torch.cat([w for page in want for w in page["logits"]])  # (tokens, num_labels)
    actual = torch.cat([w for page in got for w in page["logits"]])
    check = {"windows": sum(len(page["logits"]) for page in want), "pages": len(pages),
             "max_abs_diff_logits": float((expected - actual).abs().max()),
             "pytorch_batch_noise_logits": float((expected - torch.cat([w for p in alone for w in p["logits"]]))
                                                 .abs().max())}  # fmt: skip
    if linking:
        types = model.config.resolved_entity_types
        encoded = [processor.encode_entities(p["word_ids"], p["entities"], types) for p in pages]
        want_links, got_links = _link_logits(model, want, encoded, 4), _link_logits(exported, got, encoded, 4)
        candidates = torch.cat([want_links[k][want_links[k] > -9000] for k in want_links])
        chosen = torch.cat([got_links[k][want_links[k] > -9000] for k in want_links])
        check.update(
            link_pairs=int(candidates.numel()), max_abs_diff_link_logits=float((candidates - chosen).abs().max())
        )
    if quantize is None:
        if tolerance is None:
            tolerance = max(FLOAT32_TOLERANCE, NOISE_FACTOR * check["pytorch_batch_noise_logits"])
        return _float32_verdict(check, tolerance, log)
    return _int8_verdict(check, expected, actual, log)


def _float32_verdict(check: dict, tolerance: float, log: Any) -> dict:
    check["tolerance"] = tolerance
    worst = max(check["max_abs_diff_logits"], check.get("max_abs_diff_link_logits", 0.0))
    links = f", link logits {check['max_abs_diff_link_logits']:.2e}" if "link_pairs" in check else ""
    log(f"Check on {check['windows']} windows of {check['pages']} pages: max |ONNX - PyTorch| = {worst:.2e} "
        f"(tolerance {tolerance:.2e}; logits {check['max_abs_diff_logits']:.2e}{links}; PyTorch itself, 1 vs 4 "
        f"windows per pass: {check['pytorch_batch_noise_logits']:.2e})")  # fmt: skip
    if not worst <= tolerance:
        raise ValueError(
            f"The ONNX export differs from PyTorch by {worst:.2e}, above the tolerance {tolerance:.2e} (PyTorch "
            f"itself differs by {check['pytorch_batch_noise_logits']:.2e} between 1 and 4 windows per pass); nothing "
            "was written. Run the checkpoint with --runtime torch, or report it with the checkpoint's config."
        )
    return check


def _int8_verdict(check: dict, expected: torch.Tensor, actual: torch.Tensor, log: Any) -> dict:
    top2 = expected.topk(min(2, expected.shape[-1]), -1).values
    clear = (top2[:, 0] - top2[:, -1]) > INT8_MARGIN
    agree = expected.argmax(-1) == actual.argmax(-1)
    check.update(margin=INT8_MARGIN, clear_tokens=int(clear.sum()), label_agreement=float(agree.float().mean()),
                 clear_label_agreement=float(agree[clear].float().mean()) if clear.any() else 1.0)  # fmt: skip
    links = f", link logits {check['max_abs_diff_link_logits']:.2e}" if "link_pairs" in check else ""
    log(f"Check on {check['windows']} windows of {check['pages']} pages (int8): max |ONNX - PyTorch| on logits "
        f"{check['max_abs_diff_logits']:.2e}{links}; labels agree on {check['label_agreement']:.1%} of tokens and on "
        f"{check['clear_label_agreement']:.1%} of the {check['clear_tokens']} whose float32 margin > {INT8_MARGIN}")  # fmt: skip
    if check["clear_label_agreement"] < 1.0:
        raise ValueError(
            f"The int8 ONNX export changes the label of tokens whose float32 margin exceeds {INT8_MARGIN}; nothing "
            "was written. Export without --quantize (float32)."
        )
    return check


def export_card(record: dict) -> str:
    """The README of an exported folder: what it holds, how it was made, how to run it."""
    check = record["check"]
    numbers = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in check.items())
    return f"""# ONNX export of a LayoutLM-RoIAlign checkpoint

Exported from `{record["source"]}` ({record["architecture"]}) by layoutlm-roialign {record["package_version"]}
(`scripts/export_onnx.py`, {record["exporter"]}, opset {record["opset"]}, torch {record["torch"]}), quantization:
**{record["quantization"]}**.

Files: {", ".join(f"`{f}`" for f in record["files"])} (the graphs), `config.json` (the checkpoint's config: labels,
window size, link rules), the processor (`processor_config.json`, tokenizer files), `onnx_export.json` (this record).

Check against PyTorch on synthetic pages encoded with the processor (ONNX Runtime {record["onnxruntime"]}, CPU):
{numbers}.

Run it (needs `pip install 'layoutlm-roialign[onnx]'`):

    python scripts/predict.py --model THIS_FOLDER --runtime onnx --image page.png
    python scripts/label.py --model THIS_FOLDER --runtime onnx --inputs scans/ --output labels.jsonl

or in Python: `load_model_and_processor(folder, runtime="onnx")`, then `predict_page` / `Engine` as with the checkpoint.
"""
