"""Experiments that lesson cells run directly, without a panel: device counters while
pinging, a ping bound to a device through the tunnel, the kernel's drop reason names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tunlab.course.seed_tunnel import SeedTunnel
from tunlab.fate.report import FateReport
from tunlab.kernel.counters import link_counters

__all__ = ["events_dicts", "kfree_skb_reasons", "link_tx_packets", "ping_bound",
           "ping_device_counts"]


def kfree_skb_reasons(tracefs: str = "/sys/kernel/tracing") -> dict[int, str]:
    """The kernel's drop reason names by number, from the skb:kfree_skb event's format file.

    Names are read from the running kernel (the numbers shift between versions). When tracefs
    is not mounted, it is mounted in a private mount namespace (``unshare -m``) just for this
    read, so the machine's mounts stay as they were. Needs root; returns {} without.
    """
    import subprocess

    fmt = f"{tracefs}/events/skb/kfree_skb/format"
    try:
        with open(fmt) as handle:
            text = handle.read()
    except OSError:
        try:
            text = subprocess.run(
                ["unshare", "-m", "sh", "-c",
                 f"mount -t tracefs nodev {tracefs} 2>/dev/null; cat {fmt}"],
                capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
    from tunlab.kernel.tracefs import parse_reason_names

    return parse_reason_names(text)


def ping_bound(lesson: Any, tunnel: SeedTunnel, device: str = "mytun",
               target: str = "10.0.2.33", sysctls: Mapping[str, Any] | None = None
               ) -> FateReport:
    """``ping -c1 -I DEVICE TARGET`` in the seed lab with the tunnel running, and what the
    kernel did with the packet when the tunnel's far end wrote it back in.

    ``sysctls`` are set in the lab namespace first (e.g. forwarding and martian logging on).

    The kernel handles a written packet in the writing thread, so the trace is matched to the
    far end's writer (the vpn-server for ``-I mytun``, the vpn-client for ``-I mytun2``), via
    :func:`tunlab.fate.observe`.
    """
    from tunlab.fate import observe

    ns = lesson.ns
    for key, value in (sysctls or {}).items():
        ns.exec(["sysctl", "-qw", f"{key}={value}"])
    writer = tunnel.server if device == "mytun" else tunnel.client
    before = writer.stats.written_packets

    def inject() -> None:
        ns.exec(["ping", "-c1", "-W1", "-I", device, target], check=False, timeout=5)
        writer.wait_until(lambda: writer.stats.written_packets > before, 1.0)

    return observe(ns, inject, writer_tid=writer.writer_tid, capture_devices=())



def events_dicts(endpoint: Any, kinds: set[str] | None = None) -> list[dict[str, Any]]:
    """An endpoint's events as plain dicts (packet bytes left out), for recording."""
    return [{"time": e.time, "kind": e.kind, "detail": e.detail, "size": e.size}
            for e in endpoint.events(kinds)]



def link_tx_packets(ns: Any, device: str) -> int:
    """Packets the kernel gave ``device`` in ``ns`` to send (``ip -s -j link``: TX packets +
    TX dropped). For a TUN device, TX packets are those a reader took and TX dropped those
    nobody took; for ``lo``, everything looped back."""
    counters = link_counters(ns)
    return counters.get(f"{device}.tx_packets", 0) + counters.get(f"{device}.tx_dropped", 0)


def ping_device_counts(ns: Any, targets: Sequence[str] = ("10.0.0.1", "10.0.0.2"),
                       devices: Sequence[str] = ("lo", "mytun"), count: int = 3
                       ) -> dict[str, int]:
    """Ping each target ``count`` times in ``ns``; how many packets each device transmitted.

    Keys are ``"ping TARGET: DEVICE"``.
    """
    counts: dict[str, int] = {}
    for target in targets:
        before = {d: link_tx_packets(ns, d) for d in devices}
        ns.exec(["ping", "-c", str(count), "-i", "0.2", "-W1", target], check=False,
                timeout=count + 5)
        for d in devices:
            counts[f"ping {target}: {d}"] = link_tx_packets(ns, d) - before[d]
    return counts

