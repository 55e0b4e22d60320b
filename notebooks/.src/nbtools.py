"""Tiny helpers to write the lesson notebooks from Python sources (run build.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
OUT = HERE.parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (tunlab)", "language": "python"}


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str, *tags: str, hide: bool = False) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    if hide:
        cell.metadata["jupyter"] = {"source_hidden": True}
    return cell


def write(name: str, cells: list[nbformat.NotebookNode]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["tunlab"] = {"lesson": name}
    nb.cells = cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
    path = OUT / f"{name}.ipynb"
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path
