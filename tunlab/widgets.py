"""ipywidgets panels for the lessons. Each panel is an ``ipywidgets.VBox`` to display, and keeps
its last result in attributes (``last_report``, ``last_output``, ``samples``, ...) so that the
handlers can be driven headless: ``panel.send.click()`` or ``panel.src.value = "..."`` fire the
same code a browser click does, and tests assert on those attributes.

Rules kept here: handlers finish within a few seconds (every command has a timeout);
background threads never ``print()`` (they set widget values and attributes); everything a
panel starts (threads, processes, nft rules) stops with :meth:`close`, which the lesson also
calls when the kernel stops.
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
    if report.get("recorded"):
        parts.append(' <span style="color:#7a5b00">(recorded example, no root here)</span>')
    if elapsed is not None:
        parts.append(f' <span style="color:#888">({elapsed:.1f} s)</span>')
    rows = ["<div>" + "".join(parts) + "</div>"]
    martians = list(report.get("martian_log") or [])
    if martians:
        rows.append("<div><b>kernel log:</b>" + _pre("\n".join(martians)) + "</div>")
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
    explanation = str(report.get("explanation") or "")
    if explanation:
        rows.append(f'<div style="margin-top:4px"><b>why:</b> {html.escape(explanation)}</div>')
    return f'<div class="tunlab-fate" style="{_CSS_BOX}">' + "".join(rows) + "</div>"


def _image(fig: Any | None = None, width: str = "100%") -> w.Image:
    image = w.Image(format="png", layout=w.Layout(width=width, max_width="900px"))
    if fig is not None:
        image.value = plots.to_png(fig)
    return image


# -- the packet builder ------------------------------------------------------------------------

class PacketBuilder(w.VBox):
    """Craft one IPv4 packet, choose kernel settings, press Send: the kernel's verdict appears.

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
                 firewall: bool = False, show_path: bool = True) -> None:
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
        self.ttl = w.BoundedIntText(value=ttl, min=1, max=255, description="TTL", style=style,
                                    layout=short)
        self.dport = w.BoundedIntText(value=dport, min=1, max=65535, description="dest port",
                                      style=style, layout=short)
        self.dev = w.Dropdown(options=["mytun2", "mytun"], value=dev, description="written to",
                              style=style, layout=short)
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
        self.send.on_click(lambda _button: self.run())
        packet = w.VBox([w.HTML("<b>packet</b>"), self.src, self.dst, self.proto, self.ttl,
                         self.dport, self.dev])
        rp_row = w.HBox([w.Label("rp_filter", layout=w.Layout(width="70px")), self.rp_filter])
        kernel = w.VBox([w.HTML("<b>kernel settings</b> (net.ipv4.*, in the lab namespace)"),
                         self.ip_forward, rp_row, self.accept_local, self.log_martians,
                         self.firewall, w.HBox([self.send, self.status])],
                        layout=w.Layout(margin="0 0 0 24px"))
        self.proto.observe(lambda change: self._port_enabled(), "value")
        self._port_enabled()
        children: list[w.Widget] = [w.HBox([packet, kernel]), self.result]
        if self.path is not None:
            children.append(self.path)
        super().__init__(children)
        self.add_class("tunlab-packet-builder")
        for widget, name in ((self.src, "tunlab-src"), (self.dst, "tunlab-dst"),
                             (self.rp_filter, "tunlab-rp-filter"), (self.send, "tunlab-send"),
                             (self.result, "tunlab-result")):
            widget.add_class(name)

    def _port_enabled(self) -> None:
        self.dport.disabled = self.proto.value not in ("udp", "tcp")

    def params(self) -> dict[str, Any]:
        """The packet_fate arguments the controls describe."""
        from .course import FORWARD_DROP_RULESET

        proto: str | int = self.proto.value
        if str(proto).isdigit():
            proto = int(proto)
        return {
            "src": self.src.value.strip(), "dst": self.dst.value.strip(), "proto": proto,
            "dport": int(self.dport.value) if proto in ("udp", "tcp") else None,
            "ttl": int(self.ttl.value), "dev": self.dev.value,
            "sysctls": {"net.ipv4.ip_forward": int(self.ip_forward.value),
                        "net.ipv4.conf.all.rp_filter": int(self.rp_filter.value),
                        "net.ipv4.conf.all.accept_local": int(self.accept_local.value),
                        "net.ipv4.conf.all.log_martians": int(self.log_martians.value)},
            "nft_ruleset": FORWARD_DROP_RULESET if self.firewall.value else None,
        }

    def run(self) -> dict[str, Any] | None:
        """Send the packet now (what the button does); returns the report."""
        params = self.params()
        self.last_params = params
        self.last_error = None
        self.send.disabled = True
        self.status.value = '<span style="color:#888">asking the kernel…</span>'
        started = time.monotonic()
        try:
            args = dict(params)
            report = dict(self.fate_fn(args.pop("src"), args.pop("dst"), **args))
        except Exception as exc:  # noqa: BLE001 - show it in the panel, keep the widget alive
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_report = None
            self.result.value = (f'<div style="{_CSS_BOX};color:#d62728"><b>error:</b> '
                                 f"{html.escape(self.last_error)}</div>")
            return None
        finally:
            self.send.disabled = False
            self.status.value = ""
        elapsed = time.monotonic() - started
        self.last_report = report
        self.history.append((params, report))
        self.result.value = fate_html(report, elapsed)
        if self.path is not None:
            self.path.value = plots.to_png(plots.fate_path(report, params["src"], params["dst"],
                                                            params["dev"]), dpi=80)
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
    import re
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
    return {int(num): name for num, name in re.findall(r'\{\s*(\d+),\s*"(\w+)"\s*\}', text)}


# -- the routing view --------------------------------------------------------------------------

class RouteView(w.VBox):
    """The lab's routing tables (main and local) and ``ip route get`` for a typed address.

    ``lesson`` is a :class:`tunlab.course.Lesson`; without a live lab, recorded lookups are
    shown. Headless: ``view.address.value = "10.0.0.1"; view.lookup.click()``, then
    ``view.last_output`` / ``view.last_device`` / ``view.last_table``.
    """

    def __init__(self, lesson: Any, address: str = "10.0.0.2") -> None:
        self.lesson = lesson
        self.last_output = ""
        self.last_device = ""
        self.last_table = ""
        self.address = w.Text(value=address, description="address", continuous_update=False,
                              layout=w.Layout(width="240px"))
        self.lookup = w.Button(description="ip route get", button_style="primary",
                               layout=w.Layout(width="140px"))
        self.tables = w.HTML()
        self.result = w.HTML()
        self.path = _image()
        self.lookup.on_click(lambda _b: self.route_get())
        self.address.observe(lambda _change: self.route_get(), "value")
        super().__init__([self.tables, w.HBox([self.address, self.lookup]), self.result,
                          self.path])
        self.refresh_tables()

    def _ip(self, key: str, *args: str) -> str:
        value = self.lesson.run(key, lambda: self.lesson.ns.ip(*args, check=False))
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

    def route_get(self, address: str | None = None) -> str:
        """``ip route get ADDRESS`` in the lab; shows and returns the kernel's answer."""
        address = (address or self.address.value).strip()
        out = self._ip(f"route_get {address}", "route", "get", address)
        if not out:
            out = ("(no recorded answer for this address; start the lab with "
                   "`sudo make lab` to ask the kernel)") if not self.lesson.live else \
                "(the kernel gave no route)"
        self.last_output = out
        words = out.split()
        self.last_device = words[words.index("dev") + 1] if "dev" in words else ""
        self.last_table = "local" if out.startswith("local ") else ("main" if words else "")
        self.result.value = _pre(f"$ ip route get {address}\n{out.strip()}")
        if self.last_device:
            self.path.value = plots.to_png(route_figure(address, self.last_device,
                                                        self.last_table), dpi=80)
        return out


def route_figure(address: str, device: str, table: str) -> Any:
    """A small path: ping → routing decision → device (and back via lo for local addresses)."""
    if table == "local":
        steps = [plots.Step(f"ping\n{address}", "app"),
                 plots.Step("route lookup\ntable local\n(wins first)", "kernel"),
                 plots.Step(f"{device}\n(loopback)", "device"),
                 plots.Step("delivered to\nthis host", "kernel")]
        return plots.packet_path(steps, verdict="answered by this host, never leaves",
                                 title=f"ip route get {address}: dev {device}")
    steps = [plots.Step(f"ping\n{address}", "app"),
             plots.Step(f"route lookup\ntable {table}", "kernel"),
             plots.Step(device, "device"),
             plots.Step("whoever reads\nthe device", "app")]
    return plots.packet_path(steps, verdict=f"sent out of {device}",
                             title=f"ip route get {address}: dev {device}")


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


class PiReader(w.VBox):
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
        self.read.on_click(lambda _b: self.read_packet())
        super().__init__([w.HBox([self.no_pi, self.read]), self.result, self.layout_image])

    def read_packet(self) -> bytes | None:
        """Attach, ping, read one packet; show its bytes and their meaning."""
        no_pi = bool(self.no_pi.value)
        key = f"read no_pi={int(no_pi)}"
        self.last_error = None
        try:
            data = self.lesson.run(key, lambda: read_one_ping(self.lesson.ns, self.device,
                                                              self.target, no_pi))
        except (OSError, TimeoutError) as exc:
            self.last_error = str(exc)
            self.result.value = f'<div style="color:#d62728">{html.escape(str(exc))}</div>'
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
        self.layout_image.value = plots.to_png(plots.read_layout(data, pi=not no_pi), dpi=80)
        return data


# -- frames on the wire (lesson 03) ------------------------------------------------------------

class FrameExplorer(w.VBox):
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
        self.send.on_click(lambda _b: self.capture())
        super().__init__([w.HBox([self.size, self.send]), self.summary, self.layout_image,
                          self.dissection])

    def capture(self) -> bytes | None:
        """Capture one ping's frame and show it."""
        size = int(self.size.value)

        def live() -> dict[str, Any]:
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
        self.layout_image.value = plots.to_png(plots.frame_layout(frame), dpi=80)
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
        if not lesson.live or lesson.lab is None:
            return
        from .course import register_cleanup
        from .tunnel import TunnelServer

        lab = lesson.lab
        self.server = TunnelServer(lab.device("mytun2"), ("127.0.0.1", 0), namespace=lab.ns,
                                   record_packets=True).start()
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
                                   record_packets=True).start()
        if not self.client.wait_until(lambda: self.client.connected and self.server.connected,
                                      5):
            raise TimeoutError("the vpn-client could not connect to the vpn-server in 5 s")

    @property
    def port(self) -> int | None:
        return self.server.address[1] if self.server is not None else None

    def close(self) -> None:
        """Stop client and server (the devices stay; the lab removes them)."""
        for endpoint in (self.client, self.server):
            if endpoint is not None:
                endpoint.stop()
        from .course import unregister_cleanup

        unregister_cleanup(self)


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
    server.wait_until(lambda: server.stats.written_packets > s0["written_packets"], wait)
    time.sleep(0.05)
    c1, s1 = client.stats.snapshot(), server.stats.snapshot()
    counters = counter_delta(n0, snmp_counters(ns))
    since = started - 0.01
    read = [e for e in client.events({"read"}) if e.time >= since and e.data is not None
            and _is_echo_to(e.data, target)]
    sent = [e for e in client.events({"sent"}) if e.time >= since and e.data is not None
            and _is_echo_to(e.data[8:], target)]
    written = [e for e in server.events({"written"}) if e.time >= since and e.data is not None
               and _is_echo_to(e.data, target)]
    return {
        "target": target, "ping_rc": ping.returncode, "ping_output": ping.stdout + ping.stderr,
        "client_read": c1["read_packets"] - c0["read_packets"],
        "frames_sent": c1["frames_sent"] - c0["frames_sent"],
        "server_written": s1["written_packets"] - s0["written_packets"],
        "echo_read": len(read), "echo_written": len(written),
        "sent_hex": read[0].data.hex() if read and read[0].data else "",
        "frame_hex": sent[0].data.hex() if sent and sent[0].data else "",
        "released_hex": written[0].data.hex() if written and written[0].data else "",
        "counters": counters,
    }


COUNTER_MEANINGS = {
    "IpInAddrErrors": ("IP_INADDRERRORS", "not for this host and forwarding is off "
                       "(net.ipv4.ip_forward=0): ip_error() drops it"),
    "TcpExtIPReversePathFilter": ("IP_RPFILTER", "rp_filter: the reply would leave by another "
                                  "device"),
    "IpForwDatagrams": ("", "forwarded out of another device"),
    "IcmpInEchos": ("", "an echo request was delivered to this host's ICMP"),
    "IpInUnknownProtos": ("IP_NOPROTO", "no handler for this IP protocol"),
    "IpOutNoRoutes": ("IP_OUTNOROUTES", "no route for a packet this host sends"),
}


def explain_counters(counters: Mapping[str, int]) -> list[str]:
    """Plain-words lines for the nstat counters that moved and mean something here."""
    lines = []
    for name, (reason, meaning) in COUNTER_MEANINGS.items():
        if counters.get(name):
            tag = f" → drop reason {reason}" if reason else ""
            lines.append(f"{name} +{counters[name]}: {meaning}{tag}")
    return lines


class SeedGoalPanel(w.VBox):
    """Lesson 04: choose a destination, ping it once, see every hop and the kernel's verdict.

    Headless: ``panel.target.value = "10.0.0.1"; panel.ping.click()``, then ``last_result``.
    """

    TARGETS = ["10.0.0.2", "10.0.0.1", "10.0.0.77", "10.0.2.1"]

    def __init__(self, lesson: Any, server: Any = None, client: Any = None) -> None:
        self.lesson = lesson
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
        self.ping.on_click(lambda _b: self.run())
        super().__init__([w.HBox([self.target, self.ping]), self.result, self.path])

    def run(self, target: str | None = None) -> dict[str, Any] | None:
        """Ping once and show the hops."""
        target = (target or self.target.value).strip()
        result = self.lesson.run(f"ping {target}", lambda: ping_through_seed(
            self.lesson.ns, self.server, self.client, target))
        if result is None:
            self.result.value = ("(no recording for this address: start the lab with "
                                 "`sudo make lab`)")
            return None
        self.last_result = result
        self.result.value = self.hops_html(result)
        self.path.value = plots.to_png(self.figure(result), dpi=80)
        return result

    @staticmethod
    def figure(result: Mapping[str, Any]) -> Any:
        """The seed path with where this ping stopped."""
        counters = result.get("counters", {})
        if not result.get("client_read"):
            if result.get("ping_rc") == 0:
                return route_figure(result["target"], "lo", "local")
            return plots.seed_path(stopped_at=2, stop_reason="nothing entered mytun",
                                   title=f"ping {result['target']}")
        reasons = [COUNTER_MEANINGS[k][0] for k in COUNTER_MEANINGS
                   if counters.get(k) and COUNTER_MEANINGS[k][0]]
        verdict = "forwarded" if counters.get("IpForwDatagrams") else (
            "delivered" if counters.get("IcmpInEchos") else "dropped")
        fate = {"verdict": "dropped" if reasons else verdict, "drop_reasons": reasons}
        return plots.seed_path(fate, title=f"ping {result['target']}")

    def hops_html(self, r: Mapping[str, Any]) -> str:
        """The hops as an HTML list."""
        rows = [f"<li><code>ping -c1 {html.escape(r['target'])}</code> exit code "
                f"{r['ping_rc']} ({'a reply came back' if r['ping_rc'] == 0 else 'no reply'})"
                "</li>",
                f"<li>vpn-client read <b>{r['client_read']}</b> packet(s) from mytun, "
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

class TunnelPanel(w.VBox):
    """Start/stop a tunnel, push traffic through it, and watch packets/s and Mbit/s live.

    ``lab`` is a :class:`tunlab.lab.TwoHostLab` (lesson 08). A background thread samples the
    client's counters every ``interval`` seconds and renders :func:`tunlab.plots.throughput`
    into an ``ipywidgets.Image`` (it never prints; it stops with :meth:`stop` or after
    ``max_seconds``). Traffic: ``iperf3`` from host a to the far tunnel end.

    Headless: ``panel.start_button.click()``, ``panel.traffic(seconds=2)``, then ``samples``,
    ``results``; ``panel.stop_button.click()``.
    """

    def __init__(self, lab: Any, interval: float = 0.5, max_seconds: float = 300.0,
                 window: float = 20.0) -> None:
        self.lab = lab
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
        self.loss.observe(lambda change: self.set_loss(change["new"]), "value")
        self.status = w.HTML(value="tunnel stopped")
        self.image = _image()
        self.start_button.on_click(lambda _b: self.start())
        self.stop_button.on_click(lambda _b: self.stop())
        self.traffic_button.on_click(lambda _b: self.traffic(int(self.seconds.value),
                                                             wait=False))
        super().__init__([w.HBox([self.start_button, self.stop_button]),
                          w.HBox([self.seconds, self.traffic_button]),
                          w.HBox([self.loss, w.HTML("on a's underlay (veth0), by nftables")]),
                          self.status, self.image])
        self.image.value = plots.to_png(plots.throughput([], title="Tunnel traffic"), dpi=80)
        if lab is None:
            self.start_button.disabled = True
            self.status.value = ("read-only: no lab here (start it with <code>sudo make lab"
                                 "</code>); below, samples recorded from a real run")

    def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % of what host a sends on the underlay (see :func:`set_loss`)."""
        if self.lab is not None:
            set_loss(self.lab.a, percent)

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

    def start(self) -> None:
        """Start server + client (``lab.start_tunnel()``) and the sampling thread."""
        if self.running:
            return
        from .course import register_cleanup

        register_cleanup(self)
        if getattr(self.lab, "client", None) is None:
            self.lab.start_tunnel()
        self.samples = []
        self._stop.clear()
        self._t0 = time.monotonic()
        self._sampler = threading.Thread(target=self._sample_loop, name="tunlab-panel",
                                         daemon=True)
        self._sampler.start()
        self.start_button.disabled = True
        self.stop_button.disabled = False
        self.traffic_button.disabled = False
        self.status.value = "tunnel running: client in a, server in b"

    def _sample(self) -> dict[str, float] | None:
        client = getattr(self.lab, "client", None)
        if client is None:
            return None
        snap = client.stats.snapshot()
        return {"t": time.monotonic() - self._t0, "packets": snap["read_packets"],
                "bytes": snap["read_bytes"]}

    def _sample_loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                sample = self._sample()
                if sample is not None:
                    self.samples.append(sample)
                    self.render()
            except Exception as exc:  # noqa: BLE001 - report in the panel, never print
                self.error = f"{type(exc).__name__}: {exc}"
                self.status.value = f'<span style="color:#d62728">{html.escape(self.error)}</span>'
            self._stop.wait(self.interval)

    def render(self) -> None:
        """Draw the current samples into the image (called by the sampler thread)."""
        fig = plots.throughput(self.samples[-200:], title="Tunnel traffic (client → server)",
                               window=self.window)
        self.image.value = plots.to_png(fig, dpi=80)
        self.frames_rendered += 1

    def traffic(self, seconds: int = 3, wait: bool = True) -> float | None:
        """iperf3 from a to b through the tunnel for ``seconds``; returns Mbit/s when waited."""
        if self._traffic is not None and self._traffic.is_alive():
            return None
        label = f"iperf3 {seconds}s #{len(self.results) + 1}"

        def body() -> None:
            try:
                mbps = lab_iperf3(self.lab, "10.9.0.2", seconds)
                self.results[label] = mbps
                self.status.value = f"{label}: {mbps:,.0f} Mbit/s through the tunnel"
            except Exception as exc:  # noqa: BLE001
                self.error = f"{type(exc).__name__}: {exc}"
                self.status.value = f'<span style="color:#d62728">{html.escape(self.error)}</span>'

        self.status.value = f"{label}: running…"
        self._traffic = threading.Thread(target=body, name="tunlab-iperf3", daemon=True)
        self._traffic.start()
        if wait:
            self._traffic.join(seconds + 15)
            return self.results.get(label)
        return None

    def stop(self) -> None:
        """Stop sampling and the tunnel (the lab stays); remove the loss rule."""
        self._stop.set()
        if self.lab is not None and self.loss.value:
            self.loss.value = 0
        if self._traffic is not None:
            self._traffic.join(20)
        if self._sampler is not None:
            self._sampler.join(5)
        self._sampler = None
        if hasattr(self.lab, "stop_tunnel"):
            self.lab.stop_tunnel()
        self.start_button.disabled = False
        self.stop_button.disabled = True
        self.traffic_button.disabled = True
        self.status.value = "tunnel stopped"

    def close(self) -> None:  # type: ignore[override]
        """Stop everything this panel started, then close the widgets."""
        from .course import unregister_cleanup

        if self.lab is not None:
            self.stop()
        unregister_cleanup(self)
        super().close()


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


class FixPanel(w.VBox):
    """Lesson 07: one checkbox per fix, a ping button, and where the packet stopped.

    ``scenario`` is a :class:`VpnScenario` (None without root: recorded results are shown,
    looked up by the set of fixes). Headless: ``panel.boxes["route_a"].value = True;
    panel.ping_button.click()``, then ``panel.last_result``.
    """

    def __init__(self, lesson: Any, scenario: VpnScenario | None) -> None:
        self.lesson = lesson
        self.scenario = scenario
        self.last_result: dict[str, Any] | None = None
        self.boxes = {name: w.Checkbox(value=False, description=text, indent=False,
                                       layout=w.Layout(width="560px"))
                      for name, text in VpnScenario.FIXES.items()}
        for name, box in self.boxes.items():
            box.observe(lambda change, name=name: self._toggle(name, change["new"]), "value")
        self.ping_button = w.Button(description="ping 192.168.50.2 from a",
                                    button_style="primary", layout=w.Layout(width="240px"))
        self.result = w.HTML()
        self.path = _image()
        self.ping_button.on_click(lambda _b: self.run())
        super().__init__([w.HTML("<b>fixes</b> (tick to apply, untick to revert)"),
                          *self.boxes.values(), self.ping_button, self.result, self.path])

    def _toggle(self, name: str, on: bool) -> None:
        if self.scenario is not None:
            self.scenario.apply(name, on)

    def fixes(self) -> list[str]:
        return sorted(n for n, box in self.boxes.items() if box.value)

    def run(self) -> dict[str, Any] | None:
        """Ping once with the fixes ticked now; show where it stopped."""
        key = "vpn " + ",".join(self.fixes())
        result = self.lesson.run(key, lambda: self.scenario.ping())
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
        self.result.value = (f'<div style="{_CSS_BOX}">{verdict} {html.escape(result["reason"])}'
                             f"{recorded}{_pre(result['output'])}"
                             f"<b>counters that moved:</b> {html.escape(moved or 'none')}</div>")
        self.path.value = plots.to_png(vpn_figure(result), dpi=80)
        return result

    def step(self, fix: str | None = None, source: str | None = None) -> Any:
        """Tick ``fix`` (if given), ping once, and return this state as a displayable summary
        (verdict line + path figure), so that a notebook keeps a record of every step."""
        if fix is not None:
            self.boxes[fix].value = True
        if source is None:
            result = self.run()
        else:
            key = "vpn " + ",".join(self.fixes()) + f" -I {source}"
            result = self.lesson.run(key, lambda: self.scenario.ping(source))
            if result is not None:
                self.last_result = result
        return StepView(result, fix)

    def verify_fix_set(self, fixes: set[str]) -> tuple[bool, str] | None:
        """For :func:`tunlab.course.check`: test the set against the kernels (live only)."""
        if self.scenario is None:
            return None
        ok, message = self.scenario.verify_fix_set(fixes)
        # put the checkboxes' state back in the scenario
        self.scenario.set_fixes(set(self.fixes()))
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
        verdict = _badge("reply received", "#2ca02c") if r["ok"] else _badge("no reply",
                                                                            "#d62728")
        png = base64.b64encode(plots.to_png(vpn_figure(r), dpi=72)).decode()
        return (f"<div>{head}{verdict} {html.escape(str(r.get('reason', '')))}</div>"
                f'<img src="data:image/png;base64,{png}" style="max-width:900px;width:100%">')

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


class DoctorPanel(w.VBox):
    """Lesson 00: the doctor's checks as a table, re-run with a button.

    Headless: ``panel.rerun.click()``, then ``panel.last_checks``.
    """

    def __init__(self, checks_fn: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.checks_fn = checks_fn or run_doctor
        self.last_checks: list[dict[str, Any]] = []
        self.rerun = w.Button(description="run the checks again", icon="refresh")
        self.table = w.HTML()
        self.rerun.on_click(lambda _b: self.run())
        super().__init__([self.rerun, self.table])
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
