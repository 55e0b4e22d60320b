"""A scapy layer for tunlab's frame header, and dissection of captured tunnel traffic.

tunlab frames travel inside a TCP byte stream::

    "TL" | version (1 byte) | type (1 byte) | length (uint32, big endian) | payload

:class:`TunlabFrame` describes that header to scapy. A DATA payload dissects as ``IP`` (or
``IPv6``), a HELLO payload stays ``Raw`` JSON, so ``TunlabFrame(frame_bytes).show()`` prints
the tunnel header *and* the packet it carries.

A TCP segment need not hold exactly one frame (the client batches several frames into one
``send()``, and one frame can be split over several segments), so a capture is dissected per
connection: :func:`tcp_streams` puts each direction's TCP payloads back in sequence order, and
:func:`frames_from_stream` cuts the byte stream into frames. :func:`dissect_capture` does both
for a pcap file written by ``tcpdump -w`` (see :func:`tunlab.lab.capture.capture`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["bind_port", "CapturedFrame", "dissect_capture", "dissect_packets", "FRAME_TYPES",
           "frames_from_stream", "HEADER_SIZE", "MAGIC", "tcp_streams", "TunlabFrame"]

logging.getLogger("scapy").setLevel(logging.ERROR)


from scapy.config import conf  # noqa: E402 - scapy logs on import unless silenced first
from scapy.fields import ByteEnumField, ByteField, IntField, StrFixedLenField  # noqa: E402
from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.packet import Packet, Raw, bind_layers  # noqa: E402

conf.verb = 0


MAGIC = b"TL"


HEADER_SIZE = 8


FRAME_TYPES = {1: "HELLO", 2: "DATA", 3: "GSO_DATA", 4: "KEEPALIVE", 5: "CLOSE",
               0x10: "AUTH", 0x11: "SEALED"}


class TunlabFrame(Packet):
    """tunlab's 8-byte frame header; the payload is the carried IP packet (DATA)."""

    name = "TunlabFrame"
    fields_desc = [
        StrFixedLenField("magic", MAGIC, 2),
        ByteField("version", 1),
        ByteEnumField("type", 2, FRAME_TYPES),
        IntField("length", None),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        """Fill in ``length`` from the payload when it was left unset."""
        if self.length is None:
            pkt = pkt[:4] + len(pay).to_bytes(4, "big") + pkt[8:]
        return pkt + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        """The payload is exactly ``length`` bytes; anything after it is the next frame."""
        length = self.length or 0
        return s[:length], s[length:]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        """DATA frames carry IPv4 or IPv6 (told apart by the version nibble), others Raw."""
        if self.type == 2 and payload:
            version = payload[0] >> 4
            if version == 4:
                return IP
            if version == 6:
                return IPv6
        return Raw

    def mysummary(self) -> str:
        return self.sprintf("TunlabFrame %TunlabFrame.type% len=%TunlabFrame.length%")


def bind_port(port: int) -> None:
    """Let scapy dissect TCP payloads to or from ``port`` as tunlab frames directly.

    Only right when every segment starts at a frame boundary (small, unbatched traffic, e.g.
    one ping); :func:`dissect_capture` is correct in every case.
    """
    bind_layers(TCP, TunlabFrame, dport=port)
    bind_layers(TCP, TunlabFrame, sport=port)


@dataclass(frozen=True)
class CapturedFrame:
    """One tunlab frame found in a capture, with the connection direction it travelled."""

    src: str
    sport: int
    dst: str
    dport: int
    offset: int       # byte offset of the frame in its direction's TCP stream
    frame: TunlabFrame

    @property
    def type_name(self) -> str:
        return FRAME_TYPES.get(int(self.frame.type), f"0x{int(self.frame.type):02x}")

    def summary(self) -> str:
        """One line: direction, frame type and length, and the inner packet's summary."""
        inner = self.frame.payload
        what = inner.summary() if isinstance(inner, IP | IPv6) else f"{len(bytes(inner))} bytes"
        return (f"{self.src}:{self.sport} -> {self.dst}:{self.dport}  {self.type_name} "
                f"len={self.frame.length}  {what}")

    def to_dict(self) -> dict[str, Any]:
        """Plain fields for tables and JSON."""
        inner = self.frame.payload
        row: dict[str, Any] = {"flow": f"{self.src}:{self.sport} -> {self.dst}:{self.dport}",
                               "offset": self.offset, "type": self.type_name,
                               "length": int(self.frame.length), "hex": bytes(self.frame).hex()}
        if isinstance(inner, IP):
            row.update(inner_src=inner.src, inner_dst=inner.dst, inner_proto=int(inner.proto))
        return row


def frames_from_stream(data: bytes) -> tuple[list[tuple[int, TunlabFrame]], bytes]:
    """Cut one direction's TCP byte stream into frames.

    Returns ``[(offset, frame), ...]`` and the bytes left over (an incomplete last frame, or the
    rest of a stream that stopped being tunlab frames: wrong magic).
    """
    frames: list[tuple[int, TunlabFrame]] = []
    offset = 0
    while len(data) - offset >= HEADER_SIZE:
        if data[offset:offset + 2] != MAGIC:
            break
        length = int.from_bytes(data[offset + 4:offset + 8], "big")
        end = offset + HEADER_SIZE + length
        if end > len(data):
            break
        frames.append((offset, TunlabFrame(data[offset:end])))
        offset = end
    return frames, data[offset:]


def tcp_streams(packets: Iterable[Packet]) -> dict[tuple[str, int, str, int], bytes]:
    """Each TCP direction's payload bytes, in sequence order, duplicates (retransmits) removed.

    Keys are ``(src, sport, dst, dport)``. Gaps (segments the capture missed) end the stream
    at the gap, so that frames are never misaligned.
    """
    segments: dict[tuple[str, int, str, int], dict[int, bytes]] = {}
    for pkt in packets:
        if TCP not in pkt:
            continue
        ip = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None
        if ip is None:
            continue
        tcp = pkt[TCP]
        payload = bytes(tcp.payload)
        if isinstance(ip, IP) and None not in (ip.len, ip.ihl, tcp.dataofs):
            # drop link-layer padding: trust the IP header's length
            payload = payload[:max(0, int(ip.len) - int(ip.ihl) * 4 - int(tcp.dataofs) * 4)]
        if not payload:
            continue
        key = (ip.src, int(tcp.sport), ip.dst, int(tcp.dport))
        segments.setdefault(key, {}).setdefault(int(tcp.seq), payload)
    streams: dict[tuple[str, int, str, int], bytes] = {}
    for key, by_seq in segments.items():
        seqs = sorted(by_seq)
        out = bytearray()
        expected = seqs[0]
        for seq in seqs:
            chunk = by_seq[seq]
            if seq > expected:
                break  # a gap: stop rather than misalign
            skip = expected - seq
            if skip < len(chunk):
                out += chunk[skip:]
                expected = seq + len(chunk)
        streams[key] = bytes(out)
    return streams


def dissect_packets(packets: Iterable[Packet], port: int | None = None) -> list[CapturedFrame]:
    """All tunlab frames in captured packets, optionally only connections to/from ``port``."""
    found: list[CapturedFrame] = []
    for (src, sport, dst, dport), data in tcp_streams(packets).items():
        if port is not None and port not in (sport, dport):
            continue
        frames, _rest = frames_from_stream(data)
        found.extend(CapturedFrame(src, sport, dst, dport, off, frame) for off, frame in frames)
    return found


def dissect_capture(path: str | os.PathLike[str], port: int | None = None
                    ) -> list[CapturedFrame]:
    """Read a pcap file (``tcpdump -w``) with scapy and return the tunlab frames in it."""
    from scapy.utils import rdpcap

    return dissect_packets(rdpcap(str(path)), port)
