"""The tunnel session as a sans-IO state machine: hello exchange, key proof, data.

Threads and sockets live in :mod:`tunlab.tunnel`; this module only turns received bytes into
events and packets into bytes to send, so every rule here is testable without a network.

Both sides send a HELLO first. Anything before the peer's HELLO that is not a HELLO is a
protocol error. The features used are those both sides offered.

*Without a pre-shared key* (the teaching mode) the session is established as soon as the
peer's HELLO arrives, and frames travel in the clear: anyone who reaches the port can inject
packets. :attr:`Session.authenticated` is False so that a front end can say so.

*With a pre-shared key* (``psk=...``) the HELLOs carry fresh nonces, the client proves the key
with an AUTH frame, the server checks it and proves the key back, and only then is the session
established; every later frame is sealed with ChaCha20-Poly1305 under per-connection,
per-direction keys (see :mod:`tunlab.proto.crypto` for the details). A peer without the key,
with another key, or without a key while we have one, ends in ``ProtocolError("auth_failed", ...)``
and never produces a :class:`~tunlab.proto.framing.PacketReceived`.

After a :class:`~tunlab.proto.framing.ProtocolError` the session refuses further input, and
:meth:`Session.data_to_send` holds a CLOSE frame telling the peer why (best effort).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from ..ippacket import ip_packet_problem
from . import crypto, framing
from .crypto import PSK_FEATURE, SecureFrameType
from .framing import (
    CloseReceived,
    Event,
    ExtensionFrame,
    FrameRejected,
    FrameType,
    Hello,
    HelloReceived,
    KeepaliveReceived,
    PacketReceived,
    ProtocolError,
)

_PEER_ROLE = {"client": "server", "server": "client"}
# Inner frame types a sealed frame may carry.
_SEALABLE = (FrameType.DATA, FrameType.GSO_DATA, FrameType.KEEPALIVE, FrameType.CLOSE)
_REASON = re.compile(r"^([a-z_]{1,32}): (.*)$", re.DOTALL)


@dataclass(frozen=True)
class Established:
    """The handshake finished: packets may flow, using ``features``.

    ``authenticated`` is True when both sides proved the same pre-shared key and every frame
    from here on is sealed.
    """

    peer: Hello
    features: frozenset[str]
    authenticated: bool = False


SessionEvent = Event | Established


def _describe(event: Event) -> str:
    if isinstance(event, ExtensionFrame):
        return f"an extension frame 0x{event.frame_type:02x}"
    if isinstance(event, FrameRejected):
        return f"an invalid frame ({event.reason})"
    names = {PacketReceived: "a DATA frame", KeepaliveReceived: "a KEEPALIVE",
             CloseReceived: "a CLOSE", HelloReceived: "a HELLO"}
    return names.get(type(event), type(event).__name__)


class Session:
    """One side of one tunnel connection, before and after the handshake.

    ``psk`` (16 to 4096 bytes, see :func:`tunlab.proto.crypto.load_psk`) turns on mutual
    authentication and encryption; without it the session runs in the unauthenticated
    teaching mode and refuses a peer that demands a key.
    """

    def __init__(self, role: str, *, features: frozenset[str] = frozenset(),
                 info: dict[str, object] | None = None, psk: bytes | None = None,
                 max_payload: int = framing.DEFAULT_MAX_PAYLOAD) -> None:
        if role not in _PEER_ROLE:
            raise ValueError("role is 'client' or 'server'")
        if psk is not None:
            crypto.check_psk(psk)
            psk = bytes(psk)
        self.role = role
        self.peer_role = _PEER_ROLE[role]
        self.psk = psk
        # A feature means "I have and demand a key"; it is offered exactly when we hold one.
        offered = set(features) - {PSK_FEATURE}
        self.info = dict(info or {})
        self.info.pop(crypto.NONCE_INFO_KEY, None)
        self._nonce = b""
        if psk is not None:
            offered.add(PSK_FEATURE)
            self._nonce = secrets.token_bytes(crypto.NONCE_SIZE)
            self.info[crypto.NONCE_INFO_KEY] = self._nonce.hex()
        self.offered = frozenset(offered)
        self.decoder = framing.Decoder(max_payload, accept_gso=False)
        self.decoder.pause_after = frozenset({FrameType.HELLO})
        self.peer: Hello | None = None
        self.features: frozenset[str] = frozenset()
        self._outgoing = bytearray()
        self._started = False
        self._established = False
        self._hello_payload = b""
        self._transcript = b""
        self._keys: crypto.SessionKeys | None = None
        self._sealer: crypto.Sealer | None = None
        self._opener: crypto.Opener | None = None

    # -- state ------------------------------------------------------------------------------
    @property
    def established(self) -> bool:
        """True once packets may flow (after the peer's HELLO, and its key proof with a PSK)."""
        return self._established

    @property
    def authenticated(self) -> bool:
        """True when this session demands the pre-shared key and seals every frame.

        False means the unauthenticated teaching mode: a front end should warn about it.
        """
        return self.psk is not None

    @property
    def sealed(self) -> bool:
        """True when :meth:`encode_packet` produces sealed frames (established, with a PSK)."""
        return self._sealer is not None

    @property
    def error(self) -> ProtocolError | None:
        """The error that ended this session, if one did."""
        return self.decoder.failed

    # -- sending ------------------------------------------------------------------------------
    def initiate(self) -> None:
        """Queue our HELLO. Call once, before anything else is sent."""
        if not self._started:
            self._started = True
            frame = framing.encode_hello(Hello(self.role, self.offered, self.info))
            self._hello_payload = frame[framing.HEADER_SIZE:]
            self._outgoing += frame

    def data_to_send(self) -> bytes:
        """Bytes the session wants on the wire now (hello, key proof, a closing notice)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def encode_packet(self, packet: bytes | bytearray | memoryview,
                      vnet_header: bytes | None = None) -> bytes:
        """The bytes that carry one IP packet (with its virtio-net header, if any) to the peer.

        Sealed when the session is authenticated. Raises
        :class:`~tunlab.proto.framing.EncodeError` for something that cannot be sent (including
        a virtio-net header when both sides did not offer ``vnet_hdr``) and RuntimeError before
        the handshake finished.
        """
        if not self._established:
            raise RuntimeError("handshake not finished")
        if vnet_header is not None and framing.VNET_FEATURE not in self.features:
            raise framing.EncodeError("super-packets were not negotiated with this peer")
        if self._sealer is None:
            if vnet_header is not None:
                return framing.encode_gso_packet(vnet_header, packet)
            return framing.encode_packet(packet)
        if vnet_header is not None:
            if len(vnet_header) != framing.VNET_HDR_SIZE:
                raise framing.EncodeError(
                    f"virtio-net header must be {framing.VNET_HDR_SIZE} bytes")
            return self._sealer.seal(FrameType.GSO_DATA, vnet_header, packet)
        problem = ip_packet_problem(packet)
        if problem:
            raise framing.EncodeError(problem)
        return self._sealer.seal(FrameType.DATA, packet)

    def encode_keepalive(self) -> bytes:
        """A KEEPALIVE frame (sealed when authenticated)."""
        if self._sealer is not None:
            return self._sealer.seal(FrameType.KEEPALIVE, b"")
        return framing.encode_keepalive()

    def encode_close(self, reason: str) -> bytes:
        """A CLOSE frame telling the peer why we hang up (sealed when authenticated)."""
        if self._sealer is not None:
            return self._sealer.seal(FrameType.CLOSE, reason.encode()[:512])
        return framing.encode_close(reason)

    # -- receiving ----------------------------------------------------------------------------
    def receive(self, data: bytes | bytearray | memoryview) -> list[SessionEvent]:
        """Feed received bytes; return what happened. Packets only after the handshake."""
        events: list[SessionEvent] = []
        decoder = self.decoder
        while decoder.failed is None:
            decoded = decoder.feed(data)
            data = b""
            if self._established and self._opener is None and not decoder.paused:
                # The clear mode's data path: packets need nothing more than the decoder did.
                for event in decoded:
                    if type(event) is not PacketReceived:
                        break
                else:
                    return [*events, *decoded]
            for event in decoded:
                if isinstance(event, ProtocolError):
                    events.append(event)
                    self._queue_close(event)
                    break
                events.extend(self._handle(event))
                if decoder.failed is not None:
                    break
            # The handshake's frames pause the decoder, so that what follows one is judged by
            # the rules it brought in (after the key proof: sealed frames only).
            if not decoder.paused:
                break
        return events

    def receive_packets(self, data: bytes | bytearray | memoryview,
                        ) -> tuple[list[tuple[Any, Any]], list[SessionEvent]]:
        """:meth:`receive` for the data path: ``(packets, events)``.

        In the clear mode, after the handshake, the leading DATA/GSO_DATA frames come back as
        ``(packet, vnet_header)`` views into ``data`` (valid until ``data`` changes; see
        :meth:`tunlab.proto.framing.Decoder.feed_packets`) with the same checks; everything else,
        and every sealed session, goes through :meth:`receive` into ``events``, in order after
        the packets.
        """
        if self._established and self._opener is None:
            cut = self.decoder.feed_packets(data)
            if cut is not None:
                packets, events, rest = cut
                if len(rest):
                    events = [*events, *self.receive(rest)]
                return packets, events
        return [], self.receive(data)

    def end_of_stream(self) -> list[SessionEvent]:
        """The peer closed its side: a ``truncated`` error if it stopped inside a frame."""
        if self.decoder.failed is not None or not self.decoder.buffered:
            return []
        return [self._fail("truncated", f"stream ended inside a frame ({self.decoder.buffered} "
                           "bytes discarded)", notify=False)]

    def _handle(self, event: Event) -> list[SessionEvent]:
        if not self._established:
            if self.peer is None:
                return self._before_hello(event)
            return self._before_proof(event)
        if self._opener is not None:
            return self._open(event)
        if isinstance(event, HelloReceived):
            return [self._fail("duplicate_hello", "peer sent a second HELLO")]
        if isinstance(event, ExtensionFrame):
            return [self._reject("unexpected_extension",
                                 f"{_describe(event)} in an unauthenticated session")]
        return [event]

    def _before_hello(self, event: Event) -> list[SessionEvent]:
        if isinstance(event, CloseReceived):
            return [self._peer_closed(event)]
        if not isinstance(event, HelloReceived):
            return [self._fail("no_hello", f"{_describe(event)} before the peer's HELLO")]
        hello = event.hello
        if hello.role != self.peer_role:
            return [self._fail("bad_role", f"peer says it is a {hello.role!r}")]
        self.initiate()
        self.peer = hello
        self.features = self.offered & hello.features
        peer_has_key = PSK_FEATURE in hello.features
        if self.psk is None:
            if peer_has_key:
                return [self._fail("auth_failed", f"the {self.peer_role} requires a pre-shared "
                                   "key and this side has none: start both ends with "
                                   "--psk-file")]
            self._establish()
            return [Established(hello, self.features, authenticated=False)]
        if not peer_has_key:
            return [self._fail("auth_failed", f"the {self.peer_role} has no pre-shared key; "
                               "refusing an unauthenticated tunnel: start both ends with "
                               "--psk-file")]
        peer_nonce = self._peer_nonce(hello)
        if peer_nonce is None:
            return [self._fail("auth_failed", f"the {self.peer_role}'s HELLO carries no valid "
                               f"{crypto.NONCE_INFO_KEY}")]
        if peer_nonce == self._nonce:
            return [self._fail("auth_failed", "the peer echoed our own nonce (a reflection)")]
        if self.role == "client":
            client_hello, server_hello = self._hello_payload, event.raw
            client_nonce, server_nonce = self._nonce, peer_nonce
        else:
            client_hello, server_hello = event.raw, self._hello_payload
            client_nonce, server_nonce = peer_nonce, self._nonce
        self._transcript = crypto.transcript_hash(client_hello, server_hello)
        self._keys = crypto.derive_keys(self.psk, client_nonce, server_nonce, self._transcript)
        self.decoder.pause_after = frozenset({SecureFrameType.AUTH})
        if self.role == "client":
            self._send_proof()
        return []

    @staticmethod
    def _peer_nonce(hello: Hello) -> bytes | None:
        text = hello.info.get(crypto.NONCE_INFO_KEY)
        if not isinstance(text, str) or len(text) != 2 * crypto.NONCE_SIZE:
            return None
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None

    def _send_proof(self) -> None:
        assert self._keys is not None
        tag = crypto.auth_tag(self._keys, self.role, self._transcript)
        self._outgoing += framing.encode_frame(SecureFrameType.AUTH, tag)

    def _before_proof(self, event: Event) -> list[SessionEvent]:
        assert self._keys is not None and self.peer is not None
        if isinstance(event, CloseReceived):
            return [self._peer_closed(event)]
        if not (isinstance(event, ExtensionFrame) and event.frame_type == SecureFrameType.AUTH):
            return [self._fail("auth_failed", f"{_describe(event)} before the {self.peer_role} "
                               "proved the pre-shared key")]
        if not crypto.auth_tag_valid(self._keys, self.peer_role, self._transcript,
                                     event.payload):
            return [self._fail("auth_failed", f"the {self.peer_role} could not prove the "
                               "pre-shared key: the keys on the two ends differ")]
        if self.role == "server":
            self._send_proof()
        self._sealer = crypto.Sealer(self._keys.sending(self.role))
        self._opener = crypto.Opener(self._keys.receiving(self.role))
        # From the next byte on, a frame in the clear ends the session from its header alone:
        # its payload (a HELLO's JSON, say) is never parsed.
        self.decoder.only_accept(SecureFrameType.SEALED, "unsealed", "a frame in the clear in "
                                 "an authenticated session, where every frame must be sealed")
        self._establish()
        return [Established(self.peer, self.features, authenticated=True)]

    def _establish(self) -> None:
        self._established = True
        self.decoder.pause_after = frozenset()
        self.decoder.accept_gso = framing.VNET_FEATURE in self.features

    def _open(self, event: Event) -> list[SessionEvent]:
        assert self._opener is not None
        if not (isinstance(event, ExtensionFrame) and event.frame_type == SecureFrameType.SEALED):
            return [self._fail("unsealed", f"{_describe(event)} in an authenticated session, "
                               "where every frame must be sealed")]
        try:
            inner_type, inner = self._opener.open(event.payload)
        except crypto.SealError as exc:
            return [self._fail(exc.reason, exc.detail)]
        if inner_type not in _SEALABLE:
            return [self._fail("bad_inner", f"sealed frame carries frame type {inner_type}")]
        inner_event = self.decoder.frame_event(inner_type, inner)
        return [inner_event]

    # -- failures -----------------------------------------------------------------------------
    def _peer_closed(self, event: CloseReceived) -> ProtocolError:
        match = _REASON.match(event.reason)
        if match and match.group(1) == "auth_failed":
            # The peer's words end up in our log: one line, printable, bounded.
            words = "".join(c if c.isprintable() else "?" for c in match.group(2)[:300])
            return self._fail("auth_failed", f"the {self.peer_role} refused us: {words}",
                              notify=False)
        return self._fail("peer_closed", f"the {self.peer_role} closed the handshake: "
                          f"{event.reason[:200]!r}", notify=False)

    def _reject(self, reason: str, detail: str) -> FrameRejected:
        self.decoder.stats.rejected[reason] += 1
        return FrameRejected(reason, detail)

    def _fail(self, reason: str, detail: str, notify: bool = True) -> ProtocolError:
        error = ProtocolError(reason, detail)
        self.decoder.fail(error)
        if notify:
            self._queue_close(error)
        return error

    def _queue_close(self, error: ProtocolError) -> None:
        """Tell the peer why we hang up; it may read it or not (we close either way)."""
        try:
            self._outgoing += self.encode_close(f"{error.reason}: {error.detail}")
        except framing.EncodeError:
            pass
