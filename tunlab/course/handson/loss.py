"""Lesson 09's exercise (d): a UDP tunnel loop, checked in the lab, then raced against a TCP
tunnel under the same underlay loss (TCP over TCP).

:func:`check_udp_pump` runs a participant's ``udp_pump(tun_fd, sock)`` on two hosts joined by
a pair of connected UDP sockets on the underlay and pings through it; the kernel's counters
(``/proc/net/snmp`` of each host, the devices, and an nftables counter of the datagrams that
do not start with an IP header) tell whether it carried the packets, one per datagram, as UDP.
:func:`race_tunnels` then drops a share of the underlay's packets on both hosts and measures,
through each tunnel in turn, a TCP transfer (iperf3) and pings.
"""

from __future__ import annotations

import html
import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from tunlab import course
from tunlab.course.handson import checks, judge, runner, solutions
from tunlab.errors import TunlabError
from tunlab.kernel.counters import counter_delta
from tunlab.kernel.netns import Namespace
from tunlab.lab.measure import iperf3_server, ping_rtts, set_loss

__all__ = ["Race", "TunnelRun", "check_udp_pump", "race", "race_tunnels"]

PORT = 5555  # the tunnel's port on both hosts (UDP, or TCP for the TCP tunnel)
IPERF_PORT = 5301
COUNT_TABLE = "tunlab_udpcheck"
PING_COUNT = 3
LOSS = 5.0  # % of each host's packets dropped on the underlay in the race
RACE_SECONDS = 2.0
RACE_PINGS = 100
TCP_INFO_TOTAL_RETRANS = 100  # offset of tcpi_total_retrans in struct tcp_info (linux/tcp.h)


# -- the reference solution (shown folded by handson.solution("09d")) -----------------------------



# -- sockets on the underlay ----------------------------------------------------------------------

def _udp_pair(lab: Any) -> tuple[socket.socket, socket.socket]:
    """A UDP socket on each host (198.18.0.x:PORT), each connected to the other."""
    def make(ns: Namespace, me: str, peer: str) -> socket.socket:
        def body() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((me, PORT))
            sock.connect((peer, PORT))
            return sock
        return ns.run(body)

    return make(lab.a, "198.18.0.1", "198.18.0.2"), make(lab.b, "198.18.0.2", "198.18.0.1")


def _tcp_pair(lab: Any) -> tuple[socket.socket, socket.socket]:
    """A TCP connection from a to b:PORT on the underlay; TCP_NODELAY, as VPNs over TCP set."""
    def listen() -> socket.socket:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("198.18.0.2", PORT))
        server.listen(1)
        return server

    def connect() -> socket.socket:
        return socket.create_connection(("198.18.0.2", PORT), timeout=5)

    server = lab.b.run(listen)
    try:
        client = lab.a.run(connect)
        server.settimeout(5)
        accepted, _ = server.accept()
    finally:
        server.close()
    for sock in (client, accepted):
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, accepted


def _total_retrans(sock: socket.socket) -> int:
    """The kernel's count of segments this TCP socket retransmitted (tcp_info)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, TCP_INFO_TOTAL_RETRANS)[0])


# -- counters --------------------------------------------------------------------------------------

SNMP_KEYS = ("UdpInDatagrams", "UdpOutDatagrams", "UdpRcvbufErrors", "UdpSndbufErrors",
             "UdpInErrors", "UdpNoPorts", "TcpOutSegs", "TcpRetransSegs")


def _count_unframed(ns: Namespace) -> None:
    """An nftables counter of UDP datagrams to or from PORT whose payload does not start with
    an IPv4 or IPv6 header (version nibble 4 or 6): framing bytes in front of the packet."""
    ruleset = (f"table inet {COUNT_TABLE} {{\n chain out {{\n"
               "  type filter hook output priority 0; policy accept;\n"
               f'  oifname "veth0" udp dport {PORT} @th,64,4 != {{ 4, 6 }} counter\n'
               " }\n}\n")
    ns.exec(["nft", "delete", "table", "inet", COUNT_TABLE], check=False)
    ns.exec(["nft", "-f", "-"], input=ruleset.encode())


def _unframed(ns: Namespace) -> int:
    out = ns.exec(["nft", "-j", "list", "table", "inet", COUNT_TABLE], check=False).stdout
    try:
        items = json.loads(out)["nftables"]
    except (ValueError, KeyError):
        return 0
    for item in items:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    return 0


def _host_counters(lab: Any) -> dict[str, int]:
    values: dict[str, int] = {}
    for name, ns in (("a", lab.a), ("b", lab.b)):
        snmp = runner._snmp(ns)
        values.update({f"{name} {key}": snmp.get(key, 0) for key in SNMP_KEYS})
        values.update({f"{name} {k}": v for k, v in runner._link_counters(ns, "tun0").items()})
    return values


# -- running two pumps ----------------------------------------------------------------------------

@dataclass
class _Pumps:
    """A participant's (or the reference) pump on each host, each on its own socket."""

    workers: dict[str, runner.Worker]
    sockets: dict[str, socket.socket]

    @classmethod
    def start(cls, lab: Any, pump: Callable[..., Any], pair: tuple[socket.socket, socket.socket],
              devices: dict[str, Any]) -> _Pumps:
        sockets = {"a": pair[0], "b": pair[1]}
        workers = {name: runner.Worker(pump, devices[name].fileno(), sockets[name],
                                   name=f"pump-{name}").start() for name in ("a", "b")}
        return cls(workers, sockets)

    def stop(self, lab: Any) -> tuple[dict[str, runner.Outcome], dict[str, bool]]:
        """Shut both sockets down (a pump returns when recv() gives b''), wait, close.
        Returns each pump's outcome and whether it ended before the stop."""
        stopped_at = time.monotonic()
        early = {name: w.ended_at < stopped_at for name, w in self.workers.items()}
        for sock in self.sockets.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # a TCP peer that already closed
        nudges = {"a": runner._nudge_ping(lab.a, "10.9.0.2"),
                  "b": runner._nudge_ping(lab.b, "10.9.0.1")}
        outcomes = {name: w.finish(runner.STOP_GRACE, nudges[name])
                    for name, w in self.workers.items()}
        for sock in self.sockets.values():
            sock.close()
        return outcomes, early






@contextmanager
def _two_host_lab(label: str, lab_factory: Callable[[], Any] | None) -> Iterator[Any]:
    from tunlab.lab.topology import READY_TIMEOUT, TwoHostLab, _wait_running

    with (lab_factory or (lambda: TwoHostLab(label=label)))() as lab:
        for ns in (lab.a, lab.b):
            ns.run(_wait_running, "tun0", READY_TIMEOUT)
        yield lab


# -- 09d: the check --------------------------------------------------------------------------------



def check_udp_pump(pump: Callable[[int, socket.socket], Any],
                   lab_factory: Callable[[], Any] | None = None) -> judge.Verdict:
    """Two hosts (a: tun0 10.9.0.1, b: tun0 10.9.0.2) joined by two connected UDP sockets on
    the underlay (198.18.0.1:5555 <-> 198.18.0.2:5555); ``pump(tun_fd, sock)`` runs on both
    and ``ping -c3 10.9.0.2`` from a must succeed, with every packet carried as one UDP
    datagram (Udp Out/InDatagrams count them; no TCP segment; no datagram that starts with
    anything but the IP header). The sockets are shut down at the end, or at the time limit."""
    with _two_host_lab("udp", lab_factory) as lab:
        devices = {"a": lab.open_device(lab.a, "tun0"), "b": lab.open_device(lab.b, "tun0")}
        for ns in (lab.a, lab.b):
            _count_unframed(ns)
        before = _host_counters(lab)
        pumps = _Pumps.start(lab, pump, _udp_pair(lab), devices)
        code = runner._wait(runner._ping(lab.a, "10.9.0.2", count=PING_COUNT), runner.PUMP_SECONDS)
        outcomes, early = pumps.stop(lab)
        counters = counter_delta(before, _host_counters(lab))
        unframed = _unframed(lab.a) + _unframed(lab.b)
        lab.close_devices()
    if unframed:
        counters[judge.UNFRAMED] = unframed
    return judge.judge_udp(code, counters, outcomes, early)






# -- the race: TCP inside a UDP tunnel vs. inside a TCP tunnel, under loss ------------------------

@dataclass
class TunnelRun:
    """One tunnel's results in the race (all counts are kernel counter deltas)."""

    tunnel: str
    """"UDP" or "TCP"."""
    code: str
    """Whose pump ran: "yours" or "tunlab's reference"."""
    mbps: float
    """Goodput of the TCP transfer through the tunnel (iperf3, received)."""
    inner_retrans: int
    """Segments the tunnelled TCP (iperf3's sender) retransmitted."""
    outer_retrans: int
    """Segments the tunnel's own TCP connection retransmitted (both ends; 0 for UDP)."""
    retrans_segs: dict[str, int]
    """TcpRetransSegs per host: every TCP retransmission in that namespace."""
    datagrams: dict[str, int]
    """Udp OutDatagrams per host (the UDP tunnel's datagrams)."""
    rtts: list[float | None]
    """Ping RTT (ms) per echo while idle under loss; None = no reply."""
    note: str = ""
    rcvbuf_errors: dict[str, int] = field(default_factory=dict)
    """Udp RcvbufErrors per host: datagrams the kernel dropped because the pump did not read
    its socket fast enough (loss on top of the cable's)."""

    @property
    def lost(self) -> int:
        """Echoes that got no reply."""
        return sum(1 for r in self.rtts if r is None)

    @property
    def slow(self) -> int:
        """Echoes answered but slower than 10 ms (a retransmission or a stall)."""
        return sum(1 for r in self.rtts if r is not None and r > 10)

    @property
    def max_rtt(self) -> float:
        """The slowest answered echo (ms)."""
        return max((r for r in self.rtts if r is not None), default=0.0)


@dataclass
class Race:
    """:func:`race_tunnels`' result: the two tunnels under the same loss; renders as a table."""

    loss: float
    seconds: float
    runs: list[TunnelRun]
    recorded: bool = False
    """True when this is a recording shown without the lab (read-only mode)."""

    def run(self, tunnel: str) -> TunnelRun:
        """The run of ``"UDP"`` or ``"TCP"``."""
        return next(r for r in self.runs if r.tunnel == tunnel)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (recordings)."""
        return {"loss": self.loss, "seconds": self.seconds, "recorded": self.recorded,
                "runs": [asdict(r) for r in self.runs]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Race:
        """The inverse of :meth:`to_dict`."""
        return cls(float(data["loss"]), float(data["seconds"]),
                   [TunnelRun(**r) for r in data["runs"]], bool(data.get("recorded")))

    def goodput(self) -> dict[str, float]:
        """``{label: Mbit/s}`` for :func:`tunlab.course.plots.bars`."""
        return {f"TCP in the {r.tunnel} tunnel ({r.code})": r.mbps for r in self.runs}

    def rtt_series(self) -> dict[str, list[float | None]]:
        """``{label: RTTs}`` for :func:`tunlab.course.plots.latency`."""
        return {f"ping through the {r.tunnel} tunnel": r.rtts for r in self.runs}

    def describe(self) -> str:
        """This run's numbers in words (so that the lesson's text never has to guess them)."""
        udp, tcp = self.run("UDP"), self.run("TCP")
        whose = ", ".join(f"{r.tunnel}: {r.code}" for r in self.runs)
        ratio = (f"{udp.mbps / tcp.mbps:.1f} times as much" if tcp.mbps > 0 else
                 "while nothing got through the TCP tunnel")
        stacked = (f"The inner TCP in the TCP tunnel retransmitted {tcp.inner_retrans} "
                   "segment(s) too: some stalls outlasted its own timer, and its copies "
                   "queued behind the outer TCP's." if tcp.inner_retrans else
                   "The inner TCP in the TCP tunnel retransmitted nothing: no stall outlasted "
                   "its timer this time (at higher loss they do).")
        return (f"This run ({self.loss:g}% loss each way; pumps: {whose}):\n"
                f"- goodput: {udp.mbps:,.1f} Mbit/s inside the UDP tunnel, {tcp.mbps:,.1f} "
                f"Mbit/s inside the TCP tunnel: {ratio}.\n"
                f"- retransmissions: the inner TCP {udp.inner_retrans} in the UDP tunnel "
                f"(b's kernel dropped {udp.rcvbuf_errors.get('b', 0)} datagram(s) its pump "
                f"did not read in time); in the TCP tunnel the tunnel's own TCP "
                f"{tcp.outer_retrans}, the inner TCP {tcp.inner_retrans}.\n"
                f"- {stacked}\n"
                f"- pings: UDP tunnel {udp.lost} lost, slowest {udp.max_rtt:.3g} ms; TCP "
                f"tunnel {tcp.lost} lost, {tcp.slow} slower than 10 ms, slowest "
                f"{tcp.max_rtt:.3g} ms.")

    def _rows(self) -> list[tuple[str, ...]]:
        rows = [("", *(f"{r.tunnel} tunnel" for r in self.runs)),
                ("whose pump", *(r.code for r in self.runs)),
                ("TCP goodput (iperf3)", *(f"{r.mbps:,.1f} Mbit/s" for r in self.runs)),
                ("inner TCP retransmissions", *(str(r.inner_retrans) for r in self.runs)),
                ("outer (tunnel) TCP retransmissions",
                 *(str(r.outer_retrans) if r.tunnel == "TCP" else "none: UDP"
                   for r in self.runs)),
                ("TcpRetransSegs a / b", *(f"{r.retrans_segs.get('a', 0)} / "
                                           f"{r.retrans_segs.get('b', 0)}" for r in self.runs)),
                ("Udp OutDatagrams a / b", *(f"{r.datagrams.get('a', 0)} / "
                                             f"{r.datagrams.get('b', 0)}" for r in self.runs)),
                ("Udp RcvbufErrors a / b", *(f"{r.rcvbuf_errors.get('a', 0)} / "
                                             f"{r.rcvbuf_errors.get('b', 0)}"
                                             for r in self.runs)),
                (f"pings lost (of {len(self.runs[0].rtts)})", *(str(r.lost) for r in self.runs)),
                ("pings slower than 10 ms", *(str(r.slow) for r in self.runs)),
                ("slowest ping", *(f"{r.max_rtt:.3g} ms" for r in self.runs))]
        return rows

    def _repr_html_(self) -> str:
        head, *body = self._rows()
        cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in body)
        notes = "".join(f"<br><i>{html.escape(r.note)}</i>" for r in self.runs if r.note)
        return (f"<b>{self.loss:g}% loss on the underlay, both ways; {self.seconds:g} s of "
                f"iperf3 a &rarr; b through each tunnel</b><table><tr>{cells}</tr>{rows}"
                f"</table>{notes}")

    def __repr__(self) -> str:
        return "\n".join("  ".join(f"{c:<34}" if i == 0 else f"{c:<22}"
                                   for i, c in enumerate(row)) for row in self._rows())


def _carries_ping(lab: Any) -> bool:
    return runner._wait(runner._ping(lab.a, "10.9.0.2", count=PING_COUNT), runner.PUMP_SECONDS) == 0


def _iperf3(lab: Any, seconds: float) -> tuple[float, int]:
    """(Mbit/s received, sender's retransmissions) through the tunnel; one attempt, bounded."""
    argv = ["iperf3", "-c", "10.9.0.2", "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J",
            "--connect-timeout", "3000"]
    with iperf3_server(lab.b, IPERF_PORT):
        result = lab.a.exec(argv, check=False, timeout=seconds + 20)
    try:
        end = json.loads(result.stdout)["end"]
        return (end["sum_received"]["bits_per_second"] / 1e6,
                int(end.get("sum_sent", {}).get("retransmits", 0)))
    except (ValueError, KeyError):
        return 0.0, 0


def _start_carrying(lab: Any, tunnel: str, pump: Callable[..., Any] | None,
                    reference: Callable[..., Any]) -> tuple[_Pumps, str, str]:
    """Start ``pump`` (or, when it is None or carries no ping, ``reference``) on both hosts;
    returns the pumps, whose code runs, and a note when the reference took over."""
    make_pair = _udp_pair if tunnel == "UDP" else _tcp_pair
    candidates = [(pump, "yours")] if pump is not None else []
    for fn, whose in [*candidates, (reference, "tunlab's reference")]:
        devices = {"a": lab.open_device(lab.a, "tun0"), "b": lab.open_device(lab.b, "tun0")}
        pumps = _Pumps.start(lab, fn, make_pair(lab), devices)
        if _carries_ping(lab):
            note = "" if fn is pump or pump is None else (
                f"Your {tunnel} pump carried no ping (see its check), so tunlab's reference "
                "ran in its place.")
            return pumps, whose, note
        pumps.stop(lab)
        lab.close_devices()
    raise TunlabError(f"the reference {tunnel} pump carried no ping",
                      "rebuild the lab (reset lab) and run the cell again")


def _one_tunnel(lab: Any, tunnel: str, pump: Callable[..., Any] | None,
                reference: Callable[..., Any], loss: float, seconds: float,
                pings: int) -> TunnelRun:
    pumps, whose, note = _start_carrying(lab, tunnel, pump, reference)
    pair = (pumps.sockets["a"], pumps.sockets["b"])
    try:
        before = {name: runner._snmp(ns) for name, ns in (("a", lab.a), ("b", lab.b))}
        outer_before = sum(_total_retrans(s) for s in pair) if tunnel == "TCP" else 0
        for ns in (lab.a, lab.b):
            set_loss(ns, loss)
        try:
            mbps, inner = _iperf3(lab, seconds)
            rtts = ping_rtts(lab.a, "10.9.0.2", pings, linger=1.0)
        finally:
            for ns in (lab.a, lab.b):
                set_loss(ns, 0)
        outer = sum(_total_retrans(s) for s in pair) - outer_before if tunnel == "TCP" else 0
        after = {name: runner._snmp(ns) for name, ns in (("a", lab.a), ("b", lab.b))}
    finally:
        outcomes, early = pumps.stop(lab)
        lab.close_devices()
    crashed = [(n, o) for n, o in outcomes.items() if early[n] and o.error is not None]
    if crashed:
        crash = judge._crash(*crashed[0], kind=tunnel)
        note = (note + " " if note else "") + f"During the race, {crash}."
    delta = {name: counter_delta(before[name], after[name]) for name in after}
    return TunnelRun(tunnel, whose, mbps, inner, outer,
                     {n: d.get("TcpRetransSegs", 0) for n, d in delta.items()},
                     {n: d.get("UdpOutDatagrams", 0) for n, d in delta.items()},
                     rtts, note, {n: d.get("UdpRcvbufErrors", 0) for n, d in delta.items()})


def race_tunnels(udp: Callable[..., Any] | None = None, tcp: Callable[..., Any] | None = None,
                 loss: float = LOSS, seconds: float = RACE_SECONDS, pings: int = RACE_PINGS,
                 lab_factory: Callable[[], Any] | None = None) -> Race:
    """TCP over UDP vs. TCP over TCP: in a fresh two-host lab, drop ``loss`` % of each host's
    packets on the underlay (nftables) and measure, through each tunnel in turn, ``seconds``
    of iperf3 from a to b and ``pings`` pings every 10 ms.

    ``udp`` is your 09d pump, ``tcp`` your 09c pump; None (or a pump that carries no ping)
    runs tunlab's reference instead, and the result says whose code ran.
    """
    with _two_host_lab("race", lab_factory) as lab:
        runs = [_one_tunnel(lab, "UDP", udp, solutions.udp_pump, loss, seconds, pings),
                _one_tunnel(lab, "TCP", tcp, solutions.pump, loss, seconds, pings)]
    return Race(loss, seconds, runs)


def race(lesson: Any, udp: Callable[..., Any] | None = None,
         tcp: Callable[..., Any] | None = None, **kwargs: Any) -> Race | None:
    """:func:`race_tunnels` in ``lesson``'s course: live when the lab runs (recorded under
    ``"race"`` when recording), else the recorded race (None when there is none)."""
    value = lesson.run("race", lambda: race_tunnels(udp, tcp, **kwargs))
    if value is None or isinstance(value, Race):
        return value
    recorded = Race.from_dict(value)
    recorded.recorded = True
    return recorded


# -- registration with the course ----------------------------------------------------------------


EXERCISES: dict[str, course.Exercise] = {
    "09d": course.Exercise(
        "Turn your pump into udp_pump(tun_fd, sock) for a connected UDP socket: one packet "
        "read from tun_fd goes out as one datagram, one datagram received is written to "
        "tun_fd as one packet, until recv() gives b''. The check runs it on two hosts joined "
        "by UDP sockets on the underlay, pings 10.9.0.2 from 10.9.0.1, and counts the "
        "datagrams with the kernel.",
        [],
        ["A datagram keeps its boundaries: sock.send(packet) sends exactly one, and "
         "sock.recv(2048) returns exactly one (the tun MTU is 1400).",
         "No length prefix this time: the first byte of each datagram must be the IP "
         "header's (0x45).",
         "recv() returning b'' means the check shut the socket down: return. Still stuck? "
         "Run handson.solution('09d')."],
        verify=checks._verify(check_udp_pump, seed_lab=False)),
}

for _key, _exercise in EXERCISES.items():
    course.register_exercise(_key, _exercise)
