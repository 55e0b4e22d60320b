"""Each lesson notebook is built from its MyST source (notebooks/NN-name.md): the committed
.ipynb is exactly what the source builds, and building is repeatable. No root needed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
LESSONS = ROOT / "notebooks"


def _load_build():
    spec = importlib.util.spec_from_file_location("tunlab_notebook_build", LESSONS / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()
SOURCES = build.sources(LESSONS)


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, dict]]:
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    notebooks = {p.stem for p in LESSONS.glob("[0-9][0-9]-*.ipynb")}
    assert notebooks and notebooks == {p.stem for p in SOURCES}


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_committed_notebook_is_what_its_source_builds(source):
    built = build.build(source)
    committed = nbformat.read(build.notebook_path(source), as_version=4)
    assert committed.metadata.kernelspec == built.metadata.kernelspec
    assert committed.metadata.get("tunlab") == built.metadata.tunlab
    assert len(committed.cells) == len(built.cells), "cells added or removed: run make notebooks"
    for index, (want, have) in enumerate(zip(_cells(built), _cells(committed), strict=True)):
        assert have == want, f"cell {index} differs from {source.name}: run `make notebooks`"
    # ids, outputs, key order: byte for byte
    assert build.notebook_path(source).read_text(encoding="utf-8") == build.render(built)


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_source_is_myst_for_the_course_kernel(source):
    header = source.read_text(encoding="utf-8").split("---", 2)[1]
    assert "format_name: myst" in header
    assert "display_name: Python 3 (tunlab)" in header and "name: python3" in header


def test_rebuild_gives_the_same_bytes():
    for source in SOURCES:
        assert build.render(build.build(source)) == build.render(build.build(source))


MYST = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3 (tunlab)
  language: python
  name: python3
---

# 42 · A lesson

```{code-cell}
:tags: [setup]

x = 1
```

Some text.

```{code-cell}
---
jupyter:
  source_hidden: true
tags: [hint]
---
print(x)
```
"""


def test_tags_and_hidden_source_come_from_the_directive(tmp_path):
    source = tmp_path / "42-a-lesson.md"
    source.write_text(MYST, encoding="utf-8")
    nb = build.build(source)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "markdown", "code"]
    assert nb.cells[1].metadata == {"tags": ["setup"]} and nb.cells[1].source == "x = 1"
    assert nb.cells[3].metadata == {"jupyter": {"source_hidden": True}, "tags": ["hint"]}
    assert [c.id for c in nb.cells] == ["42-00", "42-01", "42-02", "42-03"]
    assert nb.metadata.tunlab == {"lesson": "42-a-lesson"}
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")


def test_check_reports_a_stale_notebook_and_build_fixes_it(tmp_path, monkeypatch):
    source = tmp_path / "42-a-lesson.md"
    source.write_text(MYST, encoding="utf-8")
    monkeypatch.setattr(build, "LESSONS", tmp_path)
    monkeypatch.setattr(build, "sources", lambda directory=tmp_path: [source])
    assert build.main(["--check"]) == 1  # no notebook yet
    assert build.main([]) == 0
    assert build.main(["--check"]) == 0
    source.write_text(MYST.replace("Some text.", "Other text."), encoding="utf-8")
    assert build.main(["--check"]) == 1
    with pytest.raises(SystemExit, match="no lesson source for 99"):
        build.main(["99"])


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_lessons_use_only_the_course_surface(source):
    """Notebooks reach the course layer through ``tunlab.course.__all__`` only (and never the
    old ``tunlab.widgets``), so everything else in the package can move."""
    import re

    from tunlab import course

    code = "\n".join(c.source for c in build.build(source).cells if c.cell_type == "code")
    assert "widgets" not in re.findall(r"from tunlab import ([\w, ]+)", code)[0].split(", ")
    assert not re.search(r"\bwidgets\.", code) and "tunlab.widgets" not in code
    used = set(re.findall(r"\bcourse\.(\w+)", code))
    assert used and used <= set(course.__all__), sorted(used - set(course.__all__))
    unused = {name for name in course.__all__
              if not any(re.search(rf"\bcourse\.{name}\b", s.read_text()) for s in SOURCES)}
    assert unused <= {"Lesson", "presenter", "kernel_log"}, unused


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_name_a_lesson_calls_exists(source):
    """A lesson's ``claims.X``, ``plots.X`` and ``handson.X`` exist in those modules (a renamed
    function fails here, without executing the lesson)."""
    import importlib
    import re

    code = "\n".join(c.source for c in build.build(source).cells if c.cell_type == "code")
    for module in ("claims", "plots", "handson"):
        used = set(re.findall(rf"\b{module}\.(\w+)", code))
        if used:
            imported = importlib.import_module(f"tunlab.course.{module}")
            assert not [n for n in used if not hasattr(imported, n)], (module, used)
