"""Every lesson notebook runs top to bottom, unattended, in a real kernel (the venv's ``python3``
kernelspec), with root and without; a correct answer passes its check cell; the lab is gone
afterwards, also when the kernel is shut down, terminated or killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tunlab.kernel import netns

pytestmark = pytest.mark.usefixtures("root")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
KERNEL = "python3"
PER_NOTEBOOK_SECONDS = 60

# The answer each exercise accepts, injected into the cell tagged "answer" (the notebooks
# themselves ship with `answer = None`).
ANSWERS = {
    "00": '("CAP_NET_ADMIN", "CAP_SYS_ADMIN")',
    "01": "0x003c",
    "02": '("lo", "local")',
    "03": '"54 4c 01 02 00 00 05 78"',
    "04": "0",
    "05": '"10.0.2.33"',
    "06": '"NO_SOCKET"',
    "07": '{"route_a", "forward_b", "firewall_b", "route_c"}',
    "08": "1360",
    "09": 'handson.reference("09a")',
}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def _execute(path: Path, env_extra: dict[str, str] | None = None,
             answer: str | None = None) -> tuple[nbformat.NotebookNode, float, int]:
    nb = nbformat.read(path, as_version=4)
    if answer is not None:
        (cell,) = _tagged(nb, "answer")
        cell.source = f"answer = {answer}"
    env = dict(os.environ)
    env.pop("TUNLAB_RECORD", None)
    env.update(env_extra or {})
    kernel_pids: list[int] = []
    client = NotebookClient(nb, timeout=PER_NOTEBOOK_SECONDS * 2, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
                            on_notebook_start=lambda notebook: kernel_pids.append(
                                client.km.provisioner.process.pid))
    started = time.monotonic()
    client.execute(env=env)
    return nb, time.monotonic() - started, kernel_pids[0]


def _namespaces_of(pid: int) -> list[str]:
    """Lab namespaces named after process ``pid`` (other tests' labs may run meanwhile)."""
    return [n for n in netns.list_lab_namespaces() if n.startswith(f"{netns.PREFIX}{pid}-")]


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _text(outputs: list[dict]) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o["text"])
        for mime in ("text/html", "text/plain"):
            if mime in o.get("data", {}):
                parts.append(o["data"][mime])
    return "\n".join(parts)


def test_there_are_the_ten_lessons():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["00-welcome", "01-tun-devices", "02-routing-tables", "03-encapsulation",
                     "04-seed-goal", "05-martians-and-rp_filter", "06-drop-reasons",
                     "07-working-vpn", "08-performance", "09-write-your-own"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_structure(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == KERNEL
    assert nb.cells[0].cell_type == "markdown" and "Learning goals" in nb.cells[0].source
    for tag in ("setup", "answer", "check", "hint", "finish"):
        assert len(_tagged(nb, tag)) == 1, tag
    assert _tagged(nb, "answer")[0].source.startswith("answer = None")
    assert "lesson.finish()" in nb.cells[-1].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    # thin notebooks: short code cells
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert len(cell.source.splitlines()) <= 8, cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_the_lab(path):
    nb, seconds, kernel = _execute(path, answer=ANSWERS[path.stem[:2]])
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = _text(outputs)
    assert "lab ready" in text or "running with the privileges" in text
    assert any(WIDGET_MIME in o.get("data", {}) for o in outputs), "no widget"
    assert any("image/png" in o.get("data", {}) or "data:image/png" in
               o.get("data", {}).get("text/html", "") for o in outputs), "no plot"
    check = _text(_tagged(nb, "check")[0].outputs)
    assert "✔ Correct" in check, check
    hint = _tagged(nb, "hint")[0].outputs
    assert any(WIDGET_MIME in o.get("data", {}) for o in hint), "no hint button"
    assert "Hint 1" not in _text(hint)  # Run All gives no hint away
    assert "read-only mode" not in text and "recorded example" not in text
    finish = _text(_tagged(nb, "finish")[0].outputs)
    assert "Lab removed" in finish or "Nothing to remove" in finish
    assert not _namespaces_of(kernel), "the notebook left a namespace"
    print(f"{path.stem}: {seconds:.1f} s")  # the time itself is a bench figure, not a test


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_read_only_without_root(path):
    nb, _seconds, kernel = _execute(path, env_extra={"TUNLAB_PRETEND_UNPRIVILEGED": "1"})
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = _text(outputs)
    assert "read-only mode" in text and "sudo make lab" in text
    assert "recorded example" in text or "recorded" in text
    assert "no recorded output" not in text and "no recording" not in text
    assert "Not yet" in _text(_tagged(nb, "check")[0].outputs)  # answer = None
    assert not _namespaces_of(kernel)


# -- the lab goes away with the kernel -----------------------------------------------------------

SETUP = "from tunlab import course\nlesson = course.start('00-welcome', lab='seed')\n" \
        "print(lesson.lab.namespaces[0].name)"


def _kernel_with_lab():
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ)
    env.pop("TUNLAB_PRETEND_UNPRIVILEGED", None)
    km, kc = start_new_kernel(kernel_name=KERNEL, env=env)
    reply = kc.execute_interactive(SETUP, timeout=30, output_hook=lambda msg: outputs.append(msg))
    assert reply["content"]["status"] == "ok"
    name = "".join(m["content"].get("text", "") for m in outputs
                   if m["msg_type"] == "stream").strip().splitlines()[-1]
    assert name in netns.list_lab_namespaces()
    return km, kc, name


outputs: list[dict] = []


def _gone(name: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name not in netns.list_lab_namespaces():
            return True
        time.sleep(0.1)
    return False


def test_lab_removed_when_jupyter_shuts_the_kernel_down():
    outputs.clear()
    km, kc, name = _kernel_with_lab()
    kc.stop_channels()
    km.shutdown_kernel(now=False)  # what JupyterLab's "Shut Down Kernel" sends
    assert _gone(name)


def test_lab_removed_when_the_kernel_is_terminated():
    outputs.clear()
    km, kc, name = _kernel_with_lab()
    pid = km.provisioner.process.pid
    os.kill(pid, signal.SIGTERM)
    try:
        assert _gone(name)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_lab_of_a_killed_kernel_is_removed_by_the_next_lab():
    outputs.clear()
    km, kc, name = _kernel_with_lab()
    os.kill(km.provisioner.process.pid, signal.SIGKILL)
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    from tunlab.lab import SeedLab

    with SeedLab("after"):
        assert name not in netns.list_lab_namespaces()
