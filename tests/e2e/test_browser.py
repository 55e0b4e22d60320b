"""End to end in a real browser: JupyterLab (as ``make lab`` starts it) and headless Chromium
driven by Playwright. Opens lesson 05, runs all cells, types a new source address into the
packet builder, presses Send, and expects the kernel's verdict on the page.

Screenshots: artifacts/browser/*.png (every run); with TUNLAB_UPDATE_README_IMAGE=1 also
docs/img/lesson.png, the README's picture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import browserlab
import pytest
from browserlab import run_all_cells, wait_idle, wait_kernel_ready

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
README_IMAGE = ROOT / "docs" / "img" / "lesson.png"
NOTEBOOK = "05-martians-and-rp_filter.ipynb"


@pytest.fixture(scope="module")
def jupyterlab(browser: str, tmp_path_factory) -> Iterator[browserlab.JupyterLab]:
    tmp = tmp_path_factory.mktemp("jupyterlab")
    # A copy of the lessons: JupyterLab saves an open notebook every two minutes, and the
    # shipped ones must stay as they are (no outputs, `answer = None`).
    shipped = {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    lessons = browserlab.copy_lessons(tmp / "notebooks")
    # JupyterLab shuts its kernels down, and with them the lessons' labs (checked on exit).
    with browserlab.running_jupyterlab(lessons, tmp) as lab:
        yield lab
    assert {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")} == shipped, \
        "the browser session changed a shipped notebook"


@pytest.fixture
def page(jupyterlab):
    with browserlab.chromium_page() as page:
        yield page


def test_martians_lesson_in_a_real_browser(jupyterlab, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(jupyterlab.url(f"lab/tree/{NOTEBOOK}"))
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
