"""Root filling a folder another user prepared (``sudo tunlab notebooks DIR``, ``sudo tunlab
lab``, ``make lab``) writes nothing outside it: the attack of issue 23, reproduced with the user
``nobody`` making the folder in /tmp and planting symlinks to a root-only file and to a path
that does not exist yet. Needs root (to be root, and to become nobody)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tunlab import resources
from tunlab.cli.course import BACKUPS, MANIFEST, copy_course
from tunlab.errors import TunlabError
from tunlab.safefiles import SafeDir, open_folder

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"root's secret\n"

pytestmark = pytest.mark.usefixtures("root")


def _as_nobody(script: str) -> str:
    """Run ``script`` (sh) as the user nobody; its stdout."""
    result = subprocess.run(["sh", "-c", script], user="nobody", group="nogroup",
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _tunlab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("SUDO_UID", None)
    return subprocess.run([sys.executable, "-m", "tunlab", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)


def _lesson_names() -> list[str]:
    return [item.name for lesson in resources.lessons() for item in lesson.files()]


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under ``folder``: mode, owner and (for links) where it points."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(folder))] = (
            info.st_mode, info.st_uid, os.readlink(path) if path.is_symlink() else "")
    return found


@pytest.fixture
def victim(tmp_path: Path):
    """Root's own files: one only root may read, and a path nobody made yet."""
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    secret = private / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return secret, private / "created-by-root"


@pytest.fixture
def attacker_dir():
    """A folder in /tmp that nobody made (mode 0755), removed afterwards."""
    parent = Path(_as_nobody("mktemp -d /tmp/tunlab-sec.XXXXXX"))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def _plant(folder: Path, secret: Path, new_path: Path) -> None:
    """As nobody: the course's folder full of links a root write would follow."""
    names = _lesson_names()
    _as_nobody(f"mkdir -m 0755 {folder} && cd {folder} && "
               f"ln -s {secret} {names[0]} && ln -s {new_path} {names[1]} && "
               f"ln -s {secret} {MANIFEST} && ln -s {new_path.parent} {BACKUPS}")


def _unharmed(secret: Path, new_path: Path) -> None:
    assert secret.read_bytes() == SECRET, "root's file was overwritten"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not new_path.exists(), "root created a file where nobody's link pointed"
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret"]


def test_root_named_folder_with_planted_links_is_refused_and_nothing_is_written(
        attacker_dir, victim):
    secret, new_path = victim
    folder = attacker_dir / "tunlab-notebooks"
    _plant(folder, secret, new_path)
    before = _snapshot(attacker_dir)
    for args in (["notebooks", str(folder)], ["notebooks", "--force", str(folder)],
                 ["notebooks", "--restore", "00", str(folder)]):
        result = _tunlab(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "symbolic link" in result.stderr and "fix:" in result.stderr
        _unharmed(secret, new_path)
        assert _snapshot(attacker_dir) == before


def test_root_default_folder_made_by_another_user_is_refused(attacker_dir, victim):
    """`sudo tunlab notebooks` (and `sudo tunlab lab`) run from /tmp: ./tunlab-notebooks is
    nobody's, so it is refused before a single file is looked at."""
    secret, new_path = victim
    _plant(attacker_dir / "tunlab-notebooks", secret, new_path)
    before = _snapshot(attacker_dir)
    result = _tunlab("notebooks", cwd=attacker_dir)
    assert result.returncode == 2
    assert "belongs to nobody, not to you" in result.stderr
    _unharmed(secret, new_path)
    assert _snapshot(attacker_dir) == before


def test_root_lab_refuses_another_users_folder_even_named(attacker_dir):
    """JupyterLab as root on a folder nobody can change would run nobody's notebooks as root."""
    folder = attacker_dir / "clean"
    _as_nobody(f"mkdir -m 0755 {folder}")
    with pytest.raises(TunlabError, match="belongs to nobody"):
        copy_course(folder, foreign_ok=False)
    assert list(folder.iterdir()) == []


def test_a_folder_others_may_write_is_refused(attacker_dir):
    folder = attacker_dir / "open"
    _as_nobody(f"mkdir {folder} && chmod 0777 {folder}")
    result = _tunlab("notebooks", str(folder))
    assert result.returncode == 2 and "may be written by other users" in result.stderr
    assert list(folder.iterdir()) == []


def test_a_link_on_the_way_owned_by_another_user_is_not_followed(attacker_dir, victim):
    """nobody's link in the middle of the path would move a new folder anywhere root can."""
    _secret, new_path = victim
    _as_nobody(f"ln -s {new_path.parent} {attacker_dir}/via")
    result = _tunlab("notebooks", f"{attacker_dir}/via/course")
    assert result.returncode == 2 and "symbolic link (via) owned by nobody" in result.stderr
    assert not (new_path.parent / "course").exists()


def test_root_fills_a_named_clean_folder_for_its_owner(attacker_dir):
    """The admin's case: `sudo tunlab notebooks /home/USER/course` gives USER the files."""
    folder = attacker_dir / "course"
    _as_nobody(f"mkdir -m 0755 {folder}")
    result = _tunlab("notebooks", str(folder))
    assert result.returncode == 0, result.stderr
    names = set(_lesson_names()) | {MANIFEST}
    assert {p.name for p in folder.iterdir()} == names
    nobody = folder.stat().st_uid
    assert {p.lstat().st_uid for p in folder.iterdir()} == {nobody}
    assert not any(p.is_symlink() for p in folder.iterdir())


def test_a_hard_link_to_a_root_file_is_neither_read_nor_backed_up(attacker_dir, victim):
    """Where fs.protected_hardlinks is 0, nobody can link root's file into their folder;
    `--force` would read it and save a copy for nobody in .backup. Made here by root."""
    secret, _new_path = victim
    folder = attacker_dir / "course"
    _as_nobody(f"mkdir -m 0755 {folder}")
    os.link(secret, folder / _lesson_names()[0])
    result = _tunlab("notebooks", "--force", str(folder))
    assert result.returncode == 2 and "belongs to root" in result.stderr
    assert not (folder / BACKUPS).exists()
    assert secret.read_bytes() == SECRET


def test_replace_puts_a_new_file_in_place_of_a_link(tmp_path, victim):
    """Even a link planted after the checks is replaced, never written through."""
    secret, new_path = victim
    course = tmp_path / "course"
    course.mkdir()
    (course / "a").symlink_to(secret)
    (course / "b").symlink_to(new_path)
    with open_folder(course, create=False) as folder:
        with pytest.raises(TunlabError, match="symbolic link"):
            folder.read("a")
        folder.replace("a", b"course\n")
        folder.replace("b", b"course\n")
        assert folder.create("b", b"again\n") is False
    assert (course / "a").read_bytes() == (course / "b").read_bytes() == b"course\n"
    assert not (course / "a").is_symlink()
    _unharmed(secret, new_path)


def test_a_folder_made_in_place_is_the_callers(tmp_path):
    with open_folder(tmp_path / "x" / "y") as folder:
        assert isinstance(folder, SafeDir) and folder.uid == os.geteuid()
        with folder.folder(".backup") as sub:
            assert sub.create("f", b"1") is True
    assert (tmp_path / "x" / "y" / ".backup" / "f").read_bytes() == b"1"



def _as_nobody_in_process(action) -> str:
    """``action()`` in a forked child that became nobody; what it returned or raised."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            outcome = f"ok {action()}"
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            outcome = f"{type(exc).__name__} {exc}"
        os.write(writer, outcome.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        text = answer.read().decode()
    os.waitpid(pid, 0)
    return text


def test_a_user_gets_a_new_folder_but_not_roots():
    """Without root: root's folder is refused with why; a new one is made and filled."""
    roots = Path(_as_nobody("mktemp -d /tmp/tunlab-sec.XXXXXX"))
    try:
        theirs = roots / "course"
        mine = roots / "root-owned"
        mine.mkdir(mode=0o755)
        resources.lessons()  # read before the child drops privileges
        refused = _as_nobody_in_process(lambda: len(copy_course(mine)))
        assert refused.startswith("TunlabError") and "belongs to root" in refused
        made = _as_nobody_in_process(lambda: len(copy_course(theirs)))
        assert made == f"ok {len(_lesson_names())}"
        assert theirs.stat().st_uid == 65534 and not list(mine.iterdir())
    finally:
        shutil.rmtree(roots, ignore_errors=True)
