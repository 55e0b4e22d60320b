"""tunlab as a package: the wheel carries the device script, the lessons and the recordings, and
a fresh venv outside the checkout, installed from that wheel alone, runs the demo and a lesson.

Building needs no root; the demo and the lesson's live lab do (they skip the rest otherwise).
Installing the dependencies into a new venv takes a minute or more (from pip's cache or PyPI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tunlab.kernel import netns

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.usefixtures("root"), pytest.mark.slow]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TUNLAB_PRETEND_UNPRIVILEGED")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT)))
    return env


def _copy_tracked_tree(destination: Path) -> None:
    """The working tree as git sees it (tracked and new files; symlinks stay symlinks)."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a clean copy of the working tree (no stale build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree, out = tmp / "tree", tmp / "dist"
    _copy_tracked_tree(tree)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(out), str(tree)], capture_output=True, text=True,
                           timeout=600, env=_clean_env())
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("tunlab-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A new venv, away from the checkout, with tunlab[lab] from the wheel and nbclient."""
    home = tmp_path_factory.mktemp("fresh")
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True, timeout=300)
    python = home / "venv" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q",
                              f"tunlab[lab] @ {wheel.as_uri()}", "nbclient", "nbformat"],
                             capture_output=True, text=True, timeout=1200, cwd=home,
                             env=_clean_env())
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return home / "venv"


def test_wheel_carries_what_the_lab_needs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    lessons = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.*")
                     if p.suffix in (".ipynb", ".md"))
    assert lessons and {f"tunlab/data/notebooks/{n}" for n in lessons} <= names
    recorded = sorted(p.name for p in (ROOT / "tunlab/data/recorded").glob("*.json"))
    assert {f"tunlab/data/recorded/{n}" for n in recorded} <= names
    assert "tunlab/data/jupyter/lab/settings/overrides.json" in names
    with zipfile.ZipFile(wheel) as archive:
        script = archive.read("tunlab/data/scripts/create_named_tuntap_devices.sh")
    assert script == (ROOT / "scripts/create_named_tuntap_devices.sh").read_bytes()
    # the lesson build script and the repository's setup script are not package data
    assert not [n for n in names if n.startswith("tunlab/data/") and n.endswith(".py")]
    assert "tunlab/data/scripts/setup.sh" not in names


def test_installed_package_finds_its_files_outside_the_checkout(venv, tmp_path):
    code = textwrap.dedent("""
        import json, tunlab
        from tunlab import lab, resources
        print(json.dumps({"package": tunlab.__file__, "script": str(lab.script_path()),
                          "lessons": [l.name for l in resources.lessons()],
                          "recorded": resources.recorded().joinpath("fate_cases.json").is_file()}))
    """)
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path, env=_clean_env())
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["package"].startswith(str(venv)) and found["script"].startswith(str(venv))
    assert found["lessons"] == [p.stem for p in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))]
    assert found["recorded"]


def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("the demo and the live lab build network namespaces: needs root")


def test_installed_demo_runs(venv, tmp_path):
    _root_only()
    process = subprocess.Popen([str(venv / "bin" / "tunlab"), "demo", "--json"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_clean_env())
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["released"]["hex"] == report["sent"]["hex"]
    assert report["fate"]["verdict"] == "dropped"
    # its namespaces (named after its pid) are gone; other tests' labs may be running
    assert not [n for n in netns.list_lab_namespaces() if n.startswith(f"tunlab-{process.pid}-")]


RUN_LESSON = r"""
import json, sys
import nbformat
from nbclient import NotebookClient

path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(
    "import sys, tunlab\n"
    "from tunlab.kernel import netns\n"
    "print('RAN-IN', sys.executable, tunlab.__file__, netns.owner_tag())"))
NotebookClient(nb, timeout=120, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[2]}}).execute()
print(json.dumps(nb.cells and [c.get("outputs", []) for c in nb.cells]))
"""


def test_installed_course_runs_a_lesson(venv, tmp_path):
    _root_only()
    course = tmp_path / "course"
    env = _clean_env() | {"JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
                          "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")}
    copy = subprocess.run([str(venv / "bin" / "tunlab"), "notebooks", str(course)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert copy.returncode == 0, copy.stderr
    run = subprocess.run([str(venv / "bin" / "python"), "-c", RUN_LESSON,
                          str(course / "00-welcome.ipynb"), str(course)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = [o for cell in json.loads(run.stdout.splitlines()[-1]) for o in cell]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(o.get("text", "") + json.dumps(o.get("data", {})) for o in outputs)
    assert "lab ready" in text and "read-only mode" not in text
    ran_in = next(line for line in text.splitlines() if line.startswith("RAN-IN"))
    _, executable, package, kernel = ran_in.split()
    assert executable.startswith(str(venv)) and package.startswith(str(venv))
    assert not [n for n in netns.list_lab_namespaces() if n.startswith(f"tunlab-{kernel}-")], \
        "the lesson left a namespace"
