"""Is this buffer an IP packet? The one check that stands between the network and a device.

Hand-written rather than scapy because it runs for every packet on the data path and must never
raise: it reads three header fields and compares lengths, nothing more.
"""

from __future__ import annotations

IPV4_MIN_HEADER = 20
IPV6_HEADER = 40


def ip_packet_problem(packet: bytes | bytearray | memoryview) -> str | None:
    """Why ``packet`` is not a well-formed IPv4/IPv6 packet, or None when it is one.

    Checks the version nibble, the IPv4 header length and that the length the header claims is
    exactly the length of the buffer (a TUN device takes one whole packet per write).
    """
    size = len(packet)
    if size == 0:
        return "empty payload"
    version = packet[0] >> 4
    if version == 4:
        if size < IPV4_MIN_HEADER:
            return f"IPv4 packet of {size} bytes is shorter than the 20-byte header"
        ihl = (packet[0] & 0x0F) * 4
        if ihl < IPV4_MIN_HEADER:
            return f"IPv4 header length {ihl} is below 20"
        total = packet[2] << 8 | packet[3]
        if total != size:
            return f"IPv4 header claims {total} bytes but {size} arrived"
        if ihl > total:
            return f"IPv4 header length {ihl} exceeds total length {total}"
        return None
    if version == 6:
        if size < IPV6_HEADER:
            return f"IPv6 packet of {size} bytes is shorter than the 40-byte header"
        payload = packet[4] << 8 | packet[5]
        if payload + IPV6_HEADER != size:
            return f"IPv6 header claims {payload + IPV6_HEADER} bytes but {size} arrived"
        return None
    return f"IP version {version} is neither 4 nor 6 (first byte 0x{packet[0]:02x})"


def ip_version(packet: bytes | bytearray | memoryview) -> int:
    """The IP version nibble of ``packet`` (0 for an empty buffer)."""
    return packet[0] >> 4 if len(packet) else 0
