"""Matplotlib figures for the lessons: packet paths, byte layouts, tunnel rates, drop reasons.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so figures can
be made in any thread (the live tunnel panel renders from a background thread) and never pile
up in pyplot's global state. In a notebook, a Figure as the last expression of a cell is shown;
:func:`to_png` turns one into PNG bytes for an ``ipywidgets.Image``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.ticker import MaxNLocator

# One colour per kind of thing, used consistently across the lessons.
COLORS = {
    "app": "#dbe9f6",       # programs: ping, the vpn-client/-server
    "kernel": "#e8e1f3",    # the kernel's decisions: routing, netfilter, delivery
    "device": "#fde7c8",    # network devices: mytun, mytun2, lo, veth0
    "wire": "#e3f1e0",      # the TCP connection / cable between tunnel ends
    "verdict": "#f3f3f3",
    "drop": "#d62728",
    "ok": "#2ca02c",
    "muted": "#bbbbbb",
}
LAYER_COLORS = {
    "pi": "#f4a6a6",        # the 4-byte packet-information header (IFF_NO_PI off)
    "tunlab": "#ffcc80",    # tunlab's frame header
    "ip": "#9ecae1",        # IPv4 header
    "l4": "#a1d99b",        # ICMP / TCP / UDP header
    "payload": "#e0e0e0",
}
LAYER_NAMES = {"pi": "TUN packet info (no IFF_NO_PI)", "tunlab": "tunlab frame header",
               "ip": "IPv4 header", "l4": "ICMP/UDP/TCP header", "payload": "payload"}


PRESENTER_MIN_POINTS = 12.0
"""Smallest text in presenter mode: 12 pt is 16 CSS px when shown at 96 px per inch."""
PRESENTER_SCALE = 1.45
"""Presenter mode grows figures and their text by this factor (layout stays the same)."""
HIDPI = 2
"""Presenter mode renders this many device pixels per CSS pixel (sharp on a projector/HiDPI)."""
CSS_DPI = 96


class _Mode:
    presenter = False


def set_presenter(on: bool = True) -> None:
    """Presenter mode on or off for every figure rendered from now on (see :func:`render`)."""
    _Mode.presenter = bool(on)


def presenter_on() -> bool:
    """True while presenter mode is on."""
    return _Mode.presenter


def _enlarge(fig: Figure) -> None:
    """Grow ``fig`` and every text in it for presenter mode (once per figure)."""
    from matplotlib.text import Text

    if getattr(fig, "_tunlab_presenter", False):
        return
    fig._tunlab_presenter = True  # type: ignore[attr-defined]
    width, height = fig.get_size_inches()
    fig.set_size_inches(width * PRESENTER_SCALE, height * PRESENTER_SCALE)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for label in axis.get_ticklabels(which="both"):
                label.set_fontsize(max(label.get_fontsize() * PRESENTER_SCALE,
                                       PRESENTER_MIN_POINTS))
    for text in fig.findobj(Text):
        text.set_fontsize(max(text.get_fontsize() * PRESENTER_SCALE, PRESENTER_MIN_POINTS))


@dataclass(frozen=True)
class Rendered:
    """A figure as PNG bytes and the width (CSS px) to show it at."""

    png: bytes
    css_width: int


def render(fig: Figure, dpi: int = 100) -> Rendered:
    """Render ``fig`` for the screen: at ``dpi`` normally; in presenter mode enlarged (text
    at least 16 CSS px), at :data:`HIDPI` times 96 dpi, to be shown at half its pixel width."""
    if _Mode.presenter:
        _enlarge(fig)
        fig.draw_without_rendering()  # tick labels get their text
        smallest = smallest_text_points(fig)
        metadata = {SMALLEST_TEXT_KEY: f"{smallest:.2f}"} if smallest else None
        png = _png(fig, CSS_DPI * HIDPI, metadata)
        return Rendered(png, png_size(png)[0] // HIDPI)
    png = _png(fig, dpi)
    return Rendered(png, png_size(png)[0])


SMALLEST_TEXT_KEY = "tunlab:smallest-text-pt"
"""PNG text chunk of a presenter-mode figure: its smallest font size in points (the browser
test turns it into CSS px with the PNG's dpi and the size the page shows the image at)."""


def smallest_text_points(fig: Figure) -> float | None:
    """The smallest font size (points) of the visible, non-empty texts of ``fig``."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip()]
    return float(min(sizes)) if sizes else None


def _png(fig: Figure, dpi: int, metadata: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata=metadata)
    return buf.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from a PNG's header."""
    if len(png) < 24 or not png.startswith(b"\x89PNG"):
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes (for ``ipywidgets.Image(value=...)``); presenter mode
    renders large and high-DPI (see :func:`render`)."""
    return render(fig, dpi).png


def figure_text(fig: Figure) -> list[str]:
    """Every text in ``fig`` (titles, labels, annotations, tick labels): for tests and search."""
    texts: list[str] = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))
                        if hasattr(t, "get_text")]
    return [t for t in texts if t]


# -- packet path -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One station on a packet's way: a program, a kernel decision, a device, a wire."""

    label: str
    kind: str = "kernel"     # key of COLORS: app, kernel, device, wire, verdict


def _as_step(item: Step | str | tuple[str, str]) -> Step:
    if isinstance(item, Step):
        return item
    if isinstance(item, tuple):
        return Step(*item)
    return Step(item)


def packet_path(steps: Sequence[Step | str | tuple[str, str]], drop_at: int | None = None,
                reason: str = "", groups: Sequence[tuple[str, int, int]] = (),
                title: str = "", verdict: str = "", stop_word: str = "dropped") -> Figure:
    """A left-to-right diagram of the stations a packet passes.

    ``steps`` are :class:`Step` objects, ``(label, kind)`` tuples or labels. ``drop_at`` is the
    index of the station where the kernel dropped the packet: it gets a red cross and the
    ``reason`` underneath, and everything after it is greyed out. ``groups`` are
    ``(name, first, last)`` step ranges drawn as a box behind them (a namespace, a host).
    ``verdict`` (e.g. "delivered") is written after the last step when nothing was dropped.
    ``stop_word`` heads the reason ("dropped", or "stopped" when nothing was dropped as such).
    """
    items = [_as_step(s) for s in steps]
    n = len(items)
    width = max(6.0, 1.55 * n + 0.6)
    fig = Figure(figsize=(width, 2.9))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.2, n * 1.5 + 0.3)
    ax.set_ylim(-1.05, 1.45)
    ax.axis("off")
    box_w, box_h = 1.2, 0.9
    for name, first, last in groups:
        x0 = first * 1.5 - 0.1
        x1 = last * 1.5 + box_w + 0.1
        ax.add_patch(FancyBboxPatch((x0, -0.62), x1 - x0, 1.55,
                                    boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor="none", edgecolor="#7f7f7f", linestyle="--",
                                    linewidth=1))
        ax.text(x0 + 0.08, 0.98, name, ha="left", va="bottom", fontsize=8.5,
                color="#555555", style="italic")
    for i, step in enumerate(items):
        x = i * 1.5
        after_drop = drop_at is not None and i > drop_at
        face = COLORS.get(step.kind, COLORS["kernel"])
        edge = "#444444"
        text_color = "#111111"
        if after_drop:
            face, edge, text_color = "#f7f7f7", COLORS["muted"], "#999999"
        if drop_at == i:
            edge = COLORS["drop"]
        ax.add_patch(FancyBboxPatch((x, -box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor=face, edgecolor=edge,
                                    linewidth=2.2 if drop_at == i else 1.1))
        ax.text(x + box_w / 2, 0, step.label, ha="center", va="center", fontsize=8.5,
                color=text_color, wrap=True)
        if i < n - 1:
            muted = drop_at is not None and i >= drop_at
            ax.add_patch(FancyArrowPatch((x + box_w + 0.02, 0), (x + 1.5 - 0.02, 0),
                                         arrowstyle="-|>", mutation_scale=12,
                                         color=COLORS["muted"] if muted else "#333333",
                                         linestyle=":" if muted else "-"))
    if drop_at is not None and 0 <= drop_at < n:
        x = drop_at * 1.5 + box_w / 2
        ax.plot([x - 0.22, x + 0.22], [0.62, 1.06], color=COLORS["drop"], linewidth=3.5)
        ax.plot([x - 0.22, x + 0.22], [1.06, 0.62], color=COLORS["drop"], linewidth=3.5)
        label = f"{stop_word}: {reason}" if reason else stop_word
        ax.text(x, -0.72, label, ha="center", va="top", fontsize=9.5, color=COLORS["drop"],
                fontweight="bold")
    elif verdict:
        x = (n - 1) * 1.5 + box_w / 2
        ax.text(x, -0.72, verdict, ha="center", va="top", fontsize=9.5, color=COLORS["ok"],
                fontweight="bold")
    if title:
        ax.text(0, 1.4, title, ha="left", va="top", fontsize=11, fontweight="bold")
    return fig


# Where in the receive path each drop reason happens (for marking the drop on a diagram).
def drop_stage(reasons: Sequence[str]) -> str:
    """``"route"``, ``"netfilter"`` or ``"deliver"``: where the first known reason strikes.

    From the one catalogue of drop reasons (:mod:`tunlab.fate.reasons`); NOT_SPECIFIED and
    unknown reasons say nothing about the place, and count as the route lookup.
    """
    from tunlab.fate.reasons import REASONS, Stage

    for reason in reasons:
        info = REASONS.get(reason)
        if info is None or reason == "NOT_SPECIFIED":
            continue
        if info.stage == Stage.FIREWALL:
            return "netfilter"
        if info.stage == Stage.LOCAL:
            return "deliver"
        return "route"
    return "route"


def fate_path(fate: Mapping[str, Any] | None, src: str = "", dst: str = "",
              dev: str = "mytun2", title: str = "") -> Figure:
    """What the kernel did with one packet written into ``dev`` (a :mod:`tunlab.fate` report).

    Stations: the crafted packet, the device it was written to, input routing (where
    rp_filter and the martian checks live), netfilter, and local delivery or forwarding.
    """
    fate = fate or {}
    verdict = str(fate.get("verdict", ""))
    reasons = [str(r) for r in fate.get("drop_reasons") or []]
    via = fate.get("forwarded_via")
    last = {"forwarded": f"forwarded\nout of {via}" if via else "forwarded",
            "delivered": "delivered to\na protocol"}.get(
                verdict, "forwarded out /\ndelivered to\na protocol")
    steps = [Step(f"packet\n{src} →\n{dst}" if src or dst else "packet", "app"),
             Step(f"{dev}\n(write)", "device"),
             Step("ip_rcv →\nroute input\nrp_filter, martians", "kernel"),
             Step("netfilter\nforward / input", "kernel"),
             Step(last, "kernel")]
    # The kernel's answers leave through the lab's devices, most often wan0, the uplink that
    # carries the default route (the way back to a source like 200.1.2.3).
    reply_devices = sorted({str(r.get("dev")) for r in fate.get("replies") or []})
    answered = (f" (the kernel's answer left through {', '.join(reply_devices)})"
                if reply_devices else "")
    drop_at = None
    reason = ""
    if verdict == "dropped":
        drop_at = {"route": 2, "netfilter": 3, "deliver": 4}[drop_stage(reasons)]
        reason = ", ".join(reasons) if reasons else "(no reason traced)"
    return packet_path(steps, drop_at=drop_at, reason=reason, verdict=verdict,
                       groups=[("lab namespace", 1, len(steps) - 1)],
                       title=title or "What the kernel did with the packet" + answered)


SEED_STEPS: list[Step] = [
    Step("ping\n10.0.0.2", "app"),
    Step("routing\n10.0.0.0/24\ndev mytun", "kernel"),
    Step("mytun", "device"),
    Step("vpn-client\nencapsulate", "app"),
    Step("TCP\n127.0.0.1", "wire"),
    Step("vpn-server\ndecapsulate", "app"),
    Step("mytun2\n(released)", "device"),
    Step("kernel\nip_rcv →\nroute input", "kernel"),
    Step("forward /\ndeliver", "kernel"),
]


def seed_steps(target: str = "10.0.0.2", reverse: bool = False) -> list[Step]:
    """The seed's path for a ping to ``target``; ``reverse`` for the way back (a ping routed
    into mytun2: vpn-server reads it, vpn-client releases it into mytun)."""
    if not reverse:
        return [Step(f"ping\n{target}", "app"), *SEED_STEPS[1:]]
    return [Step(f"ping\n{target}", "app"),
            Step("routing\n10.0.2.0/24\ndev mytun2", "kernel"),
            Step("mytun2", "device"),
            Step("vpn-server\nencapsulate", "app"),
            Step("TCP\n127.0.0.1", "wire"),
            Step("vpn-client\ndecapsulate", "app"),
            Step("mytun\n(released)", "device"),
            Step("kernel\nip_rcv →\nroute input", "kernel"),
            Step("forward /\ndeliver", "kernel")]


def seed_path(fate: Mapping[str, Any] | None = None, title: str = "",
              stopped_at: int | None = None, stop_reason: str = "",
              stop_word: str = "stopped", target: str = "10.0.0.2",
              reverse: bool = False) -> Figure:
    """The seed's example goal as a path; with a fate report, the kernel's verdict on it.

    ``fate`` is the dict of :meth:`tunlab.fate.FateReport.to_dict` (verdict, drop_reasons,
    ...). A drop is marked at the kernel's input routing step, or at the last step for a
    netfilter or delivery drop. ``stopped_at``/``stop_reason`` mark an earlier stop (e.g. the
    ping never reached mytun because it went to ``lo``). ``reverse`` draws the way from
    mytun2 through the vpn-server and the vpn-client into mytun (see :func:`seed_steps`).
    """
    drop_at, reason, verdict, word = stopped_at, stop_reason, "", stop_word
    if fate and drop_at is None:
        word = "dropped"
        verdict = str(fate.get("verdict", ""))
        reasons = list(fate.get("drop_reasons") or [])
        if verdict == "dropped":
            reason = ", ".join(reasons) if reasons else "(no reason traced)"
            drop_at = 7 if drop_stage(reasons) == "route" else 8
    return packet_path(seed_steps(target, reverse), drop_at=drop_at, reason=reason,
                       verdict=verdict, groups=[("one namespace (the seed's host)", 0, 8)],
                       title=title or "The seed's example goal", stop_word=word)


# -- byte layouts ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """A header field: ``size`` bytes at ``offset``, belonging to ``layer`` (a LAYER_COLORS key)."""

    name: str
    offset: int
    size: int
    layer: str
    value: str = ""


def _ipv4_fields(buf: bytes, base: int) -> tuple[list[Field], int, int]:
    """Fields of the IPv4 header at ``base``; returns (fields, header length, protocol)."""
    b = buf[base:]
    ihl = (b[0] & 0x0F) * 4 if b else 20
    proto = b[9] if len(b) > 9 else 0
    names = {1: "ICMP", 6: "TCP", 17: "UDP"}

    def ip4(x: bytes) -> str:
        return ".".join(str(v) for v in x) if len(x) == 4 else "?"

    fields = [
        Field("ver|IHL", base, 1, "ip", f"{b[0] >> 4}|{ihl}" if b else ""),
        Field("TOS", base + 1, 1, "ip", f"0x{b[1]:02x}" if len(b) > 1 else ""),
        Field("total length", base + 2, 2, "ip", str(int.from_bytes(b[2:4], "big"))),
        Field("id", base + 4, 2, "ip", f"0x{int.from_bytes(b[4:6], 'big'):04x}"),
        Field("flags|frag", base + 6, 2, "ip", f"0x{int.from_bytes(b[6:8], 'big'):04x}"),
        Field("TTL", base + 8, 1, "ip", str(b[8]) if len(b) > 8 else ""),
        Field("proto", base + 9, 1, "ip", names.get(proto, str(proto))),
        Field("checksum", base + 10, 2, "ip", f"0x{int.from_bytes(b[10:12], 'big'):04x}"),
        Field("source", base + 12, 4, "ip", ip4(b[12:16])),
        Field("destination", base + 16, 4, "ip", ip4(b[16:20])),
    ]
    if ihl > 20:
        fields.append(Field("options", base + 20, ihl - 20, "ip"))
    return fields, ihl, proto


def _l4_fields(buf: bytes, base: int, proto: int) -> tuple[list[Field], int]:
    b = buf[base:]

    def u16(i: int) -> str:
        return str(int.from_bytes(b[i:i + 2], "big"))

    if proto == 1 and len(b) >= 8:
        kinds = {0: "echo-reply", 8: "echo-req", 3: "unreach", 11: "time-exc"}
        return [Field("type", base, 1, "l4", kinds.get(b[0], str(b[0]))),
                Field("code", base + 1, 1, "l4", str(b[1])),
                Field("checksum", base + 2, 2, "l4", f"0x{int.from_bytes(b[2:4], 'big'):04x}"),
                Field("id", base + 4, 2, "l4", u16(4)),
                Field("seq", base + 6, 2, "l4", u16(6))], 8
    if proto == 17 and len(b) >= 8:
        return [Field("src port", base, 2, "l4", u16(0)),
                Field("dst port", base + 2, 2, "l4", u16(2)),
                Field("length", base + 4, 2, "l4", u16(4)),
                Field("checksum", base + 6, 2, "l4", f"0x{int.from_bytes(b[6:8], 'big'):04x}")], 8
    if proto == 6 and len(b) >= 20:
        doff = (b[12] >> 4) * 4
        return [Field("src port", base, 2, "l4", u16(0)),
                Field("dst port", base + 2, 2, "l4", u16(2)),
                Field("seq", base + 4, 4, "l4", str(int.from_bytes(b[4:8], "big"))),
                Field("ack", base + 8, 4, "l4", str(int.from_bytes(b[8:12], "big"))),
                Field("off|flags", base + 12, 2, "l4", f"0x{int.from_bytes(b[12:14], 'big'):04x}"),
                Field("window", base + 14, 2, "l4", u16(14)),
                Field("checksum", base + 16, 2, "l4", f"0x{int.from_bytes(b[16:18], 'big'):04x}"),
                Field("urgent", base + 18, 2, "l4", u16(18))] + (
                    [Field("options", base + 20, doff - 20, "l4")] if doff > 20 else []), doff
    return [], 0


def layout_fields(buf: bytes, pi: bool = False, framed: bool = False) -> list[Field]:
    """Split ``buf`` into header fields.

    ``buf`` is an IPv4 packet, optionally preceded by the 4-byte TUN packet-information header
    (``pi=True``: what a read returns without IFF_NO_PI) or by tunlab's 8-byte frame header
    (``framed=True``: one frame as it travels in the TCP stream).
    """
    fields: list[Field] = []
    base = 0
    if framed:
        types = {1: "HELLO", 2: "DATA", 3: "GSO_DATA", 4: "KEEPALIVE", 5: "CLOSE"}
        fields += [Field("magic", 0, 2, "tunlab", buf[0:2].decode("latin-1") if buf else ""),
                   Field("version", 2, 1, "tunlab", str(buf[2]) if len(buf) > 2 else ""),
                   Field("type", 3, 1, "tunlab",
                         types.get(buf[3], str(buf[3])) if len(buf) > 3 else ""),
                   Field("length", 4, 4, "tunlab", str(int.from_bytes(buf[4:8], "big")))]
        base = 8
    if pi:
        flags = int.from_bytes(buf[base:base + 2], "big")
        proto = int.from_bytes(buf[base + 2:base + 4], "big")
        fields += [Field("flags", base, 2, "pi", f"0x{flags:04x}"),
                   Field("proto", base + 2, 2, "pi", f"0x{proto:04x}")]
        base += 4
    if len(buf) > base and buf[base] >> 4 == 4:
        ip_fields, ihl, proto = _ipv4_fields(buf, base)
        fields += ip_fields
        base += ihl
        l4, size = _l4_fields(buf, base, proto)
        fields += l4
        base += size
    if len(buf) > base:
        rest = len(buf) - base
        fields.append(Field("payload", base, rest, "payload", f"{rest} bytes"))
    return fields


def byte_layout(fields: Sequence[Field], title: str = "", width: int = 4,
                total: int | None = None) -> Figure:
    """An RFC-style diagram: ``width`` bytes per row, each field a coloured box with its value.

    Fields longer than two rows (payloads) are drawn as one collapsed row.
    """
    # Assign rows: walk fields in order; long fields get one collapsed row.
    placed: list[tuple[int, float, float, Field]] = []   # (row, x0, x1, field)
    row_labels: list[str] = []
    row = 0
    col = 0
    for f in fields:
        if f.size > 2 * width:
            if col:
                row, col = row + 1, 0
            placed.append((row, 0, width, f))
            row_labels.append(f"{f.offset}…")
            row += 1
            continue
        remaining = f.size
        first = True
        while remaining > 0:
            if col == 0:
                row_labels.append(str(f.offset + (f.size - remaining)))
            take = min(remaining, width - col)
            placed.append((row, col, col + take, f if first else Field("", f.offset, take,
                                                                         f.layer, "")))
            first = False
            remaining -= take
            col += take
            if col == width:
                row, col = row + 1, 0
    rows = row + (1 if col else 0)
    height = 0.48 * rows + 1.25
    fig = Figure(figsize=(7.4, height))
    bottom = 0.45 / height
    ax = fig.add_axes((0.09, bottom, 0.6, 1 - bottom - 0.6 / height))
    ax.set_xlim(0, width)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    for r, x0, x1, f in placed:
        ax.add_patch(Rectangle((x0, r), x1 - x0, 1, facecolor=LAYER_COLORS.get(f.layer, "#ddd"),
                               edgecolor="white", linewidth=2))
        if f.name:
            label = f.name if not f.value else f"{f.name}\n{f.value}"
            size = 8 if (x1 - x0) >= 1 else 7
            ax.text((x0 + x1) / 2, r + 0.5, label, ha="center", va="center", fontsize=size)
    for r, text in enumerate(row_labels[:rows]):
        ax.text(-0.08, r + 0.5, text, ha="right", va="center", fontsize=7.5, color="#666666")
    for c in range(width + 1):
        ax.text(c, -0.08, str(c * 8), ha="center", va="bottom", fontsize=7, color="#888888")
    layers = []
    for f in fields:
        if f.layer not in layers:
            layers.append(f.layer)
    handles = [Rectangle((0, 0), 1, 1, facecolor=LAYER_COLORS[layer]) for layer in layers]
    fig.legend(handles, [LAYER_NAMES.get(layer, layer) for layer in layers],
               loc="center left", bbox_to_anchor=(0.71, 0.5), fontsize=8.5, frameon=False)
    size = total if total is not None else max((f.offset + f.size for f in fields), default=0)
    fig.text(0.02, 0.99, title or f"{size} bytes", ha="left", va="top", fontsize=11,
             fontweight="bold")
    fig.text(0.02, 0.005, "row labels: byte offset · top scale: bit", fontsize=7,
             color="#888888")
    return fig


def frame_layout(frame: bytes, title: str = "") -> Figure:
    """Byte layout of one tunlab frame: frame header, IP header, ICMP/UDP/TCP header, payload."""
    return byte_layout(layout_fields(frame, framed=True),
                       title or f"One tunlab frame on the TCP stream: {len(frame)} bytes "
                                f"(8 header + {len(frame) - 8} packet)", total=len(frame))


def read_layout(buf: bytes, pi: bool, title: str = "") -> Figure:
    """Byte layout of what one ``read()`` from a TUN fd returned, with or without IFF_NO_PI."""
    what = "without IFF_NO_PI: 4 extra bytes first" if pi else "with IFF_NO_PI: the bare packet"
    return byte_layout(layout_fields(buf, pi=pi), title or f"read() returned {len(buf)} bytes "
                       f"({what})", total=len(buf))


# -- rates over time ---------------------------------------------------------------------------

def rates(samples: Sequence[Mapping[str, float]], count_key: str = "packets",
          bytes_key: str = "bytes") -> tuple[list[float], list[float], list[float]]:
    """Per-interval rates from cumulative samples ``{"t", count_key, bytes_key}``.

    Returns ``(times, packets per second, Mbit/s)``, one value per interval (time = its end).
    """
    times: list[float] = []
    pps: list[float] = []
    mbps: list[float] = []
    for prev, cur in zip(samples, samples[1:], strict=False):
        dt = float(cur["t"]) - float(prev["t"])
        if dt <= 0:
            continue
        times.append(float(cur["t"]))
        pps.append((float(cur[count_key]) - float(prev[count_key])) / dt)
        mbps.append((float(cur[bytes_key]) - float(prev[bytes_key])) * 8 / dt / 1e6)
    return times, pps, mbps


def throughput(samples: Sequence[Mapping[str, float]], title: str = "Tunnel traffic",
               window: float | None = None, live: bool = True) -> Figure:
    """Packets per second and Mbit/s over time for a running tunnel.

    ``samples`` are cumulative counters taken at times ``t`` (seconds), e.g. from
    ``client.stats.snapshot()``: ``{"t": 1.5, "packets": 120, "bytes": 98000}``. ``window``
    shows only the last seconds (a scrolling live view); ``live`` titles the last rate
    ("now"), otherwise the peak.
    """
    times, pps, mbps = rates(samples)
    fig = Figure(figsize=(7.5, 3.6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(times, pps, color="#1f77b4", marker="o", markersize=3, linewidth=1.6)
    ax1.set_ylabel("packets/s")
    ax2.plot(times, mbps, color="#ff7f0e", marker="o", markersize=3, linewidth=1.6)
    ax2.set_ylabel("Mbit/s")
    ax2.set_xlabel("time (s)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if window and times:
        ax2.set_xlim(max(0.0, times[-1] - window), max(window, times[-1]))
    if not times:
        ax1.text(0.5, 0.5, "no samples yet", transform=ax1.transAxes, ha="center",
                 va="center", color="#888888")
    if live:
        last = f"  (now {pps[-1]:,.0f} packets/s, {mbps[-1]:,.1f} Mbit/s)" if times else ""
    else:
        last = f"  (peak {max(pps):,.0f} packets/s, {max(mbps):,.0f} Mbit/s)" if times else ""
    fig.suptitle(title + last, fontsize=11, x=0.02, ha="left", fontweight="bold")
    fig.tight_layout()
    return fig


# -- drops and measurements --------------------------------------------------------------------

def drop_reasons(counts: Mapping[str, int], title: str = "Kernel drop reasons") -> Figure:
    """Horizontal bars: how often each drop reason (or outcome) was seen."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    fig = Figure(figsize=(7.0, 0.45 * max(len(items), 1) + 1.3))
    ax = fig.add_subplot(1, 1, 1)
    if not items:
        ax.text(0.5, 0.5, "no drops recorded", ha="center", va="center",
                transform=ax.transAxes, color="#888888")
        ax.axis("off")
    else:
        labels = [k for k, _ in items][::-1]
        values = [v for _, v in items][::-1]
        colors = [COLORS["ok"] if label in ("delivered", "forwarded", "(not dropped)")
                  else COLORS["drop"] for label in labels]
        bars = ax.barh(labels, values, color=colors, alpha=0.85)
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value}",
                    va="center", fontsize=9)
        ax.set_xlabel("packets")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, max(values) * 1.15 + 0.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    fig.tight_layout()
    return fig


def bars(results: Mapping[str, float], unit: str = "Mbit/s", title: str = "Throughput",
         note: str = "") -> Figure:
    """Horizontal bars comparing measurements (e.g. throughput per tunnel variant or MTU)."""
    items = list(results.items())
    fig = Figure(figsize=(7.0, 0.5 * max(len(items), 1) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    labels = [k for k, _ in items][::-1]
    values = [float(v) for _, v in items][::-1]
    drawn = ax.barh(labels, values, color="#4c78a8")
    top = max(values, default=0.0)
    for bar, value in zip(drawn, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f} {unit}",
                va="center", fontsize=9)
    ax.set_xlim(0, top * 1.3 + 1e-9)
    ax.set_xlabel(unit)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7.5, color="#666666")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return fig


def loss_curve(series: Mapping[str, Sequence[tuple[float, float]]],
               title: str = "Throughput under packet loss") -> Figure:
    """Throughput (Mbit/s) against loss (%) for several paths, e.g. direct TCP vs TCP-in-TCP."""
    fig = Figure(figsize=(7.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for (name, points), marker in zip(series.items(), "osd^v", strict=False):
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        ax.plot(xs, ys, marker=marker, label=name, linewidth=1.8)
    ax.set_xlabel("packet loss on the underlay (%)")
    ax.set_ylabel("Mbit/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    fig.tight_layout()
    return fig


def latency(series: Mapping[str, Sequence[float | None]],
            title: str = "Round-trip times under loss",
            xlabel: str = "echo sequence number (x at the top = no reply)",
            count_lost: bool = True) -> Figure:
    """RTT per echo (ms, log scale) for several paths; lost echoes as red crosses at the top.

    ``series`` maps a path name to one value per sequence number (None = no reply), or per
    whatever ``xlabel`` says (for example one median per round of pings, with
    ``count_lost=False``).
    """
    fig = Figure(figsize=(7.5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    top = max((v for values in series.values() for v in values if v), default=1.0) * 2
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2",
               "#7f7f7f")
    for index, (name, values) in enumerate(series.items()):
        color = palette[index % len(palette)]
        xs = [i + 1 for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        lost = [i + 1 for i, v in enumerate(values) if v is None]
        lost_note = f"{len(lost)} lost, " if count_lost else ""
        ax.plot(xs, ys, marker=".", linestyle="-", linewidth=0.8, color=color,
                label=f"{name}: {lost_note}max {max(ys, default=0):.3g} ms")
        if lost:
            ax.scatter(lost, [top] * len(lost), marker="x", color=color, s=40)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RTT (ms)")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=2)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    fig.set_size_inches(7.5, 4.2)
    fig.tight_layout()
    return fig
