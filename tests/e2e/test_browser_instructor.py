"""The instructor's flows in a real JupyterLab (loopback only) in headless Chromium, lesson by
lesson, on a copy made with ``tunlab notebooks DIR`` (never the shipped files):

1. Run > Run All Cells, wait until every cell ran and the kernel is idle;
2. use each lab widget of the lesson in the page (its buttons, and the field the lesson says
   to try) and read what the page shows: the widget's answer and figure appear, and nowhere in
   the page is a traceback, a stderr output, a widget error line or an error in JupyterLab's
   log console (View > Show Log Console) or an uncaught script error;
3. lesson 08: stop the tunnel, start it again, and the panel says a ping crossed it;
4. *reset lab*: the panel names the fresh namespaces (they exist and belong to this kernel),
   the next action answers again, the kernel is the same (same id and pid, and a cell run
   afterwards continues the execution count and sees the new lab generation);
5. *presenter mode*, switched on with the panel's button as an instructor does, measured in
   the page at 100 % zoom (device pixel ratio 1): every visible text of every widget and of
   every output is at least 16 CSS px (``getComputedStyle(el).fontSize`` of the element that
   holds each text node, and of every input/select/button), and each figure drawn after the
   switch has text of at least 16 CSS px.

How figure text is measured. The figures are PNG images, whose text the page cannot style or
query, so the size a viewer sees is computed from three facts, two of them measured in the
page: (a) the PNG's resolution, read from its ``pHYs`` chunk (the dots per inch matplotlib
rendered at), fetched from the very ``<img>`` the page shows; (b) the scale the page draws it
at: the element's CSS width (``getBoundingClientRect``) divided by the image's natural pixel
width; (c) the smallest font size of the figure's texts in points, which
:func:`tunlab.course.plots.render` writes into the PNG (``tEXt`` chunk ``tunlab:smallest-text-pt``),
computed from the figure's own Text artists when it was drawn. Then
``css px = points / 72 * dpi * (css width / natural width)``. High DPI is checked directly:
natural width / CSS width >= 2 (two device pixels per CSS pixel). A figure that the page
squeezes (a ``max-width`` or a narrow box) fails (b), one drawn small fails (c), one drawn at a
low resolution fails the HiDPI check. SVG figures, if a lesson shows any, are measured like
HTML text: the computed font size of each ``<text>`` times the SVG's CSS scale.

The widgets used, lesson by lesson: 00 the doctor's *run the checks again*; 01 and 09 the
reader with IFF_NO_PI ticked and unticked (84 and 88 bytes); 02 ``ip route get`` for 10.0.0.1,
8.8.8.8 (no route, the old figure goes) and 10.0.0.2; 03 a 200-byte ping captured (a 228-byte
DATA frame); 04 pings to 10.0.0.77, 10.0.2.1 and 10.0.0.2; 05 the packet builder from
200.1.2.3 (IP_RPFILTER); 06 the builder's IP_NOPROTO packet; 07 the four fixes ticked (reply
received), then a ping from 198.18.0.1; 08 start, iperf3 for 1 s, stop, start. In every lesson
also the *kernel log* view (05: the martian lines of its Run All) and the hint box.

All lessons share one JupyterLab and one Chromium; each lesson has its own tab and workspace,
and Run All starts up to ``TUNLAB_BROWSER_AHEAD`` (default 3) lessons ahead, so that kernels
work while the test clicks. Each lesson's kernel is shut down when its test ends, and its labs
must be gone with it.

Screenshots: one per lesson (after its widgets were used, in presenter mode) in
``$TUNLAB_ARTIFACTS`` (default: a pytest temporary folder; its path is printed). ``artifacts/``
in the checkout is git-ignored: ``TUNLAB_ARTIFACTS=artifacts/instructor`` keeps them there.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import browserlab
import pytest

from tunlab.kernel import netns

# one lesson: Run All (up to two minutes on a loaded machine) and the clicks
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
LESSONS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
MIN_PX = 16.0
PX_TOLERANCE = 0.05  # a figure's CSS width is its pixel width // 2: at most half a pixel off
ACTION_MS = 90_000  # one click's answer (a lab rebuilt after Run All, a tunnel restarted)


# -- server, browser, artifacts (one JupyterLab and one Chromium for every lesson) -------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    given = os.environ.get("TUNLAB_ARTIFACTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("instructor-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder.resolve()}")
    return folder


@pytest.fixture(scope="module")
def jupyterlab(browser: str, tmp_path_factory) -> Iterator[browserlab.JupyterLab]:
    tmp = tmp_path_factory.mktemp("jupyterlab-instructor")
    shipped = {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    lessons = browserlab.copy_lessons(tmp / "course")
    with browserlab.running_jupyterlab(lessons, tmp) as lab:
        yield lab
    assert {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")} == shipped, \
        "the browser session changed a shipped notebook"


@pytest.fixture(scope="module")
def course(jupyterlab, request) -> Iterator[Course]:
    """Every lesson in its own tab; Run All starts a few lessons ahead of the one tested
    (``TUNLAB_BROWSER_AHEAD``, default 3; only lessons this session tests)."""
    selected = [item.callspec.params["notebook"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")
                and "notebook" in item.callspec.params]
    with browserlab.chromium_context() as context:
        course = Course(context, jupyterlab, selected or LESSONS)
        try:
            yield course
        finally:
            for lesson in list(course.started.values()):
                with contextlib.suppress(Exception):
                    close_lesson(lesson)


# -- what the page shows -----------------------------------------------------------------------

ERRORS_JS = r"""() => {
  const found = [];
  const text = el => (el.innerText || '').trim().slice(0, 600);
  for (const el of document.querySelectorAll(
      ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], " +
      ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"))
    found.push('output: ' + text(el));
  for (const el of document.querySelectorAll('.tunlab-error'))
    if (text(el)) found.push('widget error line: ' + text(el));
  for (const el of document.querySelectorAll('.jp-OutputArea-output, .jupyter-widgets')) {
    const t = text(el);
    if (/Traceback \(most recent call last\)|Error displaying widget|Failed to load model/.test(t))
      found.push('in page: ' + t);
  }
  for (const el of document.querySelectorAll('.jp-Dialog'))
    found.push('dialog: ' + text(el));
  return [...new Set(found)];
}"""

TEXT_SIZES_JS = r"""(selector) => {
  const seen = new Set(), sizes = [];
  const visible = el => el.getClientRects().length > 0 &&
      getComputedStyle(el).visibility !== 'hidden';
  const note = (el, what) => {
    if (seen.has(el) || !visible(el)) return;
    seen.add(el);
    sizes.push({px: parseFloat(getComputedStyle(el).fontSize), what: what.slice(0, 50),
                tag: el.tagName, cls: String(el.className).slice(0, 80)});
  };
  for (const root of document.querySelectorAll(selector)) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const node = walker.currentNode, el = node.parentElement;
      if (!node.textContent.trim() || !el || ['STYLE', 'SCRIPT'].includes(el.tagName)) continue;
      note(el, node.textContent.trim());
    }
    for (const el of root.querySelectorAll('input, select, textarea, button'))
      note(el, el.value || el.innerText || el.tagName);
    for (const svgText of root.querySelectorAll('svg text')) {
      const svg = svgText.ownerSVGElement, box = svg.getBoundingClientRect();
      const scale = svg.viewBox.baseVal && svg.viewBox.baseVal.width ?
          box.width / svg.viewBox.baseVal.width : 1;
      if (!seen.has(svgText) && visible(svgText)) {
        seen.add(svgText);
        sizes.push({px: parseFloat(getComputedStyle(svgText).fontSize) * scale,
                    what: 'svg: ' + svgText.textContent.slice(0, 40), tag: 'text', cls: ''});
      }
    }
  }
  return sizes;
}"""

IMAGES_JS = r"""async (root) => {
  const out = [];
  for (const img of root.querySelectorAll('img')) {
    if (!img.getClientRects().length || !img.naturalWidth) continue;
    const box = img.getBoundingClientRect();
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let binary = '';
    for (let i = 0; i < bytes.length; i += 8192)
      binary += String.fromCharCode(...bytes.subarray(i, i + 8192));
    out.push({natural: img.naturalWidth, css: box.width, png: btoa(binary)});
  }
  return out;
}"""


IMAGE_SHOWN_JS = ("els => els.some(e => e.getClientRects().length > 0 && e.naturalWidth > 0 "
                  "&& e.complete && getComputedStyle(e).display !== 'none')")


def page_errors(page: Any) -> list[str]:
    return page.evaluate(ERRORS_JS) + [f"script error: {e}" for e in page.script_errors]


def assert_no_errors(page: Any, where: str) -> None:
    errors = page_errors(page)
    assert not errors, f"{where}: " + "\n".join(errors)


def png_chunks(png: bytes) -> dict[str, list[bytes]]:
    """The chunks of a PNG by type (what a viewer reads from the file)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks: dict[str, list[bytes]] = {}
    pos = 8
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunks.setdefault(kind.decode("latin-1"), []).append(png[pos + 8:pos + 8 + length])
        pos += 12 + length
    return chunks


@dataclass
class FigureSize:
    """One figure as the page shows it."""

    dpi: float
    scale: float  # CSS px per image px
    smallest_pt: float

    @property
    def device_px_per_css_px(self) -> float:
        return 1 / self.scale

    @property
    def smallest_css_px(self) -> float:
        return self.smallest_pt / 72 * self.dpi * self.scale


def figure_size(natural: int, css: float, png: bytes) -> FigureSize:
    chunks = png_chunks(png)
    assert "pHYs" in chunks, "the PNG does not say its resolution"
    ppm_x, _ppm_y, unit = struct.unpack(">IIB", chunks["pHYs"][0])
    assert unit == 1, "pHYs without a unit"
    texts = dict(chunk.split(b"\0", 1) for chunk in chunks.get("tEXt", []))
    assert b"tunlab:smallest-text-pt" in texts, "the PNG does not carry its smallest text size"
    return FigureSize(dpi=ppm_x * 0.0254, scale=css / natural,
                      smallest_pt=float(texts[b"tunlab:smallest-text-pt"]))


# -- a lesson in the page ----------------------------------------------------------------------

@dataclass
class Lesson:
    """One lesson's notebook open in the page, with its kernel."""

    page: Any
    lab: browserlab.JupyterLab
    notebook: str
    kernel_id: str = ""
    kernel_pid: int = 0
    started: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.notebook[:2]

    def panels(self) -> Any:
        """Every lab panel in the page: a widget box whose last part is the lab bar."""
        return self.page.locator(".jupyter-widgets.widget-vbox:has(> .tunlab-lab-bar)")

    def panel(self, button_text: str) -> Any:
        """The panel that has a button labelled ``button_text``."""
        return self.panels().filter(has=self.page.locator(
            "button", has_text=re.compile(rf"^\s*{re.escape(button_text)}\s*$"))).first

    def click(self, panel: Any, label: str) -> None:
        button = panel.locator("button", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
        button.first.scroll_into_view_if_needed()
        button.first.click()

    def wait_text(self, locator: Any, pattern: str, timeout: float = ACTION_MS) -> str:
        """Until ``locator``'s text matches ``pattern`` (a regular expression); its text."""
        try:
            self.page.wait_for_function(
                "([el, p]) => new RegExp(p).test(el.innerText)",
                arg=[locator.element_handle(timeout=timeout), pattern], timeout=timeout)
        except Exception as exc:
            errors = page_errors(self.page)
            raise AssertionError(f"lesson {self.key}: /{pattern}/ never appeared in "
                                 f"{locator.inner_text()[:1500]!r}; errors: {errors}") from exc
        return locator.inner_text()

    def fill(self, panel: Any, description: str, value: str) -> None:
        """Type ``value`` into the text field labelled ``description`` and press Enter."""
        field_ = panel.locator(".widget-text, .widget-combobox").filter(
            has=self.page.locator("label", has_text=description)).locator("input").first
        field_.scroll_into_view_if_needed()
        field_.fill(value)
        field_.press("Enter")

    def slide(self, panel: Any, description: str, value: int) -> None:
        """Set the slider labelled ``description`` by typing into its readout."""
        readout = panel.locator(".widget-slider").filter(
            has=self.page.locator("label", has_text=description)).locator(".widget-readout")
        readout.scroll_into_view_if_needed()
        readout.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(str(value))
        self.page.keyboard.press("Enter")
        self.wait_text(readout, rf"^\s*{value}\s*$", 10_000)

    def image_shown(self, panel: Any) -> bool:
        return panel.locator(".widget-image").evaluate_all(IMAGE_SHOWN_JS)

    def images_state(self, panel: Any) -> list[Any]:
        return panel.locator(".widget-image").evaluate_all(
            "els => els.map(e => [e.getAttribute('style'), getComputedStyle(e).display, "
            "e.naturalWidth, e.src])")

    def wait_image(self, panel: Any, shown: bool = True, timeout: float = 30_000) -> None:
        """Until the panel shows a figure (it is drawn right after the text answer), or,
        with ``shown=False``, none (widget models update one by one: the image may follow
        the text by a moment, never by seconds)."""
        negate = "" if shown else "!"
        try:
            self.page.wait_for_function(
                f"el => {negate}({IMAGE_SHOWN_JS})([...el.querySelectorAll('.widget-image')])",
                arg=panel.element_handle(), timeout=timeout if shown else 5_000)
        except Exception as exc:
            state = "no figure" if shown else f"a stale figure: {self.images_state(panel)}"
            raise AssertionError(f"lesson {self.key}: the panel shows {state}") from exc


class Course:
    """The lessons' tabs: each opens its notebook in its own JupyterLab workspace and runs all
    cells; up to ``AHEAD`` lessons run at once, so that one lesson's kernel works while the
    test uses the widgets of another."""

    AHEAD = int(os.environ.get("TUNLAB_BROWSER_AHEAD", "3"))

    def __init__(self, context: Any, lab: browserlab.JupyterLab, order: list[str]) -> None:
        self.context = context
        self.lab = lab
        self.order = order
        self.started: dict[str, Lesson] = {}

    def lesson(self, notebook: str) -> Lesson:
        """``notebook``'s tab once Run All finished in it (the next lessons already run)."""
        index = self.order.index(notebook) if notebook in self.order else 0
        for ahead in [notebook, *self.order[index + 1:index + self.AHEAD]]:
            if ahead not in self.started:
                self.started[ahead] = start_lesson(self.context, self.lab, ahead)
        lesson = self.started[notebook]
        lesson.page.bring_to_front()
        wait_run_all(lesson)
        return lesson


def start_lesson(context: Any, lab: browserlab.JupyterLab, notebook: str) -> Lesson:
    """A new tab on ``notebook`` (its own workspace), kernel connected, Run All pressed."""
    page = context.new_page()
    page.script_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.script_errors.append(str(exc)))
    lesson = Lesson(page, lab, notebook)
    workspace = re.sub(r"\W", "", notebook[:2]) or "lesson"
    page.goto(lab.url(f"lab/workspaces/w{workspace}/tree/{notebook}?reset"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    browserlab.wait_idle(page)
    session = browserlab.wait_kernel_ready(lab, notebook)
    lesson.kernel_id = session["kernel"]["id"]
    lesson.kernel_pid = kernel_pid_of(lesson, lab.kernel_pids())
    lesson.started = time.monotonic()
    # more room for the lesson: fold the file browser away
    tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if tab.count():
        tab.first.click()
    browserlab.run_all_cells(page)
    return lesson


def wait_run_all(lesson: Lesson) -> None:
    """Until every code cell ran (a number in each prompt, none "[*]") and the kernel idles."""
    page = lesson.page
    page.wait_for_function(r"""() => {
        const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
        return prompts.length > 0 && prompts.every(p => /\[\d+\]/.test(p.innerText));
    }""", timeout=600_000)
    browserlab.wait_idle(page)
    lesson.notes.append(f"Run All {time.monotonic() - lesson.started:.0f} s")


def kernel_pid_of(lesson: Lesson, pids: set[int]) -> int:
    """The pid of the lesson's kernel: the server's child whose command line names its id."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if lesson.kernel_id.encode() in cmdline:
            return pid
    raise AssertionError(f"no kernel process for {lesson.kernel_id} among {pids}")


def execution_counts(page: Any) -> list[int]:
    return [int(m) for m in re.findall(r"\[(\d+)\]", " ".join(
        page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()))]


def run_new_cell(lesson: Lesson, code: str) -> tuple[int, str]:
    """Append a code cell at the end (as an instructor types one), run it; its execution
    count and output text."""
    page = lesson.page
    cells = page.locator(".jp-Notebook .jp-Cell")
    last = cells.last
    last.scroll_into_view_if_needed()
    last.locator(".jp-InputArea-prompt").first.click()  # select the cell (command mode)
    page.keyboard.press("Escape")
    index = cells.count()
    page.keyboard.press("b")  # a new cell below, in command mode
    new = cells.nth(index)  # (Shift+Enter on the last cell adds one more after it)
    new.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "el => /\\[\\d+\\]/.test(el.innerText)",
        arg=new.locator(".jp-InputArea-prompt").element_handle(), timeout=60_000)
    browserlab.wait_idle(page)
    count = int(re.search(r"\[(\d+)\]", new.locator(".jp-InputArea-prompt").inner_text())[1])
    return count, new.locator(".jp-OutputArea").inner_text()


# -- each lesson's widgets, used as the lesson says ---------------------------------------------

def use_00(lesson: Lesson) -> Any:
    panel = lesson.panel("run the checks again")
    lesson.click(panel, "run the checks again")
    lesson.wait_text(panel, r"\d+ of \d+ checks pass")
    return panel


def use_reader(lesson: Lesson) -> Any:
    panel = lesson.panel("ping 10.0.0.2, read()")
    checkbox = panel.locator(".widget-checkbox", has_text="IFF_NO_PI").locator("input")
    checkbox.check()  # (lesson 01's Run All left it unticked)
    lesson.click(panel, "ping 10.0.0.2, read()")
    lesson.wait_text(panel, r"read\(\) returned 84 bytes[\s\S]*first nibble 4")
    lesson.wait_image(panel)
    checkbox.uncheck()  # the pitfall the lesson asks to try
    lesson.click(panel, "ping 10.0.0.2, read()")
    lesson.wait_text(panel, r"read\(\) returned 88 bytes[\s\S]*not IPv4")
    checkbox.check()
    lesson.click(panel, "ping 10.0.0.2, read()")
    lesson.wait_text(panel, r"read\(\) returned 84 bytes")
    return panel


def use_02(lesson: Lesson) -> Any:
    panel = lesson.panel("ip route get")
    lesson.fill(panel, "address", "10.0.0.1")
    lesson.click(panel, "ip route get")
    lesson.wait_text(panel, r"local 10\.0\.0\.1 dev lo")
    lesson.wait_image(panel)
    lesson.fill(panel, "address", "8.8.8.8")
    lesson.click(panel, "ip route get")
    lesson.wait_text(panel, r"no route")
    lesson.wait_image(panel, shown=False)  # the figure of 10.0.0.1 must go
    lesson.fill(panel, "address", "10.0.0.2")
    lesson.click(panel, "ip route get")
    lesson.wait_text(panel, r"10\.0\.0\.2 dev mytun")
    lesson.wait_image(panel)
    return panel


def use_03(lesson: Lesson) -> Any:
    panel = lesson.panel("ping 10.0.0.2 + capture")
    lesson.slide(panel, "ping -s", 200)
    lesson.click(panel, "ping 10.0.0.2 + capture")
    # 200 bytes of payload + 8 (ICMP) + 20 (IPv4) = a 228-byte packet in a DATA frame
    text = lesson.wait_text(panel, r"tunlab frame\(s\) in the capture[\s\S]*TunlabFrame")
    assert re.search(r"DATA\s+len=228", text), text
    lesson.wait_image(panel)
    return panel


def use_04(lesson: Lesson) -> Any:
    panel = lesson.panel("ping -c1")
    lesson.fill(panel, "ping", "10.0.0.77")
    lesson.click(panel, "ping -c1")
    lesson.wait_text(panel, r"hop by hop[\s\S]*ping -c1 10\.0\.0\.77[\s\S]*vpn-server wrote")
    lesson.wait_image(panel)
    lesson.fill(panel, "ping", "10.0.2.1")  # mytun2's own address: answered through lo
    lesson.click(panel, "ping -c1")
    lesson.wait_text(panel, r"ping -c1 10\.0\.2\.1 exit code 0 \(a reply came back\)")
    lesson.wait_image(panel)
    lesson.fill(panel, "ping", "10.0.0.2")
    lesson.click(panel, "ping -c1")
    lesson.wait_text(panel, r"ping -c1 10\.0\.0\.2[\s\S]*vpn-server wrote [1-9]")
    return panel


def use_builder(src: str, expect: str) -> Callable[[Lesson], Any]:
    def use(lesson: Lesson) -> Any:
        panel = lesson.panel("Send")
        if src:
            lesson.fill(panel, "source IP", src)
        lesson.click(panel, "Send")
        lesson.wait_text(panel.locator(".tunlab-result"), expect)
        lesson.wait_image(panel)
        return panel
    return use


def use_07(lesson: Lesson) -> Any:
    panel = lesson.panel("ping 192.168.50.2 from a")
    for name in ("a: ip route add", "b: sysctl -w net.ipv4.ip_forward", "b: nft: accept",
                 "c: ip route add"):
        panel.locator(".widget-checkbox", has_text=name).locator("input").check()
    lesson.click(panel, "ping 192.168.50.2 from a")
    lesson.wait_text(panel, r"reply received")
    lesson.wait_image(panel)
    lesson.fill(panel, "ping -I", "198.18.0.1")  # the lesson: try another source
    lesson.click(panel, "ping 192.168.50.2 from a")
    lesson.wait_text(panel, r"(reply received|no reply) \(from 198\.18\.0\.1\)")
    return panel


def use_08(lesson: Lesson) -> Any:
    panel = lesson.panel("start tunnel")
    status = r"tunnel running[\s\S]*ping 10\.9\.0\.2 through it: answered"
    lesson.click(panel, "start tunnel")
    lesson.wait_text(panel, status)
    lesson.slide(panel, "iperf3 s", 1)
    lesson.click(panel, "iperf3 through tunnel")
    lesson.wait_text(panel, r"Mbit/s through the tunnel")
    lesson.click(panel, "stop tunnel")
    lesson.wait_text(panel, r"tunnel stopped")
    lesson.click(panel, "start tunnel")  # issue 13: this did nothing
    lesson.wait_text(panel, status)
    lesson.wait_image(panel)
    return panel


USE: dict[str, Callable[[Lesson], Any]] = {
    "00": use_00, "01": use_reader, "02": use_02, "03": use_03, "04": use_04,
    "05": use_builder("200.1.2.3", r"dropped[\s\S]*IP_RPFILTER"),
    "06": use_builder("", r"dropped[\s\S]*IP_NOPROTO"),
    "07": use_07, "08": use_08, "09": use_reader,
}
AGAIN: dict[str, tuple[str, str]] = {  # after reset lab: the main button, and its answer
    "00": ("run the checks again", r"\d+ of \d+ checks pass"),
    "01": ("ping 10.0.0.2, read()", r"read\(\) returned \d+ bytes"),
    "02": ("ip route get", r"ip route get 10\.0\.0\.2[\s\S]*dev mytun"),
    "03": ("ping 10.0.0.2 + capture", r"tunlab frame\(s\) in the capture"),
    "04": ("ping -c1", r"hop by hop"),
    "05": ("Send", r"IP_RPFILTER"),
    "06": ("Send", r"IP_NOPROTO"),
    "07": ("ping 192.168.50.2 from a", r"no reply"),  # a fresh lab has none of the fixes
    "08": ("start tunnel", r"ping 10\.9\.0\.2 through it: answered"),
    "09": ("ping 10.0.0.2, read()", r"read\(\) returned \d+ bytes"),
}


def use_common(lesson: Lesson, panel: Any) -> None:
    """What every lesson has: the kernel log view of a panel's bar, and the hint box."""
    lesson.click(panel, "kernel log")
    view = panel.locator(".tunlab-kernel-log")
    expect = r"martian source" if lesson.key == "05" else r"martian|no martian lines yet"
    lesson.wait_text(view, expect)  # 05 logged martians (log_martians=1) in Run All
    lesson.click(view, "read the kernel log")
    lesson.wait_text(view, expect)
    lesson.click(panel, "kernel log")  # hides it again
    lesson.page.wait_for_function("el => !el.querySelector('.tunlab-kernel-log')",
                                  arg=panel.element_handle(), timeout=30_000)
    hints = lesson.page.locator(".tunlab-hints")
    if hints.count():
        box = hints.first
        button = box.locator("button")
        total = re.search(r"of (\d+)", button.inner_text())
        assert total, button.inner_text()
        button.scroll_into_view_if_needed()
        button.click()
        lesson.wait_text(box, rf"(?=[\s\S]*Hint 1 of {total[1]})"
                              rf"(?=[\s\S]*show hint 2 of {total[1]})")


# -- the flows ---------------------------------------------------------------------------------

def reset_lab(lesson: Lesson, panel: Any) -> None:
    """Press *reset lab*: fresh namespaces of the same kernel, the next action answers."""
    before = set(browserlab.lab_namespaces_of({lesson.kernel_pid}))
    counts = execution_counts(lesson.page)
    lesson.click(panel, "reset lab")
    status = lesson.wait_text(panel.locator(".tunlab-lab-bar"),
                              r"fresh lab: tunlab-|panel reset")
    named = re.findall(r"tunlab-[\w-]+", status)
    now = set(browserlab.lab_namespaces_of({lesson.kernel_pid}))
    assert named, f"reset lab did not name the new lab: {status!r}"
    assert set(named) <= now, f"the namespaces the panel names are not there: {named}, {now}"
    assert not set(named) & before, "reset lab kept the old namespaces"
    button, answer = AGAIN[lesson.key]
    lesson.click(panel, button)
    lesson.wait_text(panel, answer)
    session = lesson.lab.session(lesson.notebook)
    assert session is not None and session["kernel"]["id"] == lesson.kernel_id, \
        "the kernel changed"
    assert Path(f"/proc/{lesson.kernel_pid}").exists(), "the kernel process is gone"
    count, output = run_new_cell(lesson, "print('generation', lesson.generation, "
                                 "'ready', lesson.lab_ready)")
    assert count == max(counts) + 1, f"execution count {count} after {max(counts)}: restarted?"
    generation = re.search(r"generation (\d+) ready (\w+)", output)
    assert generation and int(generation[1]) >= 2 and generation[2] == "True", output
    lesson.notes.append(f"reset lab: {sorted(named)}, next cell [{count}], {generation[0]}")


def presenter_mode(lesson: Lesson, panel: Any) -> None:
    """Switch presenter mode on with the panel's button and measure text in the page."""
    page = lesson.page
    assert page.evaluate("window.devicePixelRatio") == 1, "not at 100 % zoom"
    had_figure = lesson.image_shown(panel)
    old = panel.locator(".widget-image").evaluate_all("els => els.map(e => e.src)")
    lesson.click(panel, "presenter mode")
    lesson.wait_text(panel.locator(".tunlab-lab-bar"), r"presenter mode on")
    if had_figure:  # the panel redraws its current figure, large and sharp
        page.wait_for_function(
            "([el, old]) => [...el.querySelectorAll('.widget-image')].some("
            "e => e.src && !old.includes(e.src) && e.naturalWidth > 0 && e.complete)",
            arg=[panel.element_handle(), old], timeout=30_000)
    page.wait_for_timeout(300)  # styles applied, images decoded
    sizes = page.evaluate(TEXT_SIZES_JS, ".jp-OutputArea-output")
    assert sizes, "no text measured"
    small = [s for s in sizes if s["px"] < MIN_PX]
    assert not small, f"text under {MIN_PX} px in presenter mode: {small[:10]}"
    smallest = min(s["px"] for s in sizes)
    note = f"presenter: {len(sizes)} texts, smallest {smallest:.1f} px"
    if had_figure:
        figures = panel.evaluate(IMAGES_JS)
        assert figures, "the panel's figure is gone in presenter mode"
        for shown in figures:
            size = figure_size(shown["natural"], shown["css"], base64.b64decode(shown["png"]))
            assert size.device_px_per_css_px >= 2 - 0.01, \
                f"figure not high-DPI: {shown['natural']} px shown {shown['css']:.0f} px wide"
            assert size.smallest_css_px >= MIN_PX - PX_TOLERANCE, \
                f"figure text {size.smallest_css_px:.2f} px: {size}"
            note += (f"; figure {size.smallest_pt:.1f} pt at {size.dpi:.0f} dpi shown "
                     f"{shown['css']:.0f}/{shown['natural']} px -> {size.smallest_css_px:.2f}"
                     f" CSS px")
    lesson.notes.append(note)


def log_console_errors(page: Any) -> list[str]:
    """Open View > Show Log Console and read its error-level entries."""
    page.locator(".lm-MenuBar-item", has_text="View").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Show Log Console$")).click()
    console = page.locator(".jp-LogConsole").first
    console.wait_for(timeout=10_000)
    page.wait_for_timeout(300)
    return console.locator(".jp-OutputArea-output, .jp-LogConsoleListPlaceholder") \
        .evaluate_all("els => els.map(e => e.innerText)") if console.count() else []


@pytest.mark.parametrize("notebook", LESSONS, ids=[n[:-6] for n in LESSONS])
def test_instructor_flows_in_a_real_browser(notebook, course, artifacts):
    started = time.monotonic()
    lesson = course.lesson(notebook)
    page = lesson.page
    try:
        assert_no_errors(page, "after Run All")
        panel = USE[lesson.key](lesson)
        use_common(lesson, panel)
        assert_no_errors(page, "after using the widgets")
        reset_lab(lesson, panel)
        assert_no_errors(page, "after reset lab")
        presenter_mode(lesson, panel)
        panel.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / f"{notebook[:-6]}.png"))
        assert_no_errors(page, "in presenter mode")
        logged = [e for e in log_console_errors(page) if e.strip()
                  and not e.startswith("No log messages")]
        assert not logged, f"JupyterLab's log console: {logged}"
    except BaseException:
        page.screenshot(path=str(artifacts / f"{notebook[:-6]}-failed.png"))
        raise
    finally:
        course.started.pop(notebook, None)
        close_lesson(lesson)
    print(f"\n{notebook}: {time.monotonic() - started:.0f} s; " + "; ".join(lesson.notes))


def close_lesson(lesson: Lesson) -> None:
    """Shut the lesson's kernel down (REST, as closing it does); its labs must go with it."""
    lesson.page.close()
    session = lesson.lab.session(lesson.notebook)
    if session is not None:
        lesson.lab.api(f"sessions/{session['id']}", method="DELETE", timeout=30)
    left = browserlab.wait_gone({lesson.kernel_pid}, 20)
    if left:
        netns.cleanup_stale()
    assert not left, f"the lesson's lab outlived its kernel: {left}"
