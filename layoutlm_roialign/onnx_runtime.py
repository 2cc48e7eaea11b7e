"""A checkpoint exported to ONNX (`onnx_export`, `scripts/export_onnx.py`) run by ONNX Runtime as the road's model.

    model, processor = load_model_and_processor("runs/main/onnx", runtime="onnx")
    Engine(model, processor).label_batch([...])   # same words, entities and pairs as the PyTorch checkpoint

`load_onnx_model` loads an exported folder as an object that stands where the PyTorch model stands in the road
(`road.predict_windows`, `entities.link_pages`): it has the checkpoint's `config`, runs on the CPU, and is called like
the model, returning the fields the road reads (`logits`; for a linking checkpoint also `fused_states` and
`feature_map`, and `link_logits_from_states` runs the exported link head on them). The window loop, the decoding and
the linking are the road's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .heads_layoutlm_roialign import HEADS
from .windowing_layoutlm_roialign import WINDOW_INPUTS

__all__ = [
    "EXPORT_RECORD",
    "LINK_FILE",
    "MODEL_FILE",
    "RUNTIMES",
    "LayoutLMRoIAlignOnnxLinkingModel",
    "LayoutLMRoIAlignOnnxModel",
    "OnnxOutput",
    "import_onnxruntime",
    "link_inputs",
    "load_onnx_model",
    "token_inputs",
    "token_outputs",
]

RUNTIMES = ("torch", "onnx")  # `runtime` of the loader and the drivers
MODEL_FILE = "model.onnx"  # the encoder, the backbone and the token classifier: windows in, token logits out
LINK_FILE = "link_head.onnx"  # a linking checkpoint's link head: kept states and entities in, link logits out
EXPORT_RECORD = "onnx_export.json"  # how the folder was made; marks it as an export `onnx_export` may replace
INSTALL_HINT = "pip install 'layoutlm-roialign[onnx]' (onnx, onnxruntime, onnxscript)"


def import_onnxruntime(flag: str = "--runtime onnx") -> Any:
    """`onnxruntime`, or a `ValueError` naming `flag` and the extra that installs it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ValueError(f"{flag} needs ONNX Runtime, which is not installed: {INSTALL_HINT}.") from err
    return onnxruntime


def is_linking_config(config: Any) -> bool:
    """Whether `config` names the linking head (`config.architectures`)."""
    names = getattr(config, "architectures", None) or []
    return bool(names) and names[0] in HEADS and HEADS[names[0]].links


def uses_box_feature(config: Any) -> bool:
    """Whether a linking model with `config` pools entity boxes from the backbone's feature map."""
    return bool(config.use_visual_features and config.link_entity_box_feature)


def token_inputs(config: Any) -> tuple[str, ...]:
    """The inputs of the exported token graph: the windows (`WINDOW_INPUTS`) and, with the visual branch, the pages'
    images and which image each window reads (`road._window_batch`)."""
    return (*WINDOW_INPUTS, *(("pixel_values", "image_index") if config.use_visual_features else ()))


def token_outputs(config: Any) -> tuple[str, ...]:
    """The outputs of the exported token graph: the logits and, for a linking model, what its link head reads."""
    if not is_linking_config(config):
        return ("logits",)
    return ("logits", "fused_states", *(("feature_map",) if uses_box_feature(config) else ()))


def link_inputs(config: Any) -> tuple[str, ...]:
    """The inputs of the exported link head (`link_logits_from_states`' arguments)."""
    extra = ("feature_map", "image_index") if uses_box_feature(config) else ()
    return ("fused_states", "bbox", "entity_spans", "entity_labels", *extra)


@dataclass
class OnnxOutput:
    """What an exported model's pass returns: the fields the road reads of the PyTorch model's output."""

    logits: torch.Tensor
    fused_states: torch.Tensor | None = None
    feature_map: torch.Tensor | None = None


class LayoutLMRoIAlignOnnxModel:
    """An exported token classifier run by ONNX Runtime on the CPU, called like the PyTorch model.

    Args:
        config: the checkpoint's config (the folder's `config.json`).
        session: the ONNX Runtime session of `model.onnx`.
        folder: where it was loaded from.
    """

    device = torch.device("cpu")
    runtime = "onnx"

    def __init__(self, config: Any, session: Any, folder: str | os.PathLike) -> None:
        self.config, self.session, self.folder = config, session, Path(folder)
        self.head_name = (getattr(config, "architectures", None) or [type(self).__name__])[0]  # what the road reads
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.export_record = _read_record(self.folder)

    def eval(self) -> LayoutLMRoIAlignOnnxModel:
        return self

    def __reduce__(self) -> tuple:
        """Pickled as its folder (ONNX Runtime sessions do not pickle): a worker process (a Ray replica) loads the
        export again from the same path."""
        return load_onnx_model, (str(self.folder),)

    def to(self, device: str | torch.device) -> LayoutLMRoIAlignOnnxModel:
        """Itself on the CPU; a `ValueError` for another device (this runtime runs ONNX Runtime's CPU provider)."""
        if torch.device(device).type != "cpu":
            raise ValueError(
                f"--runtime onnx runs on the CPU (ONNX Runtime's CPU provider), not on {device!r}: drop --device, "
                "or use --runtime torch to run on a GPU."
            )
        return self

    def parameters(self) -> Any:
        """A CPU tensor, so that code asking a model's parameters where it runs gets the CPU."""
        return iter((torch.empty(0),))

    def __call__(self, output_link_states: bool = False, **inputs: torch.Tensor) -> OnnxOutput:
        feed = {name: _numpy(inputs[name]) for name in self.input_names if inputs.get(name) is not None}
        missing = [name for name in self.input_names if name not in feed]
        if missing:
            raise ValueError(f"The exported model needs the inputs {missing}, which were not given.")
        outputs = dict(zip(self.output_names, self.session.run(None, feed), strict=True))
        kept = {k: torch.from_numpy(v) for k, v in outputs.items() if k != "logits"} if output_link_states else {}
        return OnnxOutput(logits=torch.from_numpy(outputs["logits"]), **kept)


class LayoutLMRoIAlignOnnxLinkingModel(LayoutLMRoIAlignOnnxModel):
    """An exported linking checkpoint: the token graph, and the link head as a second graph (`link_head.onnx`) over
    the states the token graph kept."""

    def __init__(self, config: Any, session: Any, folder: str | os.PathLike, link_session: Any) -> None:
        super().__init__(config, session, folder)
        self.link_session = link_session
        self.link_input_names = [i.name for i in link_session.get_inputs()]

    def link_logits_from_states(
        self,
        fused_states: torch.Tensor,
        bbox: torch.LongTensor,
        entity_spans: torch.LongTensor,
        entity_labels: torch.LongTensor | None = None,
        feature_map: torch.Tensor | None = None,
        image_index: torch.LongTensor | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """`LayoutLMRoIAlignForRelationExtraction.link_logits_from_states` run by the exported link head (the
        export fixes `image_size` to `config.image_size`, and entities need their types: `entity_labels`)."""
        if entity_labels is None:
            raise ValueError("The exported link head needs `entity_labels` (each entity's type).")
        given = {"fused_states": fused_states, "bbox": bbox, "entity_spans": entity_spans,
                 "entity_labels": entity_labels, "feature_map": feature_map, "image_index": image_index}  # fmt: skip
        feed = {name: _numpy(given[name]) for name in self.link_input_names}
        return torch.from_numpy(self.link_session.run(None, feed)[0])


def _numpy(tensor: torch.Tensor) -> Any:
    tensor = tensor.detach().cpu()
    return (tensor.long() if not tensor.is_floating_point() else tensor.float()).numpy()


def _read_record(folder: Path) -> dict:
    try:
        return json.loads((folder / EXPORT_RECORD).read_text())
    except (OSError, ValueError):
        return {}


def load_onnx_model(folder: str | os.PathLike, flag: str = "--model") -> LayoutLMRoIAlignOnnxModel:
    """Load a folder written by `onnx_export.export_onnx` as the road's model (its processor loads as any
    checkpoint's: `AutoProcessor.from_pretrained(folder)`).

    Raises:
        ValueError: naming `flag` and the fix, when ONNX Runtime is not installed, the folder or its config is
            missing, a graph is missing or cannot be read, or a graph does not fit the config (another model's:
            other inputs, another label count or hidden size, no link head for a linking config).
    """
    from transformers import AutoConfig

    ort = import_onnxruntime()
    folder = Path(folder)
    export_hint = f"export a checkpoint with `python scripts/export_onnx.py CHECKPOINT {folder}`"
    if not folder.is_dir():
        raise ValueError(f"{flag} {str(folder)!r} is not a folder; give the folder scripts/export_onnx.py wrote.")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ValueError(f"{flag} {str(folder)!r}: its config.json cannot be read ({err}); {export_hint}.") from err
    session = _session(ort, folder / MODEL_FILE, flag, export_hint)
    _check_graph(session, token_inputs(config), token_outputs(config), config, folder / MODEL_FILE, flag)
    if not is_linking_config(config):
        return LayoutLMRoIAlignOnnxModel(config, session, folder)
    link_session = _session(ort, folder / LINK_FILE, flag, export_hint)
    _check_graph(link_session, link_inputs(config), ("link_logits",), config, folder / LINK_FILE, flag)
    return LayoutLMRoIAlignOnnxLinkingModel(config, session, folder, link_session)


def _session(ort: Any, path: Path, flag: str, export_hint: str) -> Any:
    if not path.is_file():
        raise ValueError(
            f"{flag} {str(path.parent)!r} holds no {path.name}, which --runtime onnx runs: {export_hint} (or give "
            "the folder without --runtime onnx if it is a PyTorch checkpoint)."
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime's errors (InvalidProtobuf, Fail, ...) are its own pybind types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{flag}: {str(path)!r} is not a readable ONNX model ({first}); {export_hint}.") from err


def _check_graph(
    session: Any, inputs: Sequence[str], outputs: Sequence[str], config: Any, path: Path, flag: str
) -> None:
    """Refuse a graph that is not this config's export: other input or output names, or a logits / states size
    that differs from the config's label count / hidden size."""
    have_inputs = tuple(i.name for i in session.get_inputs())
    have_outputs = {o.name: o.shape for o in session.get_outputs()}
    problem = None
    if have_inputs != tuple(inputs):
        problem = f"its inputs are {list(have_inputs)}, the config's model takes {list(inputs)}"
    elif tuple(have_outputs) != tuple(outputs):
        problem = f"its outputs are {list(have_outputs)}, the config's model gives {list(outputs)}"
    else:
        sizes = {"logits": config.num_labels, "fused_states": config.hidden_size}
        for name, size in sizes.items():
            last = (have_outputs.get(name) or [None])[-1]
            if name in have_outputs and isinstance(last, int) and last != size:
                problem = f"its {name} have {last} values per token, the config says {size}"
    if problem:
        raise ValueError(
            f"{flag}: {str(path)!r} is not the export of the model in {str(path.parent / 'config.json')!r} ({problem})."
            f" Export the checkpoint again: python scripts/export_onnx.py CHECKPOINT {path.parent}"
        )
