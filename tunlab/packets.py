"""Crafting and dissecting IP packets with scapy.

scapy is imported lazily (it takes up to a second) and silenced: notebooks and the CLI should
show our output, not its warnings.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from .errors import TunlabError

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}


def _scapy() -> Any:
    logging.getLogger("scapy").setLevel(logging.ERROR)
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy import all as scapy
    from scapy.config import conf

    conf.verb = 0
    return scapy


def check_ipv4(address: str, what: str = "address") -> str:
    """``address`` if it is a dotted IPv4 address, else a :class:`TunlabError` saying so."""
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError as exc:
        raise TunlabError(f"{what} {address!r} is not an IPv4 address",
                          "write it like 200.1.2.3") from exc


def protocol_number(proto: str | int) -> int:
    """``icmp``/``udp``/``tcp`` or a number 0-255 as the IP protocol number."""
    if isinstance(proto, int) or str(proto).isdigit():
        number = int(proto)
        if not 0 <= number <= 255:
            raise TunlabError(f"protocol {number} is outside 0-255", "use icmp, udp, tcp or 0-255")
        return number
    try:
        return PROTOCOLS[str(proto).lower()]
    except KeyError:
        raise TunlabError(f"unknown protocol {proto!r}",
                          "use icmp, udp, tcp or an IP protocol number such as 253") from None


def craft(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
          ttl: int = 64, payload: bytes = b"tunlab", ident: int = 0x7475) -> bytes:
    """One IPv4 packet as bytes: an ICMP echo request, a UDP datagram, a TCP SYN, or a raw
    protocol number with ``payload`` behind the IP header. Checksums are filled in."""
    check_ipv4(src, "source")
    check_ipv4(dst, "destination")
    number = protocol_number(proto)
    if not 1 <= ttl <= 255:
        raise TunlabError(f"TTL {ttl} is outside 1-255", "use a TTL from 1 to 255")
    if dport is not None and not 0 <= dport <= 65535:
        raise TunlabError(f"port {dport} is outside 0-65535", "use a port from 0 to 65535")
    scapy = _scapy()
    ip = scapy.IP(src=src, dst=dst, ttl=ttl, id=ident)
    if number == 1:
        packet = ip / scapy.ICMP(type=8, id=ident, seq=1) / payload
    elif number == 17:
        packet = ip / scapy.UDP(sport=40000, dport=dport or 9) / payload
    elif number == 6:
        packet = ip / scapy.TCP(sport=40000, dport=dport or 80, flags="S", seq=1000)
    else:
        packet = ip / scapy.Raw(payload)
        packet[scapy.IP].proto = number
    return bytes(packet)


def summarize(packet: bytes) -> dict[str, Any]:
    """The fields a person looks at first: src, dst, proto (name), ICMP type/code, ports, len."""
    if not packet:
        return {"version": 0, "len": 0}
    version = packet[0] >> 4
    if version == 6:
        scapy = _scapy()
        ip6 = scapy.IPv6(packet)
        return {"version": 6, "src": ip6.src, "dst": ip6.dst, "proto": ip6.nh, "len": len(packet)}
    if version != 4:
        return {"version": version, "len": len(packet)}
    scapy = _scapy()
    ip = scapy.IP(packet)
    info: dict[str, Any] = {"version": 4, "src": ip.src, "dst": ip.dst,
                            "proto": PROTOCOL_NAMES.get(ip.proto, ip.proto), "ttl": ip.ttl,
                            "len": len(packet)}
    if ip.haslayer(scapy.ICMP):
        icmp = ip[scapy.ICMP]
        info["icmp_type"], info["icmp_code"] = int(icmp.type), int(icmp.code)
    elif ip.haslayer(scapy.UDP) or ip.haslayer(scapy.TCP):
        layer = ip[scapy.UDP] if ip.haslayer(scapy.UDP) else ip[scapy.TCP]
        info["sport"], info["dport"] = int(layer.sport), int(layer.dport)
        if ip.haslayer(scapy.TCP):
            info["tcp_flags"] = str(layer.flags)
    return info


def dissect(packet: bytes) -> str:
    """scapy's layer-by-layer view of ``packet`` (like ``packet.show()``), as text."""
    scapy = _scapy()
    parsed = scapy.IPv6(packet) if packet and packet[0] >> 4 == 6 else scapy.IP(packet)
    return str(parsed.show(dump=True))


def icmp_quoted_packet(packet: bytes) -> dict[str, Any] | None:
    """For an ICMP error, the summary of the packet it quotes (which packet it complains of)."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if packet[ihl] not in (3, 4, 5, 11, 12):
        return None
    scapy = _scapy()
    quoted = scapy.IP(packet)[scapy.ICMP].payload
    if not quoted or not hasattr(quoted, "src"):
        return None
    return {"src": quoted.src, "dst": quoted.dst, "proto": PROTOCOL_NAMES.get(quoted.proto,
                                                                             quoted.proto)}
