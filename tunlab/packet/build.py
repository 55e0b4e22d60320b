"""The few packets fate writes and reads, built and summarized by hand, byte for byte as scapy.

Written by hand, and not with scapy, for one reason: importing scapy's IP layers reads the
machine's interfaces and routing table over netlink and takes 0.5-1 s, which is most of the
one-second budget of a `tunlab fate` verdict. The formats here are small and fixed (an IPv4 or
IPv6 header, ICMP/ICMPv6 echo, UDP, a TCP SYN, raw payloads); tests/test_wire.py checks, over
random inputs, that :func:`build` gives exactly scapy's bytes and :func:`summarize` scapy's
reading. Anything richer (dissecting captures, lesson 03) still uses scapy.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from tunlab.packet.validate import internet_checksum

__all__ = ["build", "IPV6_EXTENSION_HEADERS", "PROTOCOL_NAMES", "PROTOCOL_NAMES_V6", "summarize"]

PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
PROTOCOL_NAMES_V6 = {58: "icmp6", 6: "tcp", 17: "udp"}
IPV6_EXTENSION_HEADERS = (0, 43, 44, 60)
_TCP_FLAGS = "FSRPAUECN"  # bit 0 upwards, as scapy prints them


def _pseudo(version: int, src: bytes, dst: bytes, number: int, length: int) -> bytes:
    if version == 4:
        return src + dst + struct.pack("!BBH", 0, number, length)
    return src + dst + struct.pack("!IxxxB", length, number)


def _transport(version: int, src: bytes, dst: bytes, number: int, dport: int | None,
               ident: int, sport: int, payload: bytes) -> bytes:
    """The ICMP/ICMPv6 echo, UDP or TCP SYN segment (or the raw payload) with its checksum."""
    if number == 1:
        head = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        return head[:2] + struct.pack("!H", internet_checksum(head + payload)) + head[4:] + payload
    if number == 58:
        body = struct.pack("!BBHHH", 128, 0, 0, ident, 1) + payload
        total = internet_checksum(_pseudo(6, src, dst, 58, len(body)) + body)
        return body[:2] + struct.pack("!H", total) + body[4:]
    if number == 17:
        length = 8 + len(payload)
        body = struct.pack("!HHHH", sport, 9 if dport is None else dport, length, 0) + payload
        total = internet_checksum(_pseudo(version, src, dst, 17, length) + body) or 0xFFFF
        return body[:6] + struct.pack("!H", total) + body[8:]
    if number == 6:
        body = struct.pack("!HHIIBBHHH", sport, 80 if dport is None else dport, 1000, 0,
                           5 << 4, 0x02, 8192, 0, 0) + payload
        total = internet_checksum(_pseudo(version, src, dst, 6, len(body)) + body)
        return body[:16] + struct.pack("!H", total) + body[18:]
    return payload


def build(src: str, dst: str, number: int, *, dport: int | None = None, ttl: int = 64,
          payload: bytes = b"tunlab", ident: int = 0x7475, df: bool = False,
          sport: int = 40000) -> bytes:
    """One packet: IP header (v4 or v6 by the addresses) and the protocol ``number``'s part.

    The caller has validated the options (see :func:`tunlab.packet.craft.craft`).
    """
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    version = source.version
    segment = _transport(version, source.packed, destination.packed, number, dport, ident,
                         sport, payload)
    if version == 6:
        return struct.pack("!IHBB", 6 << 28, len(segment), number, ttl) + source.packed + \
            destination.packed + segment
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), ident,
                         0x4000 if df else 0, ttl, number, 0, source.packed,
                         destination.packed)
    return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:] + segment


def _flags(value: int) -> str:
    return "".join(letter for bit, letter in enumerate(_TCP_FLAGS) if value >> bit & 1)


def _ports(info: dict[str, Any], segment: bytes, tcp: bool) -> None:
    if len(segment) >= (20 if tcp else 8):
        info["sport"], info["dport"] = struct.unpack("!HH", segment[:4])
        if tcp:
            info["tcp_flags"] = _flags(((segment[12] & 1) << 8) | segment[13])


def summarize(packet: bytes) -> dict[str, Any]:
    """The fields a person looks at first (see :func:`tunlab.packet.craft.summarize`)."""
    if not packet:
        return {"version": 0, "len": 0}
    version = packet[0] >> 4
    if version == 6 and len(packet) >= 40:
        return _summarize_v6(packet)
    if version != 4 or len(packet) < 20:
        return {"version": version, "len": len(packet)}
    ihl = (packet[0] & 0x0F) * 4
    number = packet[9]
    info: dict[str, Any] = {
        "version": 4, "src": socket.inet_ntop(socket.AF_INET, packet[12:16]),
        "dst": socket.inet_ntop(socket.AF_INET, packet[16:20]),
        "proto": PROTOCOL_NAMES.get(number, number), "ttl": packet[8], "len": len(packet)}
    first_fragment = struct.unpack("!H", packet[6:8])[0] & 0x1FFF == 0
    segment = packet[ihl:]
    if not first_fragment:
        return info
    if number == 1 and len(segment) >= 2:
        info["icmp_type"], info["icmp_code"] = segment[0], segment[1]
        if (segment[0], segment[1]) == (3, 4) and len(segment) >= 8:
            info["mtu"] = struct.unpack("!H", segment[6:8])[0]
    elif number in (6, 17):
        _ports(info, segment, number == 6)
    return info


def _summarize_v6(packet: bytes) -> dict[str, Any]:
    number, offset = packet[6], 40
    for _ in range(8):  # bounded: a packet could chain extension headers forever
        if number not in IPV6_EXTENSION_HEADERS or len(packet) < offset + 8:
            break
        if number == 44:
            if struct.unpack("!H", packet[offset + 2:offset + 4])[0] >> 3:
                number, offset = packet[offset], -1  # a later fragment: no upper header here
                break
            number, offset = packet[offset], offset + 8
        else:
            number, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    info: dict[str, Any] = {
        "version": 6, "src": socket.inet_ntop(socket.AF_INET6, packet[8:24]),
        "dst": socket.inet_ntop(socket.AF_INET6, packet[24:40]),
        "proto": PROTOCOL_NAMES_V6.get(number, number), "ttl": packet[7], "len": len(packet)}
    if offset < 0:
        return info
    segment = packet[offset:]
    if number == 58 and len(segment) >= 2:
        info["icmp_type"], info["icmp_code"] = segment[0], segment[1]
        if segment[0] == 2 and len(segment) >= 8:
            info["mtu"] = struct.unpack("!I", segment[4:8])[0]
    elif number in (6, 17):
        _ports(info, segment, number == 6)
    return info
