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
for a pcap file written by ``tcpdump -w`` (see :func:`capture`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunlab.kernel.doctor import in_user_namespace

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


class Capture:
    """A running ``tcpdump -w`` inside a lab namespace; see :func:`capture`."""

    def __init__(self, path: Path, process: subprocess.Popen[bytes]) -> None:
        self.path = path
        self.process = process
        self.stderr = ""

    def frames(self, port: int | None = None) -> list[CapturedFrame]:
        """The tunlab frames captured (call after the ``with`` block ended)."""
        return dissect_capture(self.path, port)

    def packets(self) -> list[Packet]:
        """Every captured packet, as scapy objects."""
        from scapy.utils import rdpcap

        return list(rdpcap(str(self.path)))


def capture_command(interface: str, path: str, bpf: str) -> list[str]:
    """The command that captures ``interface`` into ``path``: tcpdump, as fits this process.

    As root, plain tcpdump (it drops privileges to its own user, as packaged). Inside a user
    namespace (the "tunlab (no sudo)" kernel) that user is not mapped, so the savefile cannot
    be handed to it: ``tcpdump -Z root`` keeps root, which is the participant's own account
    there. Where the namespace denies setgroups(2), as ``unshare --map-root-user`` must, even
    ``-Z root`` fails, and :mod:`tunlab.kernel.capture` captures the same pcap instead.
    """
    options = ["-i", interface, "-w", path, *bpf.split()]
    # --immediate-mode: libpcap otherwise holds packets until its buffer block times out, and
    # a short capture stopped before that (one SYN, say) would write nothing.
    tcpdump = ["tcpdump", "--immediate-mode", "-U", "-n", "-s", "0"]
    if not in_user_namespace():
        return [*tcpdump, *options]
    if _setgroups_denied():
        return [sys.executable, "-m", "tunlab.kernel.capture", *options]
    return [tcpdump[0], "-Z", "root", *tcpdump[1:], *options]


def _setgroups_denied(path: Path = Path("/proc/self/setgroups")) -> bool:
    try:
        return path.read_text().strip() == "deny"
    except OSError:
        return False


@contextmanager
def capture(ns: Any, interface: str = "lo", bpf: str = "tcp", path: str | None = None,
            timeout: float = 30.0) -> Iterator[Capture]:
    """Run ``tcpdump -i INTERFACE -w FILE BPF`` inside namespace ``ns`` for the ``with`` block.

    ``ns`` is a :class:`tunlab.kernel.netns.Namespace`. tcpdump is started and waited for until
    it is listening, and stopped (SIGINT, then SIGKILL after 3 s) when the block ends, also on
    error. It is killed at the latest after ``timeout`` seconds.
    """
    if path is None:
        fd, path = tempfile.mkstemp(prefix="tunlab-", suffix=".pcap")
        os.close(fd)
    target = Path(path)
    process = ns.popen(["timeout", str(int(timeout)), *capture_command(interface, str(target),
                                                                       bpf)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cap = Capture(target, process)
    try:
        _wait_listening(process)
        yield cap
        time.sleep(0.2)  # let the last segments reach tcpdump's buffer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(3)
        if process.stderr is not None:
            cap.stderr = process.stderr.read().decode(errors="replace")
            process.stderr.close()


def _wait_listening(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Block until tcpdump printed 'listening on' (so no early packet is missed)."""
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        try:
            chunk = process.stderr.read()
        except BlockingIOError:
            chunk = None
        if chunk:
            seen += chunk
            if b"listening on" in seen:
                os.set_blocking(process.stderr.fileno(), True)
                return
        if process.poll() is not None:
            raise RuntimeError(f"tcpdump stopped: {seen.decode(errors='replace').strip()}")
        time.sleep(0.02)
    os.set_blocking(process.stderr.fileno(), True)
    raise TimeoutError("tcpdump did not start listening within 5 s")
