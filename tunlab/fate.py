"""What happens to this packet? Ask the kernel, then say it in plain words.

:func:`packet_fate` builds the seed's topology in a fresh namespace (mytun 10.0.0.1/24, mytun2
10.0.2.1/24), applies sysctls and an nftables ruleset, writes one crafted packet into a TUN
device the way the vpn-server releases packets, and collects what the kernel did: the drop
reasons this packet caused (tracefs), martian lines, the packets the kernel sent back out of
the TUN devices, counter deltas, and an explanation with the fix.

:func:`observe` is the same measurement around any action (the demo uses it around a real
tunnel, whose server thread writes the packet).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import drops, explain, packets
from .errors import EnvironmentProblem, TunlabError
from .lab import SEED_DEVICES, UPLINK, SeedLab
from .netns import Namespace
from .sysctl import SysctlChanges
from .tun import TunDevice

REPLY_WINDOW = 1.0     # replies are collected for at most this long after the write
QUIET_PERIOD = 0.15    # ... and stop early once the devices have been silent this long
WATCHED_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
                   "net.ipv4.conf.all.accept_local", "net.ipv4.conf.all.log_martians")


@dataclass
class FateReport:
    """The kernel's answer for one packet. ``to_dict()`` is the ``tunlab fate --json`` object."""

    verdict: str
    drop_reasons: list[str]
    martian_log: list[str]
    replies: list[dict[str, Any]]
    counters: dict[str, int]
    explanation: str
    drop_locations: list[dict[str, str]] = field(default_factory=list)
    reply_drops: list[dict[str, str]] = field(default_factory=list)
    packet: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    tracing: str = "tracefs"
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "drop_reasons": self.drop_reasons,
                "martian_log": self.martian_log, "replies": self.replies,
                "counters": self.counters, "explanation": self.explanation,
                "drop_locations": self.drop_locations, "reply_drops": self.reply_drops,
                "packet": self.packet,
                "settings": self.settings, "tracing": self.tracing,
                "elapsed": round(self.elapsed, 3)}


def _read_sysctls(ns: Namespace) -> dict[str, str]:
    def read() -> dict[str, str]:
        values = {}
        for key in WATCHED_SYSCTLS:
            try:
                with open("/proc/sys/" + key.replace(".", "/")) as f:
                    values[key] = f.read().strip()
            except OSError:
                pass
        return values

    return ns.run(read)


def _collect_replies(devices: Sequence[TunDevice], window: float) -> list[tuple[str, bytes]]:
    """IPv4 packets the kernel sends out of ``devices`` until they go quiet (bounded)."""
    if not devices:
        return []
    by_fd = {d.fileno(): d for d in devices}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    out: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + window
    while (left := deadline - time.monotonic()) > 0:
        ready = poller.poll(min(left, QUIET_PERIOD) * 1000)
        if not ready:
            break
        for fd, _ in ready:
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                continue
            if packet and packet[0] >> 4 == 4:  # IPv6 router solicitations are not ours
                out.append((by_fd[fd].name, packet))
    return out


def _drain(devices: Sequence[TunDevice]) -> None:
    for device in devices:
        os.set_blocking(device.fileno(), False)
        for _ in range(1000):
            try:
                os.read(device.fileno(), 65535)
            except BlockingIOError:
                break


def _same_flow(summary: dict[str, Any], sent: dict[str, Any]) -> bool:
    return all(summary.get(k) == sent.get(k) for k in ("src", "dst", "proto"))


def observe(ns: Namespace, inject: Callable[[], None], *, writer_tid: int | None,
            capture_devices: Sequence[TunDevice] = (),
            packet: bytes | Callable[[], bytes | None] | None = None, dev: str | None = None,
            devices: Iterable[str] = tuple(SEED_DEVICES)) -> FateReport:
    """Measure what the kernel does while ``inject()`` runs.

    ``writer_tid``: the thread that writes the packet into a TUN device; only drops in its
    context count (None: every drop on the machine, noisier). ``capture_devices``: open TUN
    devices to collect the kernel's replies from (leave empty when a tunnel owns them).
    ``packet`` (or a function returning it once ``inject`` ran) and ``dev``: the packet written
    and the device it was written into, to tell its drops, replies and martian lines from
    those of the replies the kernel made.
    """
    started = time.monotonic()
    tracing = "tracefs"
    tracer: drops.DropTracer | None = None
    try:
        tracer = drops.DropTracer(pid=writer_tid, label="fate", track_receives=True).start()
    except (EnvironmentProblem, OSError) as exc:
        tracing = f"unavailable: {exc}; verdict from counters and replies only"
    try:
        settings = _read_sysctls(ns)
        with drops.MartianLog() as martians:
            before = drops.snapshot_counters(ns)
            inject()
            captured = _collect_replies(capture_devices, REPLY_WINDOW)
            if not capture_devices:
                time.sleep(0.05)  # let counters settle; the kernel handled the write already
            after = drops.snapshot_counters(ns)
            martian_lines = martians.collect()
    finally:
        if tracer is not None:
            tracer.stop()
    written = packet() if callable(packet) else packet
    sent = packets.summarize(written) if written else {}
    if sent and dev:
        sent["dev"] = dev  # the device it came in on: the explanation's fixes name it
    ours, others = (drops.attribute_drops(tracer.events, dev, len(written))
                    if tracer and written and dev else (tracer.drops if tracer else [], []))
    report = _judge(sent, ours, martian_lines, captured, drops.counter_delta(before, after),
                    settings, tracing, [*devices, UPLINK], time.monotonic() - started)
    report.reply_drops = [{"reason": d.reason, "location": d.location} for d in others
                          if d.is_ipv4]
    return report


def _judge(sent: dict[str, Any], traced: list[drops.Drop], martian_lines: list[str],
           captured: list[tuple[str, bytes]], counters: dict[str, int],
           settings: dict[str, str], tracing: str, devices: list[str],
           elapsed: float) -> FateReport:
    ipv4_drops = [d for d in traced if d.is_ipv4]
    reasons: list[str] = []
    for drop in ipv4_drops:
        if drop.reason not in reasons:
            reasons.append(drop.reason)
    if len(reasons) > 1 and "NOT_SPECIFIED" in reasons:
        reasons.remove("NOT_SPECIFIED")
    locations = [{"reason": d.reason, "location": d.location} for d in ipv4_drops
                 if d.reason in reasons]
    if settings.get("net.ipv4.conf.all.log_martians") == "0":
        # The kernel log is shared by every namespace: with logging off in ours, any martian
        # line seen now was written for some other lab's packet.
        martian_lines = []
    elif sent:
        martian_lines = drops.matching_martians(martian_lines, sent["src"], sent["dst"], devices)
    replies, forwarded_via = [], None
    for dev, data in captured:
        summary = packets.summarize(data)
        if sent and _same_flow(summary, sent) and summary.get("icmp_type") != 0:
            forwarded_via = dev
            continue
        reply = {"dev": dev, "src": summary.get("src"), "dst": summary.get("dst"),
                 "proto": summary.get("proto")}
        for key in ("icmp_type", "icmp_code", "sport", "dport", "tcp_flags"):
            if key in summary:
                reply[key] = summary[key]
        replies.append(reply)
    if forwarded_via or (not reasons and counters.get("IpForwDatagrams", 0) > 0):
        verdict = "forwarded"
    elif reasons:
        verdict = "dropped"
    else:
        verdict = "delivered"
    text = explain.explain(verdict, reasons, sent, replies, settings, forwarded_via,
                           martian_lines, counters)
    return FateReport(verdict=verdict, drop_reasons=reasons, martian_log=martian_lines,
                      replies=replies, counters=counters, explanation=text,
                      drop_locations=locations, packet=sent, settings=settings,
                      tracing=tracing, elapsed=elapsed)


def _apply_ruleset(ns: Namespace, ruleset: str) -> None:
    result = ns.exec(["nft", "-f", "-"], check=False, input=ruleset.encode())
    if result.returncode != 0:
        error = result.stderr.decode(errors="replace").strip()
        raise TunlabError(f"nft refused the ruleset: {error}",
                          "check it with `nft -c -f FILE`")


def packet_fate(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
                ttl: int = 64, dev: str = "mytun2", sysctls: dict[str, Any] | None = None,
                nft_ruleset: str | None = None) -> FateReport:
    """Write one crafted IPv4 packet into ``dev`` in a fresh seed lab; report the kernel's answer.

    ``sysctls`` are applied first (``{"net.ipv4.ip_forward": 1}``); ``log_martians`` is on
    unless set, so the kernel names martians. Everything happens in a private namespace that is
    removed afterwards, also on errors.
    """
    if dev not in SEED_DEVICES:
        raise TunlabError(f"{dev!r} is not a device of the seed topology",
                          f"use one of {', '.join(SEED_DEVICES)}")
    packet = packets.craft(src, dst, proto, dport=dport, ttl=ttl)
    settings = {"net.ipv4.conf.all.log_martians": 1, **(sysctls or {})}
    started = time.monotonic()
    with SeedLab("fate", uplink=True) as lab:
        SysctlChanges(lab.ns, settings).apply()  # the namespace goes away; no restore needed
        if nft_ruleset:
            _apply_ruleset(lab.ns, nft_ruleset)
        devices = [lab.device(name) for name in (*SEED_DEVICES, UPLINK)]
        for device in devices:
            os.set_blocking(device.fileno(), False)
        writer = devices[list(SEED_DEVICES).index(dev)]
        time.sleep(0.02)
        _drain(devices)  # router solicitations and the like, sent when the devices came up
        writer_tid = lab.ns.run(threading.get_native_id)
        report = observe(lab.ns, lambda: lab.ns.run(writer.write, packet),
                         writer_tid=writer_tid, capture_devices=devices, packet=packet,
                         dev=dev)
    report.packet = {**report.packet, "hex": packet.hex()}  # observe() summarized it, with dev
    report.elapsed = time.monotonic() - started
    return report
