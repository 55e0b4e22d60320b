"""Packets and the crafted virtio-net headers of issue 14 (finding 2), shared by the offload,
fast-path and hostile-peer tests."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from tunlab.packet import vnet
from tunlab.packet.vnet import VnetHeader


def tcp4(payload: bytes = b"p" * 100) -> bytes:
    return bytes(IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=1, dport=2, flags="PA") / payload)


def tcp6(payload: bytes = b"p" * 100, src: str = "fd00::1") -> bytes:
    return bytes(IPv6(src=src, dst="fd00::2") / TCP(sport=1, dport=2, flags="PA") / payload)


def udp4(payload: bytes = b"u" * 33) -> bytes:
    return bytes(IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=1, dport=2) / payload)


def udp6(payload: bytes = b"u" * 33) -> bytes:
    return bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2) / payload)


def spoil_checksum(packet: bytes, where: int) -> bytes:
    """The packet with garbage where the kernel would have left a partial sum."""
    return packet[:where] + b"\xde\xad" + packet[where + 2:]


CRAFTED = [
    # csum_start + csum_offset aimed at the IPv4 total length: a packet that lies about its size
    pytest.param(VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=0, csum_offset=2), tcp4(),
                 id="csum-into-ipv4-total-length"),
    # ... and at the IPv6 payload length
    pytest.param(VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=0, csum_offset=4), tcp6(),
                 id="csum-into-ipv6-payload-length"),
    # OverflowError in segment_tcp, which killed the connection thread
    pytest.param(VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV6, gso_size=10,
                            csum_start=1, csum_offset=16),
                 # byte 1 + 12 (the source address) reads as a TCP data offset of 5
                 tcp6(b"s" * 500, src="fd00:0:50::1"), id="gso-tcpv6-csum-start-1"),
]
