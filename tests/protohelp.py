"""What the protocol tests share: minimal packets, a stream cut as recv() might cut it, two
sessions talking to each other, and a hostile peer's frames (hypothesis strategies)."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from tunlab.proto import framing
from tunlab.proto.framing import HEADER_SIZE, Hello
from tunlab.proto.session import Session


def ipv4(payload: bytes = b"x" * 8, proto: int = 1) -> bytes:
    """A minimal IPv4 packet whose header length field is right (checksum left zero)."""
    total = 20 + len(payload)
    return bytes([0x45, 0, total >> 8, total & 0xFF, 0, 0, 0, 0, 64, proto, 0, 0,
                  10, 9, 0, 1, 10, 9, 0, 2]) + payload


def ipv6(payload: bytes = b"y" * 8) -> bytes:
    return bytes([0x60, 0, 0, 0]) + struct.pack("!H", len(payload)) + bytes([59, 64]) + \
        bytes(32) + payload


def cut_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    """``stream`` in pieces, as recv() might return it: cut at each offset in ``cuts``."""
    bounds = sorted({0, len(stream), *(min(c, len(stream)) for c in cuts)})
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


KEY = b"correct horse battery staple 42"


def pump(client: Session, server: Session, rounds: int = 6) -> tuple[list, list]:
    """Carry bytes both ways until nobody has anything to say; return each side's events."""
    client_events: list = []
    server_events: list = []
    for _ in range(rounds):
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        if to_server:
            server_events += server.receive(to_server)
        if to_client:
            client_events += client.receive(to_client)
    return client_events, server_events


def pair(client_psk: bytes | None = KEY, server_psk: bytes | None = KEY,
         **kwargs) -> tuple[Session, Session, list, list]:
    client = Session("client", psk=client_psk, info={"mtu": 1400}, **kwargs)
    server = Session("server", psk=server_psk, info={"mtu": 1400}, **kwargs)
    client.initiate()
    server.initiate()
    return client, server, *pump(client, server)


_nested = st.integers(1, 1800).map(lambda n: b"[" * n + b"]" * n)


_payloads = st.one_of(
    st.binary(max_size=300), _nested, st.binary(max_size=200).map(ipv4),
    st.binary(max_size=200).map(ipv6),
    st.builds(lambda f: framing.encode_hello(Hello("client", frozenset(f)))[HEADER_SIZE:],
              st.lists(st.sampled_from(["psk", "vnet_hdr", "x"]), max_size=3)),
    st.builds(lambda header, packet: header + packet, st.binary(min_size=10, max_size=10),
              st.binary(max_size=100).map(ipv4)),
    st.text(max_size=300).map(str.encode))


_types = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 0x10, 0x11]), st.integers(0, 255))


# One step of a hostile peer: a frame in the clear, or (in a keyed session) one sealed with the
# right key, so that it gets past the AEAD and into the inner checks.
hostile_steps = st.lists(st.tuples(st.booleans(), _types, _payloads), max_size=8)
