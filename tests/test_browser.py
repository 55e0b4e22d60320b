"""End to end in a real browser: JupyterLab (as ``make lab`` starts it) and headless Chromium
driven by Playwright. Opens lesson 05, runs all cells, types a new source address into the
packet builder, presses Send, and expects the kernel's verdict on the page.

Screenshots: artifacts/browser/*.png (every run); with TUNLAB_UPDATE_README_IMAGE=1 also
docs/img/lesson.png, the README's picture.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunlab import netns

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
ARTIFACTS = ROOT / "artifacts" / "browser"
README_IMAGE = ROOT / "docs" / "img" / "lesson.png"
LAB_SETTINGS = ROOT / "tunlab" / "data" / "jupyter" / "lab" / "settings"
NOTEBOOK = "05-martians-and-rp_filter.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--disable-quic"]


def chromium_path() -> str | None:
    for candidate in ("chromium-headless-shell", "chromium"):
        for path in (shutil.which(candidate), f"/usr/bin/{candidate}",
                     f"/usr/lib/chromium/{candidate}"):
            if path and os.access(path, os.X_OK):
                return path
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status


def lab_command(port: int, token: str, root_dir: Path) -> list[str]:
    """The JupyterLab command line ``make lab`` uses, on a test port with a known token."""
    jupyter = VENV_BIN / "jupyter" if (VENV_BIN / "jupyter").exists() else "jupyter"
    return [str(jupyter), "lab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root_dir}",
            f"--LabApp.app_settings_dir={LAB_SETTINGS}", "--LabApp.news_url=None"]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("jupyterlab")
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    env.pop("TUNLAB_PRETEND_UNPRIVILEGED", None)
    # A copy of the lessons: JupyterLab saves an open notebook every two minutes, and the
    # shipped ones must stay as they are (no outputs, `answer = None`).
    lessons = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", lessons, ignore=shutil.ignore_patterns(".*"))
    shipped = {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    log_path = tmp / "jupyterlab.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in finally
    before = set(netns.list_lab_namespaces())
    process = subprocess.Popen(lab_command(port, token, lessons), env=env, stdout=log,
                               stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/api/status?token={token}") == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield {"base": base, "token": token, "log": str(log_path)}
    finally:
        try:
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}",
                                             method="POST")
            urllib.request.urlopen(request, timeout=10).close()
        except OSError:
            pass
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
    # JupyterLab shut its kernels down, and with them the lessons' labs.
    deadline = time.monotonic() + 10
    while set(netns.list_lab_namespaces()) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(netns.list_lab_namespaces()) <= before, "a lesson's lab outlived JupyterLab"
    assert {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")} == shipped, \
        "the browser session changed a shipped notebook"


@pytest.fixture
def page(jupyterlab):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        pytest.fail("no chromium: apt-get install chromium-headless-shell (or chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 1250},
                                          device_scale_factor=1)
            yield context.new_page()
        finally:
            browser.close()


def wait_idle(page, timeout: float = 120_000) -> None:
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=timeout)


def wait_kernel_ready(jupyterlab: dict[str, str], notebook: str, timeout: float = 120) -> None:
    """Until the server reports the notebook's kernel started and idle (REST /api/sessions).

    The page's execution indicator says "idle" before the kernel is connected; Run All in that
    moment asks which kernel to start (seen on a loaded machine).
    """
    url = f"{jupyterlab['base']}/api/sessions?token={jupyterlab['token']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as response:
            sessions = json.load(response)
        if any(s["path"].endswith(notebook) and s.get("kernel")
               and s["kernel"].get("execution_state") == "idle" for s in sessions):
            return
        time.sleep(0.5)
    raise AssertionError(f"the kernel of {notebook} did not become idle in {timeout:.0f} s")


def run_all_cells(page) -> None:
    """Run > Run All Cells, the way a participant does it (accepting the kernel JupyterLab
    proposes, should it still ask)."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    try:
        dialog.wait_for(timeout=3_000)
    except Exception:  # no dialog: the usual case
        return
    dialog.locator("button.jp-mod-accept").click()


def test_martians_lesson_in_a_real_browser(jupyterlab, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{jupyterlab['base']}/lab/tree/{NOTEBOOK}?token={jupyterlab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    wait_idle(page)
    wait_kernel_ready(jupyterlab, NOTEBOOK)
    # more room for the lesson: fold the file browser away
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()
    run_all_cells(page)
    finish = page.locator(".jp-Cell", has_text="lesson.finish()").last
    try:
        finish.locator(".jp-OutputArea-output").wait_for(timeout=120_000)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "05-martians-timeout.png"), full_page=True)
        raise
    wait_idle(page)
    assert "Lab removed" in finish.inner_text()
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert page.locator(".jp-OutputArea-output .jp-RenderedText[data-mime-type="
                        "'application/vnd.jupyter.error']").count() == 0, errors.all_inner_texts()

    builder = page.locator(".tunlab-packet-builder").first
    builder.scroll_into_view_if_needed()
    result = builder.locator(".tunlab-result")
    assert "forwarded" in result.inner_text()  # 10.0.2.33 under strict rp_filter
    builder.locator(".tunlab-src input").fill("200.1.2.3")
    builder.locator(".tunlab-src input").press("Tab")
    builder.locator("button.tunlab-send").click()
    page.wait_for_function(
        "el => el.innerText.includes('IP_RPFILTER')", arg=result.element_handle(),
        timeout=30_000)
    text = result.inner_text()
    assert "dropped" in text and "IP_RPFILTER" in text
    assert "martian source 10.0.0.2 from 200.1.2.3" in text
    page.wait_for_timeout(500)  # the path figure is updated right after the verdict

    cell = page.locator(".jp-Cell", has=builder).first
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "05-martians-send.png"))
    cell.screenshot(path=str(ARTIFACTS / "05-martians-builder.png"))
    assert (ARTIFACTS / "05-martians-builder.png").stat().st_size > 20_000
    if os.environ.get("TUNLAB_UPDATE_README_IMAGE") == "1":
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        cell.screenshot(path=str(README_IMAGE))
