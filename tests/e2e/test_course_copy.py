"""``tunlab notebooks``: participants get a working copy of the course; their changes survive a
second copy, one lesson can be restored, and the shipped lessons are never written. ``tunlab
lab`` serves that copy. No root needed."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from tunlab import resources
from tunlab.cli.course import MANIFEST, Action, copy_course, lab_command, restore_lesson
from tunlab.errors import TunlabError
from tunlab.runtime import stop_process

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "notebooks"


def _shipped_bytes() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(SHIPPED.glob("[0-9][0-9]-*.*"))
            if p.suffix in (".ipynb", ".md")}


def _course_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()
            and not p.name.startswith(".")}


def _autosave(path: Path) -> bytes:
    """What JupyterLab does to a lesson: an answer typed in, outputs saved."""
    nb = nbformat.read(path, as_version=4)
    answer = next(c for c in nb.cells if "answer" in c.metadata.get("tags", []))
    answer.source = "answer = 42"
    answer.outputs = [nbformat.v4.new_output("stream", text="42\n")]
    nbformat.write(nb, path)
    return path.read_bytes()


@pytest.fixture
def shipped():
    before = _shipped_bytes()
    yield before
    assert _shipped_bytes() == before, "a shipped lesson was written"


def test_the_package_finds_the_lessons_and_the_device_script():
    assert [lesson.name for lesson in resources.lessons()] == \
        [p.stem for p in sorted(SHIPPED.glob("[0-9][0-9]-*.ipynb"))]
    assert all(lesson.source is not None for lesson in resources.lessons())
    assert resources.device_script().read_bytes() == \
        (ROOT / "scripts" / "create_named_tuntap_devices.sh").read_bytes()
    assert (resources.jupyter_settings() / "overrides.json").is_file()
    assert (resources.recorded() / "fate_cases.json").is_file()


def test_copy_makes_the_whole_course(tmp_path, shipped):
    target = tmp_path / "course"
    results = copy_course(target)
    assert {r.action for r in results} == {Action.COPIED}
    assert _course_files(target) == shipped
    assert set(json.loads((target / MANIFEST).read_text())["files"]) == set(shipped)


def test_second_copy_keeps_what_the_participant_changed(tmp_path, shipped):
    target = tmp_path / "course"
    copy_course(target)
    mine = _autosave(target / "05-martians-and-rp_filter.ipynb")
    (target / "05-martians-and-rp_filter.md").write_text("my notes\n")
    (target / "02-routing-tables.ipynb").unlink()
    results = {r.name: r.action for r in copy_course(target)}
    assert results["05-martians-and-rp_filter.ipynb"] is Action.KEPT
    assert results["05-martians-and-rp_filter.md"] is Action.KEPT
    assert results["02-routing-tables.ipynb"] is Action.COPIED
    assert results["00-welcome.ipynb"] is Action.UNCHANGED
    assert (target / "05-martians-and-rp_filter.ipynb").read_bytes() == mine
    assert (target / "05-martians-and-rp_filter.md").read_text() == "my notes\n"
    assert (target / "02-routing-tables.ipynb").read_bytes() == shipped["02-routing-tables.ipynb"]


def test_a_file_without_a_record_of_the_copy_counts_as_changed(tmp_path, shipped):
    target = tmp_path / "course"
    target.mkdir()
    (target / "03-encapsulation.ipynb").write_text("{}")  # someone else's file
    results = {r.name: r.action for r in copy_course(target)}
    assert results["03-encapsulation.ipynb"] is Action.KEPT
    assert (target / "03-encapsulation.ipynb").read_text() == "{}"


def test_an_untouched_copy_of_an_older_release_is_updated(tmp_path, shipped):
    target = tmp_path / "course"
    copy_course(target)
    old = b'{"an": "older release"}\n'
    (target / "01-tun-devices.ipynb").write_bytes(old)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["files"]["01-tun-devices.ipynb"] = hashlib.sha256(old).hexdigest()
    (target / MANIFEST).write_text(json.dumps(manifest))
    results = {r.name: r.action for r in copy_course(target)}
    assert results["01-tun-devices.ipynb"] is Action.UPDATED
    assert (target / "01-tun-devices.ipynb").read_bytes() == shipped["01-tun-devices.ipynb"]


def test_restore_brings_back_one_lesson_and_saves_the_participants(tmp_path, shipped):
    target = tmp_path / "course"
    copy_course(target)
    mine = _autosave(target / "05-martians-and-rp_filter.ipynb")
    other = _autosave(target / "06-drop-reasons.ipynb")
    results = restore_lesson("5", target)
    assert [(r.name, r.action) for r in results] == [
        ("05-martians-and-rp_filter.ipynb", Action.RESTORED),
        ("05-martians-and-rp_filter.md", Action.UNCHANGED)]
    assert (target / "05-martians-and-rp_filter.ipynb").read_bytes() == \
        shipped["05-martians-and-rp_filter.ipynb"]
    assert results[0].backup is not None and results[0].backup.read_bytes() == mine
    assert results[0].backup.parent.name.startswith(".")  # not in the file browser
    assert (target / "06-drop-reasons.ipynb").read_bytes() == other
    # restored means untouched again: a later copy may update it
    assert {r.name: r.action for r in copy_course(target)}[
        "05-martians-and-rp_filter.ipynb"] is Action.UNCHANGED


def test_restore_by_name_and_into_an_empty_folder(tmp_path, shipped):
    results = restore_lesson("08-performance", tmp_path / "new")
    assert {r.action for r in results} == {Action.COPIED}
    assert _course_files(tmp_path / "new") == {
        k: v for k, v in shipped.items() if k.startswith("08-")}


def test_force_replaces_every_changed_lesson_with_backups(tmp_path, shipped):
    target = tmp_path / "course"
    copy_course(target)
    mine = _autosave(target / "07-working-vpn.ipynb")
    results = {r.name: r for r in copy_course(target, force=True)}
    assert results["07-working-vpn.ipynb"].action is Action.RESTORED
    assert results["07-working-vpn.ipynb"].backup.read_bytes() == mine
    assert _course_files(target) == shipped


@pytest.mark.parametrize("key", ["42", "9x", "", "welcome"])
def test_restore_of_an_unknown_lesson_changes_nothing(tmp_path, key, shipped):
    target = tmp_path / "course"
    copy_course(target)
    _autosave(target / "00-welcome.ipynb")
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    with pytest.raises(TunlabError) as error:
        restore_lesson(key, target)
    assert "00, 01" in error.value.fix
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    with pytest.raises(TunlabError):
        restore_lesson(key, tmp_path / "not-made")
    assert not (tmp_path / "not-made").exists()


def test_refuses_a_file_and_the_shipped_folder(tmp_path, shipped):
    (tmp_path / "file").write_text("x")
    with pytest.raises(TunlabError, match="not a folder"):
        copy_course(tmp_path / "file")
    with pytest.raises(TunlabError, match="shipped course itself"):
        copy_course(SHIPPED)
    with pytest.raises(TunlabError, match="shipped course itself"):
        restore_lesson("00", Path(str(resources.notebooks())))


def test_cli_copy_and_restore(tmp_path, tunlab_cmd, shipped):
    target = tmp_path / "course"
    first = subprocess.run([*tunlab_cmd, "notebooks", str(target)], capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"{len(shipped)} copied" in first.stdout
    _autosave(target / "04-seed-goal.ipynb")
    again = subprocess.run([*tunlab_cmd, "notebooks", str(target)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and "kept      04-seed-goal.ipynb" in again.stdout
    assert "--restore 04" in again.stdout
    restore = subprocess.run([*tunlab_cmd, "notebooks", "--restore", "04", str(target)],
                             capture_output=True, text=True, timeout=60)
    assert restore.returncode == 0 and "restored  04-seed-goal.ipynb" in restore.stdout
    assert (target / "04-seed-goal.ipynb").read_bytes() == shipped["04-seed-goal.ipynb"]
    bad = subprocess.run([*tunlab_cmd, "notebooks", "--restore", "99", str(target)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no lesson '99'" in bad.stderr and "fix:" in bad.stderr


def test_default_folder_is_tunlab_notebooks_in_the_current_directory(tmp_path, tunlab_cmd,
                                                                     shipped):
    result = subprocess.run([*tunlab_cmd, "notebooks"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert _course_files(tmp_path / "tunlab-notebooks") == shipped


def test_lab_command_has_the_course_settings(tmp_path):
    command = lab_command(tmp_path, 9999)
    assert command[1:3] == ["-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in command
    settings = next(a for a in command if a.startswith("--LabApp.app_settings_dir="))
    assert Path(settings.split("=", 1)[1], "overrides.json").is_file()
    for flag in ("--allow-root", "--ip=127.0.0.1", "--port=9999", "--LabApp.news_url=None",
                 "--no-browser"):
        assert flag in command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tunlab_lab_serves_the_copy(tmp_path, tunlab_cmd, shipped):
    target, port, token = tmp_path / "course", _free_port(), "tunlab-test-token"
    env = dict(os.environ, JUPYTER_TOKEN=token, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    log = tmp_path / "lab.log"
    with open(log, "w") as out:
        process = subprocess.Popen([*tunlab_cmd, "lab", str(target), "--port", str(port)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, listing = time.monotonic() + 60, None
        while listing is None:
            try:
                with urllib.request.urlopen(f"{base}/api/contents?token={token}",
                                            timeout=5) as reply:
                    listing = json.load(reply)
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("tunlab lab did not serve:\n" + log.read_text()[-3000:])
                time.sleep(0.3)
        served = {item["name"] for item in listing["content"]}
        assert set(shipped) <= served
        assert _course_files(target) == shipped
    finally:
        stop_process(process, 20)
