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
established; every later frame is sealed with the negotiated AEAD (AES-256-GCM or
ChaCha20-Poly1305) under per-connection, per-direction keys (see :mod:`tunlab.proto.crypto` for
the details). A peer without the key, with another key, or without a key while we have one,
ends in ``ProtocolError("auth_failed", ...)`` and never produces a
:class:`~tunlab.proto.framing.PacketReceived`.

After a :class:`~tunlab.proto.framing.ProtocolError` the session refuses further input, and
:meth:`Session.data_to_send` holds a CLOSE frame telling the peer why (best effort).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tunlab.packet.validate import ip_packet_problem
from tunlab.proto import crypto, framing
from tunlab.proto.crypto import PSK_FEATURE, SecureFrameType
from tunlab.proto.framing import (
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
    RejectReason,
)

__all__ = ["Established", "Session", "SessionEvent", "SessionStateError", "State", "TRANSITIONS",
           "Trigger"]

_PEER_ROLE = {"client": "server", "server": "client"}
# Inner frame types a sealed frame may carry.
_SEALABLE = (FrameType.DATA, FrameType.GSO_DATA, FrameType.KEEPALIVE, FrameType.CLOSE)
_REASON = re.compile(r"^([a-z_]{1,32}): (.*)$", re.DOTALL)


class State(Enum):
    """Where one side of a connection is; :data:`TRANSITIONS` says how it moves on."""

    IDLE = "idle"                # nothing sent or received yet
    HELLO_SENT = "hello sent"    # our HELLO is queued; waiting for the peer's
    PROVING = "proving"          # keyed: both HELLOs seen; waiting for the peer's key proof
    ESTABLISHED = "established"  # packets flow in the clear (the teaching mode)
    SEALED = "sealed"            # packets flow, every frame sealed (both proved the key)
    FAILED = "failed"            # a ProtocolError ended the session; no further input


class Trigger(Enum):
    """What moves a session from one state to the next."""

    INITIATE = "initiate"        # our HELLO is queued
    CLEAR_HELLO = "clear hello"  # the peer's HELLO, and neither side holds a key
    KEYED_HELLO = "keyed hello"  # the peer's HELLO, and both hold a key
    PROOF = "proof"              # the peer proved the key
    FAIL = "fail"                # a rule was broken (by either side) or the peer hung up


# The only moves a session makes (h11's style: the states are data, not flags). Anything not
# listed is a bug in the session and raises SessionStateError.
TRANSITIONS: dict[State, dict[Trigger, State]] = {
    State.IDLE: {Trigger.INITIATE: State.HELLO_SENT, Trigger.FAIL: State.FAILED},
    State.HELLO_SENT: {Trigger.CLEAR_HELLO: State.ESTABLISHED,
                       Trigger.KEYED_HELLO: State.PROVING, Trigger.FAIL: State.FAILED},
    State.PROVING: {Trigger.PROOF: State.SEALED, Trigger.FAIL: State.FAILED},
    State.ESTABLISHED: {Trigger.FAIL: State.FAILED},
    State.SEALED: {Trigger.FAIL: State.FAILED},
    State.FAILED: {},
}


_ESTABLISHED_STATES = frozenset({State.ESTABLISHED, State.SEALED})


class SessionStateError(RuntimeError):
    """The session was asked to make a move its transition table does not allow (a bug in the
    caller or the session, never something a peer can cause)."""

    def __init__(self, role: str, state: State, trigger: Trigger) -> None:
        allowed = ", ".join(t.name for t in TRANSITIONS[state]) or "none"
        super().__init__(f"{role} session: {trigger.name} is not allowed in state "
                         f"{state.name} (allowed there: {allowed})")
        self.state = state
        self.trigger = trigger


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
        self.info.pop(crypto.CIPHERS_INFO_KEY, None)
        self._nonce = b""
        if psk is not None:
            offered.add(PSK_FEATURE)
            self._nonce = secrets.token_bytes(crypto.NONCE_SIZE)
            self.info[crypto.NONCE_INFO_KEY] = self._nonce.hex()
            self.info[crypto.CIPHERS_INFO_KEY] = [c.value for c in crypto.preferred_ciphers()]
        # The AEAD both sides seal with, once the HELLOs crossed (keyed sessions only).
        self.cipher: crypto.Cipher | None = None
        self.offered = frozenset(offered)
        self.decoder = framing.Decoder(max_payload, accept_gso=False)
        self.decoder.pause_after = frozenset({FrameType.HELLO})
        self.peer: Hello | None = None
        self.features: frozenset[str] = frozenset()
        self._outgoing = bytearray()
        self.state = State.IDLE
        self.failed_in: State | None = None  # the state a ProtocolError ended the session in
        self._hello_payload = b""
        self._transcript = b""
        self._keys: crypto.SessionKeys | None = None
        self._sealer: crypto.Sealer | None = None
        self._plain = bytearray()  # the keyed data path's plaintexts (see _receive_sealed)
        self._opener: crypto.Opener | None = None

    # -- state ------------------------------------------------------------------------------
    def move(self, trigger: Trigger) -> State:
        """Take the transition ``trigger`` from the current state (see :data:`TRANSITIONS`);
        raise :class:`SessionStateError`, changing nothing, if there is none."""
        try:
            new = TRANSITIONS[self.state][trigger]
        except KeyError:
            raise SessionStateError(self.role, self.state, trigger) from None
        if new is State.FAILED:
            self.failed_in = self.state
        self.state = new
        return new

    @property
    def established(self) -> bool:
        """True once packets may flow (after the peer's HELLO, and its key proof with a PSK);
        it stays True after a later failure."""
        return (self.failed_in or self.state) in _ESTABLISHED_STATES

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
        """Queue our HELLO. Call once, before anything else is sent (later calls do nothing)."""
        if self.state is State.IDLE:
            self.move(Trigger.INITIATE)
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
        if not self.established:
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

    def encode_packet_into(self, out: bytearray, plaintext: memoryview) -> memoryview:
        """:meth:`encode_packet` for a keyed session's data path, without copies.

        ``plaintext`` is the inner frame type (DATA, or GSO_DATA when super-packets were
        negotiated) followed by the packet (GSO_DATA: virtio-net header, then packet),
        contiguous; the sealed frame is written into ``out`` (see
        :meth:`tunlab.proto.crypto.Sealer.seal_into`) and returned as a view of it. Raises
        :class:`~tunlab.proto.framing.EncodeError` for what :meth:`encode_packet` refuses, and
        RuntimeError unless the session is sealed.
        """
        if self._sealer is None or not self.established:
            raise RuntimeError("encode_packet_into needs an established, sealed session")
        inner_type = plaintext[0]
        if inner_type == FrameType.GSO_DATA:
            if framing.VNET_FEATURE not in self.features:
                raise framing.EncodeError("super-packets were not negotiated with this peer")
            if len(plaintext) <= 1 + framing.VNET_HDR_SIZE:
                raise framing.EncodeError("no packet behind the virtio-net header")
        elif inner_type == FrameType.DATA:
            problem = ip_packet_problem(plaintext[1:])
            if problem:
                raise framing.EncodeError(problem)
        else:
            raise framing.EncodeError(f"frame type {inner_type} is not a packet frame")
        return self._sealer.seal_into(out, plaintext)

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
            if self.state is State.ESTABLISHED and not decoder.paused:
                # The clear mode's data path: packets need nothing more than the decoder did.
                for event in decoded:
                    if type(event) is not PacketReceived:
                        break
                else:
                    return [*events, *decoded]
            for event in decoded:
                if isinstance(event, ProtocolError):  # the decoder failed (and counted it)
                    self.move(Trigger.FAIL)
                    events.append(event)
                    self._queue_close(event)
                    break
                events.extend(self._handle(event))
                # Only the session's own failure stops here: a ProtocolError the decoder
                # found later in the same bytes is still ahead in ``decoded``, and must be
                # reported (and end the session) like any other.
                if self.state is State.FAILED:
                    break
            # The handshake's frames pause the decoder, so that what follows one is judged by
            # the rules it brought in (after the key proof: sealed frames only).
            if not decoder.paused:
                break
        return events

    def receive_packets(self, data: bytes | bytearray | memoryview, *, keep_tail: bool = False,
                        ) -> tuple[list[tuple[Any, Any]], list[SessionEvent], int]:
        """:meth:`receive` for the data path: ``(packets, events, kept)``.

        In the clear mode, after the handshake, the leading DATA/GSO_DATA frames come back as
        ``(packet, vnet_header)`` views into ``data`` (valid until ``data`` changes; see
        :meth:`tunlab.proto.framing.Decoder.feed_packets`) with the same checks; in a keyed
        session the packets of the leading SEALED frames come back the same way, as views of
        their plaintext (valid until the next call). Everything else goes through
        :meth:`receive` into ``events``, in order after the packets.

        With ``keep_tail``, an incomplete data frame at the end of ``data`` is not taken: its
        length comes back as ``kept`` and the caller must pass those last ``kept`` bytes again,
        followed by what it receives next (see
        :meth:`tunlab.proto.framing.Decoder.is_partial_frame`). ``kept`` is 0 otherwise.
        """
        if self.state is State.SEALED:
            return self._receive_sealed(data, keep_tail)
        if self.state is State.ESTABLISHED:
            cut = self.decoder.feed_packets(data)
            if cut is not None:
                packets, events, rest = cut
                after, kept = self._rest(rest, keep_tail)
                return packets, [*events, *after], kept
        return [], self.receive(data), 0

    def _rest(self, rest: memoryview, keep_tail: bool) -> tuple[list[SessionEvent], int]:
        """What the data path's cut left: ``([], len(rest))`` when the caller keeps it (an
        unfinished frame, with ``keep_tail``), else its events through :meth:`receive`."""
        if not len(rest):
            return [], 0
        if keep_tail and self.decoder.is_partial_frame(rest):
            return [], len(rest)
        return self.receive(rest), 0

    def _receive_sealed(self, data: bytes | bytearray | memoryview, keep_tail: bool,
                        ) -> tuple[list[tuple[Any, Any]], list[SessionEvent], int]:
        """:meth:`receive_packets` of a keyed session: each SEALED frame is opened straight
        from ``data`` (no copy of the ciphertext) into a buffer the session reuses; its packet
        is a view of that plaintext, valid until the next call."""
        cut = self.decoder.feed_frames(data, SecureFrameType.SEALED)
        if cut is None:
            return [], self.receive(data), 0
        payloads, rest = cut
        packets: list[tuple[Any, Any]] = []
        offset = 0
        stats = self.decoder.stats
        # Plaintexts go one after another into one reused buffer (no allocation, no zeroing
        # per frame); they are shorter than the ciphertexts, so len(data) bytes hold them all.
        if len(self._plain) < len(data):
            self._plain = bytearray(len(data))
        plain, used = memoryview(self._plain), 0
        for taken, payload in enumerate(payloads, 1):
            offset += framing.HEADER_SIZE + len(payload)
            stats.frames += 1
            event = self._open(ExtensionFrame(SecureFrameType.SEALED, payload), plain[used:])[0]
            if type(event) is PacketReceived:
                packets.append((event.packet, event.vnet_header))
                used += len(payload) - crypto.COUNTER_SIZE - crypto.TAG_SIZE
                continue
            # Anything else (a keepalive, a close, a failure): it, then every frame after it
            # the ordinary way, in order.
            events: list[SessionEvent] = [event]
            if self.decoder.failed is None:
                events += self.receive(memoryview(data)[offset:])
            else:  # counted as feed() counts them: every complete frame it was handed
                stats.frames += len(payloads) - taken
            return packets, events, 0
        return (packets, *self._rest(rest, keep_tail))

    def end_of_stream(self) -> list[SessionEvent]:
        """The peer closed its side: a ``truncated`` error if it stopped inside a frame."""
        if self.decoder.failed is not None or not self.decoder.buffered:
            return []
        return [self._fail(
            RejectReason.TRUNCATED,
            f"stream ended inside a frame ({self.decoder.buffered} bytes discarded)", notify=False)]

    def _handle(self, event: Event) -> list[SessionEvent]:
        state = self.state
        if state in (State.IDLE, State.HELLO_SENT):
            return self._before_hello(event)
        if state is State.PROVING:
            return self._before_proof(event)
        if state is State.SEALED:
            return self._open(event)
        if isinstance(event, HelloReceived):
            return [self._fail(RejectReason.DUPLICATE_HELLO, "peer sent a second HELLO")]
        if isinstance(event, ExtensionFrame):
            return [self._reject(RejectReason.UNEXPECTED_EXTENSION,
                                 f"{_describe(event)} in an unauthenticated session")]
        return [event]

    def _before_hello(self, event: Event) -> list[SessionEvent]:
        if isinstance(event, CloseReceived):
            return [self._peer_closed(event)]
        if not isinstance(event, HelloReceived):
            return [self._fail(
                RejectReason.NO_HELLO,
                f"{_describe(event)} before the peer's HELLO")]
        hello = event.hello
        if hello.role != self.peer_role:
            return [self._fail(RejectReason.BAD_ROLE, f"peer says it is a {hello.role!r}")]
        self.initiate()
        self.peer = hello
        self.features = self.offered & hello.features
        peer_has_key = PSK_FEATURE in hello.features
        if self.psk is None:
            if peer_has_key:
                return [self._fail(
                    RejectReason.AUTH_FAILED,
                    f"the {self.peer_role} requires a pre-shared key and this side has none: "
                    "start both ends with --psk-file")]
            self._establish(Trigger.CLEAR_HELLO)
            return [Established(hello, self.features, authenticated=False)]
        if not peer_has_key:
            return [self._fail(
                RejectReason.AUTH_FAILED,
                f"the {self.peer_role} has no pre-shared key; refusing an unauthenticated "
                "tunnel: start both ends with --psk-file")]
        peer_nonce = self._peer_nonce(hello)
        if peer_nonce is None:
            return [self._fail(
                RejectReason.AUTH_FAILED,
                f"the {self.peer_role}'s HELLO carries no valid {crypto.NONCE_INFO_KEY}")]
        if peer_nonce == self._nonce:
            return [self._fail(
                RejectReason.AUTH_FAILED,
                "the peer echoed our own nonce (a reflection)")]
        problem = self._choose_cipher(hello)
        if problem:
            return [self._fail(RejectReason.AUTH_FAILED, problem)]
        if self.role == "client":
            client_hello, server_hello = self._hello_payload, event.raw
            client_nonce, server_nonce = self._nonce, peer_nonce
        else:
            client_hello, server_hello = event.raw, self._hello_payload
            client_nonce, server_nonce = peer_nonce, self._nonce
        self._transcript = crypto.transcript_hash(client_hello, server_hello)
        self._keys = crypto.derive_keys(self.psk, client_nonce, server_nonce, self._transcript)
        self.move(Trigger.KEYED_HELLO)
        self.decoder.pause_after = frozenset({SecureFrameType.AUTH})
        if self.role == "client":
            self._send_proof()
        return []

    def _choose_cipher(self, hello: Hello) -> str | None:
        """Set :attr:`cipher` to the server's pick from both offers; else say what is wrong."""
        theirs = crypto.offered_ciphers(hello.info)
        if theirs is None:
            return f"the {self.peer_role}'s HELLO carries a malformed cipher list"
        mine = crypto.offered_ciphers(self.info)
        assert mine is not None
        client, server = (mine, theirs) if self.role == "client" else (theirs, mine)
        self.cipher = crypto.choose_cipher(client, server)
        if self.cipher is None:
            return (f"no cipher in common: the client offers {[c.value for c in client]}, "
                    f"the server {[c.value for c in server]}")
        return None

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
            return [self._fail(
                RejectReason.AUTH_FAILED,
                f"{_describe(event)} before the {self.peer_role} proved the pre-shared key")]
        if not crypto.auth_tag_valid(self._keys, self.peer_role, self._transcript,
                                     event.payload):
            return [self._fail(
                RejectReason.AUTH_FAILED,
                f"the {self.peer_role} could not prove the pre-shared key: the keys on the two "
                "ends differ")]
        if self.role == "server":
            self._send_proof()
        assert self.cipher is not None
        self._sealer = crypto.Sealer(self._keys.sending(self.role), self.cipher)
        self._opener = crypto.Opener(self._keys.receiving(self.role), self.cipher)
        # From the next byte on, a frame in the clear ends the session from its header alone:
        # its payload (a HELLO's JSON, say) is never parsed.
        self.decoder.only_accept(SecureFrameType.SEALED,
            RejectReason.UNSEALED,
            "a frame in the clear in an authenticated session, where every frame must be sealed")
        self._establish(Trigger.PROOF)
        return [Established(self.peer, self.features, authenticated=True)]

    def _establish(self, trigger: Trigger) -> None:
        self.move(trigger)
        self.decoder.pause_after = frozenset()
        self.decoder.accept_gso = framing.VNET_FEATURE in self.features

    def _open(self, event: Event, out: memoryview | None = None) -> list[SessionEvent]:
        assert self._opener is not None
        if not (isinstance(event, ExtensionFrame) and event.frame_type == SecureFrameType.SEALED):
            return [self._fail(
                RejectReason.UNSEALED,
                f"{_describe(event)} in an authenticated session, where every frame must be "
                "sealed")]
        try:
            inner_type, inner = self._opener.open(event.payload, out)
        except crypto.SealError as exc:
            return [self._fail(RejectReason(exc.reason), exc.detail)]
        if inner_type not in _SEALABLE:
            return [self._fail(
                RejectReason.BAD_INNER,
                f"sealed frame carries frame type {inner_type}")]
        inner_event = self.decoder.frame_event(inner_type, inner)
        return [inner_event]

    # -- failures -----------------------------------------------------------------------------
    def _peer_closed(self, event: CloseReceived) -> ProtocolError:
        match = _REASON.match(event.reason)
        if match and match.group(1) == "auth_failed":
            # The peer's words end up in our log: one line, printable, bounded.
            words = "".join(c if c.isprintable() else "?" for c in match.group(2)[:300])
            return self._fail(RejectReason.AUTH_FAILED, f"the {self.peer_role} refused us: {words}",
                              notify=False)
        return self._fail(RejectReason.PEER_CLOSED, f"the {self.peer_role} closed the handshake: "
                          f"{event.reason[:200]!r}", notify=False)

    def _reject(self, reason: RejectReason, detail: str) -> FrameRejected:
        self.decoder.stats.rejected[reason] += 1
        return FrameRejected(reason, detail)

    def _fail(self, reason: RejectReason, detail: str, notify: bool = True) -> ProtocolError:
        error = ProtocolError(reason, detail)
        self.move(Trigger.FAIL)
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
