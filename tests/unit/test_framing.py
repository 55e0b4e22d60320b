"""The wire codec: round trips, every rejection rule, and properties over arbitrary byte streams."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protohelp import cut_at, ipv4, ipv6

from tunlab.packet.validate import ip_packet_problem
from tunlab.proto import framing
from tunlab.proto.framing import (
    HEADER_SIZE,
    CloseReceived,
    Decoder,
    EncodeError,
    ExtensionFrame,
    FrameRejected,
    FrameType,
    Hello,
    HelloReceived,
    KeepaliveReceived,
    PacketReceived,
    ProtocolError,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])






def split_feed(decoder: Decoder, data: bytes, cuts: list[int]) -> list[object]:
    events: list[object] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:], strict=False):
        events += decoder.feed(data[start:end])
        assert decoder.buffered < HEADER_SIZE + decoder.max_payload
    return events


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("packet", [ipv4(), ipv6(), ipv4(b"z" * 1400)])
def test_data_frame_round_trip(packet):
    frame = framing.encode_packet(packet)
    assert frame[:2] == b"TL" and frame[2] == framing.VERSION and frame[3] == FrameType.DATA
    assert struct.unpack("!I", frame[4:8])[0] == len(packet)
    assert Decoder().feed(frame) == [PacketReceived(packet)]


def test_gso_frame_round_trip_keeps_the_virtio_header():
    header = bytes(range(10))
    events = Decoder().feed(framing.encode_gso_packet(header, ipv4()))
    assert events == [PacketReceived(ipv4(), header)]


def test_hello_round_trip_keeps_the_raw_payload():
    frame = framing.encode_hello(Hello("client", frozenset({"psk", "gso"}), {"mtu": 1400}))
    (event,) = Decoder().feed(frame)
    assert isinstance(event, HelloReceived)
    assert event.hello == Hello("client", frozenset({"psk", "gso"}), {"mtu": 1400})
    assert event.raw == frame[HEADER_SIZE:]


def test_keepalive_close_and_extension_frames():
    data = (framing.encode_keepalive() + framing.encode_close("bye")
            + framing.encode_frame(0x10, b"ext"))
    assert Decoder().feed(data) == [KeepaliveReceived(), CloseReceived("bye"),
                                    ExtensionFrame(0x10, b"ext")]


# -- rejection rules --------------------------------------------------------------------------
@pytest.mark.parametrize("data, reason", [
    (b"GET / HTTP/1.1\r\n\r\n", "bad_magic"),
    (struct.pack("!2sBBI", b"TL", 9, 2, 20), "bad_version"),
    (struct.pack("!2sBBI", b"TL", 1, 2, 0xFFFFFFFF), "too_large"),
    (struct.pack("!2sBBI", b"TL", 1, 2, framing.DEFAULT_MAX_PAYLOAD + 1), "too_large"),
])
def test_fatal_headers_stop_the_decoder(data, reason):
    decoder = Decoder()
    events = decoder.feed(data)
    assert len(events) == 1 and isinstance(events[0], ProtocolError)
    assert events[0].reason == reason
    assert decoder.stats.rejected[reason] == 1
    assert decoder.buffered == 0
    # Nothing more is accepted, not even a valid frame.
    assert decoder.feed(framing.encode_packet(ipv4())) == []


@pytest.mark.parametrize("payload, detail", [
    (b"", "empty"),
    (b"\x00" * 40, "neither 4 nor 6"),
    (ipv4()[:-1], "claims"),
    (ipv4() + b"!", "claims"),
    (bytes([0x41]) + ipv4()[1:], "header length"),
    (ipv6()[:30], "shorter than the 40-byte"),
])
def test_non_ip_data_is_rejected_and_the_stream_goes_on(payload, detail):
    decoder = Decoder()
    events = decoder.feed(framing.encode_frame(FrameType.DATA, payload)
                          + framing.encode_packet(ipv4()))
    assert isinstance(events[0], FrameRejected) and events[0].reason == "not_ip"
    assert detail in events[0].detail
    assert events[1] == PacketReceived(ipv4())
    assert decoder.stats.rejected["not_ip"] == 1 and decoder.stats.packets == 1


def test_short_gso_frame_unknown_type_and_bad_hellos_are_rejected():
    decoder = Decoder()
    events = decoder.feed(framing.encode_frame(FrameType.GSO_DATA, b"\0" * 10)
                          + framing.encode_frame(0x7F, b"?")
                          + framing.encode_frame(FrameType.HELLO, b"{not json")
                          + framing.encode_frame(FrameType.HELLO, b'{"proto":"other"}')
                          + framing.encode_frame(FrameType.HELLO, b" " * (framing.MAX_HELLO + 1)))
    assert [e.reason for e in events] == ["not_ip", "unknown_type", "bad_hello", "bad_hello",
                                          "bad_hello"]


NESTED_LISTS = b"[" * 1000 + b"]" * 1000  # 2 KB: the hostile HELLO of issue 14


@pytest.mark.parametrize("payload", [
    NESTED_LISTS,
    b'{"proto":"tunlab","info":' * 120 + b"1" + b"}" * 120,
    b'{"proto":"tunlab","role":"client","info":{"a":[[[[[1]]]]]}}',
])
def test_a_deeply_nested_hello_is_a_clean_rejection(payload):
    decoder = Decoder()
    events = decoder.feed(framing.encode_frame(FrameType.HELLO, payload)
                          + framing.encode_packet(ipv4()))
    assert isinstance(events[0], FrameRejected) and events[0].reason == "bad_hello"
    assert "deeper" in events[0].detail
    assert events[1] == PacketReceived(ipv4()), "the stream goes on"


def test_brackets_inside_strings_do_not_count_as_nesting():
    hello = Hello("client", frozenset({'[[[[[[["\\'}), {"note": "{{{{{{[[[[[[ \" ]]"})
    (event,) = Decoder().feed(framing.encode_hello(hello))
    assert isinstance(event, HelloReceived) and event.hello == hello


def test_a_gso_frame_is_refused_unless_super_packets_were_negotiated():
    frame = framing.encode_gso_packet(bytes(10), ipv4())
    decoder = Decoder(accept_gso=False)
    (event,) = decoder.feed(frame)
    assert isinstance(event, FrameRejected) and event.reason == "gso_not_negotiated"
    cut = decoder.feed_packets(frame + framing.encode_packet(ipv4()))
    assert cut is not None and cut[0] == [], "the data path leaves it to feed()"
    assert decoder.feed(cut[2]) == [event, PacketReceived(ipv4())]
    decoder.accept_gso = True
    assert decoder.feed(frame) == [PacketReceived(ipv4(), bytes(10))]


def test_only_accept_refuses_other_frame_types_from_the_header_alone(monkeypatch):
    def never(payload: bytes) -> object:
        raise AssertionError("the payload of a refused frame was parsed")

    monkeypatch.setattr(framing, "_parse_hello", never)
    decoder = Decoder()
    decoder.only_accept(0x11, "unsealed", "must be sealed")
    events = decoder.feed(framing.encode_frame(0x11, b"x" * 30)
                          + framing.encode_frame(FrameType.HELLO, NESTED_LISTS))
    assert events[0] == ExtensionFrame(0x11, b"x" * 30)
    assert isinstance(events[1], ProtocolError) and events[1].reason == "unsealed"
    assert "frame type 1" in events[1].detail and decoder.failed == events[1]


@pytest.mark.parametrize("reason", [
    "bye\nserver: client 10.9.0.9 connected",
    "\x1b[2J\x1b[31mERROR\x1b[0m fake",
    "x" * 5000,
    "\r\x00\x07\u2028\u202e",
])
def test_a_close_reason_is_printable_and_bounded(reason):
    (event,) = Decoder().feed(framing.encode_frame(FrameType.CLOSE, reason.encode()))
    assert isinstance(event, CloseReceived)
    assert event.reason.isprintable()
    assert len(event.reason) <= framing.MAX_CLOSE_REASON + 3


def test_encoders_refuse_what_must_not_be_sent():
    with pytest.raises(EncodeError):
        framing.encode_packet(b"\x00" * 30)
    with pytest.raises(EncodeError):
        framing.encode_frame(FrameType.DATA, b"\0" * (framing.DEFAULT_MAX_PAYLOAD + 1))
    with pytest.raises(EncodeError):
        framing.encode_gso_packet(b"short", ipv4())


def test_a_frame_split_into_single_bytes_decodes_once():
    frame = framing.encode_packet(ipv4(b"q" * 100))
    decoder = Decoder()
    events = []
    for i in range(len(frame)):
        events += decoder.feed(frame[i:i + 1])
        assert decoder.buffered == (i + 1) % len(frame)
    assert events == [PacketReceived(ipv4(b"q" * 100))]


# -- properties -------------------------------------------------------------------------------
EVENT_TYPES = (HelloReceived, PacketReceived, KeepaliveReceived, CloseReceived, ExtensionFrame,
               FrameRejected, ProtocolError)


def _check_events(events: list[object]) -> None:
    for i, event in enumerate(events):
        assert isinstance(event, EVENT_TYPES)
        if isinstance(event, ProtocolError):
            assert i == len(events) - 1, "nothing may follow a protocol error"
        if isinstance(event, PacketReceived):
            assert ip_packet_problem(event.packet) is None


@SETTINGS
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=12),
       max_payload=st.sampled_from([64, 1500, framing.DEFAULT_MAX_PAYLOAD]))
def test_any_byte_stream_split_anywhere_gives_events_or_a_clean_error(data, cuts, max_payload):
    decoder = Decoder(max_payload)
    _check_events(split_feed(decoder, data, cuts))


frames = st.one_of(
    st.builds(framing.encode_packet, st.sampled_from([ipv4(), ipv6(), ipv4(b"a" * 300)])),
    st.binary(max_size=200).map(lambda p: framing.encode_frame(FrameType.DATA, p)),
    st.tuples(st.integers(0, 255), st.binary(max_size=80)).map(
        lambda t: framing.encode_frame(*t)),
    st.binary(max_size=40),  # raw garbage between frames
)


@SETTINGS
@given(parts=st.lists(frames, max_size=12), cuts=st.lists(st.integers(0, 5000), max_size=15))
def test_how_the_stream_is_split_never_changes_the_events(parts, cuts):
    data = b"".join(parts)
    whole = Decoder().feed(data)
    pieces = split_feed(Decoder(), data, cuts)
    _check_events(pieces)
    assert pieces == whole


@SETTINGS
@given(length=st.integers(0, 2**32 - 1), frame_type=st.integers(0, 255),
       body=st.binary(max_size=100))
def test_headers_with_any_length_keep_buffering_bounded(length, frame_type, body):
    max_payload = 1024
    decoder = Decoder(max_payload)
    events = decoder.feed(struct.pack("!2sBBI", b"TL", 1, frame_type, length) + body)
    if length > max_payload:
        assert [type(e) for e in events] == [ProtocolError] and decoder.buffered == 0
    assert decoder.buffered < HEADER_SIZE + max_payload


_FRAME_PIECES = st.one_of(
    st.builds(lambda n: framing.encode_packet(ipv4(b"d" * n)), st.integers(0, 300)),
    st.builds(lambda n: framing.encode_gso_packet(bytes(10), ipv4(b"g" * n)),
              st.integers(0, 300)),
    st.builds(lambda junk: framing.encode_frame(FrameType.DATA, junk), st.binary(max_size=40)),
    st.just(framing.encode_frame(FrameType.GSO_DATA, b"\0" * 10)),
    st.just(framing.encode_keepalive()),
    st.binary(max_size=12),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FRAME_PIECES, max_size=12), st.integers(1, 64))
def test_the_data_path_cut_agrees_with_feed(pieces, split):
    """feed_packets() + feed(rest) must give the same packets, rejections and statistics as
    feed() alone, for any stream, also cut at any point."""
    stream = b"".join(pieces)
    cut = min(split, len(stream))
    reference, fast = Decoder(), Decoder()
    expected: list = []
    for chunk in (stream[:cut], stream[cut:]):
        expected += reference.feed(chunk)
    got: list = []
    for chunk in (stream[:cut], stream[cut:]):
        result = fast.feed_packets(chunk)
        if result is None:
            got += fast.feed(chunk)
            continue
        packets, rejections, rest = result
        got += [PacketReceived(bytes(p), h and bytes(h)) for p, h in packets]
        got += rejections
        got += fast.feed(rest)

    def key(events):
        return sorted(repr(e) for e in events)

    assert key(got) == key(expected)
    assert [e for e in got if isinstance(e, PacketReceived)] == \
        [e for e in expected if isinstance(e, PacketReceived)]
    assert fast.stats == reference.stats
    assert fast.buffered == reference.buffered
    assert (fast.failed is None) == (reference.failed is None)




@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FRAME_PIECES, max_size=12), st.lists(st.integers(0, 400), max_size=8),
       st.booleans())
def test_keeping_an_unfinished_frame_agrees_with_feed(pieces, cuts, accept_gso):
    """The fast pump's receive loop: feed_packets() on (kept bytes + new bytes); an unfinished
    data frame at the end is kept by the caller (is_partial_frame), the rest goes to feed().
    Whatever the stream and however recv() cut it, the packets, rejections, statistics and
    failure are those of feed() alone, and what is kept is never more than one frame."""
    chunks = cut_at(b"".join(pieces), cuts)
    reference, fast = Decoder(accept_gso=accept_gso), Decoder(accept_gso=accept_gso)
    expected: list = []
    for chunk in chunks:
        expected += reference.feed(chunk)
    got: list = []
    kept = b""
    for chunk in chunks:
        data = kept + chunk
        kept = b""
        result = fast.feed_packets(data)
        if result is None:
            got += fast.feed(data)
            continue
        packets, rejections, rest = result
        got += [PacketReceived(bytes(p), h and bytes(h)) for p, h in packets]
        got += rejections
        if len(rest) and fast.is_partial_frame(rest):
            kept = bytes(rest)
            assert len(kept) < HEADER_SIZE + fast.max_payload
        else:
            got += fast.feed(rest)
    got += fast.feed(kept)  # the stream ended: what was kept goes to the decoder after all
    assert [e for e in got if isinstance(e, PacketReceived)] == \
        [e for e in expected if isinstance(e, PacketReceived)]
    assert sorted(map(repr, got)) == sorted(map(repr, expected))
    assert fast.stats == reference.stats
    assert fast.buffered == reference.buffered
    assert (fast.failed is None) == (reference.failed is None)


def test_a_partial_frame_is_only_kept_when_feed_packets_would_take_its_header():
    decoder = Decoder(max_payload=1024)
    frame = framing.encode_packet(ipv4(b"x" * 40))
    assert decoder.is_partial_frame(frame[:3])          # not even a header yet
    assert decoder.is_partial_frame(frame[:-1])         # one byte missing
    assert not decoder.is_partial_frame(frame)          # complete: not partial
    assert not decoder.is_partial_frame(b"XX" + frame[2:-1])          # bad magic: feed() says so
    assert not decoder.is_partial_frame(framing.encode_close("bye")[:-1])  # not a data frame
    big = struct.pack("!2sBBI", b"TL", 1, FrameType.DATA, 4096)
    assert not decoder.is_partial_frame(big)            # over max_payload: feed() rejects it
    gso = Decoder(accept_gso=False)
    assert not gso.is_partial_frame(framing.encode_gso_packet(bytes(10), ipv4(b"g"))[:-1])
    decoder.feed(frame[:5])                             # something buffered in the decoder
    assert not decoder.is_partial_frame(frame[:3])
