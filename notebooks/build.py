"""Write each lesson notebook NN-name.ipynb from its MyST source NN-name.md.

    python notebooks/build.py            # every lesson
    python notebooks/build.py 03 05      # only these lessons
    python notebooks/build.py --check    # exit 1 if a committed .ipynb differs from its source

The .md files are the sources: edit them, then rebuild. The notebooks are written without
outputs and with cell ids derived from the lesson number and cell position, so building twice
gives the same bytes. tests/test_notebook_sources.py fails when a notebook and its source differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

LESSONS = Path(__file__).resolve().parent
SOURCE_FORMAT = "md:myst"
# Derived from the file name rather than kept in the .md header, so they cannot disagree.
LANGUAGE_INFO = {"name": "python"}


def sources(directory: Path = LESSONS) -> list[Path]:
    """The lesson sources NN-name.md in ``directory``, in lesson order."""
    return sorted(directory.glob("[0-9][0-9]-*.md"))


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook that ``source`` (a MyST markdown lesson) describes, without outputs."""
    nb = jupytext.read(source, fmt=SOURCE_FORMAT)
    nb.metadata.pop("jupytext", None)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    nb.metadata["tunlab"] = {"lesson": source.stem}
    nb.nbformat, nb.nbformat_minor = 4, 5
    for index, cell in enumerate(nb.cells):
        # Positional ids: stable across rebuilds, unlike the random ones nbformat would pick.
        cell["id"] = f"{source.stem[:2]}-{index:02d}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """The exact text nbformat writes for ``nb`` (what is committed as .ipynb)."""
    return nbformat.writes(nb) + "\n"


def notebook_path(source: Path) -> Path:
    """Where the notebook built from ``source`` lives: next to it, same stem."""
    return source.with_suffix(".ipynb")


def _selected(names: list[str]) -> list[Path]:
    every = sources()
    if not names:
        return every
    chosen = [s for s in every if any(s.stem == n or s.stem[:2] == n for n in names)]
    unknown = [n for n in names if not any(s.stem == n or s.stem[:2] == n for s in every)]
    if unknown:
        raise SystemExit(f"no lesson source for {', '.join(unknown)} in {LESSONS}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Build (or with --check, compare) the selected lessons."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a notebook differs from its source")
    args = parser.parse_args(argv)
    stale = []
    for source in _selected(args.lessons):
        text = render(build(source))
        target = notebook_path(source)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print("wrote", target)
    if stale:
        print("out of date (run `make notebooks`):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
