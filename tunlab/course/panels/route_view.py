"""Lesson 02's routing view: the tables and ``ip route get`` for a typed address."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ... import plots
from ..style import invalid, pre
from .base import LabPanel, _image, _ipv4, clear_figure, show_figure


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
            f'<div style="flex:1"><b>table main</b> (<code>ip route</code>){pre(main)}</div>'
            f'<div style="flex:1"><b>table local</b> (<code>ip route show table local</code>)'
            f'{pre(local)}</div></div>')

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
            self.result.value = invalid(f"{typed!r} is not an IPv4 address: type four numbers "
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
        self.result.value = pre(f"$ ip route get {valid}\n{out.strip()}")
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


