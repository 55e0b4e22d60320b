"""The virtio-net header, and what the kernel's offloads would do, written out in Python.

A TUN device opened with ``IFF_VNET_HDR`` puts a 10-byte *virtio-net header* in front of every
packet, in both directions::

    0       1          2         4          6            8             10
    +-------+----------+---------+----------+------------+-------------+
    | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset |  (little endian)
    +-------+----------+---------+----------+------------+-------------+

Once the reader has promised (``TUNSETOFFLOAD``) that it can take unfinished work, the kernel
stops doing two expensive things for it:

* **checksum offload** (``TUN_F_CSUM``): the TCP/UDP checksum is left unfinished; ``flags`` has
  ``NEEDS_CSUM`` and ``csum_start``/``csum_offset`` say where the sum starts and where it goes;
* **segmentation offload** (``TUN_F_TSO4``/``TUN_F_TSO6``): instead of 45 packets of 1,448
  bytes, TCP hands over *one* super-packet of up to 64 KiB; ``gso_type`` says TCPv4/TCPv6 and
  ``gso_size`` the size of each real segment.

A tunnel peer that also speaks this header can carry the super-packet across unchanged and let
its own kernel finish the work. A peer that cannot needs ordinary packets: this module does the
kernel's job in software (:func:`resolve`), used only at the edges (a peer without the feature,
packets queued before the offloads were switched off). It is short on purpose: it is what
``skb_gso_segment()`` and ``skb_checksum_help()`` do, readable in one screen.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tunlab.packet.validate import (
    CHECKSUM_FIELD,
    IPV6_HEADER,
    MIN_TRANSPORT_HEADER,
    TCP,
    UDP,
    finished_packet_problem,
    internet_checksum,
    ip_packet_problem,
    pseudo_header,
    transport_offset,
)

__all__ = ["complete_checksum", "F_DATA_VALID", "F_NEEDS_CSUM", "GSO_ECN", "GSO_NONE", "GSO_TCPV4",
           "GSO_TCPV6", "GSO_UDP", "GSO_UDP_L4", "HEADER", "MAX_SEGMENTS", "needs_work",
           "OffloadError", "resolve", "segment_tcp", "VNET_HDR_SIZE", "VnetHeader", "ZERO_HEADER"]

VNET_HDR_SIZE = 10
HEADER = struct.Struct("<BBHHHH")

F_NEEDS_CSUM = 1   # the checksum at csum_start + csum_offset is still to be computed
F_DATA_VALID = 2   # the checksum was already verified (receive side hint)
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

ZERO_HEADER = bytes(VNET_HDR_SIZE)  # "a complete, ordinary packet": what a plain peer's packet gets

# A super-packet never carries more than 64 KiB; refusing more segments than this bounds the
# work a hostile header (gso_size=1) could ask of us.
MAX_SEGMENTS = 1024

_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_CWR = 0x80


class OffloadError(ValueError):
    """A virtio-net header asks for work this module cannot (or will not) do."""


@dataclass(frozen=True)
class VnetHeader:
    """The fields of one virtio-net header (see the module docstring)."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> VnetHeader:
        """Decode the first 10 bytes of ``data``."""
        if len(data) < VNET_HDR_SIZE:
            raise OffloadError(f"virtio-net header needs {VNET_HDR_SIZE} bytes, got {len(data)}")
        return cls(*HEADER.unpack_from(data))

    def pack(self) -> bytes:
        """The 10 bytes on the wire."""
        return HEADER.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size,
                           self.csum_start, self.csum_offset)


def needs_work(header: bytes | bytearray | memoryview) -> bool:
    """Fast check on raw header bytes: does the packet need checksumming or segmenting?"""
    return bool(header[0] & F_NEEDS_CSUM) or header[1] != GSO_NONE


def _transport(header: VnetHeader, packet: bytes | bytearray | memoryview,
               protocols: tuple[int, ...]) -> tuple[int, int]:
    """``(transport offset, protocol)`` of ``packet`` after every check that stands between a
    peer's virtio-net header and a write into its bytes: a well-formed IP packet, a transport
    protocol we can finish, a whole transport header, and ``csum_start``/``csum_offset``
    (when NEEDS_CSUM) naming exactly that header's checksum field."""
    problem = ip_packet_problem(packet)
    if problem:
        raise OffloadError(problem)
    where = transport_offset(packet)
    if isinstance(where, str):
        raise OffloadError(f"cannot finish {where} in software")
    offset, protocol = where
    if protocol not in protocols:
        raise OffloadError(f"cannot finish IP protocol {protocol} in software")
    name = "TCP" if protocol == TCP else "UDP"
    if len(packet) < offset + MIN_TRANSPORT_HEADER[protocol]:
        raise OffloadError(f"{name} header cut short")
    if header.flags & F_NEEDS_CSUM and (header.csum_start != offset
                                        or header.csum_offset != CHECKSUM_FIELD[protocol]):
        raise OffloadError(f"checksum position {header.csum_start}+{header.csum_offset} is not "
                           f"the {name} checksum field at {offset}+{CHECKSUM_FIELD[protocol]}")
    return offset, protocol


def _finished(packet: bytes) -> bytes:
    problem = finished_packet_problem(packet)
    if problem:  # a bug here, not the peer's doing: never let it reach a device
        raise OffloadError(f"software offload produced a bad packet: {problem}")
    return packet


def complete_checksum(header: VnetHeader, packet: bytes | bytearray | memoryview) -> bytes:
    """Finish a NEEDS_CSUM packet: its TCP/UDP checksum computed and put in its place.

    ``csum_start`` and ``csum_offset`` must name exactly the checksum field of the packet's own
    TCP or UDP header (anything else raises :class:`OffloadError`), so a peer cannot make us
    write into the IP header or past the packet. The sum is computed from scratch, pseudo-header
    included, rather than trusting the partial sum the field is supposed to hold; the result is
    checked once more (:func:`~tunlab.packet.validate.finished_packet_problem`).
    """
    if not header.flags & F_NEEDS_CSUM:
        return bytes(packet)
    offset, protocol = _transport(header, packet, (TCP, UDP))
    out = bytearray(packet)
    where = offset + CHECKSUM_FIELD[protocol]
    out[where:where + 2] = b"\0\0"
    pseudo = pseudo_header(out, protocol, len(out) - offset)
    out[where:where + 2] = (internet_checksum(pseudo + out[offset:]) or 0xFFFF).to_bytes(2, "big")
    return _finished(bytes(out))


def segment_tcp(header: VnetHeader, packet: bytes | bytearray | memoryview) -> list[bytes]:
    """Cut a TCP super-packet into ``gso_size`` segments, each a finished IP packet.

    Per segment: the IP length (and for IPv4 a fresh ID and header checksum), the TCP sequence
    number advanced by the bytes before it, FIN/PSH kept only on the last and CWR only on the
    first segment, and a full TCP checksum. The super-packet must be a well-formed TCP packet
    of the IP version ``gso_type`` names; every segment is checked before it is returned.
    """
    data = bytes(packet)
    kind = header.gso_type & ~GSO_ECN
    wanted = {GSO_TCPV4: 4, GSO_TCPV6: 6}.get(kind)
    if wanted is None:
        raise OffloadError(f"gso_type {header.gso_type} is not TCP segmentation")
    if data[:1] and data[0] >> 4 != wanted:
        raise OffloadError(f"gso_type TCPv{wanted} on an IPv{data[0] >> 4} packet")
    l3, _ = _transport(header, data, (TCP,))
    version = wanted
    thl = (data[l3 + 12] >> 4) * 4
    headers = l3 + thl
    if thl < 20 or len(data) < headers:
        raise OffloadError("bad TCP header length in a super-packet")
    mss = header.gso_size
    payload = memoryview(data)[headers:]
    if mss <= 0:
        raise OffloadError("segmentation asked with gso_size 0")
    count = max(1, -(-len(payload) // mss))
    if count > MAX_SEGMENTS:
        raise OffloadError(f"{count} segments of {mss} bytes: more than {MAX_SEGMENTS}")
    seq = int.from_bytes(data[l3 + 4:l3 + 8], "big")
    tcp_flags = data[l3 + 13]
    ip_id = int.from_bytes(data[4:6], "big") if version == 4 else 0
    segments = []
    for index in range(count):
        chunk = payload[index * mss:(index + 1) * mss]
        ip = bytearray(data[:l3])
        tcp = bytearray(data[l3:headers])
        flags = tcp_flags
        if index < count - 1:
            flags &= ~(_TCP_FIN | _TCP_PSH)
        if index > 0:
            flags &= ~_TCP_CWR
        tcp[4:8] = ((seq + index * mss) & 0xFFFFFFFF).to_bytes(4, "big")
        tcp[13] = flags
        tcp[16:18] = b"\0\0"
        if version == 4:
            ip[2:4] = (headers + len(chunk)).to_bytes(2, "big")
            ip[4:6] = ((ip_id + index) & 0xFFFF).to_bytes(2, "big")
            ip[10:12] = b"\0\0"
            ip[10:12] = (internet_checksum(ip) or 0xFFFF).to_bytes(2, "big")
        else:
            ip[4:6] = (headers - IPV6_HEADER + len(chunk)).to_bytes(2, "big")
        pseudo = pseudo_header(ip, TCP, thl + len(chunk))
        tcp[16:18] = (internet_checksum(pseudo + tcp + chunk) or 0xFFFF).to_bytes(2, "big")
        segments.append(_finished(bytes(ip + tcp + chunk)))
    return segments


def resolve(header: bytes | bytearray | memoryview | VnetHeader,
            packet: bytes | bytearray | memoryview) -> list[bytes]:
    """Ordinary, finished IP packets for ``packet`` and its virtio-net ``header``.

    No work asked: the packet itself, unchanged. NEEDS_CSUM only: the checksum completed. TCP
    segmentation: the segments. Whatever software did work on is a well-formed IPv4/IPv6
    packet of its stated length with right IPv4, TCP and UDP checksums; anything else, and
    every header that asks for something else, raises :class:`OffloadError`, and nothing is
    returned.
    """
    parsed = header if isinstance(header, VnetHeader) else VnetHeader.parse(header)
    kind = parsed.gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        if parsed.flags & F_NEEDS_CSUM:
            return [complete_checksum(parsed, packet)]
        return [bytes(packet)]
    if kind in (GSO_TCPV4, GSO_TCPV6):
        return segment_tcp(parsed, packet)
    raise OffloadError(f"cannot segment gso_type {parsed.gso_type} in software")
