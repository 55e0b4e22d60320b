"""Lesson 05/06's packet builder: craft a packet, choose kernel settings, see the verdict."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from tunlab.course import plots
from tunlab.course.fates import FORWARD_DROP_RULESET
from tunlab.course.panels.base import LabPanel, _image, _ip
from tunlab.course.reports import FateFn, fate_html
from tunlab.course.style import invalid, muted
from tunlab.fate.report import FateReport

__all__ = ["PacketBuilder", "send_packet", "SentPacket"]


@dataclass(frozen=True)
class SentPacket:
    """One packet the builder sent into ``dev`` and the kernel's verdict on it: the fate
    report (live or recorded) and how long the kernel took."""

    src: str
    dst: str
    dev: str
    report: FateReport
    elapsed: float | None = None

    def _repr_html_(self) -> str:
        return fate_html(self.report, self.elapsed)

    def figure(self) -> Any:
        """The packet's path and where the kernel stopped it."""
        return plots.fate_path(self.report, self.src, self.dst, self.dev)


def send_packet(fate_fn: FateFn, params: Mapping[str, Any]) -> SentPacket:
    """Ask ``fate_fn`` (live or recorded) about the packet ``params`` describes (the
    arguments of :func:`tunlab.fate.packet_fate`)."""
    args = dict(params)
    src, dst = args.pop("src"), args.pop("dst")
    started = time.monotonic()
    report = fate_fn(src, dst, **args)
    return SentPacket(src, dst, str(params.get("dev", "mytun2")), report,
                      time.monotonic() - started)


class PacketBuilder(LabPanel, w.VBox):
    """Craft one IPv4 or IPv6 packet, choose kernel settings, press Send: the kernel's verdict.

    The packet is written into ``mytun2`` (or ``mytun``) in a fresh namespace of the seed's
    topology, the way the vpn-server releases packets (:func:`tunlab.fate.packet_fate`).
    Without root the recorded verdicts are shown (:func:`tunlab.course.recorded_fate`).

    Headless use: set ``builder.src.value`` etc., call ``builder.send.click()``, read
    ``builder.last_result`` (a :class:`SentPacket`), ``builder.last_report`` (its fate
    report) / ``builder.last_params`` / ``builder.result.value``.
    """

    def __init__(self, fate_fn: FateFn | None = None, src: str = "10.0.0.1",
                 dst: str = "10.0.0.2", proto: str | int = "icmp", ttl: int = 64,
                 dport: int = 9, dev: str = "mytun2", ip_forward: bool = True,
                 rp_filter: int = 0, accept_local: bool = False, log_martians: bool = True,
                 firewall: bool = False, show_path: bool = True, lesson: Any = None) -> None:
        from tunlab.course.fates import fate

        self.fate_fn: FateFn = fate_fn or fate
        self.last_result: SentPacket | None = None
        self.last_params: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.history: list[tuple[dict[str, Any], FateReport]] = []
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
        self.result = w.HTML(value=muted("press Send: the kernel answers within a second or "
                                         "two"))
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

    @property
    def last_report(self) -> FateReport | None:
        """The last verdict's fate report."""
        return self.last_result.report if self.last_result is not None else None

    def _inputs_changed(self) -> None:
        """The shown verdict is for other inputs now: say so and hide its figure."""
        if self.last_result is None:
            return
        self.forget(None, self.path)
        self.result.value = muted("inputs changed: press <b>Send</b> for the kernel's verdict "
                                  "on this packet")

    def lab_rebuilt(self) -> None:
        """Nothing to forget: each packet runs in a fresh namespace of its own."""

    def reset_view(self) -> None:
        self.last_result = None
        self.last_params = None
        self.last_error = None
        self.history.clear()
        self.forget(None, self.path)
        self.result.value = muted("press Send: the kernel answers")

    def params(self) -> dict[str, Any]:
        """The packet_fate arguments the controls describe."""
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

    def run(self) -> FateReport | None:
        """Send the packet now (what the button does); returns the report."""
        params = self.params()
        self.last_params = params
        self.last_error = None
        self.last_result = None
        self.forget(None, self.path)
        bad = [f"{name} {value!r} is not an IP address (write it like 10.0.2.33 or fd00:2::5)"
               for name, value in (("source", params["src"]), ("destination", params["dst"]))
               if _ip(value) is None]
        if not bad and (":" in params["src"]) != (":" in params["dst"]):
            bad = ["source and destination must both be IPv4 or both IPv6"]
        if bad:
            self.result.value = invalid("; ".join(bad))
            return None
        self.send.disabled = True
        self.status.value = muted("asking the kernel…", "span")
        try:
            result = send_packet(self.fate_fn, params)
        except Exception as exc:  # noqa: BLE001 - show it in the panel, keep the widget alive
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.result.value = ""
            self.fail(exc)
            return None
        finally:
            self.send.disabled = False
            self.status.value = ""
        self.last_result = result
        self.history.append((params, result.report))
        self.show(result, self.result, self.path)
        return self.last_report

    def drop_counts(self) -> dict[str, int]:
        """How often each drop reason (or verdict without drop) came back so far."""
        counts: dict[str, int] = {}
        for _params, report in self.history:
            for reason in report.drop_reasons or [str(report.verdict)]:
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def close(self) -> None:
        """Nothing runs in the background; close the widgets."""
        super().close()


