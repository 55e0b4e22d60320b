"""The package's shape holds as it grows: every public module says what it exports, no module
takes on several jobs' worth of lines, few modules sit flat beside the layer packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tunlab"
MODULES = sorted(p for p in PACKAGE.rglob("*.py")
                 if "data" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py")
MAX_LINES = 600
MAX_FLAT = 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_declares_its_public_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    declared = [node for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
                and any(isinstance(t, ast.Name) and t.id == "__all__"
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
    if not declared:
        public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)
                  and not n.name.startswith("_")]
        assert not public, f"{path.name} exports {public} without __all__"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_the_size_of_one_job(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines; split it by job"


def test_few_modules_sit_flat_beside_the_layers() -> None:
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_FLAT, flat
