"""Lesson 04's panel: ping once through the seed's tunnel and see every hop."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from ... import plots
from ...drops import counter_delta, snmp_counters
from ...fate.reasons import COUNTERS
from ..seed_tunnel import seed_tunnel
from ..style import CSS_BOX, invalid
from .base import LabPanel, _image, _ipv4, clear_figure, show_figure
from .route_view import route_figure


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
            self.result.value = invalid(f"{typed!r} is not an IPv4 address")
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
        return f'<div style="{CSS_BOX}"><b>hop by hop</b>{recorded}<ol>' + "".join(rows) + \
            "</ol></div>"


