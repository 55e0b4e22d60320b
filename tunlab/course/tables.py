"""Captured frames and tunnel events as HTML tables."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w

__all__ = ["events_html", "events_table", "frames_html", "frames_table"]


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



def frames_table(frames: Sequence[Mapping[str, Any]], limit: int = 20) -> w.HTML:
    """:func:`frames_html` in a widget."""
    return w.HTML(frames_html(frames, limit))


def events_table(events: Sequence[Any], limit: int = 12) -> w.HTML:
    """:func:`events_html` in a widget."""
    return w.HTML(events_html(events, limit))


