"""Byte layouts: what one read from a TUN device or one tunnel frame holds, field by field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["byte_layout", "Field", "frame_layout", "LAYER_COLORS", "LAYER_NAMES", "layout_fields",
           "read_layout"]

LAYER_COLORS = {
    "pi": "#f4a6a6",        # the 4-byte packet-information header (IFF_NO_PI off)
    "tunlab": "#ffcc80",    # tunlab's frame header
    "ip": "#9ecae1",        # IPv4 header
    "l4": "#a1d99b",        # ICMP / TCP / UDP header
    "payload": "#e0e0e0",
}


LAYER_NAMES = {"pi": "TUN packet info (no IFF_NO_PI)", "tunlab": "tunlab frame header",
               "ip": "IPv4 header", "l4": "ICMP/UDP/TCP header", "payload": "payload"}


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
