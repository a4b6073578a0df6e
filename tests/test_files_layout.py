"""The shape of ``brats_seg.files``: its modules import each other one way only, and only public names.

The package replaced ``io.py`` (which shadowed the standard library's ``io``) and ``dicom.py``, which
imported each other through imports deferred into functions and used each other's private helpers.
These tests keep it from growing back: every import is counted, deferred ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "brats_seg" / "files"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def sibling_imports(module: str) -> list[tuple[str, list[str]]]:
    """``(sibling module, names imported from it)`` for each relative import in ``module``, deferred too."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.append((node.module.split(".")[0], [a.name for a in node.names]))
            else:  # from . import x
                found.extend((a.name, []) for a in node.names)
    return found


def test_the_modules_import_each_other_without_a_cycle() -> None:
    graph = {m: {dep for dep, _ in sibling_imports(m)} for m in MODULES}
    assert all(dep in MODULES for deps in graph.values() for dep in deps), graph

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})) for dep in graph[start]
        )

    assert [m for m in MODULES if reaches(m, m, {m})] == []


def test_the_modules_do_not_import_the_package_itself() -> None:
    """A module that imported ``brats_seg.files`` would depend on every other one through ``__init__``."""
    for module in MODULES:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.level == 2 and node.module in (None, "files")), module
                assert node.module not in ("brats_seg.files", "brats_seg"), module


@pytest.mark.parametrize("module", MODULES)
def test_no_private_name_crosses_a_module(module: str) -> None:
    imported = [(dep, name) for dep, names in sibling_imports(module) for name in names]
    private = [(dep, name) for dep, name in imported if name.startswith("_")]
    assert private == []


def test_no_module_shadows_the_standard_library() -> None:
    import sys

    assert not set(MODULES) & set(sys.stdlib_module_names)
    assert not (PACKAGE.parent / "io.py").exists()
