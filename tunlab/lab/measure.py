"""Measuring a lab: iperf3 throughput, ping round trips, loss on the underlay, and the
experiments of lesson 08. Shared by the notebooks' widgets and by ``tunlab bench``.

Everything runs inside the lab's namespaces; the processes it starts are stopped before it
returns.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tunlab.errors import TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.runtime import stop_process

__all__ = ["announced_mss", "AnnouncedMss", "compare_paths", "data_path_experiment",
           "describe_mss", "iperf3", "iperf3_server", "IPERF_PORT", "lab_iperf3",
           "loss_experiment", "loss_summary", "LOSS_TABLE", "mtu_experiment", "ping_rtts", "Run",
           "set_loss", "tcp_mss", "wait_listening"]

IPERF_PORT = 5201
LOSS_TABLE = "tunlab_loss"


@dataclass
class Run:
    """One iperf3 run: received throughput, retransmissions, and CPU of the tunnel processes."""

    mbps: float
    retransmits: int = 0
    cpu_seconds: float | None = None
    seconds: float = 0.0

    @property
    def cpu_per_gbit(self) -> float | None:
        """CPU seconds the tunnel endpoints spent per Gbit carried."""
        gbits = self.mbps * self.seconds / 1000
        if self.cpu_seconds is None or gbits <= 0:
            return None
        return self.cpu_seconds / gbits


def ping_rtts(ns: Namespace, target: str, count: int = 100, interval: float = 0.01,
              linger: float = 0.0) -> list[float | None]:
    """``ping -c COUNT -i INTERVAL TARGET`` in ``ns``: round-trip time per sequence number
    in ms, ``None`` for each lost echo.

    ``linger`` > 0 gives the last of the ``count`` echoes that many seconds to come back: ping
    goes on sending uncounted echoes for that long. (ping itself waits only about two round
    trips after its last echo, so an echo that a TCP tunnel delivers late, after a
    retransmission, would be counted as lost; `-w` would send more echoes in place of lost
    ones and change what is measured.)
    """
    sent = count + math.ceil(linger / interval) if linger > 0 else count
    out = ns.exec(["ping", "-n", "-c", str(sent), "-i", f"{interval:g}", "-W", "1", target],
                  check=False, timeout=sent * interval + 15).stdout
    rtts: list[float | None] = [None] * count
    for line in out.splitlines():
        if "icmp_seq=" in line and "time=" in line:
            seq = int(line.split("icmp_seq=")[1].split()[0])
            ms = float(line.split("time=")[1].split()[0])
            if 1 <= seq <= count:
                rtts[seq - 1] = ms
    return rtts


def iperf3(ns: Namespace, address: str, seconds: float, streams: int = 1,
           port: int = IPERF_PORT) -> Run:
    """``iperf3 -c address`` from ``ns`` (a server must listen there); retried if busy."""
    argv = ["iperf3", "-c", address, "-p", str(port), "-t", f"{seconds:g}", "-P", str(streams),
            "-J", "--connect-timeout", "3000"]
    last = ""
    for attempt in range(3):
        result = ns.exec(argv, check=False, timeout=seconds + 30)
        try:
            doc = json.loads(result.stdout)
        except ValueError:
            doc = {"error": result.stderr.strip() or result.stdout[:200]}
        if "error" not in doc:
            end = doc["end"]
            return Run(mbps=end["sum_received"]["bits_per_second"] / 1e6,
                       retransmits=int(end.get("sum_sent", {}).get("retransmits", 0)),
                       seconds=float(end["sum_received"].get("seconds", seconds)))
        last = str(doc["error"])
        time.sleep(0.3 * (attempt + 1))  # "the server is busy": the last test is winding down
    raise TunlabError(f"iperf3 to {address} failed: {last}")


@contextmanager
def iperf3_server(ns: Namespace, port: int = IPERF_PORT, *, once: bool = True) -> Iterator[None]:
    """An iperf3 server in ``ns`` for the duration of the ``with`` block (``-1``: one test)."""
    argv = ["iperf3", "-s", "-p", str(port), *(["-1"] if once else [])]
    server = ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(ns, port)
        yield
    finally:
        stop_process(server)


def wait_listening(ns: Namespace, port: int, timeout: float = 5.0) -> None:
    """Return once something listens on TCP ``port`` in ``ns``; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.exec(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise TunlabError(f"nothing listens on port {port} in {ns.name} after {timeout:.0f} s")


# -- lessons: a TwoHostLab (hosts a and b, tunnel 10.9.0.1 <-> 10.9.0.2) ------------------------

def lab_iperf3(lab: Any, target: str, seconds: float = 2.0, port: int = IPERF_PORT,
               client_ns: Any = None, server_ns: Any = None) -> float:
    """Mbit/s from an iperf3 client in ``lab.a`` to a server in ``lab.b`` (or the given
    namespaces) for ``seconds``."""
    server_ns = server_ns or lab.b
    with iperf3_server(server_ns, port):
        return iperf3(client_ns or lab.a, target, seconds, port=port).mbps


def set_loss(ns: Any, percent: float, device: str = "veth0") -> None:
    """Drop ``percent`` % of the packets arriving on ``device`` in ``ns``, as a lossy cable
    would (0 removes the rule).

    nftables' netdev *ingress* hook drops them before IP sees them, so no sender learns of it
    and TCP has to find the loss itself, as on a real wire. (A drop in the sender's own output
    hook is not loss: the kernel returns EPERM to the sending socket, so UDP's send() fails
    and TCP just tries again later.) ``numgen random`` needs no netem (sch_netem).
    """
    if not 0 <= percent <= 100:
        raise TunlabError(f"a loss of {percent} % is not a share of packets",
                          "choose a loss between 0 and 100 %")
    ns.exec(["nft", "delete", "table", "netdev", LOSS_TABLE], check=False)
    if percent <= 0:
        return
    per_mille = int(round(percent * 10))
    match = "" if per_mille >= 1000 else f"numgen random mod 1000 < {per_mille} "
    ruleset = (f"table netdev {LOSS_TABLE} {{\n chain in {{\n"
               f'  type filter hook ingress device "{device}" priority 0; policy accept;\n'
               f"  {match}drop\n }}\n}}\n")
    ns.exec(["nft", "-f", "-"], input=ruleset.encode())


def loss_experiment(lab: Any, losses: Sequence[float] = (0, 3), seconds: float = 1.5,
                    pings: int = 100) -> dict[str, Any]:
    """TCP over TCP: for each loss rate of what a sends on the underlay (dropped as it arrives
    at b), iperf3 direct (198.18.0.2) and through the tunnel (10.9.0.2), and ping RTTs both
    ways. The tunnel must be running.

    Returns ``{"throughput": {"direct TCP": [(loss, Mbit/s)], "TCP in the tunnel": [...]},
    "rtts": {"<path> @ <loss>%": [ms or None, ...]}}``.
    """
    paths = {"direct TCP (underlay)": "198.18.0.2", "TCP in the tunnel": "10.9.0.2"}
    throughput: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    rtts: dict[str, list[float | None]] = {}
    try:
        for loss in losses:
            set_loss(lab.b, loss)
            for name, target in paths.items():
                throughput[name].append((float(loss), lab_iperf3(lab, target, seconds)))
            if loss:
                for name, target in paths.items():
                    # Late is not lost: TCP in the tunnel retransmits (RTO 200 ms and up).
                    rtts[f"{name.split(' (')[0]} @ {loss:g}% loss"] = ping_rtts(
                        lab.a, target, pings, linger=1.0)
    finally:
        set_loss(lab.b, 0)
    return {"throughput": throughput, "rtts": rtts}


@dataclass(frozen=True)
class AnnouncedMss:
    """One TCP connection's MSS: the option in its SYN (captured) and what ``ss -tin`` says it
    sends per segment, with the MTU of the device the connection uses."""

    path: str
    device: str
    mtu: int
    syn_mss: int    # the MSS option of the SYN: the route's MTU - 40
    mss: int        # ss's mss: payload per segment once TCP options (timestamps) take theirs
    syn_options: tuple[str, ...]   # the SYN's TCP options, in order ("MSS", "Timestamp"...)
    ss_line: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (recordings, claims)."""
        return {"path": self.path, "device": self.device, "mtu": self.mtu,
                "syn_mss": self.syn_mss, "mss": self.mss, "syn_options": list(self.syn_options),
                "ss_line": self.ss_line}


def _device_mtu(ns: Namespace, device: str) -> int:
    return int(json.loads(ns.ip("-j", "link", "show", device))[0]["mtu"])


def _ss_mss(ns: Namespace, target: str, port: int) -> tuple[int, str]:
    text = ns.exec(["ss", "-tinH", "state", "established", "dst", f"{target}:{port}"]).stdout
    line = " ".join(text.split())
    for part in line.split():
        if part.startswith("mss:"):
            return int(part[4:]), line
    raise TunlabError(f"ss shows no MSS for the connection to {target}:{port}: {text!r}",
                      "is the tunnel running? lesson 08 starts it in its first cells")


def _syn_options(packets: Sequence[Any], port: int) -> tuple[int, tuple[str, ...]] | None:
    """The MSS and the option names of the first SYN to ``port`` among captured packets."""
    from scapy.layers.inet import TCP

    for packet in packets:
        if TCP in packet and packet[TCP].dport == port and packet[TCP].flags == "S":
            options = packet[TCP].options
            mss = dict((name, value) for name, value in options).get("MSS")
            if mss is not None:
                return int(mss), tuple(str(name) for name, _ in options)
    return None


def tcp_mss(ns: Namespace, server_ns: Namespace, target: str, device: str,
            port: int = 5299, timeout: float = 3.0) -> tuple[int, int, tuple[str, ...], str]:
    """Open one TCP connection from ``ns`` over ``device`` to ``target`` (a listener in
    ``server_ns``), capturing its SYN: ``(MSS option of the SYN, ss's mss, the SYN's option
    names, ss's line)``. The capture is tcpdump's as lesson 03's (it also works in the no-sudo
    kernel)."""
    import socket

    from tunlab.lab.capture import capture

    def listen() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((target, port))
        sock.listen(1)
        return sock

    listener = server_ns.run(listen)
    try:
        with capture(ns, device, f"tcp dst port {port} and tcp[tcpflags] == tcp-syn",
                     timeout=10 + timeout) as cap:
            try:
                client = ns.run(socket.create_connection, (target, port), timeout)
            except OSError as exc:
                raise TunlabError(f"no TCP connection to {target}:{port} in {timeout:g} s "
                                  f"({exc.strerror or exc})",
                                  "is the tunnel running? lesson 08 starts it in its first "
                                  "cells") from exc
            try:
                mss, ss_line = _ss_mss(ns, target, port)
            finally:
                client.close()
        try:
            syn = _syn_options(cap.packets(), port)
        finally:
            cap.path.unlink(missing_ok=True)
    finally:
        listener.close()
    if syn is None:
        raise TunlabError(f"the capture on {device} holds no SYN with an MSS option "
                          f"({cap.stderr.strip()[-200:] or 'no message'})",
                          "is tcpdump installed? (apt-get install tcpdump)")
    return syn[0], mss, syn[1], ss_line


def announced_mss(lab: Any, tunnel_mtus: Sequence[int] = (1400, 9000)) -> list[AnnouncedMss]:
    """The MSS a's SYN announces and the segment size ss reports, over the underlay (veth0)
    and through the tunnel (tun0) at each of ``tunnel_mtus``. The tunnel must be running;
    tun0's MTU is put back afterwards."""
    rows = [AnnouncedMss("underlay", "veth0", _device_mtu(lab.a, "veth0"),
                         *tcp_mss(lab.a, lab.b, "198.18.0.2", "veth0"))]
    old = _device_mtu(lab.a, "tun0")
    try:
        for mtu in tunnel_mtus:
            for ns in (lab.a, lab.b):
                ns.ip("link", "set", "tun0", "mtu", str(mtu))
            rows.append(AnnouncedMss("tunnel", "tun0", mtu,
                                     *tcp_mss(lab.a, lab.b, "10.9.0.2", "tun0")))
    finally:
        for ns in (lab.a, lab.b):
            ns.ip("link", "set", "tun0", "mtu", str(old))
    return rows


def describe_mss(rows: Sequence[AnnouncedMss | dict[str, Any]]) -> str:
    """A table of :func:`announced_mss` (live rows or their recording)."""
    lines = [f"{'path':9} {'device':7} {'MTU':>6} {'MSS in SYN':>11} {'ss mss':>7}"]
    for row in rows:
        r = row.to_dict() if isinstance(row, AnnouncedMss) else row
        lines.append(f"{r['path']:9} {r['device']:7} {r['mtu']:>6} {r['syn_mss']:>11} "
                     f"{r['mss']:>7}")
    return "\n".join(lines)


def loss_summary(loss: dict[str, Any]) -> dict[str, float]:
    """What lesson 08 says about a :func:`loss_experiment` (live or recorded): echoes lost and
    the slowest echo per path over every loss rate, and the share of its loss-free throughput
    each path kept at 5 % loss."""
    def echoes(prefix: str) -> list[float | None]:
        return [r for name, values in loss["rtts"].items() if name.startswith(prefix)
                for r in values]

    def kept_at_5(name: str) -> float:
        rates = {float(rate): mbps for rate, mbps in loss["throughput"][name]}
        return rates[5.0] / rates[0.0] if rates.get(0.0) else 0.0

    tunnel, direct = echoes("TCP in the tunnel"), echoes("direct")
    return {"tunnel_lost": tunnel.count(None), "direct_lost": direct.count(None),
            "tunnel_max_ms": max((r for r in tunnel if r is not None), default=0.0),
            "tunnel_kept_at_5": kept_at_5("TCP in the tunnel"),
            "direct_kept_at_5": kept_at_5("direct TCP (underlay)")}


def compare_paths(lab: Any, seconds: float = 1.5) -> dict[str, float]:
    """iperf3 Mbit/s: directly over the underlay veth, and through the tunnel (running)."""
    return {"direct veth (underlay)": lab_iperf3(lab, "198.18.0.2", seconds),
            "tunlab tunnel (Python, TCP)": lab_iperf3(lab, "10.9.0.2", seconds)}


def mtu_experiment(lab: Any, mtus: Sequence[int] = (1400, 9000, 60000),
                   seconds: float = 1.5) -> dict[str, float]:
    """Throughput through the tunnel for each tun0 MTU (set on both ends); ``{label: Mbit/s}``.

    The MTU is put back to what it was afterwards.
    """
    before = lab.a.ip("-j", "link", "show", "tun0")
    old = int(json.loads(before)[0]["mtu"])
    results: dict[str, float] = {}
    try:
        for mtu in mtus:
            for ns in (lab.a, lab.b):
                ns.ip("link", "set", "tun0", "mtu", str(mtu))
            results[f"tun MTU {mtu}"] = lab_iperf3(lab, "10.9.0.2", seconds)
    finally:
        for ns in (lab.a, lab.b):
            ns.ip("link", "set", "tun0", "mtu", str(old))
    return results


def data_path_experiment(lab: Any, seconds: float = 1.5) -> dict[str, float]:
    """Tunnel throughput on the simple path and on the fast path, in the same lab.

    The simple path reads, frames and writes one MTU-sized packet at a time; the fast path opens
    tun0 with ``IFF_VNET_HDR``, negotiates offloads in the HELLO and carries 64 KiB TCP
    super-packets. The tunnel is restarted for each and left running on the simple path.
    """
    results: dict[str, float] = {}
    try:
        for label, fast in (("simple path: a packet per read", False),
                            ("fast path: super-packets (vnet_hdr)", True)):
            lab.stop_tunnel()
            lab.close_devices()
            lab.start_tunnel(fast=fast)
            results[label] = lab_iperf3(lab, "10.9.0.2", seconds)
    finally:
        lab.stop_tunnel()
        lab.close_devices()
        lab.start_tunnel()
    return results
