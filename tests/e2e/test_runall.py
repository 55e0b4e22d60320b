"""After Run All (which ends with ``lesson.finish()``), every button of every lesson still works,
twice in a row: each lesson's notebook runs in one real kernel, then a cell appended to it
clicks every button of every widget the lesson displayed, the way a participant would, and
reports any exception wherever it surfaced (in a handler, in a panel's error line, in an
``Output`` widget, in a background thread) and any panel that answered with nothing."""

from __future__ import annotations

import json
import os
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
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# Runs in the lesson's kernel after the last cell. MODEL_IDS: the widgets the cells displayed.
CLICK_EVERYTHING = r'''
import json as _json, threading as _threading
import ipywidgets as _W
from ipywidgets.widgets.widget import _instances as _INSTANCES

_failures, _clicked, _answers = [], [], []
def _thread_hook(args):
    _failures.append(f"thread {args.thread.name}: {args.exc_type.__name__}: {args.exc_value}")
_threading.excepthook = _thread_hook

# what a panel must show after its main button was clicked (None/empty = it answered nothing)
_RESULT = {"PiReader": "last_read", "RouteView": "last_device", "FrameExplorer": "last_frame",
           "SeedGoalPanel": "last_result", "PacketBuilder": "last_report",
           "FixPanel": "last_result", "DoctorPanel": "last_checks",
           "TunnelPanel": "running", "KernelLogView": "lines"}
_MAIN = {"PiReader": "read", "RouteView": "lookup", "FrameExplorer": "send",
         "SeedGoalPanel": "ping", "PacketBuilder": "send", "FixPanel": "ping_button",
         "DoctorPanel": "rerun", "TunnelPanel": "start_button"}

def _walk(widget, panel, seen, found):
    if id(widget) in seen:
        return
    seen.add(id(widget))
    if hasattr(widget, "errors") and hasattr(widget, "bar"):
        panel = widget
    found.append((widget, panel))
    for child in getattr(widget, "children", ()):
        _walk(child, panel, seen, found)

_found, _seen = [], set()
for _id in MODEL_IDS:
    if _id in _INSTANCES:
        _walk(_INSTANCES[_id], None, _seen, _found)

def _shown_errors():
    problems = []
    for widget, _panel in _found:
        if getattr(widget, "errors", None):
            problems.append(f"{type(widget).__name__} error line: {widget.errors}")
        if isinstance(widget, _W.HTML) and "tunlab-error" in widget._dom_classes and widget.value:
            problems.append(f"error shown: {widget.value}")
        if isinstance(widget, _W.Output):
            for out in widget.outputs:
                if out.get("output_type") == "error" or out.get("name") == "stderr":
                    problems.append(f"Output widget: {out}")
    return problems

def _wait_for_threads():
    for thread in _threading.enumerate():
        if thread.name.startswith("tunlab-iperf3"):
            thread.join(30)

_panels = []
for _w, _p in _found:
    if _p is not None and _p not in _panels:
        _panels.append(_p)

def _order(item):
    button, panel = item
    on_bar = panel is not None and button in (panel.bar.reset_button, panel.bar.log_button,
                                              panel.bar.presenter_button)
    rank = 2 if on_bar else (1 if "stop" in button.description else 0)
    return (_panels.index(panel) if panel in _panels else -1, rank)

def _click(button, panel, label):
    if button.disabled:  # a browser cannot click it either
        return
    for callback in list(button._click_handlers.callbacks):
        try:
            callback(button)
        except Exception as exc:  # the handler let it escape
            _failures.append(f"{button.description}: {type(exc).__name__}: {exc}")
    _wait_for_threads()
    where = type(panel).__name__ if panel is not None else "?"
    _clicked.append(f"{where}.{button.description} {label}")
    problems = _shown_errors()
    if problems:
        _failures.append(f"after {where}.{button.description} {label}: {problems}")
        for widget, _owner in _found:  # report each error once
            if getattr(widget, "errors", None):
                widget.errors.clear()
    if panel is not None and getattr(panel, _MAIN.get(where, ""), None) is button:
        value = getattr(panel, _RESULT[where], None)
        _answers.append([where, label, repr(value)[:300]])
        if value is None or value == "" or value == [] or value is False:
            _failures.append(f"{where}.{button.description} {label} showed no result")
        if where == "RouteView" and "no route" in panel.last_output:
            _failures.append(f"route view: {panel.last_output}")
        if where == "SeedGoalPanel" and value and not value.client_read:
            _failures.append(f"ping 10.0.0.2 never entered mytun: {value}")
        if where == "FixPanel" and value and \
                {"route_a", "forward_b", "firewall_b", "route_c"} <= set(panel.fixes()) \
                and not value.ok:
            _failures.append(f"all fixes ticked, still no reply: {value.reason}")
    if where == "TunnelPanel" and button is panel.start_button and not panel.running:
        _failures.append(f"start tunnel {label} did not start it: {panel.status.value}")

_buttons = sorted([(w, p) for w, p in _found if isinstance(w, _W.Button)], key=_order)
for _button, _panel in _buttons:
    _click(_button, _panel, "#1")
    _click(_button, _panel, "#2")
# once more, each button that is not on a panel's bar (e.g. start again after stop)
for _button, _panel in _buttons:
    if _order((_button, _panel))[1] < 2:
        _click(_button, _panel, "again")

# the lab a click rebuilt is live (a panel did not answer from a dead lab)
if "lesson" in globals() and lesson.live and lesson.kind is not None and lesson.lab is not None:
    _answers.append(["lab_ready", lesson.lab_ready])
print("RESULT " + _json.dumps({"clicked": _clicked, "failures": _failures,
                               "answers": _answers}))
'''


def _run_all_then_click(path: Path, read_only: bool = False
                        ) -> tuple[dict, list[dict], int]:
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env.pop("TUNLAB_RECORD", None)
    env.pop("TUNLAB_PRETEND_UNPRIVILEGED", None)
    if read_only:
        env["TUNLAB_PRETEND_UNPRIVILEGED"] = "1"
    client = NotebookClient(nb, timeout=240, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    with client.setup_kernel(env=env):
        pid = client.km.provisioner.process.pid
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        ids = [o["data"][WIDGET_MIME]["model_id"] for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []) if WIDGET_MIME in o.get("data", {})]
        cell = nbformat.v4.new_code_cell(f"MODEL_IDS = {ids!r}\n" + CLICK_EVERYTHING)
        nb.cells.append(cell)
        client.execute_cell(cell, len(nb.cells) - 1)
    outputs = cell.get("outputs", [])
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the click cell printed no result: {outputs}"
    return json.loads(lines[-1][len("RESULT "):]), outputs, pid


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_button_works_after_run_all_twice(path):
    result, outputs, pid = _run_all_then_click(path)
    errors = [o for o in outputs if o.get("output_type") == "error"
              or o.get("name") == "stderr"]
    assert not errors, errors  # a handler's traceback printed by ipywidgets
    assert not result["failures"], "\n".join(result["failures"])
    clicked = result["clicked"]
    assert any("reset lab" in c for c in clicked), clicked
    assert any("kernel log" in c for c in clicked), clicked
    main = [a for a in result["answers"] if a[0] != "lab_ready"]
    if not path.stem.startswith(("00", "05", "06")):  # these panels need no lab of their own
        assert main, "no main button of a lab panel was clicked"
    if ["lab_ready", False] in result["answers"]:
        pytest.fail("after the clicks the lesson's lab is not there")
    # the lab that the clicks rebuilt went away with the kernel (other runs' labs may exist)
    left = [n for n in netns.list_lab_namespaces() if n.startswith(f"tunlab-{pid}-")]
    assert not left, f"a rebuilt lab outlived its kernel: {left}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_button_works_after_run_all_read_only(path):
    """Without root (a hosted Jupyter), the same clicks answer from recordings or say what
    is missing, and never fail."""
    result, outputs, pid = _run_all_then_click(path, read_only=True)
    errors = [o for o in outputs if o.get("output_type") == "error"
              or o.get("name") == "stderr"]
    assert not errors, errors
    assert not result["failures"], "\n".join(result["failures"])
    assert any("reset lab" in c for c in result["clicked"]), result["clicked"]
    assert not [n for n in netns.list_lab_namespaces() if n.startswith(f"tunlab-{pid}-")]
