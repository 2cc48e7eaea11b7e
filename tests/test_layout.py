"""The project's boundaries: the package's modules import each other without a circle and test modules share helpers
through `conftest.py` / `helpers.py`, never by importing each other (both read from the source with `ast`); the
wheel holds the package and nothing of the lab (`lab/`: experiments, benchmarks and their data)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = REPO_ROOT / "layoutlm_roialign"
TESTS = REPO_ROOT / "tests"


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING")


def imported_modules(path: Path, modules: set[str], root: Path = REPO_ROOT) -> set[str]:
    """The package modules that the file at `path` imports, anywhere in it (a function's import closes a circle at
    run time as well), relative or absolute; imports under `if TYPE_CHECKING:` are left out (they never run)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import pdf` imports a module
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "evaluate_metrics" not in p.parts}
    modules = set(files)
    return {name: imported_modules(path, modules) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary circle's smallest representative, found by a depth-first search from each module."""
    found: set[tuple[str, ...]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                i = path.index(min(path))
                found.add(tuple(path[i:] + path[:i]))
            elif nxt not in path and nxt > start:  # each circle once: from its smallest module
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return [list(c) for c in sorted(found)]


def test_cycle_finder_finds_circles_in_a_made_up_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d", "a"}, "e": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_read_relative_absolute_and_inside_functions(tmp_path):
    package = tmp_path / "layoutlm_roialign"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "mod.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..pdf import X\n"
        "import layoutlm_roialign.pages\n"
        "if TYPE_CHECKING:\n    from ..modeling import Y\n"
        "def f():\n    from layoutlm_roialign.road import Z\n    from .. import entities\n"
    )
    names = {f"layoutlm_roialign.{n}" for n in ("pdf", "pages", "modeling", "road", "entities")}
    assert imported_modules(package / "sub" / "mod.py", names, root=tmp_path) == names - {"layoutlm_roialign.modeling"}


def test_the_package_has_no_import_circles():
    graph = import_graph()
    assert sum(map(len, graph.values())) > 50  # the graph sees the package's edges
    assert cycles(graph) == [], "import circles (each a -> b -> ... -> a)"


def test_no_test_module_imports_another():
    test_modules = {p.stem for p in TESTS.glob("test_*.py")}
    offenders = []
    for path in sorted(TESTS.glob("*.py")):  # the helpers modules too
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # from test_x / tests.test_x import y; from . import test_x
                names = [node.module or ""] + [f"{node.module or ''}.{alias.name}".lstrip(".") for alias in node.names]
            for name in names:
                if name.removeprefix("tests.").split(".")[0] in test_modules:
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert offenders == [], "test modules share helpers through conftest.py / helpers.py"


LAB_NAMES = ("lab/", "experiments", "benchmarks", "painted_box")


@pytest.mark.slow  # builds a wheel with pip
def test_the_wheel_holds_the_package_and_nothing_of_the_lab(tmp_path):
    """Built from a copy of every tracked file (the lab, tests and scripts beside the package, as in a clone)."""
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    files = [name for name in tracked.decode().split("\0") if name and (REPO_ROOT / name).is_file()]
    assert any(name.startswith("lab/experiments/") for name in files)  # the copy has what must stay out
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "-q",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("layoutlm_roialign-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "layoutlm_roialign/modeling_layoutlm_roialign.py" in names
    outside = [n for n in names if not n.startswith(("layoutlm_roialign/", "layoutlm_roialign-"))]
    assert outside == [], "the wheel holds only the package and its metadata"
    assert [n for n in names if any(lab in n for lab in LAB_NAMES)] == []
