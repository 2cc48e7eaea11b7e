"""What each install needs: every package the package imports is declared (in the dependencies, an extra, or
required by one of those), the `train` extra holds what training and evaluation import beyond the base dependencies
(each of its packages is used there, none is needed to load a checkpoint and predict), `.[dev]` (the README's
install) pulls `train` in, and CI installs exactly what the README does: these checks hold where only that is
installed."""

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
        "import layoutlm_roialign, layoutlm_roialign.inference, layoutlm_roialign.pages_layoutlm_roialign\n"
        "import layoutlm_roialign.hub\n"
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


def normalized(names) -> set[str]:
    return {name.lower().replace("_", "-") for name in names}


# Every package pyproject.toml lists, in the dependencies or any extra (`experiments` included).
DECLARED = normalized(
    BASE | {name for extra in PROJECT["optional-dependencies"].values() for name in requirement_names(extra)}
) - {"layoutlm-roialign"}
EXPERIMENTS = normalized(requirement_names(PROJECT["optional-dependencies"]["experiments"]))


def undeclared_imports(declared: set[str]) -> dict[str, list[str] | None]:
    """The third-party modules that `layoutlm_roialign` imports and that no distribution in `declared`, or required by
    one of those, provides: `{module: its distributions}`. A declared distribution that is not installed (an extra
    the README's `.[dev]` leaves out) counts as itself only: its requirements cannot be read."""
    required = set(declared)  # and what those require (transformers brings tokenizers and tqdm)
    for name in declared:
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        required |= normalized(requirement_names([r for r in requires if "extra ==" not in r]))  # not their extras
    imported = set()
    for path in (REPO_ROOT / "layoutlm_roialign").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "layoutlm_roialign"}
    return {
        module: distributions.get(module)
        for module in third_party
        if not normalized(distributions.get(module, [module])) & required
    }


def test_every_package_the_package_imports_is_declared():
    assert not (undeclared := undeclared_imports(DECLARED)), f"imported, in no list of pyproject.toml: {undeclared}"


def test_the_declaration_check_holds_where_only_the_readmes_install_is_and_still_finds_an_undeclared_import(
    monkeypatch,
):
    """`pip install -e ".[dev]"` (the README's install) leaves the `experiments` extra out: the check read every
    declared package's requirements and failed there. It must hold on such a machine (here: the `experiments`
    packages unknown to importlib.metadata, as they are there), and still report an import that no list declares."""
    real_requires = importlib.metadata.requires

    def requires(name: str):
        if normalized([name]) & EXPERIMENTS:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_requires(name)

    monkeypatch.setattr(importlib.metadata, "requires", requires)
    assert EXPERIMENTS and EXPERIMENTS <= DECLARED
    assert undeclared_imports(DECLARED) == {}
    # layoutlm_roialign.pdf_layoutlm_roialign imports pypdfium2, which only the `pdf`, `demo` and `dev` extras declare.
    assert set(undeclared_imports(DECLARED - {"pypdfium2"})) == {"pypdfium2"}


def pip_installs(text: str) -> list[str]:
    """What each `pip install` in `text` (shell lines) installs, flags left out: `-e ".[dev]"` gives `.[dev]`."""
    installs = []
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not re.search(r"\bpip install\b", line):
            continue
        for command in re.findall(r"pip install ([^&|;#]+)", line):
            installs += [word.strip("\"'") for word in command.split() if not word.startswith("-")]
    return installs


def test_ci_installs_exactly_what_the_readme_installs():
    """CI installed the `experiments` extra's packages by hand, so it stayed green where a fresh machine with the
    README's install failed."""
    readme = (REPO_ROOT / "README.md").read_text()
    setup = readme[readme.index("```bash") : readme.index("```", readme.index("```bash") + 3)]
    assert pip_installs(setup) == [".[dev]"]
    ci_lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    ci_venv = [name for line in ci_lines if ".venv/" in line for name in pip_installs(line) if name != "pip"]
    assert ci_venv == pip_installs(setup)  # the project's venv gets exactly the README's first command
    # Anything else CI installs goes into an environment of its own and is an install the README tells users to
    # run (Label Studio's server, in "Label your own forms").
    others = [name for line in ci_lines if ".venv/" not in line for name in pip_installs(line) if name != "pip"]
    assert set(others) <= set(pip_installs(readme)), others
