"""Lesson 02's routing view: the tables and ``ip route get`` for a typed address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from tunlab.course import plots
from tunlab.course.panels.base import LabPanel, _image, _ipv4
from tunlab.course.style import css, invalid, pre

__all__ = ["lab_ip", "NO_RECORDING", "parse_route_get", "route_figure", "route_get",
           "route_tables", "ROUTE_TYPES", "RouteLookup", "RouteTables", "RouteView"]

NO_RECORDING = ("(no recorded answer for this address; start the lab with `sudo make lab` to "
                "ask the kernel)")


@dataclass(frozen=True)
class RouteTables:
    """``ip route show table main`` and ``table local``, shown side by side."""

    main: str
    local: str

    def _repr_html_(self) -> str:
        return (f'<div {css("columns")}>'
                f'<div {css("column")}><b>table main</b> (<code>ip route</code>)'
                f"{pre(self.main)}</div>"
                f'<div {css("column")}><b>table local</b> (<code>ip route show table local'
                f"</code>){pre(self.local)}</div></div>")

    def figure(self) -> None:
        return None


@dataclass(frozen=True)
class RouteLookup:
    """The kernel's answer to ``ip route get ADDRESS``: its words, and the device, table and
    route type read from them (empty when the kernel has no route)."""

    address: str
    output: str
    device: str = ""
    table: str = ""
    kind: str = ""
    live: bool = True

    @classmethod
    def parse(cls, address: str, output: str, live: bool = True) -> RouteLookup:
        """The lookup that ``output`` (what ``ip route get`` printed) describes."""
        return cls(address, output, *parse_route_get(output), live=live)

    def _repr_html_(self) -> str:
        markup = pre(f"$ ip route get {self.address}\n{self.output.strip()}")
        if not self.device and self.live:
            markup += (f"<div>no route: no table of this host has a route to {self.address} "
                       "(the lab has no default route), so a ping to it fails at once with "
                       "<i>Network is unreachable</i>.</div>")
        return markup

    def figure(self) -> Any:
        """The path the kernel chose, or None without a route."""
        if not self.device:
            return None
        return route_figure(self.address, self.device, self.table, self.kind)


def lab_ip(lesson: Any, key: str, *args: str) -> str:
    """``ip ARGS`` in the lesson's lab (stdout and stderr), or the answer recorded as ``key``."""
    def live() -> str:
        result = lesson.ns.exec(["ip", *args], check=False)
        return (result.stdout + result.stderr).strip()

    value = lesson.run(key, live)
    return value if isinstance(value, str) else ""


def route_tables(lesson: Any) -> RouteTables:
    """The lab's tables main and local."""
    return RouteTables(lab_ip(lesson, "route_main", "route", "show", "table", "main"),
                       lab_ip(lesson, "route_local", "route", "show", "table", "local"))


def route_get(lesson: Any, address: str) -> RouteLookup:
    """``ip route get ADDRESS`` (a valid IPv4 address) in the lesson's lab, or recorded."""
    out = lab_ip(lesson, f"route_get {address}", "route", "get", address)
    if not out:
        out = NO_RECORDING if not lesson.live else "(the kernel printed nothing)"
    return RouteLookup.parse(address, out, live=bool(lesson.live))


class RouteView(LabPanel, w.VBox):
    """The lab's routing tables (main and local) and ``ip route get`` for a typed address.

    ``lesson`` is a :class:`tunlab.course.Lesson`; without a live lab, recorded lookups are
    shown. Headless: ``view.address.value = "10.0.0.1"; view.lookup.click()``, then
    ``view.last_lookup`` (a :class:`RouteLookup`), or ``view.last_output`` /
    ``view.last_device`` / ``view.last_table`` / ``view.last_type``.
    """

    def __init__(self, lesson: Any, address: str = "10.0.0.2") -> None:
        self.last_lookup: RouteLookup | None = None
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

    @property
    def last_output(self) -> str:
        return self.last_lookup.output if self.last_lookup else ""

    @property
    def last_device(self) -> str:
        return self.last_lookup.device if self.last_lookup else ""

    @property
    def last_table(self) -> str:
        return self.last_lookup.table if self.last_lookup else ""

    @property
    def last_type(self) -> str:
        return self.last_lookup.kind if self.last_lookup else ""

    @property
    def last_address(self) -> str:
        return self.last_lookup.address if self.last_lookup else ""

    def refresh_tables(self) -> None:
        """Show ``ip route show table main`` and ``table local`` side by side."""
        self.tables.value = route_tables(self.lesson)._repr_html_()

    def reset_view(self) -> None:
        self.last_lookup = None
        self.forget(self.result, self.path)
        self.tables.value = ""

    def route_get(self, address: str | None = None) -> str:
        """``ip route get ADDRESS`` in the lab; shows and returns the kernel's answer."""
        typed = (address if address is not None else self.address.value).strip()
        self.reset_view()
        valid = _ipv4(typed)
        self.refresh_tables()
        if valid is None:
            self.result.value = invalid(f"{typed!r} is not an IPv4 address: type four numbers "
                                        "0-255 with dots, like 10.0.0.1")
            return ""
        self.last_lookup = route_get(self.lesson, valid)
        self.show(self.last_lookup, self.result, self.path)
        return self.last_lookup.output


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


