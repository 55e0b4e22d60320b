"""The tunnel session as a sans-IO state machine: hello exchange, feature negotiation, data.

Threads and sockets live in :mod:`tunlab.tunnel`; this module only turns received bytes into
events and packets into bytes to send, so every rule here is testable without a network.

Both sides send a HELLO first. A side forwards packets only after it has the peer's HELLO; the
features used are those both sides offered. Anything before the peer's HELLO that is not a
HELLO is a protocol error.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import framing
from .framing import Event, Hello, HelloReceived, ProtocolError


@dataclass(frozen=True)
class Established:
    """The handshake finished: packets may flow, using ``features``."""

    peer: Hello
    features: frozenset[str]


SessionEvent = Event | Established


class Session:
    """One side of one tunnel connection, before and after the handshake."""

    def __init__(self, role: str, *, features: frozenset[str] = frozenset(),
                 info: dict[str, object] | None = None, psk: bytes | None = None,
                 max_payload: int = framing.DEFAULT_MAX_PAYLOAD) -> None:
        if role not in ("client", "server"):
            raise ValueError("role is 'client' or 'server'")
        self.role = role
        self.psk = psk
        self.offered = frozenset(features)
        self.info = dict(info or {})
        self.decoder = framing.Decoder(max_payload)
        self.peer: Hello | None = None
        self.features: frozenset[str] = frozenset()
        self._outgoing = bytearray()
        self._started = False

    @property
    def established(self) -> bool:
        return self.peer is not None

    def initiate(self) -> None:
        """Queue our HELLO. Call once, before anything else is sent."""
        if not self._started:
            self._started = True
            self._outgoing += framing.encode_hello(Hello(self.role, self.offered, self.info))

    def data_to_send(self) -> bytes:
        """Bytes the session wants on the wire now (hello, handshake replies)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive(self, data: bytes | bytearray | memoryview) -> list[SessionEvent]:
        """Feed received bytes; return what happened. Packets only after the handshake."""
        events: list[SessionEvent] = []
        for event in self.decoder.feed(data):
            if self.peer is None:
                events.extend(self._before_handshake(event))
                if self.decoder.failed is not None:
                    break
            else:
                if isinstance(event, HelloReceived):
                    events.append(self._fail("duplicate_hello", "peer sent a second HELLO"))
                    break
                events.append(event)
        return events

    def _before_handshake(self, event: Event) -> list[SessionEvent]:
        if isinstance(event, HelloReceived):
            expected = "server" if self.role == "client" else "client"
            if event.hello.role != expected:
                return [self._fail("bad_role", f"peer says it is a {event.hello.role!r}")]
            self.initiate()
            self.peer = event.hello
            self.features = self.offered & event.hello.features
            return [Established(event.hello, self.features)]
        if isinstance(event, ProtocolError):
            return [event]
        return [self._fail("no_hello", f"{type(event).__name__} before the peer's HELLO")]

    def _fail(self, reason: str, detail: str) -> ProtocolError:
        error = ProtocolError(reason, detail)
        self.decoder.failed = error
        self.decoder.stats.rejected[reason] += 1
        return error

    def encode_packet(self, packet: bytes | bytearray | memoryview,
                      vnet_header: bytes | None = None) -> bytes:
        """The bytes that carry one IP packet (with its virtio-net header, if any) to the peer."""
        if self.peer is None:
            raise RuntimeError("handshake not finished")
        if vnet_header is not None:
            return framing.encode_gso_packet(vnet_header, packet)
        return framing.encode_packet(packet)
