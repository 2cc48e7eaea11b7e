"""The package's boundaries: the files a checkpoint carries are exactly the `*_layoutlm_roialign.py` modules, and they
import only each other, transformers, torch, torchvision, PIL, numpy and the standard library (the optional page
readers only inside the functions that need them); every function stays short enough to read."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from conftest import REPO_ROOT
from transformers.dynamic_module_utils import get_relative_import_files

PACKAGE = REPO_ROOT / "layoutlm_roialign"
ENTRY_FILES = ("modeling", "processing", "pipeline", "configuration", "image_processing")  # auto_map, custom_pipelines
ALLOWED = {"transformers", "torch", "torchvision", "PIL", "numpy", "__future__"} | set(sys.stdlib_module_names)
LAZY_ONLY = {"pytesseract", "pypdfium2"}  # optional readers: imported where a page needs them
# `from_pretrained_parts` builds a new model with the installed package (a checkpoint only loads trained weights)
PACKAGE_CALLS = {("modeling_layoutlm_roialign.py", "layoutlm_roialign.assembly")}


def _carried() -> set[str]:
    files = set()
    for entry in ENTRY_FILES:
        path = PACKAGE / f"{entry}_layoutlm_roialign.py"
        files |= {Path(f).name for f in [str(path), *get_relative_import_files(str(path))]}
    return files


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """`(module, level, inside a function)` of every import in `path` (`level`: 0 absolute, else relative)."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, 0, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.append((child.module or "", child.level, in_function))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def test_the_carried_files_are_the_suffixed_modules():
    suffixed = {p.name for p in PACKAGE.glob("*_layoutlm_roialign.py")}
    assert _carried() == suffixed


def test_the_carried_files_import_only_each_other_and_the_libraries_a_checkpoint_needs():
    carried = _carried()
    problems = []
    for name in sorted(carried):
        for module, level, in_function in _imports(PACKAGE / name):
            top = module.split(".")[0]
            if level == 1 and f"{top}.py" not in carried:
                problems.append(f"{name}: from .{module} (not a carried file)")
            elif (name, module) in PACKAGE_CALLS and in_function:
                continue
            elif level > 1 or (level == 0 and top == "layoutlm_roialign"):
                problems.append(f"{name}: imports {'.' * level}{module} (outside the carried files)")
            elif level == 0 and top in LAZY_ONLY and not in_function:
                problems.append(f"{name}: imports {module} at module level (only inside the function reading pages)")
            elif level == 0 and top not in ALLOWED | LAZY_ONLY:
                problems.append(f"{name}: imports {module}")
    assert problems == []


def test_the_boundary_check_sees_a_stray_import(tmp_path, monkeypatch):
    """The check above fails for a carried file that imports the package from outside the set, or a reader early."""
    stray = tmp_path / "stray_layoutlm_roialign.py"
    stray.write_text("import pytesseract\nfrom .hub import x\n\ndef f():\n    import pypdfium2\n")
    assert _imports(stray) == [("pytesseract", 0, False), ("hub", 1, False), ("pypdfium2", 0, True)]


def test_functions_stay_short():
    long_functions = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}")
    assert long_functions == []
