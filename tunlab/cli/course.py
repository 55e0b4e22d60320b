"""``tunlab notebooks`` and ``tunlab lab``: participants work on a copy of the course.

JupyterLab saves outputs and edits into whatever notebook it opens, so the shipped lessons are
never opened: they are copied to a working folder, and a participant's changed file is kept
unless they ask for the shipped one back (``--restore NN`` or ``--force``). A hidden manifest in
the working folder remembers what was copied, so a newer tunlab can update the lessons a
participant never touched.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import enum
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunlab import resources
from tunlab.errors import TunlabError
from tunlab.safefiles import SafeDir, open_folder

__all__ = ["Action", "BACKUPS", "cmd_lab", "cmd_notebooks", "copy_course", "DEFAULT_DIR",
           "FileResult", "find_lesson", "lab_command", "LAB_PORT", "MANIFEST", "register",
           "restore_lesson"]

DEFAULT_DIR = Path("tunlab-notebooks")
MANIFEST = ".tunlab-course.json"
BACKUPS = ".backup"
LAB_PORT = 8888


class Action(enum.Enum):
    """What happened to one lesson file in the working folder."""

    COPIED = "copied"  # was not there
    UPDATED = "updated"  # unchanged by the participant, replaced by a newer shipped version
    UNCHANGED = "unchanged"  # already the shipped version
    KEPT = "kept"  # changed by the participant, left alone
    RESTORED = "restored"  # replaced by the shipped version on request (old one backed up)


@dataclass(frozen=True)
class FileResult:
    """One file of the course and what was done with it."""

    name: str
    action: Action
    backup: Path | None = None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_target(target: Path) -> Path:
    try:
        not_a_folder = target.exists() and not target.is_dir()
    except OSError:
        not_a_folder = False  # cannot look: opening it (tunlab.safefiles) says why
    if not_a_folder:
        raise TunlabError(f"{target} exists and is not a folder",
                          "name a folder (new or one made by `tunlab notebooks`)")
    shipped = resources.notebooks()
    if isinstance(shipped, Path) and target.resolve() == shipped.resolve():
        raise TunlabError(f"{target} is the shipped course itself",
                          f"copy it somewhere else, e.g. `tunlab notebooks {DEFAULT_DIR}`")
    return target


def _read_manifest(folder: SafeDir) -> dict[str, str]:
    try:
        files = json.loads((folder.read(MANIFEST) or b"").decode("utf-8")).get("files", {})
    except (ValueError, AttributeError):
        return {}  # no manifest (or a broken one): every differing file counts as changed
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def _write_manifest(folder: SafeDir, files: dict[str, str]) -> None:
    text = json.dumps({"about": "what `tunlab notebooks` copied here (sha256 per file)",
                       "files": dict(sorted(files.items()))}, indent=1)
    folder.replace(MANIFEST, (text + "\n").encode("utf-8"))


def _backup(folder: SafeDir, name: str, data: bytes, mode: int) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem, dot, suffix = name.partition(".")
    with folder.folder(BACKUPS) as backups:
        backup, counter = f"{stem}-{stamp}{dot}{suffix}", 1
        while not backups.create(backup, data, mode):  # O_EXCL: never onto an existing entry
            backup = f"{stem}-{stamp}-{counter}{dot}{suffix}"
            counter += 1
    return folder.path / BACKUPS / backup


def _place(folder: SafeDir, name: str, data: bytes, copied: dict[str, str],
           replace: bool) -> FileResult:
    """Put the shipped ``data`` at ``folder/name`` unless a participant's change is there."""
    new = _digest(data)
    existing = folder.read(name)
    if existing is None:
        action = Action.COPIED
    else:
        current = _digest(existing)
        if current == new:
            copied[name] = new
            return FileResult(name, Action.UNCHANGED)
        if replace:
            info = folder.lstat(name)
            backup = _backup(folder, name, existing, info.st_mode & 0o666 if info else 0o644)
            folder.replace(name, data)
            copied[name] = new
            return FileResult(name, Action.RESTORED, backup)
        if copied.get(name) != current:
            return FileResult(name, Action.KEPT)
        action = Action.UPDATED
    folder.replace(name, data)
    copied[name] = new
    return FileResult(name, action)


def _open(target: Path, names: list[str], explicit: bool | None, backups: bool,
          foreign_ok: bool = True) -> SafeDir:
    """The checked working folder, every name in it checked before the first write.

    Root may fill a folder of another user only when it was named explicitly (``foreign_ok``
    and ``explicit``); no caller writes through links or into a folder others may write.
    """
    explicit = Path(target) != DEFAULT_DIR if explicit is None else explicit
    folder = open_folder(target, foreign_ok=foreign_ok and explicit)
    try:
        for name in [*names, MANIFEST]:
            folder.check_file(name)
        info = folder.lstat(BACKUPS)
        if backups and info is not None and not stat.S_ISDIR(info.st_mode):
            raise TunlabError(f"{target / BACKUPS} is not a folder (or is a link)",
                              f"remove it (`rm {target / BACKUPS}`)")
    except BaseException:
        folder.close()
        raise
    return folder


def copy_course(target: Path = DEFAULT_DIR, force: bool = False, *,
                explicit: bool | None = None, foreign_ok: bool = True) -> list[FileResult]:
    """Copy every shipped lesson (.ipynb and its .md) into ``target``, creating it.

    A file the participant changed is kept (``Action.KEPT``) unless ``force``, which backs it
    up into ``target/.backup`` and replaces it. Nothing is written through a link, and a
    folder that is not the caller's (see :func:`tunlab.safefiles.open_folder`; ``explicit``
    defaults to "``target`` is not the default folder") is refused before anything changes.
    """
    target = _check_target(target)
    lessons = resources.lessons()
    items = [item for lesson in lessons for item in lesson.files()]
    with _open(target, [item.name for item in items], explicit, force, foreign_ok) as folder:
        copied = _read_manifest(folder)
        results = [_place(folder, item.name, item.read_bytes(), copied, force)
                   for item in items]
        _write_manifest(folder, copied)
    return results


def find_lesson(key: str) -> resources.Lesson:
    """The shipped lesson named by ``key``: its number ("5", "05") or its name."""
    lessons = resources.lessons()
    wanted = key.strip().removesuffix(".ipynb").removesuffix(".md")
    if wanted.isdigit():
        wanted = f"{int(wanted):02d}"
    for lesson in lessons:
        if wanted in (lesson.number, lesson.name):
            return lesson
    raise TunlabError(f"no lesson {key!r}",
                      "name one of " + ", ".join(lesson.number for lesson in lessons)
                      + " (or its full name, e.g. " + lessons[0].name + ")")


def restore_lesson(key: str, target: Path = DEFAULT_DIR, *,
                   explicit: bool | None = None) -> list[FileResult]:
    """Replace lesson ``key`` in ``target`` with the shipped version (backing up a changed one)."""
    lesson = find_lesson(key)  # before touching anything: a bad key changes nothing
    target = _check_target(target)
    with _open(target, [item.name for item in lesson.files()], explicit, True) as folder:
        copied = _read_manifest(folder)
        results = [_place(folder, item.name, item.read_bytes(), copied, True)
                   for item in lesson.files()]
        _write_manifest(folder, copied)
    return results


def lab_command(target: Path, port: int = LAB_PORT) -> list[str]:
    """The command that starts JupyterLab on ``target`` with the course's settings."""
    return [sys.executable, "-m", "jupyterlab", "--allow-root",
            f"--ServerApp.root_dir={target.resolve()}",
            f"--LabApp.app_settings_dir={resources.jupyter_settings()}",
            "--ip=127.0.0.1", f"--port={port}", "--LabApp.news_url=None", "--no-browser"]


def _report(results: list[FileResult], target: Path) -> None:
    for result in results:
        if result.action is Action.KEPT:
            print(f"kept      {result.name} (you changed it; `tunlab notebooks --restore "
                  f"{result.name[:2]} {target}` brings back the shipped one)")
        elif result.action is not Action.UNCHANGED:
            note = f" (yours saved as {result.backup})" if result.backup else ""
            print(f"{result.action.value:<9} {result.name}{note}")
    counts = {action: sum(r.action is action for r in results) for action in Action}
    summary = ", ".join(f"{n} {action.value}" for action, n in counts.items() if n)
    print(f"course in {target.resolve()}: {summary}")


def cmd_notebooks(args: argparse.Namespace) -> int:
    """``tunlab notebooks [DIR]`` and ``tunlab notebooks --restore NN [DIR]``."""
    explicit = args.directory is not None  # root fills another user's folder only if named
    target = Path(args.directory) if explicit else DEFAULT_DIR
    if args.restore:
        results = restore_lesson(args.restore, target, explicit=explicit)
    else:
        results = copy_course(target, force=args.force, explicit=explicit)
    _report(results, target)
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    """``tunlab lab [DIR]``: copy the course (keeping changes), then run JupyterLab on it."""
    try:
        import jupyterlab  # noqa: F401 - only to say clearly that it is missing
    except ImportError:
        raise TunlabError("JupyterLab is not installed in this environment",
                          "pip install 'tunlab[lab]'") from None
    target = Path(args.directory) if args.directory is not None else DEFAULT_DIR
    # never another user's folder, even named: root's JupyterLab would serve notebooks that
    # user can change, and root would run them
    _report(copy_course(target, foreign_ok=False), target)
    command = lab_command(target, args.port)
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached


def register(subparsers: Any) -> None:
    """Add the ``notebooks`` and ``lab`` subcommands to the ``tunlab`` parser."""
    notebooks = subparsers.add_parser(
        "notebooks", help="copy the course to a working folder (default ./tunlab-notebooks)",
        description="Copy the lessons (.ipynb and their MyST .md sources) to DIR. Files you "
        "changed there are kept; --restore NN brings back the shipped version of one lesson "
        "(yours is saved in DIR/.backup).")
    notebooks.add_argument("directory", nargs="?", default=None, metavar="DIR",
                           help=f"working folder (default ./{DEFAULT_DIR})")
    choice = notebooks.add_mutually_exclusive_group()
    choice.add_argument("--restore", metavar="NN",
                        help="replace lesson NN (e.g. 05) with the shipped version")
    choice.add_argument("--force", action="store_true",
                        help="replace every changed lesson with the shipped version "
                        "(backups in DIR/.backup)")
    notebooks.set_defaults(handler=cmd_notebooks)

    lab = subparsers.add_parser(
        "lab", help="copy the course (keeping your changes) and start JupyterLab on the copy",
        description="Run `tunlab notebooks DIR`, then JupyterLab on DIR (127.0.0.1, no "
        "browser, the course's settings; JUPYTER_TOKEN sets the token). Run it as root for "
        "the live lab; without root the lessons show recorded examples.")
    lab.add_argument("directory", nargs="?", default=None, metavar="DIR",
                     help=f"working folder (default ./{DEFAULT_DIR})")
    lab.add_argument("--port", type=int, default=LAB_PORT, help=f"default {LAB_PORT}")
    lab.set_defaults(handler=cmd_lab)
