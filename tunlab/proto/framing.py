"""tunlab's wire format as a sans-IO codec: bytes in, events out; no sockets, no threads.

Every frame is an 8-byte header followed by a payload::

    0      2      3      4                8
    +------+------+------+----------------+--------------
    | "TL" | ver  | type | payload length | payload ...
    +------+------+------+----------------+--------------
     magic   1     see FrameType  uint32, big endian

The magic and version let a receiver refuse a stream that is not ours at the first byte; the
length lets it find frame boundaries in a TCP byte stream. Each side first sends a HELLO whose
JSON payload lists features (offloads, authentication, ...) so that later versions can
negotiate what both ends understand. A DATA payload must be a whole IPv4/IPv6 packet whose own
header claims exactly the payload's length; anything else is rejected *before* it could reach a
TUN device. Authentication and encryption with a pre-shared key are layered above this codec
(:mod:`tunlab.proto.crypto`, driven by :mod:`tunlab.proto.session`) in the extension frame
types: a sealed frame is opened there and its inner frame goes through the same checks here
(:meth:`Decoder.frame_event`).

Errors come in two kinds. A bad DATA payload or an unknown frame type is a
:class:`FrameRejected` event: counted, dropped, and the stream goes on, because the boundaries
are still known. A bad magic, version or an oversized length is a :class:`ProtocolError`: the
boundaries are lost, the decoder stops, and the connection must be closed.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from tunlab.packet.validate import ip_packet_problem

__all__ = ["CloseReceived", "Decoder", "DecoderStats", "DEFAULT_MAX_PAYLOAD", "encode_close",
           "encode_frame", "encode_gso_packet", "encode_hello", "encode_keepalive",
           "encode_packet", "EncodeError", "Event", "ExtensionFrame", "frame_header",
           "FrameRejected", "FrameType", "HEADER", "HEADER_SIZE", "Hello", "HelloReceived",
           "KeepaliveReceived", "MAGIC", "MAX_CLOSE_REASON", "MAX_HELLO", "MAX_HELLO_DEPTH",
           "PacketReceived", "printable_reason", "ProtocolError", "RejectReason", "VERSION",
           "VNET_FEATURE", "VNET_HDR_SIZE"]

MAGIC = b"TL"
VERSION = 1
HEADER = struct.Struct("!2sBBI")
HEADER_SIZE = HEADER.size
VNET_HDR_SIZE = 10
# One IP packet of up to 64 KiB, plus room for a virtio-net header and a sealing overhead.
DEFAULT_MAX_PAYLOAD = 65535 + 256
MAX_HELLO = 4096
# A HELLO is an object of lists and one flat object; anything nested deeper is refused before
# json.loads() would recurse into it (1,000 nested lists in 2 KB raise RecursionError).
MAX_HELLO_DEPTH = 4
# What of a peer's CLOSE reason is kept: it ends up in logs.
MAX_CLOSE_REASON = 200
# HELLO feature: "send me GSO_DATA super-packets with their virtio-net header". A GSO_DATA
# frame is only accepted when both sides offered it (see Decoder.accept_gso).
VNET_FEATURE = "vnet_hdr"


class FrameType(IntEnum):
    HELLO = 1
    DATA = 2
    GSO_DATA = 3  # virtio-net header (10 bytes) + IP (super-)packet, for offload-capable peers
    KEEPALIVE = 4
    CLOSE = 5
    # 0x10-0x1f belong to extensions layered above this codec: tunlab.proto.crypto uses 0x10 (AUTH,
    # the key proof) and 0x11 (SEALED, an encrypted and authenticated inner frame).
    EXTENSION_FIRST = 0x10
    EXTENSION_LAST = 0x1F


class RejectReason(StrEnum):
    """Why a frame, a stream or a connection was refused: one name for each rule a peer can
    break, shared by the codec, the session and the endpoints. The value is what statistics
    count and logs print (it compares and hashes as that string)."""

    # One frame dropped, the stream goes on (FrameRejected).
    NOT_IP = "not_ip"
    GSO_NOT_NEGOTIATED = "gso_not_negotiated"
    BAD_HELLO = "bad_hello"
    UNKNOWN_TYPE = "unknown_type"
    UNEXPECTED_EXTENSION = "unexpected_extension"
    # The stream is unusable (ProtocolError): framing.
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    TOO_LARGE = "too_large"
    TRUNCATED = "truncated"
    # The stream is unusable: the session's rules.
    NO_HELLO = "no_hello"
    BAD_ROLE = "bad_role"
    DUPLICATE_HELLO = "duplicate_hello"
    PEER_CLOSED = "peer_closed"
    AUTH_FAILED = "auth_failed"
    UNSEALED = "unsealed"
    BAD_INNER = "bad_inner"
    FORGED = "forged"
    REPLAYED = "replayed"
    REORDERED = "reordered"
    # The connection or one packet, refused by an endpoint.
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    CLOSED_IN_HANDSHAKE = "closed_in_handshake"
    SOCKET_ERROR = "socket_error"
    TOO_MANY_PENDING = "too_many_pending"
    UNSENDABLE = "unsendable"
    BAD_OFFLOAD = "bad_offload"


    __hash__ = str.__hash__


@dataclass(frozen=True)
class Hello:
    """The first frame of each side: who we are and what we can do."""

    role: str
    features: frozenset[str] = frozenset()
    info: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class HelloReceived:
    """The peer's HELLO; ``raw`` is its payload exactly as received (for transcript hashes)."""

    hello: Hello
    raw: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True)
class PacketReceived:
    """A validated IP packet; ``vnet_header`` is set for GSO_DATA frames."""

    packet: bytes | memoryview  # a view into the receive buffer on the copy-free path
    vnet_header: bytes | memoryview | None = None


@dataclass(frozen=True)
class KeepaliveReceived:
    """The peer says it is still there."""


@dataclass(frozen=True)
class CloseReceived:
    """The peer hangs up and says why; ``reason`` is made printable and bounded
    (:func:`printable_reason`), because it is the peer's text and ends up in logs."""

    reason: str


@dataclass(frozen=True)
class ExtensionFrame:
    """A frame in the extension range, passed up unparsed to the layer that owns it."""

    frame_type: int
    payload: bytes | memoryview  # a view into the receive buffer on the copy-free path


@dataclass(frozen=True)
class FrameRejected:
    """One frame dropped; the stream stays usable."""

    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class ProtocolError:
    """The stream is unusable from here on; close the connection."""

    reason: RejectReason
    detail: str


Event = (HelloReceived | PacketReceived | KeepaliveReceived | CloseReceived | ExtensionFrame
         | FrameRejected | ProtocolError)


_DATA_TYPES = (FrameType.DATA, FrameType.GSO_DATA)


class EncodeError(ValueError):
    """Something we were asked to send is not sendable (not IP, too large)."""


def encode_frame(frame_type: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """Header + payload for any frame type (no payload validation)."""
    if len(payload) > DEFAULT_MAX_PAYLOAD:
        raise EncodeError(f"payload of {len(payload)} bytes exceeds {DEFAULT_MAX_PAYLOAD}")
    return HEADER.pack(MAGIC, VERSION, frame_type, len(payload)) + bytes(payload)


def frame_header(frame_type: int, length: int) -> bytes:
    """Just the 8-byte header, for senders that pass header and payload to sendmsg() apart."""
    return HEADER.pack(MAGIC, VERSION, frame_type, length)


def encode_hello(hello: Hello) -> bytes:
    """A HELLO frame carrying ``hello`` as JSON."""
    body = json.dumps({"proto": "tunlab", "version": VERSION, "role": hello.role,
                       "features": sorted(hello.features), "info": hello.info},
                      separators=(",", ":")).encode()
    if len(body) > MAX_HELLO:
        raise EncodeError("hello too large")
    return encode_frame(FrameType.HELLO, body)


def encode_packet(packet: bytes | bytearray | memoryview) -> bytes:
    """A DATA frame for one IP packet; raises :class:`EncodeError` if it is not one."""
    problem = ip_packet_problem(packet)
    if problem:
        raise EncodeError(problem)
    return encode_frame(FrameType.DATA, packet)


def encode_gso_packet(vnet_header: bytes, packet: bytes | bytearray | memoryview) -> bytes:
    """A GSO_DATA frame: virtio-net header then the (super-)packet, as read with IFF_VNET_HDR."""
    if len(vnet_header) != VNET_HDR_SIZE:
        raise EncodeError(f"virtio-net header must be {VNET_HDR_SIZE} bytes")
    return encode_frame(FrameType.GSO_DATA, bytes(vnet_header) + bytes(packet))


def encode_keepalive() -> bytes:
    """A KEEPALIVE frame (no payload)."""
    return encode_frame(FrameType.KEEPALIVE)


def encode_close(reason: str) -> bytes:
    """A CLOSE frame carrying ``reason`` (at most 512 bytes of it)."""
    return encode_frame(FrameType.CLOSE, reason.encode()[:512])


def _json_depth_problem(payload: bytes, limit: int) -> str | None:
    """Why ``payload`` nests JSON arrays/objects deeper than ``limit``, or None.

    A linear scan that skips string contents, so that :func:`json.loads` (which recurses once
    per level) is only ever called on shallow documents.
    """
    depth = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return f"hello nests deeper than {limit} levels"
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return None


def _parse_hello(payload: bytes) -> Hello | str:
    problem = _json_depth_problem(payload, MAX_HELLO_DEPTH)
    if problem:
        return problem
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"hello is not JSON: {exc}"
    if not isinstance(doc, dict) or doc.get("proto") != "tunlab":
        return "hello is not a tunlab hello"
    features = doc.get("features", [])
    info = doc.get("info", {})
    role = doc.get("role", "")
    if (not isinstance(features, list) or not all(isinstance(f, str) for f in features)
            or not isinstance(info, dict) or not isinstance(role, str)):
        return "hello fields have the wrong types"
    return Hello(role=role, features=frozenset(features), info=info)


def printable_reason(raw: bytes | str, limit: int = MAX_CLOSE_REASON) -> str:
    """A peer's words made safe for one log line: decoded, control characters (newlines, ANSI
    escapes, ...) replaced by ``?``, at most ``limit`` characters (``...`` marks a cut)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else raw
    cut = len(text) > limit
    text = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return text + "..." if cut else text


@dataclass
class DecoderStats:
    """What one decoder saw: frames, valid packets, and rejections by reason."""

    frames: int = 0
    packets: int = 0
    packet_bytes: int = 0
    rejected: Counter[RejectReason] = field(default_factory=Counter)


class Decoder:
    """Turns a TCP byte stream into events. Feed it whatever recv() returned.

    Buffering is bounded: at most one header plus ``max_payload`` bytes are held, whatever the
    peer sends. After a :class:`ProtocolError` the decoder refuses further input.

    ``accept_gso=False`` rejects GSO_DATA frames (``gso_not_negotiated``): a session turns it on
    only when both sides offered :data:`VNET_FEATURE`. :meth:`only_accept` narrows the stream
    to one frame type, checked from the header alone: any other frame ends the stream before
    a byte of its payload is parsed (a keyed session demands sealed frames this way).
    ``pause_after`` lists frame types after which :meth:`feed` stops (setting :attr:`paused`)
    and keeps the rest buffered, so that the layer above can change these rules before the next
    frame is looked at; it then calls ``feed(b"")`` to go on.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, *,
                 accept_gso: bool = True) -> None:
        self.max_payload = max_payload
        self.accept_gso = accept_gso
        self.stats = DecoderStats()
        self.failed: ProtocolError | None = None
        self._buffer = bytearray()
        self._only: int | None = None
        self._only_error: tuple[RejectReason, str] = (RejectReason.UNSEALED, "")
        self.pause_after: frozenset[int] = frozenset()
        self.paused = False

    def fail(self, error: ProtocolError) -> None:
        """End the stream for a reason found above this codec: count it, drop what is
        buffered, refuse further input."""
        self.failed = error
        self.stats.rejected[error.reason] += 1
        self._buffer.clear()

    def only_accept(self, frame_type: int, reason: RejectReason, detail: str) -> None:
        """From now on, a frame of any other type than ``frame_type`` is a
        ``ProtocolError(reason, detail + " (got frame type N)")``, found from its header."""
        self._only = frame_type
        self._only_error = (reason, detail)

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of their frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Add received bytes; return the events of every frame now complete."""
        self.paused = False
        if self.failed is not None:
            return []
        # The usual case on a busy stream: nothing buffered, so frames are cut straight out of
        # the caller's bytes and only an incomplete tail is kept (one copy fewer per frame).
        buffered = bool(self._buffer)
        if buffered:
            self._buffer += data
        events: list[Event] = []
        view = memoryview(self._buffer if buffered else data).cast("B")
        offset = 0
        try:
            while len(view) - offset >= HEADER_SIZE:
                magic, version, frame_type, length = HEADER.unpack_from(view, offset)
                error = self._check_header(magic, version, frame_type, length)
                if error is not None:
                    self.failed = error
                    self.stats.rejected[error.reason] += 1
                    events.append(error)
                    offset = len(view)
                    break
                end = offset + HEADER_SIZE + length
                if end > len(view):
                    break
                payload = bytes(view[offset + HEADER_SIZE:end])
                offset = end
                self.stats.frames += 1
                events.append(self.frame_event(frame_type, payload))
                if frame_type in self.pause_after:
                    self.paused = True
                    break
            if not buffered and self.failed is None:
                self._buffer += view[offset:]
        finally:
            view.release()
        if buffered:
            del self._buffer[:offset]
        if self.failed is not None:
            self._buffer.clear()
        return events

    def feed_packets(self, data: bytes | bytearray | memoryview,
                     ) -> tuple[list[tuple[Any, Any]], list[Event], memoryview] | None:
        """The data path's :meth:`feed`: the leading DATA/GSO_DATA frames of ``data``, cut out
        without building an event per packet.

        Returns ``(packets, rejections, rest)``: ``(packet, vnet_header or None)`` pairs as
        views into ``data`` (use them before ``data`` changes), each checked exactly as
        :meth:`feed` checks it and counted in the same statistics; the :class:`FrameRejected`
        events of DATA frames that failed those checks; and the bytes from the first frame of
        another type, a bad header or an incomplete frame on, which the caller must hand to
        :meth:`feed` (or the session's ``receive``). Returns None, having consumed nothing,
        when bytes are already buffered or the decoder failed: then use :meth:`feed`.
        """
        if self.failed is not None or self._buffer:
            return None
        view = memoryview(data).cast("B")
        end_of_data = len(view)
        packets: list[tuple[Any, Any]] = []
        rejections: list[Event] = []
        unpack = HEADER.unpack_from
        offset = 0
        stats = self.stats
        while end_of_data - offset >= HEADER_SIZE:
            magic, version, frame_type, length = unpack(view, offset)
            end = offset + HEADER_SIZE + length
            if (magic != MAGIC or version != VERSION or length > self.max_payload
                    or end > end_of_data or frame_type not in _DATA_TYPES
                    or self._only is not None
                    or (frame_type == FrameType.GSO_DATA and not self.accept_gso)):
                break  # feed() takes it from here, with every error it knows
            start = offset + HEADER_SIZE
            offset = end
            stats.frames += 1
            if frame_type == FrameType.GSO_DATA:
                if length <= VNET_HDR_SIZE:
                    rejections.append(self._reject(
                        RejectReason.NOT_IP, "GSO frame shorter than its virtio-net header"))
                    continue
                header, packet = view[start:start + VNET_HDR_SIZE], view[start + VNET_HDR_SIZE:end]
            else:
                header, packet = None, view[start:end]
            problem = ip_packet_problem(packet)
            if problem:
                rejections.append(self._reject(RejectReason.NOT_IP, problem))
                continue
            stats.packets += 1
            stats.packet_bytes += len(packet)
            packets.append((packet, header))
        return packets, rejections, view[offset:]

    def feed_frames(self, data: bytes | bytearray | memoryview, frame_type: int,
                    ) -> tuple[list[memoryview], memoryview] | None:
        """The leading complete frames of ``frame_type`` in ``data``, cut out without a copy
        (a keyed session's data path: its frames are all SEALED).

        Returns ``(payloads, rest)``: each frame's payload as a view into ``data`` (use it
        before ``data`` changes; not counted yet: the caller adds each frame it takes to
        ``stats.frames``, as :meth:`feed` would have), and the bytes from
        the first frame of another type, a header :meth:`feed` would reject or an incomplete
        frame on, which the caller hands to :meth:`feed` (or keeps, see
        :meth:`is_partial_frame`). Returns None, having consumed nothing, when bytes are
        already buffered or the decoder failed: then use :meth:`feed`.
        """
        if self.failed is not None or self._buffer:
            return None
        view = memoryview(data).cast("B")
        end_of_data = len(view)
        payloads: list[memoryview] = []
        unpack = HEADER.unpack_from
        offset = 0
        while end_of_data - offset >= HEADER_SIZE:
            magic, version, kind, length = unpack(view, offset)
            end = offset + HEADER_SIZE + length
            if (magic != MAGIC or version != VERSION or kind != frame_type
                    or length > self.max_payload or end > end_of_data
                    or kind in self.pause_after
                    or (self._only is not None and kind != self._only)):
                break  # feed() takes it from here, with every error it knows
            payloads.append(view[offset + HEADER_SIZE:end])
            offset = end
        return payloads, view[offset:]

    def is_partial_frame(self, rest: bytes | bytearray | memoryview) -> bool:
        """True when ``rest`` (what :meth:`feed_packets` or :meth:`feed_frames` left) is only
        the start of one frame that they would take once complete: a data frame, or in a
        stream narrowed by :meth:`only_accept`, a frame of that type.

        The caller may then keep those bytes itself and hand them back, followed by more, in
        its next call, instead of feeding them (which would buffer them here, and the next
        call would copy everything it gets behind them). Anything else, including a header
        that :meth:`feed` would reject, is for :meth:`feed`.
        """
        if self.failed is not None or self._buffer:
            return False
        if len(rest) < HEADER_SIZE:
            return True
        magic, version, frame_type, length = HEADER.unpack_from(rest, 0)
        if self._only is not None:  # a keyed session: only its one frame type
            wanted = frame_type == self._only
        else:
            wanted = frame_type in _DATA_TYPES and (
                frame_type != FrameType.GSO_DATA or self.accept_gso)
        return bool(wanted and magic == MAGIC and version == VERSION
                    and length <= self.max_payload and HEADER_SIZE + length > len(rest))

    def _check_header(self, magic: bytes, version: int, frame_type: int,
                      length: int) -> ProtocolError | None:
        if magic != MAGIC:
            return ProtocolError(RejectReason.BAD_MAGIC,
                                 f"stream starts with {magic.hex()} not 544c ('TL')")
        if version != VERSION:
            return ProtocolError(RejectReason.BAD_VERSION,
                                 f"peer speaks version {version}, we {VERSION}")
        if length > self.max_payload:
            return ProtocolError(RejectReason.TOO_LARGE,
                                 f"frame claims {length} bytes, limit is {self.max_payload}")
        if self._only is not None and frame_type != self._only:
            reason, detail = self._only_error
            return ProtocolError(reason, f"{detail} (got frame type {frame_type})")
        return None

    def _reject(self, reason: RejectReason, detail: str) -> FrameRejected:
        self.stats.rejected[reason] += 1
        return FrameRejected(reason, detail)

    def frame_event(self, frame_type: int, payload: bytes | memoryview) -> Event:
        """The event for one complete frame, with every payload check (and stats) applied.

        Public so that a layer which unwraps frames (the sealed frames of
        :mod:`tunlab.proto.crypto`) puts the inner frame through exactly the same validation.
        """
        if frame_type == FrameType.DATA:
            problem = ip_packet_problem(payload)
            if problem:
                return self._reject(RejectReason.NOT_IP, problem)
            self.stats.packets += 1
            self.stats.packet_bytes += len(payload)
            return PacketReceived(payload)
        if frame_type == FrameType.GSO_DATA:
            if not self.accept_gso:
                return self._reject(RejectReason.GSO_NOT_NEGOTIATED,
                                    "a GSO_DATA frame, but super-packets were not negotiated "
                                    f"({VNET_FEATURE} missing on one side)")
            if len(payload) <= VNET_HDR_SIZE:
                return self._reject(RejectReason.NOT_IP,
                                    "GSO frame shorter than its virtio-net header")
            packet = payload[VNET_HDR_SIZE:]
            problem = ip_packet_problem(packet)
            if problem:
                return self._reject(RejectReason.NOT_IP, problem)
            self.stats.packets += 1
            self.stats.packet_bytes += len(packet)
            return PacketReceived(packet, payload[:VNET_HDR_SIZE])
        if frame_type == FrameType.HELLO:
            if len(payload) > MAX_HELLO:
                return self._reject(RejectReason.BAD_HELLO, f"hello of {len(payload)} bytes")
            raw = bytes(payload)
            hello = _parse_hello(raw)
            if isinstance(hello, str):
                return self._reject(RejectReason.BAD_HELLO, hello)
            return HelloReceived(hello, raw)
        if frame_type == FrameType.KEEPALIVE:
            return KeepaliveReceived()
        if frame_type == FrameType.CLOSE:
            return CloseReceived(printable_reason(bytes(payload)))
        if FrameType.EXTENSION_FIRST <= frame_type <= FrameType.EXTENSION_LAST:
            return ExtensionFrame(frame_type, payload)
        return self._reject(RejectReason.UNKNOWN_TYPE, f"frame type {frame_type}")
