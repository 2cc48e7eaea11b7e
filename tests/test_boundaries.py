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


ROAD_STEPS = {"predict_windows", "decode_page", "link_pages"}  # the road's steps, composed by `label_pages` alone
ROAD_MODULES = {"road_layoutlm_roialign.py", "entities_layoutlm_roialign.py"}
# The ONNX export's self-check compares the raw window logits of PyTorch and ONNX Runtime: the window loop alone,
# nothing decoded or linked.
RAW_LOGIT_CHECKS = {"layoutlm_roialign/onnx_export.py": {"predict_windows"}}


def _road_calls(path: Path) -> list[str]:
    """`name:line` of every call of one of the road's steps in `path` (as a bare name or an attribute)."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in ROAD_STEPS:
                calls.append(f"{name}:{node.lineno}")
    return calls


def test_only_the_road_composes_the_road():
    """The package, its scripts and the demo run the road's steps only through the road (`label_pages`, which the
    engine calls): no driver calls the window loop, the decoding or the linking itself."""
    files = [*PACKAGE.rglob("*.py"), *(REPO_ROOT / "scripts").glob("*.py"), *(REPO_ROOT / "demo").glob("*.py")]
    found = {
        str(path.relative_to(REPO_ROOT)): calls
        for path in files
        if path.name not in ROAD_MODULES and (calls := _road_calls(path))
    }
    for name, allowed in RAW_LOGIT_CHECKS.items():
        found[name] = [call for call in found.get(name, []) if call.split(":")[0] not in allowed]
    assert {name: calls for name, calls in found.items() if calls} == {}


def test_the_road_check_sees_a_call(tmp_path):
    stray = tmp_path / "driver.py"
    stray.write_text("from x import road\n\ndef f(m):\n    road.predict_windows(m, [])\n    return decode_page(1)\n")
    assert _road_calls(stray) == ["predict_windows:4", "decode_page:5"]
    assert {call.split(":")[0] for call in _road_calls(PACKAGE / "road_layoutlm_roialign.py")} == ROAD_STEPS
