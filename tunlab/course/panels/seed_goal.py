"""Lesson 04's panel: ping once through the seed's tunnel and see every hop."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import ipywidgets as w

from tunlab.course import plots
from tunlab.course.panels.base import LabPanel, _image, _ipv4
from tunlab.course.panels.route_view import route_figure
from tunlab.course.seed_tunnel import seed_tunnel
from tunlab.course.style import css, invalid
from tunlab.fate.reasons import COUNTERS
from tunlab.fate.report import FateReport, Verdict
from tunlab.kernel.counters import counter_delta, snmp_counters

__all__ = ["COUNTER_MEANINGS", "explain_counters", "ping_through_seed", "SeedGoalPanel",
           "SeedPing"]


@dataclass(frozen=True)
class SeedPing:
    """One ``ping -c1`` through the seed's tunnel, hop by hop: the ping's exit code and output,
    what the vpn-client and vpn-server read, framed and wrote (all packets, and this echo
    request), the packet before and after the tunnel (hex), and the nstat counters that moved
    as the released packet met the kernel. :meth:`to_dict` is the recorded form."""

    target: str
    ping_rc: int
    ping_output: str = ""
    client_read: int = 0
    frames_sent: int = 0
    server_written: int = 0
    server_read: int = 0
    server_frames_sent: int = 0
    client_written: int = 0
    echo_read: int = 0
    echo_written: int = 0
    echo_server_read: int = 0
    echo_client_written: int = 0
    direction: str = ""
    sent_hex: str = ""
    frame_hex: str = ""
    released_hex: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["recorded"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], recorded: bool = False) -> SeedPing:
        """The ping :meth:`to_dict` wrote (a recording)."""
        known = {f.name for f in fields(cls)} - {"recorded"}
        return cls(**{k: v for k, v in data.items() if k in known}, recorded=recorded)

    @property
    def reverse(self) -> bool:
        """The ping went into mytun2 and took the seed's path backwards."""
        return bool(self.echo_server_read) and not self.echo_read

    @property
    def intact(self) -> bool:
        """The released packet is byte for byte the one sent."""
        return bool(self.sent_hex) and self.sent_hex == self.released_hex

    def figure(self) -> Any:
        """The seed path (or its way back, mytun2 → mytun) with where this ping stopped."""
        counters, target, reverse = self.counters, self.target, self.reverse
        if not self.client_read and not reverse:
            if self.ping_rc == 0:
                return route_figure(target, "lo", "local")
            return plots.seed_path(stopped_at=2, stop_reason="nothing entered mytun or mytun2",
                                   title=f"ping {target}", target=target)
        if reverse and not self.client_written:
            return plots.seed_path(stopped_at=5, stop_reason="the vpn-client wrote nothing",
                                   title=f"ping {target}", target=target, reverse=True)
        reasons = [COUNTER_MEANINGS[k][0] for k in COUNTER_MEANINGS
                   if counters.get(k) and COUNTER_MEANINGS[k][0]]
        verdict = "forwarded" if counters.get("IpForwDatagrams") else (
            "delivered" if counters.get("IcmpInEchos") else "dropped")
        fate = FateReport(verdict=Verdict.DROPPED if reasons else Verdict(verdict),
                          drop_reasons=reasons, martian_log=[], replies=[], counters=counters)
        way = "mytun2 → vpn-server → vpn-client → mytun" if reverse else \
            "mytun → vpn-client → vpn-server → mytun2"
        return plots.seed_path(fate, title=f"ping {target}: {way}", target=target,
                               reverse=reverse)

    def _repr_html_(self) -> str:
        """The hops as an HTML list, in the direction the packet really went."""
        target = html.escape(self.target)
        same = " — byte for byte the packet that was sent" if self.intact else ""
        rows = [f"<li><code>ping -c1 {target}</code> exit code {self.ping_rc} "
                f"({'a reply came back' if self.ping_rc == 0 else 'no reply'})</li>"]
        if self.reverse:
            rows += [f"<li>the route to {target} is <code>10.0.2.0/24 dev "
                     "mytun2</code>: the ping went into mytun2, so it takes the seed's path "
                     "backwards: mytun2 → vpn-server → vpn-client → mytun</li>",
                     f"<li>vpn-server read <b>{self.server_read}</b> packet(s) from "
                     f"mytun2, of them {self.echo_server_read} this echo request</li>",
                     f"<li>vpn-server sent <b>{self.server_frames_sent}</b> frame(s) "
                     "over TCP</li>",
                     f"<li>vpn-client wrote <b>{self.client_written}</b> packet(s) into "
                     f"mytun{same}</li>"]
        else:
            rows += [f"<li>vpn-client read <b>{self.client_read}</b> packet(s) from mytun, "
                     f"of them {self.echo_read} this echo request</li>",
                     f"<li>vpn-client sent <b>{self.frames_sent}</b> frame(s) over TCP</li>",
                     f"<li>vpn-server wrote <b>{self.server_written}</b> packet(s) into mytun2"
                     f"{same}</li>"]
        lines = explain_counters(self.counters)
        if lines:
            rows.append("<li>then the kernel (nstat counters that moved):<ul>"
                        + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul></li>")
        recorded = " <i>(recorded example)</i>" if self.recorded else ""
        return f'<div {css("box")}><b>hop by hop</b>{recorded}<ol>' + "".join(rows) + \
            "</ol></div>"


def _is_echo_to(packet: bytes, target: str) -> bool:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return False
    dst = ".".join(str(b) for b in packet[16:20])
    return dst == target and packet[(packet[0] & 0x0F) * 4] == 8


def ping_through_seed(ns: Any, server: Any, client: Any, target: str = "10.0.0.2",
                      wait: float = 1.0) -> SeedPing:
    """``ping -c1 TARGET`` in the seed lab with a running tunnel; what each hop saw."""
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
    return SeedPing(
        target=target, ping_rc=ping.returncode, ping_output=ping.stdout + ping.stderr,
        client_read=c1["read_packets"] - c0["read_packets"],
        frames_sent=c1["frames_sent"] - c0["frames_sent"],
        server_written=s1["written_packets"] - s0["written_packets"],
        server_read=s1["read_packets"] - s0["read_packets"],
        server_frames_sent=s1["frames_sent"] - s0["frames_sent"],
        client_written=c1["written_packets"] - c0["written_packets"],
        echo_read=len(read), echo_written=len(written),
        echo_server_read=len(back_read), echo_client_written=len(back_written),
        direction=direction,
        sent_hex=first_read[0].data.hex() if first_read and first_read[0].data else "",
        frame_hex=sent[0].data.hex() if sent and sent[0].data else "",
        released_hex=(first_written[0].data.hex() if first_written and first_written[0].data
                      else ""),
        counters=counters)


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

    Headless: ``panel.target.value = "10.0.0.1"; panel.ping.click()``, then ``last_result``
    (a :class:`SeedPing`).
    """

    TARGETS = ["10.0.0.2", "10.0.0.1", "10.0.0.77", "10.0.2.1", "10.0.2.33"]

    def __init__(self, lesson: Any, server: Any = None, client: Any = None) -> None:
        self.server = server
        self.client = client
        self.last_result: SeedPing | None = None
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
        self.forget(self.result, self.path)

    def _endpoints(self) -> tuple[Any, Any]:
        """The running server and client (restarted in a rebuilt lab when needed)."""
        tunnel = seed_tunnel(self.lesson, self.server)
        if tunnel is None:
            raise RuntimeError("no tunnel: this lesson has no seed lab")
        tunnel.ensure()
        self.server, self.client = tunnel.server, tunnel.client
        return tunnel.server, tunnel.client

    def run(self, target: str | None = None) -> SeedPing | None:
        """Ping once and show the hops."""
        typed = (target or self.target.value).strip()
        self.reset_view()
        valid = _ipv4(typed)
        if valid is None:
            self.result.value = invalid(f"{typed!r} is not an IPv4 address")
            return None

        def live() -> SeedPing:
            server, client = self._endpoints()
            return ping_through_seed(self.lesson.ns, server, client, valid)

        result = self.lesson.run(f"ping {valid}", live)
        if result is None:
            self.result.value = ("(no recording for this address: start the lab with "
                                 "`sudo make lab`)")
            return None
        if not isinstance(result, SeedPing):
            result = SeedPing.from_dict(result, recorded=True)
        self.last_result = result
        self.show(result, self.result, self.path)
        return result

    @staticmethod
    def figure(result: SeedPing) -> Any:
        """The seed path with where this ping stopped (:meth:`SeedPing.figure`)."""
        return result.figure()


