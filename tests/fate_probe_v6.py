"""Measure what the kernel does with IPv6 packets (and IPv4 with the new fate options).

Not a pytest module (no ``test_`` prefix): run it as root to regenerate the measured table

    .venv/bin/python tests/fate_probe_v6.py --json docs/fate-ipv6-measured.json \
        --md docs/fate-ipv6-measured.md   [--only NAME-PREFIX]

Each scenario builds a fresh ``SeedLab(uplink=True)`` (IPv4 and IPv6 addresses, wan0 with
default routes), applies sysctls, routes, MTUs and an nft ruleset, writes one crafted packet
into a TUN device the way ``tunlab.fate.packet_fate`` does (from the namespace's worker thread,
traced by a ``DropTracer`` filtered on that thread), and records independently of fate.py:
the drop reasons of our skb (and of the kernel's replies), every packet that left a device
within the reply window, and the counter deltas (nstat, /proc/net/snmp6, ip -s link).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunlab import drops, packets
from tunlab.lab import SeedLab
from tunlab.sysctl import SysctlChanges

DEVICES = ("mytun", "mytun2", "wan0")
WINDOW, QUIET = 1.0, 0.25
NOISE_ICMP6 = {133, 143}  # router solicitations and MLDv2 reports of devices coming up
FWD = {"net.ipv4.ip_forward": 1}
FWD6 = {"net.ipv6.conf.all.forwarding": 1}


@dataclass
class Scenario:
    name: str
    src: str
    dst: str
    proto: str | int = "icmp"
    dport: int | None = None
    ttl: int = 64
    size: int | None = None
    df: bool = False
    dev: str = "mytun2"
    sysctls: dict[str, Any] = field(default_factory=dict)
    routes: list[str] = field(default_factory=list)
    mtu: dict[str, int] = field(default_factory=dict)
    nft: str | None = None
    listen: tuple[str, int] | None = None  # ("udp"|"tcp", port): a socket in the lab
    note: str = ""


def _nft_input_drop(family: str, expr: str) -> str:
    return (f"table inet probe {{\n chain input {{\n  type filter hook input priority 0; "
            f"policy accept;\n  meta nfproto {family} {expr} drop\n }}\n}}\n")


def _nft_chain(family: str, hook: str, rule: str) -> str:
    return (f"table {family} probe {{\n chain c {{\n  type filter hook {hook} priority 0; "
            f"policy accept;\n  {rule}\n }}\n}}\n")


FORWARDING_KEYS = ("net.ipv6.conf.all.forwarding", "net.ipv6.conf.mytun.forwarding",
                   "net.ipv6.conf.mytun2.forwarding", "net.ipv6.conf.mytun2.force_forwarding")

SCENARIOS = [
    # ---- IPv6 -----------------------------------------------------------------------------
    Scenario("v6-echo-local-onlink", "fd00:2::99", "fd00:2::1",
             note="echo to mytun2's own address from a peer on its subnet"),
    Scenario("v6-echo-local-world", "2001:db8::99", "fd00:2::1",
             note="reply leaves by the default route (wan0)"),
    Scenario("v6-echo-local-other-dev", "fd00:2::99", "fd00::1",
             note="mytun's address, packet arrives on mytun2 (weak host model)"),
    Scenario("v6-echo-fwd-off", "fd00:2::99", "fd00::2"),
    Scenario("v6-echo-fwd-on", "fd00:2::99", "fd00::2", sysctls=FWD6),
    Scenario("v6-echo-own-src-fwd-off", "fd00::1", "fd00::2",
             note="source is the host's own mytun address (IPv4: IP_LOCAL_SOURCE with fwd)"),
    Scenario("v6-echo-own-src-fwd-on", "fd00::1", "fd00::2", sysctls=FWD6),
    Scenario("v6-echo-own-src-local", "fd00::1", "fd00:2::1",
             note="own address as source, to a local address"),
    Scenario("v6-echo-wan-fwd-on", "fd00:2::99", "2001:db8::99", sysctls=FWD6),
    Scenario("v6-echo-default-fwd-on", "fd00:2::99", "2001:4860::8888", sysctls=FWD6,
             note="beyond wan0's prefix: the default route"),
    Scenario("v6-hlim1-fwd-on", "fd00:2::99", "fd00::2", ttl=1, sysctls=FWD6),
    Scenario("v6-hlim0-fwd-on", "fd00:2::99", "fd00::2", ttl=0, sysctls=FWD6),
    Scenario("v6-hlim0-local", "fd00:2::99", "fd00:2::1", ttl=0),
    Scenario("v6-hlim1-local", "fd00:2::99", "fd00:2::1", ttl=1),
    Scenario("v6-udp-closed-port", "fd00:2::99", "fd00:2::1", "udp", 9999),
    Scenario("v6-tcp-syn-closed-port", "fd00:2::99", "fd00:2::1", "tcp", 9999),
    Scenario("v6-nh253-local", "fd00:2::99", "fd00:2::1", 253),
    Scenario("v6-nh253-world-local", "2001:db8::99", "fd00:2::1", 253),
    Scenario("v6-echo-mcast-ff02-1", "fd00:2::99", "ff02::1"),
    Scenario("v6-echo-mcast-ff02-1-from-ll", "fe80::99", "ff02::1"),
    Scenario("v6-udp-mcast-ff02-1", "fe80::99", "ff02::1", "udp", 9),
    Scenario("v6-echo-ll-src-local", "fe80::99", "fd00:2::1"),
    Scenario("v6-echo-ll-src-fwd-on", "fe80::99", "fd00::2", sysctls=FWD6,
             note="link-local source may not be forwarded (beyond scope)"),
    Scenario("v6-echo-ll-dst-fwd-on", "fd00:2::99", "fe80::1234", sysctls=FWD6),
    Scenario("v6-echo-unspecified-src", "::", "fd00:2::1"),
    Scenario("v6-echo-mcast-src", "ff02::1", "fd00:2::1"),
    Scenario("v6-echo-loopback-dst", "fd00:2::99", "::1"),
    Scenario("v6-echo-loopback-src", "::1", "fd00:2::1"),
    Scenario("v6-fwd-dev-only", "fd00:2::99", "fd00::2",
             sysctls={"net.ipv6.conf.mytun2.forwarding": 1},
             note="only the incoming device's forwarding switch"),
    Scenario("v6-fwd-dev-out-only", "fd00:2::99", "fd00::2",
             sysctls={"net.ipv6.conf.mytun.forwarding": 1},
             note="only the outgoing device's forwarding switch"),
    Scenario("v6-fwd-all-on-dev-off", "fd00:2::99", "fd00::2",
             sysctls={"net.ipv6.conf.all.forwarding": 1, "net.ipv6.conf.mytun2.forwarding": 0},
             note="all=1 then the incoming device set back to 0"),
    Scenario("v6-fwd-all-on-outdev-off", "fd00:2::99", "fd00::2",
             sysctls={"net.ipv6.conf.all.forwarding": 1, "net.ipv6.conf.mytun.forwarding": 0}),
    Scenario("v6-force-forwarding-dev", "fd00:2::99", "fd00::2",
             sysctls={"net.ipv6.conf.mytun2.force_forwarding": 1},
             note="force_forwarding (new in 6.17) on the incoming device, all=0"),
    Scenario("v6-force-forwarding-outdev", "fd00:2::99", "fd00::2",
             sysctls={"net.ipv6.conf.mytun.force_forwarding": 1},
             note="force_forwarding on the outgoing device only"),
    Scenario("v6-blackhole-fwd-off", "fd00:2::99", "2001:db8:99::1",
             routes=["blackhole 2001:db8:99::/48"]),
    Scenario("v6-blackhole-fwd-on", "fd00:2::99", "2001:db8:99::1", sysctls=FWD6,
             routes=["blackhole 2001:db8:99::/48"]),
    Scenario("v6-unreachable-fwd-on", "fd00:2::99", "2001:db8:99::1", sysctls=FWD6,
             routes=["unreachable 2001:db8:99::/48"]),
    Scenario("v6-prohibit-fwd-on", "fd00:2::99", "2001:db8:99::1", sysctls=FWD6,
             routes=["prohibit 2001:db8:99::/48"]),
    Scenario("v6-unreachable-fwd-off", "fd00:2::99", "2001:db8:99::1",
             routes=["unreachable 2001:db8:99::/48"]),
    Scenario("v6-ptb-wan-mtu1280", "fd00:2::99", "2001:db8::99", size=1400, sysctls=FWD6,
             mtu={"wan0": 1280}, note="big packet, small MTU on the out device"),
    Scenario("v6-fits-wan-mtu1280", "fd00:2::99", "2001:db8::99", size=1280, sysctls=FWD6,
             mtu={"wan0": 1280}),
    Scenario("v6-big-local-in-mtu1280", "fd00:2::99", "fd00:2::1", size=1400,
             mtu={"mytun2": 1280}, note="bigger than the incoming device's MTU, local"),
    Scenario("v6-nft-input-drop", "fd00:2::99", "fd00:2::1",
             nft=_nft_input_drop("ipv6", "meta l4proto ipv6-icmp")),
    Scenario("v6-nft-forward-drop", "fd00:2::99", "fd00::2", sysctls=FWD6,
             nft=_nft_chain("ip6", "forward", "drop")),
    Scenario("v6-nft-rpfilter", "2001:db8::99", "fd00:2::1",
             nft=_nft_chain("ip6", "prerouting", "fib saddr . iif oif missing drop"),
             note="IPv6 has no rp_filter sysctl: the netfilter fib match does it"),
    Scenario("v6-nft-rpfilter-ok", "fd00:2::99", "fd00:2::1",
             nft=_nft_chain("ip6", "prerouting", "fib saddr . iif oif missing drop")),
    Scenario("v6-udp-listener", "fd00:2::99", "fd00:2::1", "udp", 5353, listen=("udp", 5353)),
    Scenario("v6-tcp-listener", "fd00:2::99", "fd00:2::1", "tcp", 8080, listen=("tcp", 8080)),
    Scenario("v6-echo-into-wan0-local", "2001:db8::99", "fd00:2::1", dev="wan0"),
    # ---- IPv4 with the new options ----------------------------------------------------------
    Scenario("v4-ttl0-local", "10.0.2.33", "10.0.2.1", ttl=0),
    Scenario("v4-ttl0-local-world", "200.1.2.3", "10.0.2.1", ttl=0),
    Scenario("v4-ttl0-fwd-on", "10.0.2.33", "10.0.0.2", ttl=0, sysctls=FWD),
    Scenario("v4-ttl1-fwd-on", "10.0.2.33", "10.0.0.2", ttl=1, sysctls=FWD),
    Scenario("v4-df-size1400-wan-mtu1000", "10.0.2.33", "192.0.2.99", size=1400, df=True,
             sysctls=FWD, mtu={"wan0": 1000}),
    Scenario("v4-nodf-size1400-wan-mtu1000", "10.0.2.33", "192.0.2.99", size=1400,
             sysctls=FWD, mtu={"wan0": 1000}, note="no DF: fragmented on the way out"),
    Scenario("v4-df-fits-wan-mtu1000", "10.0.2.33", "192.0.2.99", size=1000, df=True,
             sysctls=FWD, mtu={"wan0": 1000}),
    Scenario("v4-df-size1400-local-in-mtu1000", "10.0.2.33", "10.0.2.1", size=1400, df=True,
             mtu={"mytun2": 1000}),
    Scenario("v4-blackhole-fwd-on", "10.0.2.33", "203.0.113.7", sysctls=FWD,
             routes=["blackhole 203.0.113.0/24"]),
    Scenario("v4-unreachable-fwd-on", "10.0.2.33", "203.0.113.7", sysctls=FWD,
             routes=["unreachable 203.0.113.0/24"]),
    Scenario("v4-prohibit-fwd-on", "10.0.2.33", "203.0.113.7", sysctls=FWD,
             routes=["prohibit 203.0.113.0/24"]),
    Scenario("v4-unreachable-fwd-off", "10.0.2.33", "203.0.113.7",
             routes=["unreachable 203.0.113.0/24"]),
    Scenario("v4-udp-subnet-bcast", "10.0.2.33", "10.0.2.255", "udp", 9),
    Scenario("v4-udp-subnet-bcast-ignore0", "10.0.2.33", "10.0.2.255", "udp", 9,
             sysctls={"net.ipv4.icmp_echo_ignore_broadcasts": 0}),
    Scenario("v4-udp-limited-bcast", "10.0.2.33", "255.255.255.255", "udp", 9),
    Scenario("v4-udp-limited-bcast-ignore0", "10.0.2.33", "255.255.255.255", "udp", 9,
             sysctls={"net.ipv4.icmp_echo_ignore_broadcasts": 0}),
    Scenario("v4-echo-subnet-bcast", "10.0.2.33", "10.0.2.255"),
    Scenario("v4-echo-subnet-bcast-ignore0", "10.0.2.33", "10.0.2.255",
             sysctls={"net.ipv4.icmp_echo_ignore_broadcasts": 0}),
    Scenario("v4-echo-limited-bcast", "10.0.2.33", "255.255.255.255"),
    Scenario("v4-echo-limited-bcast-ignore0", "10.0.2.33", "255.255.255.255",
             sysctls={"net.ipv4.icmp_echo_ignore_broadcasts": 0}),
    Scenario("v4-echo-mcast-224-0-0-1", "10.0.2.33", "224.0.0.1"),
    Scenario("v4-echo-mcast-224-0-0-1-ignore0", "10.0.2.33", "224.0.0.1",
             sysctls={"net.ipv4.icmp_echo_ignore_broadcasts": 0}),
    Scenario("v4-udp-listener", "10.0.2.33", "10.0.2.1", "udp", 5353, listen=("udp", 5353)),
    Scenario("v4-tcp-listener", "10.0.2.33", "10.0.2.1", "tcp", 8080, listen=("tcp", 8080)),
    Scenario("v4-udp-closed-port", "10.0.2.33", "10.0.2.1", "udp", 9999),
    Scenario("v4-tcp-syn-closed-port", "10.0.2.33", "10.0.2.1", "tcp", 9999),
]


def _collect(devices: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Packets leaving the lab's devices until they are quiet (bounded by WINDOW)."""
    by_fd = {d.fileno(): name for name, d in devices.items()}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    out: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + WINDOW
    while (left := deadline - time.monotonic()) > 0:
        ready = poller.poll(min(left, QUIET) * 1000)
        if not ready:
            break
        for fd, _ in ready:
            try:
                out.append((by_fd[fd], os.read(fd, 65535)))
            except BlockingIOError:
                continue
    return out


def _drain(devices: dict[str, Any]) -> None:
    for device in devices.values():
        for _ in range(1000):
            try:
                os.read(device.fileno(), 65535)
            except BlockingIOError:
                break


def _is_noise(summary: dict[str, Any]) -> bool:
    return summary.get("proto") == "icmp6" and summary.get("icmp_type") in NOISE_ICMP6


def run(scenario: Scenario) -> dict[str, Any]:
    """Inject one scenario's packet in a fresh lab and record what the kernel did."""
    packet = packets.craft(scenario.src, scenario.dst, scenario.proto, dport=scenario.dport,
                           ttl=scenario.ttl, size=scenario.size, df=scenario.df)
    sent = packets.summarize(packet)
    with SeedLab("probe", uplink=True) as lab:
        for dev, mtu in scenario.mtu.items():
            lab.set_mtu(dev, mtu)
        SysctlChanges(lab.ns, scenario.sysctls).apply()
        for route in scenario.routes:
            lab.add_route(route)
        if scenario.nft:
            lab.ns.exec(["nft", "-f", "-"], input=scenario.nft.encode())
        listener = lab.ns.run(_listen, *scenario.listen) if scenario.listen else None
        devices = {name: lab.device(name) for name in DEVICES}
        for device in devices.values():
            os.set_blocking(device.fileno(), False)
        time.sleep(0.05)
        _drain(devices)
        writer_tid = lab.ns.run(threading.get_native_id)
        tracer = drops.DropTracer(pid=writer_tid, label="probe", track_receives=True).start()
        try:
            before = drops.snapshot_counters(lab.ns)
            lab.ns.run(devices[scenario.dev].write, packet)
            captured = _collect(devices)
            after = drops.snapshot_counters(lab.ns)
        finally:
            tracer.stop()
        routes = {"v4": lab.ns.ip("route"), "v6": lab.ns.ip("-6", "route")}
        effective = lab.ns.run(_read_sysctls, FORWARDING_KEYS) if "v6" in scenario.name \
            and "forward" in str(scenario.sysctls) else {}
        received = _received(listener)
    ours, others = drops.attribute_drops(tracer.events, scenario.dev, len(packet))
    out_packets = []
    forwarded_via = []
    for dev, data in captured:
        summary = packets.summarize(data)
        if _is_noise(summary):
            continue
        same_flow = all(summary.get(k) == sent.get(k) for k in ("src", "dst", "proto"))
        # our packet (or a fragment of it, which has no ICMP/UDP header to compare)
        is_ours = same_flow and all(summary.get(k) in (None, sent.get(k))
                                    for k in ("icmp_type", "sport", "dport"))
        if is_ours:
            forwarded_via.append({"dev": dev, "len": summary["len"], "ttl": summary.get("ttl")})
            continue
        reply = {"dev": dev, **{k: v for k, v in summary.items() if k != "version"}}
        quoted = packets.icmp_quoted_packet(data)
        if quoted:
            reply["quotes"] = quoted
        out_packets.append(reply)
    reasons = []
    for drop in ours:
        if drop.reason not in reasons:
            reasons.append(drop.reason)
    verdict = ("forwarded" if forwarded_via else "dropped" if reasons else "delivered")
    return {"name": scenario.name, "note": scenario.note,
            "packet": {"src": scenario.src, "dst": scenario.dst, "proto": sent["proto"],
                       "dport": scenario.dport, "ttl": scenario.ttl, "len": len(packet),
                       "df": scenario.df, "dev": scenario.dev},
            "settings": {"sysctls": scenario.sysctls, "routes": scenario.routes,
                         "mtu": scenario.mtu, "nft": scenario.nft},
            "verdict": verdict, "drop_reasons": reasons,
            "drops": [{"reason": d.reason, "location": d.location,
                       "family": 6 if d.is_ipv6 else 4 if d.is_ipv4 else d.protocol}
                      for d in ours],
            "reply_drops": [{"reason": d.reason, "location": d.location} for d in others],
            "forwarded_via": forwarded_via, "replies": out_packets,
            "counters": drops.counter_delta(before, after), "routes": routes,
            "sysctls_after": effective, "listener_received": received}


def _listen(kind: str, port: int) -> socket.socket:
    """A dual-stack socket on ``port`` inside the lab (created from its worker thread)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM if kind == "udp"
                         else socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    if kind == "tcp":
        sock.listen(4)
    sock.setblocking(False)
    return sock


def _received(sock: socket.socket | None) -> str | None:
    """What the listener got: a datagram's sender, or a (half-open) connection; then close."""
    if sock is None:
        return None
    try:
        if sock.type == socket.SOCK_DGRAM:
            data, peer = sock.recvfrom(65535)
            return f"datagram of {len(data)} bytes from {peer[0]}"
        return "SYN queued (no ACK will come)"
    except BlockingIOError:
        return "nothing"
    finally:
        sock.close()


def _read_sysctls(keys: tuple[str, ...]) -> dict[str, str]:
    values = {}
    for key in keys:
        try:
            values[key] = Path("/proc/sys/" + key.replace(".", "/")).read_text().strip()
        except OSError:
            values[key] = "?"
    return values


def _key_counters(counters: dict[str, int]) -> dict[str, int]:
    """The counters worth reading in a table: no byte counts, per-type or per-device echoes."""
    skip = ("Octets", "_bytes", "NoECTPkts", "Transmits", "InType", "OutType", "rt_cache.",
            "InMsgs", "OutMsgs", "OutRequests", "InReceives", "InDelivers", "_packets",
            "MLDv2Reports", "Ip6OutMcastPkts", "RouterSolicits")
    keep = {}
    for key, value in counters.items():
        if any(s in key for s in skip) or key.startswith("lo."):
            continue
        if "." in key and key.split(".", 1)[1][:1].isupper():  # DEV.Ip6..., same as the total
            continue
        keep[key] = value
    return keep


def _fmt_settings(result: dict[str, Any]) -> str:
    s = result["settings"]
    parts = [f"{k.removeprefix('net.')}={v}" for k, v in s["sysctls"].items()]
    parts += [f"route `{r}`" for r in s["routes"]]
    parts += [f"mtu {d}={m}" for d, m in s["mtu"].items()]
    if s["nft"]:
        parts.append("nft: `" + s["nft"].split("policy accept;")[1].split("\n")[1].strip()
                     + "` (" + s["nft"].split("hook ")[1].split()[0] + ")")
    return "<br>".join(parts) or "defaults"


def _fmt_packet(result: dict[str, Any]) -> str:
    p = result["packet"]
    text = f"{p['src']} -> {p['dst']} {p['proto']}"
    if p["dport"] is not None:
        text += f" :{p['dport']}"
    extras = []
    if p["ttl"] != 64:
        extras.append(f"ttl {p['ttl']}")
    if p["len"] > 200:
        extras.append(f"len {p['len']}")
    if p["df"]:
        extras.append("DF")
    if p["dev"] != "mytun2":
        extras.append(f"into {p['dev']}")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _fmt_reply(reply: dict[str, Any]) -> str:
    text = f"{reply['dev']}: {reply['src']} -> {reply['dst']} {reply['proto']}"
    if "icmp_type" in reply:
        text += f" {reply['icmp_type']}/{reply['icmp_code']}"
    if "mtu" in reply:
        text += f" mtu {reply['mtu']}"
    if "tcp_flags" in reply:
        text += f" {reply['tcp_flags']}"
    if reply.get("quotes"):
        text += " (quotes ours)"
    return text


def to_markdown(results: list[dict[str, Any]], header: str) -> str:
    lines = [header, "",
             "| scenario | packet (into mytun2 unless said) | settings | verdict | drop reasons "
             "(location) | replies / forwarded copy (dev: src -> dst proto type/code) "
             "| key counters (delta) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        where = ", ".join(f"{d['reason']} ({d['location']})" for d in r["drops"]) or "-"
        if r["reply_drops"]:
            where += "<br>reply dropped: " + ", ".join(
                f"{d['reason']} ({d['location']})" for d in r["reply_drops"])
        outs = [_fmt_reply(x) for x in r["replies"]]
        outs += [f"forwarded out {f['dev']} (len {f['len']}, ttl {f['ttl']})"
                 for f in r["forwarded_via"]]
        counters = ", ".join(f"{k} {v:+d}" for k, v in _key_counters(r["counters"]).items())
        mld = r["counters"].get("Icmp6OutMLDv2Reports", 0)
        if mld:
            counters += f" (+{mld} MLD reports: noise)"
        if r["listener_received"]:
            outs.append(f"listener: {r['listener_received']}")
        if r["sysctls_after"]:
            counters += "<br>read back: " + ", ".join(
                f"{k.removeprefix('net.ipv6.conf.')}={v}" for k, v in r["sysctls_after"].items())
        name = r["name"] + (f"<br>*{r['note']}*" if r["note"] else "")
        lines.append(f"| {name} | {_fmt_packet(r)} | {_fmt_settings(r)} | **{r['verdict']}** "
                     f"| {where} | {'<br>'.join(outs) or 'none'} | {counters or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", default="", help="run scenarios whose name starts with this")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--md", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    results = []
    for scenario in SCENARIOS:
        if not scenario.name.startswith(args.only):
            continue
        result = run(scenario)
        results.append(result)
        print(f"{result['name']:38} {result['verdict']:10} {result['drop_reasons']} "
              f"{[_fmt_reply(x) for x in result['replies']]} "
              f"{[f['dev'] for f in result['forwarded_via']]}", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    table = to_markdown(results, f"Measured on kernel {os.uname().release}")
    if args.md:
        args.md.write_text(table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
