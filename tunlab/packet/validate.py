"""Is this buffer an IP packet? The one check that stands between the network and a device.

Hand-written rather than scapy because it runs for every packet on the data path and must never
raise: it reads three header fields and compares lengths, nothing more.
"""

from __future__ import annotations

__all__ = ["CHECKSUM_FIELD", "checksum_ok", "checksum_problem", "finished_packet_problem",
           "internet_checksum", "ip_packet_problem", "ip_version", "IPV4_MIN_HEADER",
           "IPV6_HEADER", "MIN_TRANSPORT_HEADER", "pseudo_header", "TCP", "transport_offset",
           "UDP"]

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


TCP = 6
UDP = 17
# Where the checksum sits in each transport header, and how short that header can be.
CHECKSUM_FIELD = {TCP: 16, UDP: 6}
MIN_TRANSPORT_HEADER = {TCP: 20, UDP: 8}


def transport_offset(packet: bytes | bytearray | memoryview) -> tuple[int, int] | str:
    """``(offset of the transport header, IP protocol)`` of a well-formed IP packet, or why
    there is no such header to work on: an IPv4 fragment, or an IPv6 packet whose next header
    is not TCP/UDP (extension headers are not followed)."""
    version = packet[0] >> 4
    if version == 4:
        if (packet[6] & 0x3F) or packet[7]:  # MF flag or a fragment offset
            return "an IPv4 fragment"
        return (packet[0] & 0x0F) * 4, packet[9]
    if packet[6] not in (TCP, UDP):
        return f"IPv6 next header {packet[6]} (neither TCP nor UDP directly after the header)"
    return IPV6_HEADER, packet[6]


def pseudo_header(packet: bytes | bytearray | memoryview, protocol: int, length: int) -> bytes:
    """The pseudo-header TCP and UDP checksums cover, for a transport segment of ``length``."""
    if packet[0] >> 4 == 4:
        return bytes(packet[12:20]) + bytes((0, protocol)) + length.to_bytes(2, "big")
    return bytes(packet[8:40]) + length.to_bytes(4, "big") + bytes((0, 0, 0, protocol))


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of ``data``: the ones' complement of the ones' complement
    sum of its 16-bit words, as IPv4, ICMP, TCP and UDP put it in their headers (UDP writes a
    result of 0 as 0xFFFF, since 0 there means "no checksum"). The one implementation in tunlab.
    """
    # The ones' complement sum of 16-bit words is the number's value modulo 0xFFFF, which
    # Python computes in C; a sum that is a non-zero multiple of 0xFFFF folds to 0xFFFF.
    raw = bytes(data)
    if len(raw) % 2:
        raw += b"\0"
    value = int.from_bytes(raw, "big")
    folded = value % 0xFFFF or (0xFFFF if value else 0)
    return ~folded & 0xFFFF


def checksum_ok(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data``, checksum field included, sums to ones' complement zero: what a
    receiver checks."""
    raw = bytes(data)
    if len(raw) % 2:
        raw += b"\0"
    return int.from_bytes(raw, "big") % 0xFFFF == 0


def checksum_problem(packet: bytes | bytearray | memoryview) -> str | None:
    """Why a well-formed IP packet (see :func:`ip_packet_problem`) carries a wrong IPv4 header,
    TCP or UDP checksum, or None when they are right. Other protocols are not checked."""
    raw = bytes(packet)
    if raw[0] >> 4 == 4 and not checksum_ok(raw[:(raw[0] & 0x0F) * 4]):
        return "IPv4 header checksum is wrong"
    where = transport_offset(raw)
    if isinstance(where, str):
        return None
    offset, protocol = where
    if protocol not in CHECKSUM_FIELD:
        return None
    segment = raw[offset:]
    if len(segment) < MIN_TRANSPORT_HEADER[protocol]:
        return f"{'TCP' if protocol == TCP else 'UDP'} header cut short"
    if protocol == UDP and raw[0] >> 4 == 4 and segment[6:8] == b"\0\0":
        return None  # IPv4 UDP without a checksum
    if not checksum_ok(pseudo_header(raw, protocol, len(segment)) + segment):
        return f"{'TCP' if protocol == TCP else 'UDP'} checksum is wrong"
    return None


def finished_packet_problem(packet: bytes | bytearray | memoryview) -> str | None:
    """Why ``packet`` is not a well-formed IP packet of its stated length with right checksums
    (the promise made for every packet software offload produces), or None."""
    return ip_packet_problem(packet) or checksum_problem(packet)
