"""What each install needs: loading a checkpoint and predicting work without the `train` extra (datasets,
accelerate, seqeval, evaluate), and `.[dev]` (the README's install) pulls `train` in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

TRAIN_ONLY = ("datasets", "accelerate", "seqeval", "evaluate")


def test_inference_and_predict_script_need_no_training_dependency():
    blocked = ", ".join(repr(m) for m in TRAIN_ONLY)
    code = (
        f"import sys\nfor m in ({blocked},): sys.modules[m] = None\n"
        "import layoutlm_roialign, layoutlm_roialign.inference, layoutlm_roialign.pages, layoutlm_roialign.hub\n"
        "import layoutlm_roialign.linking\n"
        "import runpy\nrunpy.run_path('scripts/predict.py', run_name='script')\nprint('OK')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]


def test_training_dependencies_are_an_extra_that_dev_pulls_in():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]}
    assert not names & set(TRAIN_ONLY)
    train = {dep.split(">")[0].strip() for dep in project["optional-dependencies"]["train"]}
    assert train == set(TRAIN_ONLY)
    assert "layoutlm-roialign[train]" in project["optional-dependencies"]["dev"]
