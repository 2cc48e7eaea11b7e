"""What each install needs: every package the package imports is declared (in the dependencies, an extra, or
required by one of those), the `train` extra holds what training and evaluation import beyond the base dependencies
(each of its packages is used there, none is needed to load a checkpoint and predict), and `.[dev]` (the README's
install) pulls `train` in."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0] for requirement in requirements}


PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
BASE = requirement_names(PROJECT["dependencies"])
TRAIN_ONLY = sorted(requirement_names(PROJECT["optional-dependencies"]["train"]))  # import names = package names


def run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_inference_and_predict_script_need_no_training_dependency():
    blocked = ", ".join(repr(m) for m in TRAIN_ONLY)
    result = run(
        f"import sys\nfor m in ({blocked},): sys.modules[m] = None\n"
        "import layoutlm_roialign, layoutlm_roialign.inference, layoutlm_roialign.pages, layoutlm_roialign.hub\n"
        "import layoutlm_roialign.dataset_predictions\n"
        "import runpy\nrunpy.run_path('scripts/predict.py', run_name='script')\nprint('OK')\n"
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]


def test_training_and_evaluation_use_every_package_of_the_train_extra():
    assert TRAIN_ONLY and not BASE & set(TRAIN_ONLY)
    result = run(
        "import sys\n"
        "import layoutlm_roialign.commands.train, layoutlm_roialign.commands.evaluate, layoutlm_roialign.pretraining\n"
        "from layoutlm_roialign.metrics import entity_scores\n"
        "entity_scores([['B-A', 'O']], [['B-A', 'O']])\n"  # loads the entity_f1 metric file, which imports seqeval
        "print(' '.join(sorted(sys.modules)))\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = set(result.stdout.split())
    assert set(TRAIN_ONLY) <= loaded, set(TRAIN_ONLY) - loaded  # an extra that training does not use is stale
    assert "layoutlm-roialign[train]" in PROJECT["optional-dependencies"]["dev"]


def test_every_package_the_package_imports_is_declared():
    declared = BASE | {
        name for extra in PROJECT["optional-dependencies"].values() for name in requirement_names(extra)
    }
    declared = {name.lower().replace("_", "-") for name in declared if name != "layoutlm-roialign"}
    required = set(declared)  # and what those require (transformers brings tokenizers and tqdm)
    for name in declared:
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:  # an extra kept out of this environment (labelstudio)
            continue
        always = [r for r in requires if "extra ==" not in r]  # not their extras
        required |= {r.lower().replace("_", "-") for r in requirement_names(always)}
    imported = set()
    for path in (REPO_ROOT / "layoutlm_roialign").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "layoutlm_roialign"}
    undeclared = {
        module: distributions.get(module)
        for module in third_party
        if not {d.lower().replace("_", "-") for d in distributions.get(module, [module])} & required
    }
    assert not undeclared, f"imported but in no dependency list of pyproject.toml: {undeclared}"
