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


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 checksum of ``data`` (never 0, so also valid for UDP).

    Uses the fact that the ones' complement sum of 16-bit words equals the number's value
    modulo 0xFFFF, which Python computes in C.
    """
    raw = bytes(data)
    if len(raw) % 2:
        raw += b"\0"
    return ~(int.from_bytes(raw, "big") % 0xFFFF) & 0xFFFF


def complete_checksum(header: VnetHeader, packet: bytes | bytearray | memoryview) -> bytes:
    """Finish a NEEDS_CSUM packet: the sum over ``csum_start..end`` into its place.

    The field already holds the pseudo-header sum (that is how the kernel leaves it), so the
    sum over the rest, complemented, is the final checksum.
    """
    out = bytearray(packet)
    start, where = header.csum_start, header.csum_start + header.csum_offset
    if not header.flags & F_NEEDS_CSUM:
        return bytes(out)
    if where + 2 > len(out) or start >= len(out):
        raise OffloadError(f"checksum position {start}+{header.csum_offset} is outside the "
                           f"{len(out)}-byte packet")
    out[where:where + 2] = internet_checksum(out[start:]).to_bytes(2, "big")
    return bytes(out)


def _pseudo_header(ip: bytes | bytearray, version: int, length: int) -> bytes:
    if version == 4:
        return ip[12:20] + bytes((0, 6)) + length.to_bytes(2, "big")
    return ip[8:40] + length.to_bytes(4, "big") + bytes((0, 0, 0, 6))


def segment_tcp(header: VnetHeader, packet: bytes | bytearray | memoryview) -> list[bytes]:
    """Cut a TCP super-packet into ``gso_size`` segments, each a finished IP packet.

    Per segment: the IP length (and for IPv4 a fresh ID and header checksum), the TCP sequence
    number advanced by the bytes before it, FIN/PSH kept only on the last and CWR only on the
    first segment, and a full TCP checksum.
    """
    data = bytes(packet)
    version = data[0] >> 4
    if version == 4:
        l3 = (data[0] & 0x0F) * 4
    elif version == 6:
        l3 = header.csum_start if header.flags & F_NEEDS_CSUM and header.csum_start else 40
    else:
        raise OffloadError(f"IP version {version} in a TCP super-packet")
    if len(data) < l3 + 20:
        raise OffloadError("super-packet shorter than its IP and TCP headers")
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
            ip[10:12] = internet_checksum(ip).to_bytes(2, "big")
        else:
            ip[4:6] = (headers - 40 + len(chunk)).to_bytes(2, "big")
        pseudo = _pseudo_header(ip, version, thl + len(chunk))
        tcp[16:18] = internet_checksum(pseudo + tcp + chunk).to_bytes(2, "big")
        segments.append(bytes(ip + tcp + chunk))
    return segments


def resolve(header: bytes | bytearray | memoryview | VnetHeader,
            packet: bytes | bytearray | memoryview) -> list[bytes]:
    """Ordinary, finished IP packets for ``packet`` and its virtio-net ``header``.

    No work asked: the packet itself. NEEDS_CSUM only: the checksum completed. TCP
    segmentation: the segments. Anything else raises :class:`OffloadError`.
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
