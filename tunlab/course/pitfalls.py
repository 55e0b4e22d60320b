"""The most common TUN bug, shown on a real device: a bare IP packet written to a device that
was opened without ``IFF_NO_PI``.

The kernel then takes the packet's first four bytes as ``struct tun_pi`` (flags, protocol), so
an IPv4 header's total length becomes the "protocol" and the rest is handed to the stack under
that protocol number. No protocol handler exists for it: the device counts the packet as
received *and* dropped, and the IP layer never sees it (IpInReceives does not move).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from tunlab.errors import TunlabError
from tunlab.kernel.counters import counter_delta, link_counters, snmp_counters
from tunlab.kernel.netns import Namespace
from tunlab.kernel.tun import IFF_TUN, attach_fd, check_device_name, device_exists
from tunlab.packet.build import build

__all__ = ["BareWrite", "describe", "link_stats", "render_bare_write", "write_bare_ip"]


@dataclass(frozen=True)
class BareWrite:
    """What the kernel did with one bare IP packet written to a device opened with PI."""

    device: str
    written: int            # bytes handed to write()
    taken_as_proto: int     # what the kernel read as tun_pi.proto (bytes 2-3 of the packet)
    rx_packets: int         # device counter deltas
    rx_bytes: int
    rx_dropped: int
    ip_in_receives: int     # IpInReceives delta: did the IP layer see it?

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (recordings, claims)."""
        return asdict(self)

    def _repr_html_(self) -> str:
        return "<pre>" + str(self) + "</pre>"

    def __str__(self) -> str:
        return render_bare_write(self.to_dict())


def render_bare_write(result: dict[str, Any]) -> str:
    """The counters of one bare write, in the words of ``ip -s link`` and ``nstat``."""
    return (f"write({result['written']} bytes) into {result['device']} opened WITHOUT "
            f"IFF_NO_PI\n"
            f"  the kernel took bytes 0-3 as tun_pi: proto = 0x{result['taken_as_proto']:04x}\n"
            f"  {result['device']} RX packets +{result['rx_packets']}, RX bytes "
            f"+{result['rx_bytes']}, RX dropped +{result['rx_dropped']}\n"
            f"  IpInReceives +{result['ip_in_receives']}")


def write_bare_ip(ns: Namespace, device: str = "mytun", src: str = "10.0.0.2",
                  dst: str = "10.0.0.1", settle: float = 0.2) -> BareWrite:
    """Attach to ``device`` in ``ns`` *with* the PI header, write a bare ICMP echo (no PI),
    and return what the device and IP counters say happened to it.

    The device must exist (a TUNSETIFF on a missing name would create a new device) and have
    no reader attached.
    """
    check_device_name(device)
    if not ns.run(device_exists, device):
        raise TunlabError(f"there is no device {device} in the lab's namespace",
                          "create it first (lesson 01 runs the seed's script), or pick mytun")
    packet = build(src, dst, 1, payload=bytes(56))  # the 84-byte echo ping sends

    def attach_and_write() -> None:
        fd = attach_fd(device, IFF_TUN)  # without IFF_NO_PI: the kernel expects a PI header
        try:
            os.write(fd, packet)
            # The device is receive-side only here: give the softirq time to finish with the
            # packet before the file (and with it the device's carrier) goes away.
            time.sleep(settle)
        finally:
            os.close(fd)

    links, snmp = link_counters(ns), snmp_counters(ns)
    ns.run(attach_and_write)
    links_after, snmp_after = link_counters(ns), snmp_counters(ns)

    links_delta, snmp_delta = counter_delta(links, links_after), counter_delta(snmp, snmp_after)
    return BareWrite(
        device=device, written=len(packet),
        taken_as_proto=int.from_bytes(packet[2:4], "big"),
        rx_packets=links_delta.get(f"{device}.rx_packets", 0),
        rx_bytes=links_delta.get(f"{device}.rx_bytes", 0),
        rx_dropped=links_delta.get(f"{device}.rx_dropped", 0),
        ip_in_receives=snmp_delta.get("IpInReceives", 0))


def describe(result: BareWrite | dict[str, Any]) -> str:
    """:func:`render_bare_write` for a live result or its recording."""
    return render_bare_write(result.to_dict() if isinstance(result, BareWrite) else result)


def link_stats(text: str) -> dict[str, int]:
    """The RX and TX lines of ``ip -stats link show DEV`` as ``rx_packets``, ``tx_dropped``...

    Parsed from the text participants see, so a lesson's claim is about that very output.
    """
    lines = text.splitlines()
    stats: dict[str, int] = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()
        if head and head[0] in ("RX:", "TX:"):
            way = head[0][:2].lower()
            for name, value in zip(head[1:], lines[i + 1].split(), strict=False):
                stats[f"{way}_{name}"] = int(value)
    return stats
