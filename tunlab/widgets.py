"""ipywidgets panels for the lessons. Each panel is an ``ipywidgets.VBox`` to display, and keeps
its last result in attributes (``last_report``, ``last_output``, ``samples``, ...) so that the
handlers can be driven headless: ``panel.send.click()`` or ``panel.src.value = "..."`` fire the
same code a browser click does, and tests assert on those attributes.

Rules kept here: handlers finish within a few seconds (every command has a timeout);
background threads never ``print()`` (they set widget values and attributes); everything a
panel starts (threads, processes, nft rules) stops with :meth:`close`, which the lesson also
calls when the kernel stops.

Every lesson panel is a :class:`LabPanel`: its handlers are guarded (an exception, also one
in a background thread, shows in the panel's error line and in ``panel.errors``), and its
:class:`LabBar` has *reset lab*, *kernel log* and *presenter mode*. A panel never answers
from a lab that is gone: it asks the lesson (``lesson.run``/``lesson.ensure_lab``), which
rebuilds the lab after ``lesson.finish()``; tunnels (:class:`SeedTunnel`) and lesson 07's
scenario restart in the new lab. A figure is hidden as soon as its result is no longer the
current one (new input, error, invalid input).
"""

from __future__ import annotations

import html
import json
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as w

from . import plots
from .drops import counter_delta, snmp_counters
from .errors import TunlabError
from .fate.reasons import COUNTERS
from .measure import lab_iperf3, set_loss
from .vpn_lab import VpnScenario

FateFn = Callable[..., Mapping[str, Any]]

_CSS_BOX = ("border:1px solid #ddd;border-radius:4px;padding:6px 10px;margin-top:4px;"
            "line-height:1.45")


def _pre(text: str) -> str:
    return (f'<pre style="background:#f6f8fa;padding:6px 10px;margin:2px 0;'
            f'white-space:pre-wrap">{html.escape(text)}</pre>')


def _badge(text: str, color: str) -> str:
    return (f'<span class="tunlab-verdict" style="background:{color};color:white;'
            f'border-radius:4px;padding:2px 8px;font-weight:bold">{html.escape(text)}</span>')


VERDICT_COLORS = {"dropped": "#d62728", "delivered": "#2ca02c", "forwarded": "#2ca02c",
                  "not recorded": "#7f7f7f"}


_BORING = ("IpInReceives", "IpOutRequests", "IpOutTransmits")


def _boring_counter(name: str) -> bool:
    """Counters every packet moves (octets, receives): left out of the summary."""
    return (name.startswith("IpExt") or "Octets" in name or name.endswith("_bytes")
            or name in _BORING)


def fate_html(report: Mapping[str, Any], elapsed: float | None = None) -> str:
    """A fate report (``FateReport.to_dict()``) as HTML: verdict, reasons, martians, replies."""
    verdict = str(report.get("verdict", "?"))
    reasons = [str(r) for r in report.get("drop_reasons") or []]
    parts = [_badge(verdict, VERDICT_COLORS.get(verdict, "#1f77b4"))]
    if reasons:
        parts.append(" drop reason: " + ", ".join(
            f'<code class="tunlab-reason">{html.escape(r)}</code>' for r in reasons))
    elif report.get("recorded_drop_reasons"):  # no tracefs here: a root run's, labelled
        parts.append(" drop reason <i>(recorded on a root run, not traced here)</i>: " + ", ".join(
            f"<code>{html.escape(str(r))}</code>" for r in report["recorded_drop_reasons"]))
    if report.get("recorded"):
        parts.append(' <span style="color:#7a5b00">(recorded example, no root here)</span>')
    if elapsed is not None:
        parts.append(f' <span style="color:#888">({elapsed:.1f} s)</span>')
    rows = ["<div>" + "".join(parts) + "</div>"]
    martians = list(report.get("martian_log") or [])
    if martians:
        rows.append("<div><b>kernel log:</b>" + _pre("\n".join(martians)) + "</div>")
    elif report.get("recorded_martian_log"):
        rows.append("<div><b>kernel log</b> <i>(recorded on a root run, not readable here)</i>:"
                    + _pre("\n".join(report["recorded_martian_log"])) + "</div>")
    elif "martian line" in (report.get("missing_evidence") or {}):
        rows.append("<div><b>kernel log:</b> no line this time: the kernel rate-limits martian "
                    "messages (10 per 5 s, machine-wide) and suppressed it</div>")
    replies = list(report.get("replies") or [])
    if replies:
        lines = []
        for r in replies:
            extra = ""
            if r.get("icmp_type") is not None:
                extra = f" icmp type {r.get('icmp_type')} code {r.get('icmp_code')}"
            lines.append(f"{r.get('dev', '?')}: {r.get('src')} -> {r.get('dst')} "
                         f"{r.get('proto', '')}{extra}")
        rows.append("<div><b>replies the kernel sent:</b>" + _pre("\n".join(lines)) + "</div>")
    counters = {k: v for k, v in (report.get("counters") or {}).items()
                if v and not _boring_counter(str(k))}
    if counters:
        rows.append("<div><b>counters that moved:</b> " + ", ".join(
            f"<code>{html.escape(str(k))}</code> +{v}" for k, v in sorted(counters.items()))
            + "</div>")
    firewall = report.get("firewall")
    if firewall:
        rows.append(f"<div><b>firewall:</b> {html.escape(str(firewall.get('text', '')))}</div>")
    explanation = str(report.get("explanation") or "")
    if explanation:
        rows.append(f'<div style="margin-top:4px"><b>why:</b> {html.escape(explanation)}</div>')
    return f'<div class="tunlab-fate" style="{_CSS_BOX}">' + "".join(rows) + "</div>"


def _image(fig: Any | None = None, width: str = "100%") -> w.Image:
    image = w.Image(format="png", layout=w.Layout(width=width, max_width="900px"))
    image._tunlab_width = width  # type: ignore[attr-defined]
    if fig is not None:
        show_figure(image, fig)
    else:
        image.layout.display = "none"
    return image


def show_figure(image: w.Image, fig: Any, dpi: int = 80) -> None:
    """Draw ``fig`` into ``image``; in presenter mode large, sharp and at its natural size."""
    rendered = plots.render(fig, dpi)
    image.value = rendered.png
    if plots.presenter_on():
        image.layout.width = f"{rendered.css_width}px"
        image.layout.max_width = "none"
    else:
        image.layout.width = getattr(image, "_tunlab_width", "100%")
        image.layout.max_width = "900px"
    image.layout.display = None


def clear_figure(image: w.Image | None) -> None:
    """Hide ``image`` so that it never shows a result that is no longer the current one."""
    if image is None:
        return
    image.value = b""
    image.layout.display = "none"


# -- what every lab panel has: an error line, reset lab, the kernel log, presenter mode --------

PRESENTER_CSS = """<style class="tunlab-presenter">
:root { --jp-widgets-font-size: 16px; --jp-content-font-size1: 16px; --jp-code-font-size: 16px;
        --jp-ui-font-size1: 16px; --jp-widgets-inline-height: 36px; }
.jupyter-widgets, .jupyter-widgets *, .jp-RenderedHTMLCommon, .jp-RenderedHTMLCommon *,
.jp-RenderedText pre { font-size: max(16px, 1em) !important; line-height: 1.4; }
.jupyter-widgets.widget-vbox { overflow-x: auto; }
</style>"""
"""Presenter mode's stylesheet: no widget or output text smaller than 16 px."""

_STYLE: list[w.HTML] = []


def presenter_style() -> w.HTML:
    """One shared widget holding the presenter stylesheet (empty when presenter mode is off);
    every panel shows it, so switching it changes every view at once."""
    if not _STYLE:
        _STYLE.append(w.HTML(PRESENTER_CSS if plots.presenter_on() else "",
                             layout=w.Layout(margin="0", height="auto")))
    return _STYLE[0]


def set_presenter(on: bool = True) -> w.HTML:
    """Presenter mode on/off: text of at least 16 px in widgets and outputs, figures large and
    high-DPI from the next drawing on. Returns the stylesheet widget (display it once)."""
    plots.set_presenter(on)
    style = presenter_style()
    style.value = PRESENTER_CSS if on else ""
    return style


def read_kernel_log(pattern: str = "martian", limit: int = 40,
                    path: str = "/dev/kmsg") -> list[str]:
    """The last ``limit`` kernel log lines containing ``pattern``, as ``[seconds] message``.

    The kernel log is the machine's, not a namespace's: martian lines of every lab are here.
    Raises OSError when it cannot be read (it needs root where dmesg is restricted).
    """
    import os

    lines: list[str] = []
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        for _ in range(100_000):  # the ring buffer holds far fewer records
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            except BrokenPipeError:  # a record was overwritten while we read: go on
                continue
            head, _, message = record.partition(";")
            message = message.splitlines()[0].strip() if message else ""
            if pattern and pattern not in message:
                continue
            fields = head.split(",")
            seconds = int(fields[2]) / 1e6 if len(fields) > 2 and fields[2].isdigit() else 0.0
            lines.append(f"[{seconds:12.6f}] {message}")
    finally:
        os.close(fd)
    return lines[-limit:]


class KernelLogView(w.VBox):
    """The kernel's martian lines (``dmesg | grep martian``), for an instructor to show.

    Headless: ``view.refresh_button.click()``, then ``view.lines``.
    """

    def __init__(self, pattern: str = "martian", limit: int = 20) -> None:
        self.pattern = pattern
        self.limit = limit
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.refresh_button = w.Button(description="read the kernel log", icon="refresh",
                                       layout=w.Layout(width="200px"))
        self.text = w.HTML()
        self.refresh_button.on_click(lambda _b: self.refresh())
        super().__init__([w.HBox([self.refresh_button, w.HTML(
            f"last {limit} lines with <code>{html.escape(pattern)}</code> in the kernel log "
            "(<code>journalctl -k -g martian</code>); the log is the machine's, shared by "
            "every namespace")]), self.text])
        self.add_class("tunlab-kernel-log")

    def refresh(self) -> list[str]:
        """Read the log again and show it."""
        try:
            self.lines = read_kernel_log(self.pattern, self.limit)
        except OSError as exc:
            self.lines = []
            self.text.value = (f'<div style="color:#7a5b00">cannot read the kernel log here '
                               f"({html.escape(exc.strerror or str(exc))}): it needs root "
                               "where dmesg is restricted.</div>")
            return self.lines
        body = "\n".join(self.lines) if self.lines else (
            f"(no {self.pattern} lines yet: they appear when log_martians=1 and the kernel "
            "meets a martian packet)")
        self.text.value = _pre(body)
        return self.lines


def kernel_log(pattern: str = "martian", limit: int = 20) -> KernelLogView:
    """A kernel log view, already read once (``widgets.kernel_log()`` in any cell)."""
    view = KernelLogView(pattern, limit)
    view.refresh()
    return view


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    fix = getattr(exc, "fix", "")
    return f"{text} ({fix})" if fix and fix not in text else text


class LabBar(w.VBox):
    """The footer of every lab panel: *reset lab*, *kernel log*, *presenter mode*, and the
    panel's error line (any exception in a handler or a background thread lands there)."""

    def __init__(self, panel: LabPanel) -> None:
        self.panel = panel
        small = w.Layout(width="auto")
        self.reset_button = w.Button(description="reset lab", icon="undo", layout=small,
                                     tooltip="remove the lab's namespaces, build fresh ones "
                                             "and clear this panel (no kernel restart)")
        self.log_button = w.Button(description="kernel log", icon="list", layout=small,
                                   tooltip="show the kernel's martian lines")
        self.presenter_button = w.Button(description="presenter mode", icon="desktop",
                                         layout=small, tooltip="text of 16 px and large, "
                                         "sharp figures, for a projector")
        self.status = w.HTML()
        self.error = w.HTML()
        self.error.add_class("tunlab-error")
        self.log_view: KernelLogView | None = None
        self.log_box = w.VBox()
        self.reset_button.on_click(panel.guarded(lambda _b: panel.reset_lab()))
        self.log_button.on_click(panel.guarded(lambda _b: self.toggle_log()))
        self.presenter_button.on_click(panel.guarded(lambda _b: self.toggle_presenter()))
        super().__init__([self.error, w.HBox([self.reset_button, self.log_button,
                                              self.presenter_button, self.status]),
                          self.log_box, presenter_style()])
        self.add_class("tunlab-lab-bar")

    def show_error(self, text: str) -> None:
        self.error.value = (f'<div style="color:#d62728;border-left:4px solid #d62728;'
                            f'padding:2px 8px"><b>error:</b> {html.escape(text)} '
                            "<i>(press <b>reset lab</b> to start from a fresh lab)</i></div>")

    def clear_error(self) -> None:
        self.error.value = ""

    def toggle_log(self) -> None:
        """Show (and read) or hide the kernel log view."""
        if self.log_view is None or not self.log_box.children:
            self.log_view = self.log_view or KernelLogView()
            self.log_view.refresh()
            self.log_box.children = (self.log_view,)
        else:
            self.log_box.children = ()

    def toggle_presenter(self) -> None:
        on = not plots.presenter_on()
        set_presenter(on)
        self.panel.redraw()
        self.status.value = ("presenter mode on: figures redraw large on the next result"
                             if on else "presenter mode off")


class LabPanel:
    """Mixin for the lessons' panels: the :class:`LabBar`, guarded handlers that show their
    errors in the panel, and a reset that clears what the panel showed.

    Subclasses call :meth:`_setup_panel` in ``__init__`` and put ``self.bar`` last in their
    children; they override :meth:`reset_view` (and :meth:`redraw` when they draw figures).
    """

    lesson: Any
    bar: LabBar
    errors: list[str]
    last_exception: BaseException | None

    def _setup_panel(self, lesson: Any, use_current: bool = True) -> None:
        if lesson is None and use_current:
            from .course import current_lesson

            lesson = current_lesson()
        self.lesson = lesson
        self.errors = []
        self.last_exception = None
        self.bar = LabBar(self)
        if lesson is not None and hasattr(lesson, "on_rebuild"):
            lesson.on_rebuild(self._lab_rebuilt)

    def guarded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as a widget handler: its exceptions are shown in the panel, never lost."""
        def handler(*args: Any) -> Any:
            self.bar.clear_error()
            try:
                return fn(*args)
            except Exception as exc:  # noqa: BLE001 - the panel shows it; the kernel goes on
                self.fail(exc)
                return None
        return handler

    def fail(self, exc: BaseException | str) -> None:
        """Show an error in the panel's error line and remember it (``errors``)."""
        text = exc if isinstance(exc, str) else _error_text(exc)
        if not isinstance(exc, str):
            self.last_exception = exc
        self.errors.append(text)
        self.bar.show_error(text)

    def reset_lab(self) -> None:
        """What *reset lab* does: a fresh lab for the lesson, and a clean panel."""
        if self.lesson is not None and hasattr(self.lesson, "reset"):
            self.lesson.reset()  # calls reset_view of every panel of the lesson
            lab = getattr(self.lesson, "lab", None)
            names = ", ".join(ns.name for ns in getattr(lab, "namespaces", []))
            self.bar.status.value = (f"fresh lab: <code>{html.escape(names)}</code>" if names
                                     else "panel reset (no lab here)")
        else:
            self.reset_view()
            self.bar.status.value = "panel reset"
        self.bar.clear_error()

    def _lab_rebuilt(self, reset: bool) -> None:
        if reset:
            self.reset_view()
        else:
            self.lab_rebuilt()

    def reset_view(self) -> None:
        """Start afresh: forget and hide the results shown (*reset lab* was pressed)."""

    def lab_rebuilt(self) -> None:
        """The lab was rebuilt on demand (after ``lesson.finish()``): results of the old lab
        are gone; settings the participant chose may stay. Default: :meth:`reset_view`."""
        self.reset_view()

    def redraw(self) -> None:
        """Draw the current result again (presenter mode changed)."""


def _invalid(text: str) -> str:
    return (f'<div style="{_CSS_BOX};color:#7a5b00"><b>invalid input:</b> '
            f"{html.escape(text)}</div>")


def _ipv4(value: str) -> str | None:
    """``value`` as a dotted IPv4 address, or None when it is not one."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        return None


def _ip(value: str) -> str | None:
    """``value`` as an IPv4 or IPv6 address, or None when it is neither."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


# -- the packet builder ------------------------------------------------------------------------

class PacketBuilder(LabPanel, w.VBox):
    """Craft one IPv4 or IPv6 packet, choose kernel settings, press Send: the kernel's verdict.

    The packet is written into ``mytun2`` (or ``mytun``) in a fresh namespace of the seed's
    topology, the way the vpn-server releases packets (:func:`tunlab.fate.packet_fate`).
    Without root the recorded verdicts are shown (:func:`tunlab.course.recorded_fate`).

    Headless use: set ``builder.src.value`` etc., call ``builder.send.click()``, read
    ``builder.last_report`` / ``builder.last_params`` / ``builder.result.value``.
    """

    def __init__(self, fate_fn: FateFn | None = None, src: str = "10.0.0.1",
                 dst: str = "10.0.0.2", proto: str | int = "icmp", ttl: int = 64,
                 dport: int = 9, dev: str = "mytun2", ip_forward: bool = True,
                 rp_filter: int = 0, accept_local: bool = False, log_martians: bool = True,
                 firewall: bool = False, show_path: bool = True, lesson: Any = None) -> None:
        if fate_fn is None:
            from .course import fate as fate_fn
        self.fate_fn = fate_fn
        self.last_report: dict[str, Any] | None = None
        self.last_params: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.history: list[tuple[dict[str, Any], dict[str, Any]]] = []
        style = {"description_width": "90px"}
        short = w.Layout(width="230px")
        self.src = w.Text(value=src, description="source IP", style=style, layout=short)
        self.dst = w.Text(value=dst, description="dest IP", style=style, layout=short)
        self.proto = w.Dropdown(options=[("ICMP echo", "icmp"), ("UDP", "udp"), ("TCP SYN", "tcp"),
                                         ("IP proto 253", "253")],
                                value=str(proto), description="protocol", style=style,
                                layout=short)
        self.ttl = w.BoundedIntText(value=ttl, min=0, max=255, description="TTL", style=style,
                                    layout=short)
        self.dport = w.BoundedIntText(value=dport, min=1, max=65535, description="dest port",
                                      style=style, layout=short)
        self.dev = w.Dropdown(options=["mytun2", "mytun", "wan0"], value=dev,
                              description="written to", style=style, layout=short)
        self.ip_forward = w.Checkbox(value=ip_forward, description="ip_forward", indent=False)
        self.rp_filter = w.ToggleButtons(options=[("0 off", 0), ("1 strict", 1), ("2 loose", 2)],
                                         value=rp_filter, style={"button_width": "68px"},
                                         tooltips=["no source check",
                                                   "route back must use the incoming device",
                                                   "any route back will do"])
        self.accept_local = w.Checkbox(value=accept_local, description="accept_local",
                                       indent=False)
        self.log_martians = w.Checkbox(value=log_martians, description="log_martians",
                                       indent=False)
        self.firewall = w.Checkbox(value=firewall, indent=False,
                                   description="host firewall: forward policy drop")
        self.send = w.Button(description="Send", button_style="primary", icon="paper-plane",
                             layout=w.Layout(width="140px"))
        self.status = w.HTML()
        self.result = w.HTML(value='<div style="color:#888">press Send: the kernel answers '
                                   'within a second or two</div>')
        self.path = _image() if show_path else None
        self._setup_panel(lesson)
        self.send.on_click(self.guarded(lambda _button: self.run()))
        packet = w.VBox([w.HTML("<b>packet</b>"), self.src, self.dst, self.proto, self.ttl,
                         self.dport, self.dev])
        rp_row = w.HBox([w.Label("rp_filter", layout=w.Layout(width="70px")), self.rp_filter])
        kernel = w.VBox([w.HTML("<b>kernel settings</b> (net.ipv4.*, in the lab namespace)"),
                         self.ip_forward, rp_row, self.accept_local, self.log_martians,
                         self.firewall, w.HBox([self.send, self.status])],
                        layout=w.Layout(margin="0 0 0 24px"))
        self.proto.observe(self.guarded(lambda change: self._port_enabled()), "value")
        self._port_enabled()
        for control in (self.src, self.dst, self.proto, self.ttl, self.dport, self.dev,
                        self.ip_forward, self.rp_filter, self.accept_local, self.log_martians,
                        self.firewall):
            control.observe(self.guarded(lambda change: self._inputs_changed()), "value")
        children: list[w.Widget] = [w.HBox([packet, kernel]), self.result]
        if self.path is not None:
            children.append(self.path)
        super().__init__([*children, self.bar])
        self.add_class("tunlab-packet-builder")
        for widget, name in ((self.src, "tunlab-src"), (self.dst, "tunlab-dst"),
                             (self.rp_filter, "tunlab-rp-filter"), (self.send, "tunlab-send"),
                             (self.result, "tunlab-result")):
            widget.add_class(name)

    def _port_enabled(self) -> None:
        self.dport.disabled = self.proto.value not in ("udp", "tcp")

    def _inputs_changed(self) -> None:
        """The shown verdict is for other inputs now: say so and hide its figure."""
        if self.last_report is None:
            return
        clear_figure(self.path)
        self.result.value = ('<div style="color:#888">inputs changed: press <b>Send</b> for '
                             "the kernel's verdict on this packet</div>")

    def lab_rebuilt(self) -> None:
        """Nothing to forget: each packet runs in a fresh namespace of its own."""

    def reset_view(self) -> None:
        self.last_report = None
        self.last_params = None
        self.last_error = None
        self.history.clear()
        clear_figure(self.path)
        self.result.value = '<div style="color:#888">press Send: the kernel answers</div>'

    def redraw(self) -> None:
        if self.last_report is not None and self.last_params is not None and \
                self.path is not None:
            p = self.last_params
            show_figure(self.path, plots.fate_path(self.last_report, p["src"], p["dst"],
                                                   p["dev"]))

    def params(self) -> dict[str, Any]:
        """The packet_fate arguments the controls describe."""
        from .course import FORWARD_DROP_RULESET

        proto: str | int = self.proto.value
        if str(proto).isdigit():
            proto = int(proto)
        sysctls = {"net.ipv4.ip_forward": int(self.ip_forward.value),
                   "net.ipv4.conf.all.rp_filter": int(self.rp_filter.value),
                   "net.ipv4.conf.all.accept_local": int(self.accept_local.value),
                   "net.ipv4.conf.all.log_martians": int(self.log_martians.value)}
        if ":" in self.src.value + self.dst.value:  # IPv6: one forwarding switch, no martians
            sysctls = {"net.ipv6.conf.all.forwarding": int(self.ip_forward.value)}
        return {
            "src": self.src.value.strip(), "dst": self.dst.value.strip(), "proto": proto,
            "dport": int(self.dport.value) if proto in ("udp", "tcp") else None,
            "ttl": int(self.ttl.value), "dev": self.dev.value, "sysctls": sysctls,
            "nft_ruleset": FORWARD_DROP_RULESET if self.firewall.value else None,
        }

    def run(self) -> dict[str, Any] | None:
        """Send the packet now (what the button does); returns the report."""
        params = self.params()
        self.last_params = params
        self.last_error = None
        self.last_report = None
        clear_figure(self.path)
        bad = [f"{name} {value!r} is not an IP address (write it like 10.0.2.33 or fd00:2::5)"
               for name, value in (("source", params["src"]), ("destination", params["dst"]))
               if _ip(value) is None]
        if not bad and (":" in params["src"]) != (":" in params["dst"]):
            bad = ["source and destination must both be IPv4 or both IPv6"]
        if bad:
            self.result.value = _invalid("; ".join(bad))
            return None
        self.send.disabled = True
        self.status.value = '<span style="color:#888">asking the kernel…</span>'
        started = time.monotonic()
        try:
            args = dict(params)
            report = dict(self.fate_fn(args.pop("src"), args.pop("dst"), **args))
        except Exception as exc:  # noqa: BLE001 - show it in the panel, keep the widget alive
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_report = None
            self.result.value = ""
            self.fail(exc)
            return None
        finally:
            self.send.disabled = False
            self.status.value = ""
        elapsed = time.monotonic() - started
        self.last_report = report
        self.history.append((params, report))
        self.result.value = fate_html(report, elapsed)
        if self.path is not None:
            show_figure(self.path, plots.fate_path(report, params["src"], params["dst"],
                                                   params["dev"]))
        return report

    def drop_counts(self) -> dict[str, int]:
        """How often each drop reason (or verdict without drop) came back so far."""
        counts: dict[str, int] = {}
        for _params, report in self.history:
            reasons = report.get("drop_reasons") or [str(report.get("verdict", "?"))]
            for reason in reasons:
                counts[str(reason)] = counts.get(str(reason), 0) + 1
        return counts

    def close(self) -> None:  # type: ignore[override]
        """Nothing runs in the background; close the widgets."""
        super().close()


def fate_box(report: Mapping[str, Any] | None) -> w.HTML:
    """One fate report as a widget (see :func:`fate_html`)."""
    if report is None:
        return w.HTML("(no recording: start the lab with <code>sudo make lab</code>)")
    return w.HTML(fate_html(report))


def fate_table(results: Sequence[Sequence[Any]]) -> w.HTML:
    """``[(label, report), ...]`` as one table: verdict, drop reasons, martian log line."""
    rows = []
    for label, report in results:
        verdict = str(report.get("verdict", "?"))
        reasons = ", ".join(report.get("drop_reasons") or []) or "—"
        martian = "<br>".join(html.escape(m) for m in report.get("martian_log") or []) or "—"
        if report.get("recorded_drop_reasons") and reasons == "—":  # labelled: not traced here
            reasons = ", ".join(report["recorded_drop_reasons"]) + " (recorded)"
        if report.get("recorded_martian_log") and martian == "—":
            martian = "<br>".join(html.escape(m) for m in report["recorded_martian_log"]) + \
                " <i>(recorded)</i>"
        rows.append(f"<tr><td><code>{html.escape(str(label))}</code></td>"
                    f"<td>{_badge(verdict, VERDICT_COLORS.get(verdict, '#1f77b4'))}</td>"
                    f"<td><code>{html.escape(reasons)}</code></td><td>{martian}</td></tr>")
    return w.HTML('<table class="tunlab-fate-table"><tr><th>case</th><th>verdict</th>'
                  "<th>drop reasons</th><th>kernel log</th></tr>" + "".join(rows) + "</table>")


def rp_sweep(fate_fn: FateFn, sources: Sequence[str], modes: Sequence[int] = (0, 1, 2),
             dst: str = "10.0.0.2") -> list[tuple[str, dict[str, Any]]]:
    """The released packet from each source, under each rp_filter mode (forwarding and
    martian logging on): ``[("SRC rp_filter=N", report), ...]``."""
    results = []
    for src in sources:
        for mode in modes:
            settings = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": mode,
                        "net.ipv4.conf.all.accept_local": 0,
                        "net.ipv4.conf.all.log_martians": 1}
            results.append((f"{src} rp_filter={mode}", dict(fate_fn(src, dst,
                                                                     sysctls=settings))))
    return results


def sweep(fate_fn: FateFn, sources: Sequence[str], dst: str = "10.0.0.2",
          **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    """Run the same packet from several source addresses; ``[(src, report), ...]``."""
    return [(src, dict(fate_fn(src, dst, **kwargs))) for src in sources]


def count_outcomes(results: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Drop reasons (or the verdict when nothing was dropped) counted over fate reports."""
    counts: dict[str, int] = {}
    for _label, report in results:
        for reason in report.get("drop_reasons") or [str(report.get("verdict", "?"))]:
            counts[str(reason)] = counts.get(str(reason), 0) + 1
    return counts


def kfree_skb_reasons(tracefs: str = "/sys/kernel/tracing") -> dict[int, str]:
    """The kernel's drop reason names by number, from the skb:kfree_skb event's format file.

    Names are read from the running kernel (the numbers shift between versions). When tracefs
    is not mounted, it is mounted in a private mount namespace (``unshare -m``) just for this
    read, so the machine's mounts stay as they were. Needs root; returns {} without.
    """
    import subprocess

    fmt = f"{tracefs}/events/skb/kfree_skb/format"
    try:
        with open(fmt) as handle:
            text = handle.read()
    except OSError:
        try:
            text = subprocess.run(
                ["unshare", "-m", "sh", "-c",
                 f"mount -t tracefs nodev {tracefs} 2>/dev/null; cat {fmt}"],
                capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
    from .drops import parse_reason_names

    return parse_reason_names(text)


# -- the routing view --------------------------------------------------------------------------

class RouteView(LabPanel, w.VBox):
    """The lab's routing tables (main and local) and ``ip route get`` for a typed address.

    ``lesson`` is a :class:`tunlab.course.Lesson`; without a live lab, recorded lookups are
    shown. Headless: ``view.address.value = "10.0.0.1"; view.lookup.click()``, then
    ``view.last_output`` / ``view.last_device`` / ``view.last_table`` / ``view.last_type``.
    """

    def __init__(self, lesson: Any, address: str = "10.0.0.2") -> None:
        self.last_output = ""
        self.last_device = ""
        self.last_table = ""
        self.last_type = ""
        self.last_address = ""
        self.address = w.Text(value=address, description="address", continuous_update=False,
                              layout=w.Layout(width="240px"))
        self.lookup = w.Button(description="ip route get", button_style="primary",
                               layout=w.Layout(width="140px"))
        self.tables = w.HTML()
        self.result = w.HTML()
        self.path = _image()
        self._setup_panel(lesson)
        self.lookup.on_click(self.guarded(lambda _b: self.route_get()))
        self.address.observe(self.guarded(lambda _change: self.route_get()), "value")
        super().__init__([self.tables, w.HBox([self.address, self.lookup]), self.result,
                          self.path, self.bar])
        self.refresh_tables()

    def _ip(self, key: str, *args: str) -> str:
        """``ip ARGS`` in the lab (stdout and stderr), or the recorded answer."""
        def live() -> str:
            result = self.lesson.ns.exec(["ip", *args], check=False)
            return (result.stdout + result.stderr).strip()

        value = self.lesson.run(key, live)
        return value if isinstance(value, str) else ""

    def refresh_tables(self) -> None:
        """Show ``ip route show table main`` and ``table local`` side by side."""
        main = self._ip("route_main", "route", "show", "table", "main")
        local = self._ip("route_local", "route", "show", "table", "local")
        self.tables.value = (
            '<div style="display:flex;gap:12px">'
            f'<div style="flex:1"><b>table main</b> (<code>ip route</code>){_pre(main)}</div>'
            f'<div style="flex:1"><b>table local</b> (<code>ip route show table local</code>)'
            f'{_pre(local)}</div></div>')

    def reset_view(self) -> None:
        self.last_output = self.last_device = self.last_table = self.last_type = ""
        self.last_address = ""
        self.result.value = ""
        clear_figure(self.path)
        self.tables.value = ""

    def redraw(self) -> None:
        if self.last_device:
            show_figure(self.path, route_figure(self.last_address, self.last_device,
                                                self.last_table, self.last_type))

    def route_get(self, address: str | None = None) -> str:
        """``ip route get ADDRESS`` in the lab; shows and returns the kernel's answer."""
        typed = (address if address is not None else self.address.value).strip()
        self.reset_view()
        valid = _ipv4(typed)
        if valid is None:
            self.result.value = _invalid(f"{typed!r} is not an IPv4 address: type four numbers "
                                         "0-255 with dots, like 10.0.0.1")
            self.refresh_tables()
            return ""
        self.refresh_tables()
        out = self._ip(f"route_get {valid}", "route", "get", valid)
        if not out:
            out = ("(no recorded answer for this address; start the lab with "
                   "`sudo make lab` to ask the kernel)") if not self.lesson.live else \
                "(the kernel printed nothing)"
        self.last_output = out
        self.last_address = valid
        self.last_device, self.last_table, self.last_type = parse_route_get(out)
        self.result.value = _pre(f"$ ip route get {valid}\n{out.strip()}")
        if not self.last_device and self.lesson.live:
            self.result.value += (f"<div>no route: no table of this host has a route to "
                                  f"{valid} (the lab has no default route), so a ping to it "
                                  "fails at once with <i>Network is unreachable</i>.</div>")
        if self.last_device:
            show_figure(self.path, route_figure(valid, self.last_device, self.last_table,
                                                self.last_type))
        return out


ROUTE_TYPES = ("local", "broadcast", "multicast", "unreachable", "prohibit", "blackhole",
               "throw", "anycast")


def parse_route_get(out: str) -> tuple[str, str, str]:
    """``(device, table, type)`` from ``ip route get`` output; ``("", "", "")`` for an error
    such as "RTNETLINK answers: Network is unreachable".

    The table is the one the kernel names (``table local``), else main; the type is the
    route's first word when it is one (local, broadcast, ...), else unicast.
    """
    words = out.split()
    if not words or "dev" not in words or out.startswith("RTNETLINK"):
        return "", "", ""
    device = words[words.index("dev") + 1]
    kind = words[0] if words[0] in ROUTE_TYPES else "unicast"
    if "table" in words:
        table = words[words.index("table") + 1]
    else:
        table = "local" if kind in ("local", "broadcast") else "main"
    return device, table, kind


def route_figure(address: str, device: str, table: str, kind: str = "") -> Any:
    """A small path: ping → routing decision → device (and back via lo for local addresses,
    out and back in for a broadcast address)."""
    if kind == "broadcast":
        steps = [plots.Step(f"ping\n{address}", "app"),
                 plots.Step(f"route lookup\ntable {table}\n(broadcast)", "kernel"),
                 plots.Step(f"{device}\n(broadcast)", "device"),
                 plots.Step("everyone on\nthe link", "app")]
        return plots.packet_path(steps, verdict=f"broadcast out of {device}",
                                 title=f"ip route get {address}: broadcast, dev {device}, "
                                       f"table {table}")
    if table == "local" or kind == "local":
        steps = [plots.Step(f"ping\n{address}", "app"),
                 plots.Step(f"route lookup\ntable {table}\n(wins first)", "kernel"),
                 plots.Step(f"{device}\n(loopback)", "device"),
                 plots.Step("delivered to\nthis host", "kernel")]
        return plots.packet_path(steps, verdict="answered by this host, never leaves",
                                 title=f"ip route get {address}: dev {device}, table {table}")
    steps = [plots.Step(f"ping\n{address}", "app"),
             plots.Step(f"route lookup\ntable {table}", "kernel"),
             plots.Step(device, "device"),
             plots.Step("whoever reads\nthe device", "app")]
    return plots.packet_path(steps, verdict=f"sent out of {device}",
                             title=f"ip route get {address}: dev {device}, table {table}")


# -- reading a TUN device by hand (lesson 01) --------------------------------------------------

def read_one_ping(ns: Any, device: str = "mytun", target: str = "10.0.0.2",
                  no_pi: bool = True, timeout: float = 3.0, size: int = 56) -> bytes:
    """Attach to ``device`` by hand (with or without IFF_NO_PI), ping ``target``, return the
    first IPv4 packet ``read()`` returned, exactly as read (PI header included when off).

    IPv6 router solicitations that new devices send are skipped. Raises TimeoutError when no
    IPv4 packet arrives in ``timeout`` seconds.
    """
    import fcntl
    import os
    import struct

    from .tun import IFF_NO_PI, IFF_TUN, TUNSETIFF

    def attach() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        flags = IFF_TUN | (IFF_NO_PI if no_pi else 0)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", device.encode(), flags))
        except OSError:
            os.close(fd)
            raise
        return fd

    fd = ns.run(attach)
    # Attaching turns the carrier on, but the kernel activates the device's queue a moment
    # later (linkwatch): a ping sent before that is silently dropped. Its operstate turns
    # from DOWN in the same step.
    for _ in range(50):
        if " state DOWN " not in ns.ip("-o", "link", "show", device, check=False):
            break
        time.sleep(0.02)
    ping = ns.popen(["ping", "-c1", "-W1", "-s", str(size), target],
                    stdout=-3, stderr=-3)  # subprocess.DEVNULL
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            data = os.read(fd, 65535 + 4)
            ip = data[4:] if not no_pi else data
            if ip and ip[0] >> 4 == 4:
                return data
        raise TimeoutError(f"no IPv4 packet read from {device} within {timeout:.0f} s")
    finally:
        os.close(fd)
        try:
            ping.wait(3)
        except Exception:  # noqa: BLE001
            ping.kill()


def hexdump(data: bytes, highlight: int = 0, width: int = 16) -> str:
    """Hex dump as HTML; the first ``highlight`` bytes are marked red (the PI header)."""
    lines = []
    for off in range(0, len(data), width):
        cells = []
        for i, byte in enumerate(data[off:off + width]):
            cell = f"{byte:02x}"
            if off + i < highlight:
                cell = f'<span style="background:#f4a6a6">{cell}</span>'
            cells.append(cell)
        lines.append(f"{off:04x}  " + " ".join(cells))
    return ('<pre style="background:#f6f8fa;padding:6px 10px;margin:2px 0">'
            + "\n".join(lines) + "</pre>")


class PiReader(LabPanel, w.VBox):
    """Lesson 01: read a ping from mytun's raw fd, with IFF_NO_PI on or off, and see the bytes.

    Headless: ``reader.no_pi.value = False; reader.read.click()``, then ``reader.last_read``.
    """

    def __init__(self, lesson: Any, device: str = "mytun", target: str = "10.0.0.2") -> None:
        self.lesson = lesson
        self.device = device
        self.target = target
        self.last_read: bytes | None = None
        self.last_no_pi = True
        self.last_error: str | None = None
        self.no_pi = w.Checkbox(value=True, description="IFF_NO_PI (no packet-info header)",
                                indent=False)
        self.read = w.Button(description=f"ping {target}, read()", button_style="primary",
                             layout=w.Layout(width="200px"))
        self.result = w.HTML()
        self.layout_image = _image(width="80%")
        self._setup_panel(lesson)
        self.read.on_click(self.guarded(lambda _b: self.read_packet()))
        self.no_pi.observe(self.guarded(lambda _change: self.reset_view()), "value")
        super().__init__([w.HBox([self.no_pi, self.read]), self.result, self.layout_image,
                          self.bar])

    def reset_view(self) -> None:
        self.last_read = None
        self.last_error = None
        self.result.value = ""
        clear_figure(self.layout_image)

    def redraw(self) -> None:
        if self.last_read is not None:
            show_figure(self.layout_image, plots.read_layout(self.last_read,
                                                             pi=not self.last_no_pi))

    def read_packet(self) -> bytes | None:
        """Attach, ping, read one packet; show its bytes and their meaning."""
        no_pi = bool(self.no_pi.value)
        key = f"read no_pi={int(no_pi)}"
        self.reset_view()
        try:
            data = self.lesson.run(key, lambda: read_one_ping(self.lesson.ns, self.device,
                                                              self.target, no_pi))
        except (OSError, TimeoutError) as exc:
            self.last_error = str(exc)
            self.fail(exc)
            return None
        if data is None:
            self.result.value = "(no recording: start the lab with `sudo make lab`)"
            return None
        self.last_read, self.last_no_pi = data, no_pi
        first = data[0] >> 4
        verdict = ("first nibble 4: an IPv4 packet starts right at byte 0" if no_pi else
                   f"first nibble {first}: not IPv4! The packet starts at byte 4, after flags "
                   f"0x{data[0:2].hex()} and proto 0x{data[2:4].hex()}")
        self.result.value = (f"<div><b>read() returned {len(data)} bytes</b>"
                             f"{' (recorded)' if not self.lesson.live else ''}: {verdict}</div>"
                             + hexdump(data, highlight=0 if no_pi else 4))
        show_figure(self.layout_image, plots.read_layout(data, pi=not no_pi))
        return data


# -- frames on the wire (lesson 03) ------------------------------------------------------------

class FrameExplorer(LabPanel, w.VBox):
    """Lesson 03: send a ping of a chosen size through a running tunnel, capture the TCP
    traffic on ``lo`` with tcpdump, and dissect the tunlab frame with scapy.

    ``server`` is the running :class:`tunlab.tunnel.TunnelServer` (its port is captured).
    Headless: ``explorer.size.value = 200; explorer.send.click()``; then ``last_frame``
    (bytes), ``last_dissection`` (scapy's ``show()``), ``last_frames`` (all frames captured).
    """

    def __init__(self, lesson: Any, server: Any = None, size: int = 56) -> None:
        self.lesson = lesson
        self.server = server
        self.last_frame: bytes | None = None
        self.last_dissection = ""
        self.last_frames: list[dict[str, Any]] = []
        self.size = w.IntSlider(value=size, min=0, max=1300, step=4,
                                description="ping -s", continuous_update=False)
        self.send = w.Button(description="ping 10.0.0.2 + capture", button_style="primary",
                             layout=w.Layout(width="220px"))
        self.summary = w.HTML()
        self.layout_image = _image(width="80%")
        self.dissection = w.HTML()
        self._setup_panel(lesson)
        self.send.on_click(self.guarded(lambda _b: self.capture()))
        self.size.observe(self.guarded(lambda _change: self.reset_view()), "value")
        super().__init__([w.HBox([self.size, self.send]), self.summary, self.layout_image,
                          self.dissection, self.bar])

    def reset_view(self) -> None:
        self.last_frame = None
        self.last_dissection = ""
        self.last_frames = []
        self.summary.value = self.dissection.value = ""
        clear_figure(self.layout_image)

    def redraw(self) -> None:
        if self.last_frame is not None:
            show_figure(self.layout_image, plots.frame_layout(self.last_frame))

    def capture(self) -> bytes | None:
        """Capture one ping's frame and show it."""
        size = int(self.size.value)
        self.reset_view()

        def live() -> dict[str, Any]:
            tunnel = seed_tunnel(self.lesson, self.server)
            if tunnel is None:
                raise RuntimeError("no tunnel: this lesson has no seed lab")
            self.server = tunnel.ensure().server
            return capture_ping_frames(self.lesson.ns, self.server.address[1], size)

        result = self.lesson.run(f"capture size={size}", live)
        if result is None:
            result = self.lesson.run("capture size=56", lambda: None)
            if result is None:
                self.summary.value = "(no recording: start the lab with `sudo make lab`)"
                return None
        self.show(result)
        return self.last_frame

    def show(self, result: Mapping[str, Any]) -> None:
        """Display a capture result (as made by :func:`capture_ping_frames`)."""
        self.last_frames = list(result["frames"])
        frame = bytes.fromhex(result["echo_frame"])
        self.last_frame = frame
        from .scapy_frame import TunlabFrame

        self.last_dissection = TunlabFrame(frame).show(dump=True)
        rows = "\n".join(f"{f['flow']}  {f['type']:<9} len={f['length']}" +
                         (f"  {f['inner_src']} -> {f['inner_dst']}" if "inner_src" in f else "")
                         for f in self.last_frames)
        self.summary.value = (f"<div><b>{len(self.last_frames)} tunlab frame(s) in the capture"
                              f"</b>{' (recorded)' if not self.lesson.live else ''}:</div>"
                              + _pre(rows))
        show_figure(self.layout_image, plots.frame_layout(frame))
        self.dissection.value = ("<b>scapy: TunlabFrame(frame).show()</b>"
                                 + _pre(self.last_dissection))


def capture_ping_frames(ns: Any, port: int, size: int = 56, target: str = "10.0.0.2"
                        ) -> dict[str, Any]:
    """tcpdump on ``lo`` while one ``ping -s SIZE`` crosses the tunnel; the frames found.

    Returns ``{"frames": [CapturedFrame.to_dict(), ...], "echo_frame": hex, "pcap": path}``,
    where echo_frame is the DATA frame carrying the ICMP echo request.
    """
    from .scapy_frame import capture

    with capture(ns, "lo", f"tcp port {port}") as cap:
        ns.exec(["ping", "-c1", "-W1", "-s", str(size), target], check=False, timeout=5)
        time.sleep(0.1)
    frames = cap.frames(port)
    echo = None
    for f in frames:
        inner = f.frame.payload
        if f.type_name == "DATA" and getattr(inner, "proto", None) == 1 and \
                getattr(inner, "dst", "") == target:
            echo = f
            break
    if echo is None:
        raise RuntimeError(f"the capture holds no DATA frame with the echo request "
                           f"({len(frames)} frames; tcpdump said: {cap.stderr.strip()})")
    return {"frames": [f.to_dict() for f in frames], "echo_frame": bytes(echo.frame).hex(),
            "pcap": str(cap.path)}


# -- a tunnel in the seed lab (lessons 03, 04, 06) ---------------------------------------------

class SeedTunnel:
    """The seed's vpn-server on mytun2 and vpn-client on mytun, inside the lesson's lab.

    The server listens on 127.0.0.1 (a free port) in the lab namespace; both record packets,
    so the hops can be shown. With ``capture=True`` the start is captured with tcpdump on
    ``lo`` (HELLOs included) and ``pings`` echo requests are sent: :attr:`session` then holds
    the frames found (dicts, see :meth:`tunlab.scapy_frame.CapturedFrame.to_dict`).
    Without a live lab, ``server`` and ``client`` stay None. Stopped by :meth:`close` (also
    when the kernel stops).
    """

    def __init__(self, lesson: Any, capture: bool = False, pings: int = 2) -> None:
        self.lesson = lesson
        self.server: Any = None
        self.client: Any = None
        self.session: list[dict[str, Any]] = []
        self.session_error = ""
        self.generation = 0
        self._lock = threading.RLock()
        if not lesson.live or lesson.lab is None:
            return
        if hasattr(lesson, "attach"):
            lesson.attach(self)  # stopped before the lab goes, restarted by ensure()
        self._start(capture, pings)

    def _start(self, capture: bool = False, pings: int = 2) -> None:
        from .course import register_cleanup
        from .tunnel import TunnelServer

        lab = self.lesson.lab
        self.server = TunnelServer(lab.device("mytun2"), ("127.0.0.1", 0), namespace=lab.ns,
                                   record_packets=True).start()
        self.generation = getattr(self.lesson, "generation", 0)
        register_cleanup(self)
        if capture:
            from .scapy_frame import capture as tcpdump

            port = self.server.address[1]
            with tcpdump(lab.ns, "lo", f"tcp port {port}") as cap:
                self._start_client()
                for _ in range(pings):
                    lab.ns.exec(["ping", "-c1", "-W1", "10.0.0.2"], check=False, timeout=5)
            self.session = [f.to_dict() for f in cap.frames(port)]
            self.pcap = str(cap.path)
        else:
            self._start_client()

    def _start_client(self) -> None:
        from .tunnel import TunnelClient

        lab = self.lesson.lab
        self.client = TunnelClient(lab.device("mytun"), self.server.address, namespace=lab.ns,
                                   record_packets=True).start(timeout=5)
        if not self.server.wait_connected(5):
            raise TunlabError("the vpn-server did not take the vpn-client's connection in 5 s",
                              "run the cell again; the server's events say why it refused")

    @property
    def running(self) -> bool:
        """Both ends run, connected, in the lesson's current lab."""
        return (self.server is not None and self.client is not None
                and self.server.running and self.client.running
                and self.client.connected
                and self.generation == getattr(self.lesson, "generation", 0)
                and getattr(self.lesson, "lab_ready", True))

    def ensure(self) -> SeedTunnel:
        """Running again in a live lab: after :meth:`close`, ``lesson.finish()`` or a reset,
        the lab is rebuilt when needed and a new server and client start in it."""
        if not self.lesson.live or getattr(self.lesson, "kind", "seed") is None:
            return self
        with self._lock:
            if self.running:
                return self
            self.close()
            if hasattr(self.lesson, "ensure_lab"):
                self.lesson.ensure_lab()
                if self not in getattr(self.lesson, "_attached", [self]):
                    self.lesson.attach(self)
            self._start()
        return self

    @property
    def port(self) -> int | None:
        return self.server.address[1] if self.server is not None else None

    def close(self) -> None:
        """Stop client and server and let go of the devices (they stay; the lab removes
        them), so that a new tunnel can attach to them."""
        for endpoint in (self.client, self.server):
            if endpoint is not None:
                endpoint.stop()
                endpoint.device.close()
        from .course import unregister_cleanup

        unregister_cleanup(self)


def seed_tunnel(lesson: Any, server: Any = None) -> SeedTunnel | None:
    """The lesson's :class:`SeedTunnel` (the one whose server is ``server`` when given), or a
    new one; None without a live lab. Panels call ``.ensure()`` on it before each use."""
    if not getattr(lesson, "live", False) or getattr(lesson, "kind", "seed") != "seed":
        return None
    tunnels = lesson.attached(SeedTunnel) if hasattr(lesson, "attached") else []
    for tunnel in tunnels:
        if server is None or tunnel.server is server:
            return tunnel
    if tunnels:
        return tunnels[-1]
    if lesson.lab is None or not getattr(lesson, "lab_ready", True):
        lesson.ensure_lab()
    return SeedTunnel(lesson)


def ping_bound(lesson: Any, tunnel: SeedTunnel, device: str = "mytun",
               target: str = "10.0.2.33", sysctls: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """``ping -c1 -I DEVICE TARGET`` in the seed lab with the tunnel running, and what the
    kernel did with the packet when the tunnel's far end wrote it back in.

    ``sysctls`` are set in the lab namespace first (e.g. forwarding and martian logging on).

    The kernel handles a written packet in the writing thread, so the trace is matched to the
    far end's writer (the vpn-server for ``-I mytun``, the vpn-client for ``-I mytun2``), via
    :func:`tunlab.fate.observe`.
    """
    from .fate import observe

    ns = lesson.ns
    for key, value in (sysctls or {}).items():
        ns.exec(["sysctl", "-qw", f"{key}={value}"])
    writer = tunnel.server if device == "mytun" else tunnel.client
    before = writer.stats.written_packets

    def inject() -> None:
        ns.exec(["ping", "-c1", "-W1", "-I", device, target], check=False, timeout=5)
        writer.wait_until(lambda: writer.stats.written_packets > before, 1.0)

    report = observe(ns, inject, writer_tid=writer.writer_tid, capture_devices=())
    result = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    result["tunnel_written"] = writer.stats.written_packets - before
    return result


def frames_html(frames: Sequence[Mapping[str, Any]], limit: int = 20) -> str:
    """Captured frames (dicts from CapturedFrame.to_dict) as an HTML table."""
    rows = []
    for f in frames[:limit]:
        inner = (f"{f.get('inner_src')} → {f.get('inner_dst')} (proto {f.get('inner_proto')})"
                 if "inner_src" in f else "")
        hexs = str(f.get("hex", ""))
        rows.append(f"<tr><td><code>{html.escape(str(f['flow']))}</code></td>"
                    f"<td>{f['offset']}</td><td><b>{html.escape(str(f['type']))}</b></td>"
                    f"<td>{f['length']}</td><td>{html.escape(inner)}</td>"
                    f"<td><code>{hexs[:16]} {hexs[16:40]}…</code></td></tr>")
    more = f"<p>… and {len(frames) - limit} more</p>" if len(frames) > limit else ""
    return ("<table><tr><th>TCP direction</th><th>stream offset</th><th>type</th>"
            "<th>length</th><th>carried packet</th><th>first bytes (header | packet)</th></tr>"
            + "".join(rows) + "</table>" + more)


def events_html(events: Sequence[Any], limit: int = 12) -> str:
    """Tunnel events (TunnelEvent objects or dicts) as an HTML table, times relative."""
    items = [e if isinstance(e, Mapping) else {"time": e.time, "kind": e.kind,
                                                "detail": e.detail, "size": e.size}
             for e in events]
    if not items:
        return "<p>(no events)</p>"
    t0 = float(items[0]["time"])
    rows = "".join(f"<tr><td>{(float(e['time']) - t0) * 1000:.1f} ms</td>"
                   f"<td><b>{html.escape(str(e['kind']))}</b></td>"
                   f"<td>{html.escape(str(e['detail']))}</td><td>{e['size'] or ''}</td></tr>"
                   for e in items[-limit:])
    return ("<table><tr><th>time</th><th>event</th><th>detail</th><th>bytes</th></tr>"
            + rows + "</table>")


def events_dicts(endpoint: Any, kinds: set[str] | None = None) -> list[dict[str, Any]]:
    """An endpoint's events as plain dicts (packet bytes left out), for recording."""
    return [{"time": e.time, "kind": e.kind, "detail": e.detail, "size": e.size}
            for e in endpoint.events(kinds)]


def frames_table(frames: Sequence[Mapping[str, Any]], limit: int = 20) -> w.HTML:
    """:func:`frames_html` in a widget."""
    return w.HTML(frames_html(frames, limit))


def events_table(events: Sequence[Any], limit: int = 12) -> w.HTML:
    """:func:`events_html` in a widget."""
    return w.HTML(events_html(events, limit))


def link_tx_packets(ns: Any, device: str) -> int:
    """Packets the kernel gave ``device`` in ``ns`` to send (``ip -s -j link``: TX packets +
    TX dropped). For a TUN device, TX packets are those a reader took and TX dropped those
    nobody took; for ``lo``, everything looped back."""
    (link,) = json.loads(ns.ip("-s", "-j", "link", "show", "dev", device))
    tx = link["stats64"]["tx"]
    return int(tx["packets"]) + int(tx.get("dropped", 0))


def ping_device_counts(ns: Any, targets: Sequence[str] = ("10.0.0.1", "10.0.0.2"),
                       devices: Sequence[str] = ("lo", "mytun"), count: int = 3
                       ) -> dict[str, int]:
    """Ping each target ``count`` times in ``ns``; how many packets each device transmitted.

    Keys are ``"ping TARGET: DEVICE"``.
    """
    counts: dict[str, int] = {}
    for target in targets:
        before = {d: link_tx_packets(ns, d) for d in devices}
        ns.exec(["ping", "-c", str(count), "-i", "0.2", "-W1", target], check=False,
                timeout=count + 5)
        for d in devices:
            counts[f"ping {target}: {d}"] = link_tx_packets(ns, d) - before[d]
    return counts


# -- the seed goal, hop by hop (lesson 04) -----------------------------------------------------

def _is_echo_to(packet: bytes, target: str) -> bool:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return False
    dst = ".".join(str(b) for b in packet[16:20])
    return dst == target and packet[(packet[0] & 0x0F) * 4] == 8


def ping_through_seed(ns: Any, server: Any, client: Any, target: str = "10.0.0.2",
                      wait: float = 1.0) -> dict[str, Any]:
    """``ping -c1 TARGET`` in the seed lab with a running tunnel; what each hop saw.

    Returns the ping's exit code and output, how many packets the vpn-client read and framed,
    how many the vpn-server wrote into mytun2, the packet before and after the tunnel (hex),
    and the kernel counters that moved (nstat) as the released packet met the kernel.
    """
    c0, s0 = client.stats.snapshot(), server.stats.snapshot()
    n0 = snmp_counters(ns)
    started = time.monotonic()
    ping = ns.exec(["ping", "-c1", "-W1", target], check=False, timeout=5)
    server.wait_until(lambda: server.stats.written_packets > s0["written_packets"]
                      or client.stats.written_packets > c0["written_packets"], wait)
    time.sleep(0.05)
    c1, s1 = client.stats.snapshot(), server.stats.snapshot()
    counters = counter_delta(n0, snmp_counters(ns))
    since = started - 0.01

    def echoes(endpoint: Any, kind: str, offset: int = 0) -> list[Any]:
        return [e for e in endpoint.events({kind}) if e.time >= since and e.data is not None
                and _is_echo_to(e.data[offset:], target)]

    read, sent, written = echoes(client, "read"), echoes(client, "sent", 8), \
        echoes(server, "written")
    back_read, back_written = echoes(server, "read"), echoes(client, "written")
    direction = "mytun → mytun2" if read else ("mytun2 → mytun" if back_read else "")
    first_read = read or back_read
    first_written = written or back_written
    return {
        "target": target, "ping_rc": ping.returncode, "ping_output": ping.stdout + ping.stderr,
        "client_read": c1["read_packets"] - c0["read_packets"],
        "frames_sent": c1["frames_sent"] - c0["frames_sent"],
        "server_written": s1["written_packets"] - s0["written_packets"],
        "server_read": s1["read_packets"] - s0["read_packets"],
        "server_frames_sent": s1["frames_sent"] - s0["frames_sent"],
        "client_written": c1["written_packets"] - c0["written_packets"],
        "echo_read": len(read), "echo_written": len(written),
        "echo_server_read": len(back_read), "echo_client_written": len(back_written),
        "direction": direction,
        "sent_hex": first_read[0].data.hex() if first_read and first_read[0].data else "",
        "frame_hex": sent[0].data.hex() if sent and sent[0].data else "",
        "released_hex": (first_written[0].data.hex() if first_written and first_written[0].data
                         else ""),
        "counters": counters,
    }


# counter -> (drop reason, meaning), from the one catalogue in tunlab.fate.reasons
COUNTER_MEANINGS = {name: (info.reason, info.meaning) for name, info in COUNTERS.items()
                    if name in ("IpInAddrErrors", "TcpExtIPReversePathFilter", "IpForwDatagrams",
                                "IcmpInEchos", "IpInUnknownProtos", "IpOutNoRoutes")}


def explain_counters(counters: Mapping[str, int]) -> list[str]:
    """Plain-words lines for the nstat counters that moved and mean something here."""
    lines = []
    for name, (reason, meaning) in COUNTER_MEANINGS.items():
        if counters.get(name):
            tag = f" → drop reason {reason}" if reason else ""
            lines.append(f"{name} +{counters[name]}: {meaning}{tag}")
    return lines


class SeedGoalPanel(LabPanel, w.VBox):
    """Lesson 04: choose a destination, ping it once, see every hop and the kernel's verdict.

    Headless: ``panel.target.value = "10.0.0.1"; panel.ping.click()``, then ``last_result``.
    """

    TARGETS = ["10.0.0.2", "10.0.0.1", "10.0.0.77", "10.0.2.1", "10.0.2.33"]

    def __init__(self, lesson: Any, server: Any = None, client: Any = None) -> None:
        self.server = server
        self.client = client
        self.last_result: dict[str, Any] | None = None
        self.target = w.Combobox(value="10.0.0.2", options=self.TARGETS,
                                 description="ping", ensure_option=False,
                                 layout=w.Layout(width="240px"))
        self.ping = w.Button(description="ping -c1", button_style="primary",
                             layout=w.Layout(width="120px"))
        self.result = w.HTML()
        self.path = _image()
        self._setup_panel(lesson)
        self.ping.on_click(self.guarded(lambda _b: self.run()))
        self.target.observe(self.guarded(lambda _change: self.reset_view()), "value")
        super().__init__([w.HBox([self.target, self.ping]), self.result, self.path, self.bar])

    def reset_view(self) -> None:
        self.last_result = None
        self.result.value = ""
        clear_figure(self.path)

    def redraw(self) -> None:
        if self.last_result is not None:
            show_figure(self.path, self.figure(self.last_result))

    def _endpoints(self) -> tuple[Any, Any]:
        """The running server and client (restarted in a rebuilt lab when needed)."""
        tunnel = seed_tunnel(self.lesson, self.server)
        if tunnel is None:
            raise RuntimeError("no tunnel: this lesson has no seed lab")
        tunnel.ensure()
        self.server, self.client = tunnel.server, tunnel.client
        return tunnel.server, tunnel.client

    def run(self, target: str | None = None) -> dict[str, Any] | None:
        """Ping once and show the hops."""
        typed = (target or self.target.value).strip()
        self.reset_view()
        valid = _ipv4(typed)
        if valid is None:
            self.result.value = _invalid(f"{typed!r} is not an IPv4 address")
            return None

        def live() -> dict[str, Any]:
            server, client = self._endpoints()
            return ping_through_seed(self.lesson.ns, server, client, valid)

        result = self.lesson.run(f"ping {valid}", live)
        if result is None:
            self.result.value = ("(no recording for this address: start the lab with "
                                 "`sudo make lab`)")
            return None
        self.last_result = result
        self.result.value = self.hops_html(result)
        show_figure(self.path, self.figure(result))
        return result

    @staticmethod
    def figure(result: Mapping[str, Any]) -> Any:
        """The seed path (or its way back, mytun2 → mytun) with where this ping stopped."""
        counters = result.get("counters", {})
        target = str(result["target"])
        reverse = bool(result.get("echo_server_read")) and not result.get("echo_read")
        if not result.get("client_read") and not reverse:
            if result.get("ping_rc") == 0:
                return route_figure(target, "lo", "local")
            return plots.seed_path(stopped_at=2, stop_reason="nothing entered mytun or mytun2",
                                   title=f"ping {target}", target=target)
        if reverse and not result.get("client_written"):
            return plots.seed_path(stopped_at=5, stop_reason="the vpn-client wrote nothing",
                                   title=f"ping {target}", target=target, reverse=True)
        reasons = [COUNTER_MEANINGS[k][0] for k in COUNTER_MEANINGS
                   if counters.get(k) and COUNTER_MEANINGS[k][0]]
        verdict = "forwarded" if counters.get("IpForwDatagrams") else (
            "delivered" if counters.get("IcmpInEchos") else "dropped")
        fate = {"verdict": "dropped" if reasons else verdict, "drop_reasons": reasons}
        way = "mytun2 → vpn-server → vpn-client → mytun" if reverse else \
            "mytun → vpn-client → vpn-server → mytun2"
        return plots.seed_path(fate, title=f"ping {target}: {way}", target=target,
                               reverse=reverse)

    def hops_html(self, r: Mapping[str, Any]) -> str:
        """The hops as an HTML list, in the direction the packet really went."""
        rows = [f"<li><code>ping -c1 {html.escape(r['target'])}</code> exit code "
                f"{r['ping_rc']} ({'a reply came back' if r['ping_rc'] == 0 else 'no reply'})"
                "</li>"]
        reverse = bool(r.get("echo_server_read")) and not r.get("echo_read")
        if reverse:
            rows += [f"<li>the route to {html.escape(r['target'])} is <code>10.0.2.0/24 dev "
                     "mytun2</code>: the ping went into mytun2, so it takes the seed's path "
                     "backwards: mytun2 → vpn-server → vpn-client → mytun</li>",
                     f"<li>vpn-server read <b>{r.get('server_read', 0)}</b> packet(s) from "
                     f"mytun2, of them {r.get('echo_server_read', 0)} this echo request</li>",
                     f"<li>vpn-server sent <b>{r.get('server_frames_sent', 0)}</b> frame(s) "
                     "over TCP</li>",
                     f"<li>vpn-client wrote <b>{r.get('client_written', 0)}</b> packet(s) into "
                     "mytun" + (" — byte for byte the packet that was sent" if r["sent_hex"]
                                and r["sent_hex"] == r["released_hex"] else "") + "</li>"]
        else:
            rows += [f"<li>vpn-client read <b>{r['client_read']}</b> packet(s) from mytun, "
                     f"of them {r['echo_read']} this echo request</li>",
                     f"<li>vpn-client sent <b>{r['frames_sent']}</b> frame(s) over TCP</li>",
                     f"<li>vpn-server wrote <b>{r['server_written']}</b> packet(s) into mytun2"
                     + (" — byte for byte the packet that was sent" if r["sent_hex"]
                        and r["sent_hex"] == r["released_hex"] else "") + "</li>"]
        lines = explain_counters(r.get("counters", {}))
        if lines:
            rows.append("<li>then the kernel (nstat counters that moved):<ul>"
                        + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul></li>")
        recorded = " <i>(recorded example)</i>" if not self.lesson.live else ""
        return f'<div style="{_CSS_BOX}"><b>hop by hop</b>{recorded}<ol>' + "".join(rows) + \
            "</ol></div>"


# -- the live tunnel panel ---------------------------------------------------------------------

class TunnelPanel(LabPanel, w.VBox):
    """Start/stop a tunnel, push traffic through it, and watch packets/s and Mbit/s live.

    ``lab`` is a :class:`tunlab.lab.TwoHostLab` (lesson 08). A background thread samples the
    client's counters every ``interval`` seconds and renders :func:`tunlab.plots.throughput`
    into an ``ipywidgets.Image`` (it never prints; it stops with :meth:`stop` or after
    ``max_seconds``). Traffic: ``iperf3`` from host a to the far tunnel end. When the lab
    belongs to a lesson and is gone (``lesson.finish()``), *start tunnel* builds a new one.

    Headless: ``panel.start_button.click()``, ``panel.traffic(seconds=2)``, then ``samples``,
    ``results``; ``panel.stop_button.click()``.
    """

    def __init__(self, lab: Any, interval: float = 0.5, max_seconds: float = 300.0,
                 window: float = 20.0) -> None:
        from .course import lesson_of

        self._lab = lab
        self.interval = interval
        self.max_seconds = max_seconds
        self.window = window
        self.samples: list[dict[str, float]] = []
        self.results: dict[str, float] = {}
        self.error: str | None = None
        self.frames_rendered = 0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._t0 = 0.0
        self._traffic: threading.Thread | None = None
        self._state_lock = threading.RLock()
        self.start_button = w.Button(description="start tunnel", button_style="success",
                                     icon="play")
        self.stop_button = w.Button(description="stop tunnel", button_style="danger",
                                    icon="stop", disabled=True)
        self.seconds = w.IntSlider(value=3, min=1, max=10, description="iperf3 s",
                                   continuous_update=False)
        self.traffic_button = w.Button(description="iperf3 through tunnel", disabled=True,
                                       layout=w.Layout(width="200px"))
        self.loss = w.IntSlider(value=0, min=0, max=10, description="loss %",
                                continuous_update=False, disabled=lab is None)
        self.status = w.HTML(value="tunnel stopped")
        self.image = _image()
        self._setup_panel(lesson_of(lab) if lab is not None else None,
                          use_current=lab is None)
        self.loss.observe(self.guarded(lambda change: self.set_loss(change["new"])), "value")
        self.start_button.on_click(self.guarded(lambda _b: self.start()))
        self.stop_button.on_click(self.guarded(lambda _b: self.stop()))
        self.traffic_button.on_click(self.guarded(
            lambda _b: self.traffic(int(self.seconds.value), wait=False)))
        super().__init__([w.HBox([self.start_button, self.stop_button]),
                          w.HBox([self.seconds, self.traffic_button]),
                          w.HBox([self.loss, w.HTML("on a's underlay (veth0), by nftables")]),
                          self.status, self.image, self.bar])
        show_figure(self.image, plots.throughput([], title="Tunnel traffic"))
        if lab is None:
            self.start_button.disabled = True
            self.status.value = ("read-only: no lab here (start it with <code>sudo make lab"
                                 "</code>); below, samples recorded from a real run")

    @property
    def lab(self) -> Any:
        """The lab the tunnel runs in: the lesson's current one when the panel has a lesson."""
        if self._lab is not None and self.lesson is not None and \
                getattr(self.lesson, "lab", None) is not None:
            return self.lesson.lab
        return self._lab

    def _lab_ready(self) -> bool:
        if self._lab is None:
            return False
        if self.lesson is not None and hasattr(self.lesson, "lab_ready") and \
                getattr(self.lesson, "lab", None) is not None:
            return bool(self.lesson.lab_ready)
        return bool(getattr(self._lab, "namespaces", [None]))

    def _ensure_lab(self) -> Any:
        if self.lesson is not None and hasattr(self.lesson, "ensure_lab") and \
                (self.lesson.lab is self._lab or self._lab in self.lesson._past_labs):
            return self.lesson.ensure_lab()
        return self._lab

    def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % of what host a sends on the underlay (see :func:`set_loss`)."""
        if self._lab is None or getattr(self, "_quiet_loss", False):
            return
        if not self._lab_ready():
            if percent:
                self._ensure_lab()
            else:
                return  # no lab, no loss rule to remove
        set_loss(self.lab.b, percent)  # a's packets, lost as they reach b

    def reset_view(self) -> None:
        """The lab was rebuilt: the tunnel is gone, so is its loss rule; start from zero."""
        with self._state_lock:
            self._stop_threads()
        self.samples = []
        self.results = {}
        self.error = None
        self._quiet_loss = True  # the old lab took its loss rule with it
        try:
            self.loss.value = 0
        finally:
            self._quiet_loss = False
        self._buttons(running=False)
        self.status.value = "tunnel stopped (new lab)"
        show_figure(self.image, plots.throughput([], title="Tunnel traffic"))

    def redraw(self) -> None:
        self.render()

    def run_demo(self, lesson: Any, seconds: int = 3) -> Any:
        """Start, push ``seconds`` of iperf3 through the tunnel, and return the throughput
        figure; without a live lab, show the samples recorded from a real run."""
        def live() -> dict[str, Any]:
            self.start()
            mbps = self.traffic(seconds)
            time.sleep(self.interval * 2)
            return {"samples": list(self.samples), "mbps": mbps}

        data = lesson.run("live_panel", live)
        if data is None:
            return None
        if not lesson.live:
            self.show_samples(data["samples"])
        return plots.throughput(data["samples"], live=False,
                                title=f"Tunnel traffic during {seconds} s of iperf3")

    def show_samples(self, samples: Sequence[Mapping[str, float]]) -> None:
        """Draw given (e.g. recorded) samples instead of live ones."""
        self.samples = [dict(s) for s in samples]
        self.render()

    @property
    def running(self) -> bool:
        return self._sampler is not None and self._sampler.is_alive()

    def _buttons(self, running: bool) -> None:
        self.start_button.disabled = running or self._lab is None
        self.stop_button.disabled = not running
        self.traffic_button.disabled = not running

    def start(self) -> None:
        """Start server + client (``lab.start_tunnel()``) and the sampling thread; in a new
        lab when the lesson's lab was removed."""
        from .course import register_cleanup

        with self._state_lock:
            if self.running and self._lab_ready() and \
                    getattr(self.lab, "client", None) is not None:
                return
            self._stop_threads()
            lab = self._ensure_lab()
            register_cleanup(self)
            if getattr(lab, "client", None) is None:
                lab.close_devices()  # a stopped tunnel's devices: let the new one attach
                lab.start_tunnel()
            self.samples = []
            self._stop.clear()
            self._t0 = time.monotonic()
            self._sampler = threading.Thread(target=self._sample_loop, name="tunlab-panel",
                                             daemon=True)
            self._sampler.start()
            self._buttons(running=True)
            self.status.value = ("tunnel running: client in a, server in b; "
                                 + self._ping_through(lab))

    @staticmethod
    def _ping_through(lab: Any) -> str:
        """One ping from a to b's tunnel address: the panel says whether the tunnel carried it."""
        result = lab.a.exec(["ping", "-c1", "-W2", "-n", "10.9.0.2"], check=False, timeout=6)
        if result.returncode == 0:
            return "ping 10.9.0.2 through it: answered"
        return f"ping 10.9.0.2 through it: <b>no reply</b> (ping exit code {result.returncode})"

    def _sample(self) -> dict[str, float] | None:
        client = getattr(self.lab, "client", None)
        if client is None:
            return None
        snap = client.stats.snapshot()
        return {"t": time.monotonic() - self._t0, "packets": snap["read_packets"],
                "bytes": snap["read_bytes"]}

    def _thread_failed(self, exc: BaseException) -> None:
        self.error = _error_text(exc)
        self.status.value = f'<span style="color:#d62728">{html.escape(self.error)}</span>'
        self.fail(exc)

    def _sample_loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                sample = self._sample()
                if sample is not None:
                    self.samples.append(sample)
                    self.render()
            except Exception as exc:  # noqa: BLE001 - report in the panel, never print
                self._thread_failed(exc)
                return
            self._stop.wait(self.interval)

    def render(self) -> None:
        """Draw the current samples into the image (called by the sampler thread)."""
        fig = plots.throughput(self.samples[-200:], title="Tunnel traffic (client → server)",
                               window=self.window)
        show_figure(self.image, fig)
        self.frames_rendered += 1

    def traffic(self, seconds: int = 3, wait: bool = True) -> float | None:
        """iperf3 from a to b through the tunnel for ``seconds``; returns Mbit/s when waited."""
        if self._traffic is not None and self._traffic.is_alive():
            return None
        if getattr(self.lab, "client", None) is None:
            self.status.value = "start the tunnel first"
            return None
        label = f"iperf3 {seconds}s #{len(self.results) + 1}"
        lab = self.lab

        def body() -> None:
            try:
                mbps = lab_iperf3(lab, "10.9.0.2", seconds)
                self.results[label] = mbps
                self.status.value = f"{label}: {mbps:,.0f} Mbit/s through the tunnel"
            except Exception as exc:  # noqa: BLE001 - report in the panel, never print
                self._thread_failed(exc)

        self.status.value = f"{label}: running…"
        self._traffic = threading.Thread(target=body, name="tunlab-iperf3", daemon=True)
        self._traffic.start()
        if wait:
            self._traffic.join(seconds + 15)
            return self.results.get(label)
        return None

    def _stop_threads(self) -> None:
        self._stop.set()
        if self._traffic is not None:
            self._traffic.join(20)
        if self._sampler is not None:
            self._sampler.join(5)
        self._sampler = None

    def stop(self) -> None:
        """Stop sampling and the tunnel (the lab stays); remove the loss rule."""
        with self._state_lock:
            self._stop_threads()
            if self.loss.value:
                self.loss.value = 0
            lab = self.lab
            if lab is not None and hasattr(lab, "stop_tunnel"):
                lab.stop_tunnel()
                lab.close_devices()  # so that start can attach to tun0 again
            self._buttons(running=False)
            self.status.value = "tunnel stopped"

    def close(self) -> None:  # type: ignore[override]
        """Stop everything this panel started. The widgets stay usable: *start tunnel*
        starts again (in a new lab when the lesson's lab was removed)."""
        from .course import unregister_cleanup

        if self._lab is not None:
            self.stop()
        unregister_cleanup(self)


# -- lesson 07: a VPN between two hosts, one fix at a time -------------------------------------

VPN_STEPS = [
    plots.Step("a: ping\nroute lookup", "kernel"),
    plots.Step("a: tun0 →\nvpn-client", "device"),
    plots.Step("TCP over\nveth0", "wire"),
    plots.Step("b: vpn-server\n→ tun0", "app"),
    plots.Step("b: route input\n(forwarding?)", "kernel"),
    plots.Step("b: netfilter\nforward", "kernel"),
    plots.Step("c: echo in,\nreply route?", "kernel"),
    plots.Step("a: reply\ndelivered", "app"),
]


def vpn_figure(result: Mapping[str, Any]) -> Any:
    """The two-host path with where this ping stopped."""
    stage = result.get("stage")
    return plots.packet_path(VPN_STEPS, drop_at=stage, reason=str(result.get("reason", "")),
                             verdict="reply received" if result.get("ok") else "",
                             groups=[("host a", 0, 1), ("host b", 3, 5), ("host c", 6, 6)],
                             title="ping 192.168.50.2 from host a", stop_word="stopped")


class FixPanel(LabPanel, w.VBox):
    """Lesson 07: one checkbox per fix, a source field, a ping button, and where the packet
    stopped.

    ``scenario`` is a :class:`VpnScenario` (None without root: recorded results are shown,
    looked up by the set of fixes). When the lesson's lab was rebuilt (after
    ``lesson.finish()`` or *reset lab*), the panel builds the scenario again in the new lab
    with the ticked fixes. Headless: ``panel.boxes["route_a"].value = True;
    panel.source.value = "198.18.0.1"; panel.ping_button.click()``, then ``last_result``.
    """

    def __init__(self, lesson: Any, scenario: VpnScenario | None) -> None:
        self.scenario = scenario
        self._generation = getattr(lesson, "generation", 0)
        self._quiet = False
        self.last_result: dict[str, Any] | None = None
        self.boxes = {name: w.Checkbox(value=False, description=text, indent=False,
                                       layout=w.Layout(width="560px"))
                      for name, text in VpnScenario.FIXES.items()}
        self.source = w.Text(value="", placeholder="default: 10.9.0.1 (tun0)",
                             description="ping -I", layout=w.Layout(width="300px"),
                             tooltip="source address for the ping, e.g. 198.18.0.1 (veth0)")
        self.ping_button = w.Button(description="ping 192.168.50.2 from a",
                                    button_style="primary", layout=w.Layout(width="240px"))
        self.result = w.HTML()
        self.path = _image()
        self._setup_panel(lesson)
        for name, box in self.boxes.items():
            box.observe(self.guarded(lambda change, name=name: self._toggle(name,
                                                                            change["new"])),
                        "value")
        self.source.observe(self.guarded(lambda _change: self._clear_result()), "value")
        self.ping_button.on_click(self.guarded(lambda _b: self.run()))
        super().__init__([w.HTML("<b>fixes</b> (tick to apply, untick to revert)"),
                          *self.boxes.values(),
                          w.HBox([self.source, self.ping_button]), self.result, self.path,
                          self.bar])

    def _live_scenario(self) -> VpnScenario | None:
        """The scenario in the lesson's current lab (rebuilt with the ticked fixes when the
        lab is new); None without a live lab."""
        if not getattr(self.lesson, "live", False) or getattr(self.lesson, "lab", None) is None:
            return self.scenario
        if hasattr(self.lesson, "ensure_lab"):
            self.lesson.ensure_lab()
        generation = getattr(self.lesson, "generation", 0)
        if self.scenario is None or generation != self._generation:
            self.scenario = VpnScenario.for_lesson(self.lesson)
            self._generation = generation
            if self.scenario is not None:
                self.scenario.set_fixes(set(self.fixes()))
        return self.scenario

    def _toggle(self, name: str, on: bool) -> None:
        if self._quiet:
            return
        self._clear_result()
        scenario = self._live_scenario()
        if scenario is not None:
            scenario.apply(name, on)

    def _clear_result(self) -> None:
        self.last_result = None
        self.result.value = ""
        clear_figure(self.path)

    def lab_rebuilt(self) -> None:
        """Keep the ticks: the new scenario applies them (see :meth:`_live_scenario`)."""
        self._clear_result()

    def reset_view(self) -> None:
        """Fresh lab: untick every box (the new lab has none of the fixes)."""
        self._quiet = True
        try:
            for box in self.boxes.values():
                box.value = False
        finally:
            self._quiet = False
        self._clear_result()

    def redraw(self) -> None:
        if self.last_result is not None:
            show_figure(self.path, vpn_figure(self.last_result))

    def fixes(self) -> list[str]:
        return sorted(n for n, box in self.boxes.items() if box.value)

    def _source(self, source: str | None) -> str | None:
        text = (source if source is not None else self.source.value).strip()
        if not text:
            return None
        if _ipv4(text) is None:
            raise ValueError(f"source {text!r} is not an IPv4 address (try 198.18.0.1)")
        return _ipv4(text)

    def run(self, source: str | None = None) -> dict[str, Any] | None:
        """Ping once with the fixes ticked now (from ``source``, default the source field);
        show where it stopped."""
        self._clear_result()
        try:
            src = self._source(source)
        except ValueError as exc:
            self.result.value = _invalid(str(exc))
            return None
        key = "vpn " + ",".join(self.fixes()) + (f" -I {src}" if src else "")

        def live() -> dict[str, Any]:
            scenario = self._live_scenario()
            if scenario is None:
                raise RuntimeError("no scenario: the lesson's two-host lab is missing")
            return scenario.ping(src)

        result = self.lesson.run(key, live)
        if result is None:
            self.result.value = ("(no recording for this combination: start the lab with "
                                 "`sudo make lab`)")
            return None
        self.last_result = result
        verdict = _badge("reply received", "#2ca02c") if result["ok"] else \
            _badge("no reply", "#d62728")
        moved = "; ".join(f"{h}: " + ", ".join(f"{k} +{v}" for k, v in d.items())
                          for h, d in result["counters"].items() if d)
        recorded = " <i>(recorded example)</i>" if not self.lesson.live else ""
        where = f" (from {html.escape(src)})" if src else ""
        self.result.value = (f'<div style="{_CSS_BOX}">{verdict}{where} '
                             f'{html.escape(result["reason"])}'
                             f"{recorded}{_pre(result['output'])}"
                             f"<b>counters that moved:</b> {html.escape(moved or 'none')}</div>")
        show_figure(self.path, vpn_figure(result))
        return result

    def step(self, fix: str | None = None, source: str | None = None) -> Any:
        """Tick ``fix`` (if given), ping once (from ``source`` when given), and return this
        state as a displayable summary (verdict line + path figure), so that a notebook keeps
        a record of every step."""
        if fix is not None:
            self.boxes[fix].value = True
        return StepView(self.run(source if source is not None else ""), fix)

    def verify_fix_set(self, fixes: set[str]) -> tuple[bool, str] | None:
        """For :func:`tunlab.course.check`: test the set against the kernels (live only)."""
        scenario = self._live_scenario()
        if scenario is None:
            return None
        ok, message = scenario.verify_fix_set(fixes)
        # put the checkboxes' state back in the scenario
        scenario.set_fixes(set(self.fixes()))
        return ok, message


class StepView:
    """One step of lesson 07, shown as a verdict line and the path figure."""

    def __init__(self, result: Mapping[str, Any] | None, fix: str | None = None) -> None:
        self.result = result
        self.fix = fix

    def _repr_html_(self) -> str:
        import base64

        if self.result is None:
            return "<p>(no recording for this step: start the lab with <code>sudo make lab"\
                   "</code>)</p>"
        r = self.result
        head = f"after <code>{html.escape(self.fix)}</code>: " if self.fix else ""
        if r.get("source"):
            head += f"from <code>{html.escape(str(r['source']))}</code>: "
        verdict = _badge("reply received", "#2ca02c") if r["ok"] else _badge("no reply",
                                                                            "#d62728")
        rendered = plots.render(vpn_figure(r), dpi=72)
        png = base64.b64encode(rendered.png).decode()
        size = (f"width:{rendered.css_width}px" if plots.presenter_on() else
                "max-width:900px;width:100%")
        return (f"<div>{head}{verdict} {html.escape(str(r.get('reason', '')))}</div>"
                f'<img src="data:image/png;base64,{png}" style="{size}">')

    def __repr__(self) -> str:
        if self.result is None:
            return "(not recorded)"
        return f"ok={self.result['ok']} {self.result.get('reason', '')}"


# -- lesson 00: the doctor ---------------------------------------------------------------------

def _basic_checks() -> list[dict[str, Any]]:
    import os
    import shutil

    from .privileges import is_privileged

    checks = [{"name": "root / CAP_NET_ADMIN", "ok": is_privileged(),
               "detail": "needed for namespaces, TUN devices, routes",
               "fix": "start the lab with `sudo make lab`"},
              {"name": "/dev/net/tun", "ok": os.path.exists("/dev/net/tun"),
               "detail": "the TUN driver", "fix": "sudo modprobe tun"},
              {"name": "tracefs", "ok": os.path.isdir("/sys/kernel/tracing"),
               "detail": "kernel drop tracing (skb:kfree_skb)",
               "fix": "sudo mount -t tracefs nodev /sys/kernel/tracing"}]
    for tool, pkg in (("ip", "iproute2"), ("ping", "iputils-ping"), ("nft", "nftables"),
                      ("tcpdump", "tcpdump"), ("iperf3", "iperf3"), ("nstat", "iproute2")):
        checks.append({"name": f"{tool} installed", "ok": shutil.which(tool) is not None,
                       "detail": "", "fix": f"apt-get install {pkg}"})
    return checks


def normalize_check(check: Any) -> dict[str, Any]:
    """A doctor check (object or dict) as ``{"name", "ok", "detail", "fix"}``."""
    if isinstance(check, Mapping):
        get = check.get
    else:
        def get(key: str, default: Any = None) -> Any:
            return getattr(check, key, default)
    ok = get("ok")
    if ok is None:
        status = str(get("status", "")).lower()
        ok = status in ("ok", "pass", "passed", "true")
    return {"name": str(get("name", "") or get("title", "")), "ok": bool(ok),
            "detail": str(get("detail", "") or get("message", "") or ""),
            "fix": str(get("fix", "") or "")}


def run_doctor() -> list[dict[str, Any]]:
    """:func:`tunlab.doctor.run_checks` when available (else a basic set), normalised."""
    try:
        from .doctor import run_checks
    except ImportError:
        return _basic_checks()
    result = run_checks()
    if isinstance(result, Mapping) and "checks" in result:
        result = result["checks"]
    return [normalize_check(c) for c in result]


class DoctorPanel(LabPanel, w.VBox):
    """Lesson 00: the doctor's checks as a table, re-run with a button.

    Headless: ``panel.rerun.click()``, then ``panel.last_checks``.
    """

    def __init__(self, checks_fn: Callable[[], list[dict[str, Any]]] | None = None,
                 lesson: Any = None) -> None:
        self.checks_fn = checks_fn or run_doctor
        self.last_checks: list[dict[str, Any]] = []
        self.rerun = w.Button(description="run the checks again", icon="refresh")
        self.table = w.HTML()
        self._setup_panel(lesson)
        self.rerun.on_click(self.guarded(lambda _b: self.run()))
        super().__init__([self.rerun, self.table, self.bar])
        self.run()

    def lab_rebuilt(self) -> None:
        """The checks do not depend on the lab."""

    def reset_view(self) -> None:
        self.run()

    def run(self) -> list[dict[str, Any]]:
        """Run the checks and show them."""
        self.last_checks = self.checks_fn()
        rows = []
        for c in self.last_checks:
            mark = ('<span style="color:#2ca02c">✔</span>' if c["ok"] else
                    '<span style="color:#d62728">✘</span>')
            fix = "" if c["ok"] else html.escape(c["fix"])
            rows.append(f"<tr><td>{mark}</td><td>{html.escape(c['name'])}</td>"
                        f"<td>{html.escape(c['detail'])}</td><td><code>{fix}</code></td></tr>")
        ok = sum(c["ok"] for c in self.last_checks)
        self.table.value = (f"<p><b>{ok} of {len(self.last_checks)} checks pass</b></p>"
                            '<table><tr><th></th><th>check</th><th>what for</th><th>fix</th></tr>'
                            + "".join(rows) + "</table>")
        return self.last_checks
