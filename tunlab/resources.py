"""Find the files tunlab ships (device script, lessons, recordings) with importlib.resources.

They live in the package's ``data`` folder: in a checkout, ``tunlab/data/notebooks`` and
``tunlab/data/scripts`` are symlinks to the top-level ``notebooks/`` and ``scripts/``; a wheel
carries copies. Either way the same lookups find them.
"""

from __future__ import annotations

import atexit
import contextlib
from dataclasses import dataclass
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

from tunlab.errors import TunlabError

__all__ = ["bench_results", "data", "data_path", "DEVICE_SCRIPT", "device_script",
           "jupyter_settings", "Lesson", "lessons", "notebooks", "on_disk", "recorded"]

DEVICE_SCRIPT = "create_named_tuntap_devices.sh"
_files = contextlib.ExitStack()
atexit.register(_files.close)


@dataclass(frozen=True)
class Lesson:
    """One lesson as shipped: its notebook and the MyST source it is built from."""

    name: str  # "00-welcome"
    notebook: Traversable
    source: Traversable | None

    @property
    def number(self) -> str:
        """The two-digit lesson number, e.g. ``"05"``."""
        return self.name[:2]

    def files(self) -> list[Traversable]:
        """The lesson's files: notebook first, then the source if shipped."""
        return [self.notebook] + ([self.source] if self.source is not None else [])


def data() -> Traversable:
    """The package's data folder."""
    return files("tunlab") / "data"


def data_path() -> Path:
    """The package's data folder as a filesystem path (recording writes new files there)."""
    return on_disk(data())


def on_disk(resource: Traversable) -> Path:
    """A filesystem path for ``resource`` (extracted for the process's lifetime if zipped)."""
    if isinstance(resource, Path):
        return resource
    return _files.enter_context(as_file(resource))


def device_script() -> Path:
    """The seed's ``create_named_tuntap_devices.sh`` (a file that ``bash`` can run)."""
    return on_disk(data() / "scripts" / DEVICE_SCRIPT)


def recorded() -> Traversable:
    """The folder of recorded lesson outputs (read-only mode) and fate cases."""
    return data() / "recorded"


def bench_results() -> Traversable:
    """The benchmark results shipped with the course (``bench/results`` in a checkout)."""
    return data() / "bench"


def jupyter_settings() -> Path:
    """JupyterLab's settings for the course (``--LabApp.app_settings_dir``)."""
    return on_disk(data() / "jupyter" / "lab" / "settings")


def notebooks() -> Traversable:
    """The folder of shipped lessons (``NN-name.ipynb`` and ``NN-name.md``)."""
    return data() / "notebooks"


def lessons() -> list[Lesson]:
    """The shipped lessons in order.

    Raises:
        TunlabError: the installation carries no lessons (a broken or partial install).
    """
    folder = notebooks()
    entries = {entry.name: entry for entry in folder.iterdir()} if folder.is_dir() else {}
    found = [
        Lesson(name[: -len(".ipynb")], entry, entries.get(name[: -len(".ipynb")] + ".md"))
        for name, entry in sorted(entries.items())
        if name.endswith(".ipynb") and name[:2].isdigit() and name[2:3] == "-"
    ]
    if not found:
        raise TunlabError(f"no lessons found in {folder}",
                          "reinstall tunlab (pip install --force-reinstall tunlab), or in a "
                          "checkout restore the tunlab/data/notebooks symlink to ../../notebooks")
    return found
