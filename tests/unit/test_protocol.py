"""The session state machine, with and without a pre-shared key, driven byte by byte (no network).

The key properties: nothing is ever reported as a packet before the peer proved the key, a
keyed side never talks to an unkeyed one, and after the handshake any change to the byte
stream ends the session instead of delivering something else.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protohelp import KEY, hostile_steps, ipv4, ipv6, pair, pump

from tunlab.proto import crypto, framing
from tunlab.proto.framing import (
    HEADER_SIZE,
    FrameRejected,
    FrameType,
    Hello,
    PacketReceived,
    ProtocolError,
    RejectReason,
)
from tunlab.proto.session import (
    TRANSITIONS,
    Established,
    Session,
    SessionStateError,
    State,
    Trigger,
)

OTHER = b"another key that is long enough"
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])






def errors(events: list) -> list[tuple[str, str]]:
    return [(e.reason, e.detail) for e in events if isinstance(e, ProtocolError)]


def packets(events: list) -> list[PacketReceived]:
    return [e for e in events if isinstance(e, PacketReceived)]


# -- handshakes -----------------------------------------------------------------------------
def test_unauthenticated_handshake_and_data_in_the_clear():
    client, server, c_events, s_events = pair(None, None)
    assert [type(e) for e in c_events] == [Established] == [type(e) for e in s_events]
    assert not c_events[0].authenticated and not client.authenticated and not client.sealed
    frame = client.encode_packet(ipv4(b"hello in clear"))
    assert b"hello in clear" in frame  # the teaching mode hides nothing
    assert server.receive(frame) == [PacketReceived(ipv4(b"hello in clear"))]


def test_psk_handshake_authenticates_both_ends_and_seals_data():
    client, server, c_events, s_events = pair()
    assert [type(e) for e in c_events] == [Established] == [type(e) for e in s_events]
    assert c_events[0].authenticated and s_events[0].authenticated
    assert "psk" in c_events[0].features and client.sealed and server.sealed
    for packet in (ipv4(b"secret payload"), ipv6(b"another secret")):
        frame = client.encode_packet(packet)
        assert b"secret" not in frame
        assert server.receive(frame) == [PacketReceived(packet)]
        back = server.encode_packet(packet)
        assert client.receive(back) == [PacketReceived(packet)]


def test_sealed_gso_frames_keep_the_virtio_header():
    client, server, *_ = pair(features=frozenset({framing.VNET_FEATURE}))
    header = bytes(range(10))
    frame = client.encode_packet(ipv4(b"s" * 2000), vnet_header=header)
    assert server.receive(frame) == [PacketReceived(ipv4(b"s" * 2000), header)]
    with pytest.raises(framing.EncodeError):
        client.encode_packet(ipv4(), vnet_header=b"123")


def test_sealed_keepalive_and_close():
    client, server, *_ = pair()
    events = server.receive(client.encode_keepalive() + client.encode_close("bye"))
    assert [type(e).__name__ for e in events] == ["KeepaliveReceived", "CloseReceived"]
    assert events[1].reason == "bye"


def test_each_connection_gets_fresh_keys():
    first, *_ = pair()
    second, *_ = pair()
    packet = ipv4(b"same packet")
    assert first.encode_packet(packet) != second.encode_packet(packet)
    assert first.info["psk_nonce"] != second.info["psk_nonce"]


@pytest.mark.parametrize("client_psk, server_psk, client_says, server_says", [
    (KEY, OTHER, "keys on the two ends differ", "keys on the two ends differ"),
    (None, KEY, "requires a pre-shared key and this side has none", "has no pre-shared key"),
    (KEY, None, "has no pre-shared key", "requires a pre-shared key and this side has none"),
])
def test_key_mismatches_fail_on_both_sides(client_psk, server_psk, client_says, server_says):
    client, server, c_events, s_events = pair(client_psk, server_psk)
    assert not client.established and not server.established
    assert [r for r, _ in errors(c_events)] == ["auth_failed"]
    assert [r for r, _ in errors(s_events)] == ["auth_failed"]
    assert client_says in errors(c_events)[0][1]
    assert server_says in errors(s_events)[0][1]
    assert not any(isinstance(e, Established) for e in c_events + s_events)
    with pytest.raises(RuntimeError):
        client.encode_packet(ipv4())


def test_server_reveals_no_key_proof_to_a_client_that_has_not_proved_the_key():
    client = Session("client", psk=OTHER)
    server = Session("server", psk=KEY)
    client.initiate()
    server.initiate()
    server_hello = server.data_to_send()
    server.receive(client.data_to_send())  # the client's hello: no proof yet
    assert server.data_to_send() == b""
    client.receive(server_hello)
    server.receive(client.data_to_send())  # a wrong proof
    out = server.data_to_send()
    assert crypto.SecureFrameType.AUTH not in _frame_types(out)
    assert _frame_types(out) == [FrameType.CLOSE]


def _frame_types(data: bytes) -> list[int]:
    types, offset = [], 0
    while offset < len(data):
        types.append(data[offset + 3])
        offset += HEADER_SIZE + int.from_bytes(data[offset + 4:offset + 8], "big")
    return types


def test_data_before_the_key_proof_is_never_delivered():
    client = Session("client", psk=KEY)
    server = Session("server", psk=KEY)
    client.initiate()
    server.initiate()
    events = server.receive(client.data_to_send() + framing.encode_packet(ipv4()))
    assert packets(events) == []
    assert errors(events)[0][0] == "auth_failed" and "DATA frame before" in errors(events)[0][1]


def test_a_downgrade_by_stripping_the_psk_feature_is_refused():
    client = Session("client", psk=KEY)
    server = Session("server", psk=KEY)
    client.initiate()
    server.initiate()
    server.receive(client.data_to_send())
    forged = framing.encode_hello(Hello("server", frozenset(), {"mtu": 1400}))
    events = client.receive(forged)
    assert errors(events)[0][0] == "auth_failed"
    assert not client.established


def test_a_tampered_hello_breaks_the_key_proof():
    client = Session("client", psk=KEY, info={"mtu": 1400})
    server = Session("server", psk=KEY, info={"mtu": 1400})
    client.initiate()
    server.initiate()
    hello = client.data_to_send()
    tampered = hello.replace(b'"mtu":1400', b'"mtu":9000')
    assert tampered != hello
    server.receive(tampered)
    client.receive(server.data_to_send())
    events = server.receive(client.data_to_send())
    assert errors(events)[0][0] == "auth_failed" and not server.established


def test_a_recorded_handshake_cannot_be_replayed_to_a_new_server():
    recorded = bytearray()
    client2 = Session("client", psk=KEY)
    server2 = Session("server", psk=KEY)
    client2.initiate()
    server2.initiate()
    recorded += client2.data_to_send()
    server2.receive(bytes(recorded))
    client2.receive(server2.data_to_send())
    recorded += client2.data_to_send()  # hello + valid AUTH for server2's nonce
    fresh = Session("server", psk=KEY)
    fresh.initiate()
    events = fresh.receive(bytes(recorded))
    assert errors(events)[0][0] == "auth_failed"
    assert not fresh.established


@pytest.mark.parametrize("attack, reason", [
    ("replay", "replayed"), ("flip", "forged"), ("drop", "reordered"), ("plain", "unsealed"),
    ("truncate_tag", "forged"), ("swap_direction", "forged"),
])
def test_attacks_on_sealed_frames_end_the_session(attack, reason):
    client, server, *_ = pair()
    first = client.encode_packet(ipv4(b"one"))
    second = client.encode_packet(ipv4(b"two"))
    assert server.receive(first) == [PacketReceived(ipv4(b"one"))]
    if attack == "replay":
        data = first
    elif attack == "flip":
        data = second[:-5] + bytes([second[-5] ^ 1]) + second[-4:]
    elif attack == "drop":
        data = client.encode_packet(ipv4(b"three"))
    elif attack == "plain":
        data = framing.encode_packet(ipv4(b"injected"))
    elif attack == "truncate_tag":
        body = second[HEADER_SIZE:-1]
        data = framing.encode_frame(crypto.SecureFrameType.SEALED, body)
    else:
        data = server.encode_packet(ipv4(b"two"))  # server->client key, sent back to server
    events = server.receive(data)
    assert packets(events) == []
    assert errors(events)[0][0] == reason
    assert server.receive(second) == []  # the session is over, even for a good frame
    assert server.error is not None and server.error.reason == reason
    assert server.decoder.stats.rejected[reason] == 1


def test_sealed_non_ip_payload_is_rejected_but_the_session_goes_on():
    client, server, *_ = pair()
    sealer = client._sealer
    assert sealer is not None
    events = server.receive(sealer.seal(FrameType.DATA, b"\x00not ip at all")
                            + client.encode_packet(ipv4(b"after")))
    assert isinstance(events[0], FrameRejected) and events[0].reason == "not_ip"
    assert events[1] == PacketReceived(ipv4(b"after"))


def test_sealed_hello_or_unknown_inner_type_is_fatal():
    client, server, *_ = pair()
    assert client._sealer is not None
    events = server.receive(client._sealer.seal(FrameType.HELLO, b"{}"))
    assert errors(events)[0][0] == "bad_inner"


NESTED_HELLO = framing.encode_frame(FrameType.HELLO, b"[" * 1000 + b"]" * 1000)


@pytest.mark.parametrize("psk", [None, KEY], ids=["clear", "psk"])
@pytest.mark.parametrize("role", ["client", "server"])
def test_a_deeply_nested_hello_ends_the_handshake_cleanly(psk, role):
    session = Session(role, psk=psk)
    session.initiate()
    events = session.receive(NESTED_HELLO)
    assert errors(events)[0][0] == "no_hello" and "bad_hello" in errors(events)[0][1]
    assert session.data_to_send(), "the peer is told why"


@pytest.mark.parametrize("injected", [
    NESTED_HELLO, framing.encode_hello(Hello("client")), framing.encode_packet(ipv4()),
    framing.encode_keepalive(), framing.encode_frame(0x7F, b"?"),
])
def test_a_frame_in_the_clear_ends_a_keyed_session_before_its_payload_is_parsed(
        injected, monkeypatch):
    client, server, *_ = pair()
    assert server.receive(client.encode_packet(ipv4(b"before"))) == [
        PacketReceived(ipv4(b"before"))]
    monkeypatch.setattr(framing, "_parse_hello", lambda payload: pytest.fail("parsed"))
    events = server.receive(injected + client.encode_packet(ipv4(b"after")))
    assert errors(events)[0][0] == "unsealed" and packets(events) == []
    assert server.error is not None
    assert server.data_to_send(), "a sealed CLOSE tells the peer why"


@pytest.mark.parametrize("receiver", ["client", "server"])
def test_a_clear_frame_in_the_same_segment_as_the_key_proof_is_never_parsed(
        receiver, monkeypatch):
    """An on-path relay appends the frame to the segment that carries the peer's AUTH: it
    belongs to the established session, so the sealed-only rule judges it from its header."""
    client = Session("client", psk=KEY)
    server = Session("server", psk=KEY)
    client.initiate()
    server.initiate()
    server.receive(client.data_to_send())
    client.receive(server.data_to_send())  # the server's HELLO; the client answers with AUTH
    proof = client.data_to_send()
    monkeypatch.setattr(framing, "_parse_hello", lambda payload: pytest.fail("parsed"))
    if receiver == "server":
        events = server.receive(proof + NESTED_HELLO)
    else:
        server.receive(proof)
        events = client.receive(server.data_to_send() + NESTED_HELLO)
    assert isinstance(events[0], Established) and events[0].authenticated
    assert errors(events)[0][0] == "unsealed" and len(events) == 2


def test_gso_frames_only_when_both_sides_offered_super_packets():
    vnet = frozenset({framing.VNET_FEATURE})
    for client_features, psk in [(frozenset(), None), (frozenset(), KEY)]:
        client = Session("client", psk=psk, features=client_features)
        server = Session("server", psk=psk, features=vnet)
        client.initiate()
        server.initiate()
        pump(client, server)
        assert server.established and server.features == frozenset({"psk"} if psk else ())
        with pytest.raises(framing.EncodeError, match="not negotiated"):
            client.encode_packet(ipv4(), vnet_header=bytes(10))
        if psk:
            frame = client._sealer.seal(FrameType.GSO_DATA, bytes(10), ipv4())  # type: ignore
        else:
            frame = framing.encode_gso_packet(bytes(10), ipv4())
        (event,) = server.receive(frame)
        assert isinstance(event, FrameRejected) and event.reason == "gso_not_negotiated"
        if not psk:
            assert server.receive_packets(frame)[0] == [], "nor on the data path"


@pytest.mark.parametrize("psk", [None, KEY], ids=["clear", "psk"])
def test_a_close_after_the_handshake_cannot_forge_log_lines(psk):
    client, server, *_ = pair(psk, psk)
    (event,) = server.receive(client.encode_close("bye\ntunlab server: client connected"
                                                  "\x1b[2K\x1b[1A" + "x" * 1000))
    assert isinstance(event, framing.CloseReceived)
    assert event.reason.isprintable() and len(event.reason) <= framing.MAX_CLOSE_REASON + 3


@pytest.mark.parametrize("first, reason", [
    (framing.encode_packet(ipv4()), "no_hello"),
    (framing.encode_hello(Hello("server")), "bad_role"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "bad_magic"),
    (framing.encode_close("auth_failed: go away"), "auth_failed"),
    (framing.encode_close("bored"), "peer_closed"),
])
def test_handshake_errors(first, reason):
    server = Session("server")
    server.initiate()
    events = server.receive(first)
    assert errors(events)[0][0] == reason and packets(events) == []


def test_second_hello_and_unexpected_extension_in_clear_mode():
    client, server, *_ = pair(None, None)
    (event,) = server.receive(framing.encode_frame(0x11, b"x" * 40))
    assert isinstance(event, FrameRejected) and event.reason == "unexpected_extension"
    events = server.receive(framing.encode_hello(Hello("client")))
    assert errors(events)[0][0] == "duplicate_hello"


def test_a_failing_side_tells_the_peer_why():
    client, server, c_events, s_events = pair(KEY, OTHER)
    # The server's refusal reached the client as a CLOSE and became a clear error there.
    assert "the server refused us" in errors(c_events)[0][1]


def test_end_of_stream_inside_a_frame_is_reported():
    client, server, *_ = pair(None, None)
    assert server.end_of_stream() == []
    server.receive(client.encode_packet(ipv4())[:10])
    assert errors(server.end_of_stream())[0][0] == "truncated"


def test_keys_must_be_long_enough_and_roles_valid():
    with pytest.raises(ValueError, match="at least 16"):
        Session("client", psk=b"short")
    with pytest.raises(ValueError):
        Session("client", psk=b"")
    with pytest.raises(ValueError):
        Session("peer")


def test_psk_feature_is_offered_exactly_when_a_key_is_held():
    assert "psk" not in Session("client", features=frozenset({"psk"})).offered
    assert "psk" in Session("client", psk=KEY).offered
    assert "psk_nonce" not in Session("client", info={"psk_nonce": "00"}).info


# -- properties -------------------------------------------------------------------------------
@SETTINGS
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=10),
       psk=st.sampled_from([None, KEY]), role=st.sampled_from(["client", "server"]))
def test_any_stream_into_a_session_gives_events_or_a_clean_error(data, cuts, psk, role):
    session = Session(role, psk=psk, max_payload=1500)
    session.initiate()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    events: list = []
    for start, end in zip(points, points[1:], strict=False):
        events += session.receive(data[start:end])
        assert session.decoder.buffered < HEADER_SIZE + 1500
    if psk is not None:
        assert packets(events) == [], "random bytes can never pass the key proof"
    for i, event in enumerate(events):
        if isinstance(event, ProtocolError):
            assert i == len(events) - 1


def _prefix_with_valid_hello(role: str) -> bytes:
    peer = "server" if role == "client" else "client"
    return framing.encode_hello(Hello(peer, frozenset({"psk"}), {"psk_nonce": "ab" * 32}))


@SETTINGS
@given(tail=st.binary(max_size=600), role=st.sampled_from(["client", "server"]))
def test_after_a_keyed_hello_arbitrary_frames_never_deliver_packets(tail, role):
    session = Session(role, psk=KEY)
    session.initiate()
    events = session.receive(_prefix_with_valid_hello(role) + tail)
    assert packets(events) == [] and not session.established


@SETTINGS
@given(payloads=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
       cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_a_keyed_conversation_split_anywhere_delivers_every_packet_in_order(payloads, cuts):
    client, server, *_ = pair()
    sent = [ipv4(p) for p in payloads]
    data = b"".join(client.encode_packet(p) for p in sent)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    events: list = []
    for start, end in zip(points, points[1:], strict=False):
        events += server.receive(data[start:end])
    assert [e.packet for e in events] == sent


@SETTINGS
@given(payloads=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5),
       position=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_one_flipped_bit_anywhere_never_delivers_an_altered_packet(payloads, position, bit):
    client, server, *_ = pair()
    sent = [ipv4(p) for p in payloads]
    data = bytearray(b"".join(client.encode_packet(p) for p in sent))
    position %= len(data)
    data[position] ^= 1 << bit
    delivered = [e.packet for e in server.receive(bytes(data)) if isinstance(e, PacketReceived)]
    assert delivered == sent[:len(delivered)], "only untouched packets, in order"
    assert len(delivered) < len(sent), "the frame holding the flipped bit is never delivered"


def test_a_peers_close_reason_cannot_forge_log_lines():
    server = Session("server")
    server.initiate()
    (error,) = server.receive(framing.encode_close("auth_failed: x\nserver: client connected"))
    assert error.reason == "auth_failed" and "\n" not in error.detail
    server = Session("server")
    (error,) = server.receive(framing.encode_close("bored\nfake line"))
    assert error.reason == "peer_closed" and "\n" not in error.detail


# -- hostile peers (issue 14): whatever a peer sends, the session answers with events ----------
_SESSION_EVENTS = (framing.HelloReceived, PacketReceived, framing.KeepaliveReceived,
                   framing.CloseReceived, framing.ExtensionFrame, FrameRejected, ProtocolError,
                   Established)


@SETTINGS
@given(state=st.sampled_from(["fresh", "clear", "keyed"]), steps=hostile_steps,
       cuts=st.lists(st.integers(0, 20000), max_size=8))
def test_no_peer_input_raises_out_of_the_session(state, steps, cuts):
    """Frames of every type with hostile payloads (deep nesting, non-IP, forged hellos, GSO
    without negotiation), sealed or not, split anywhere: the session returns events of the
    documented types, ends with at most one ProtocolError, and only delivers well-formed IP
    packets, never a super-packet nobody negotiated."""
    from tunlab.packet.validate import ip_packet_problem

    if state == "fresh":
        peer, session = None, Session("server", psk=KEY)
        session.initiate()
    else:
        psk = KEY if state == "keyed" else None
        peer, session, *_ = pair(psk, psk)
        assert session.established
    data = bytearray()
    for sealed, frame_type, payload in steps:
        if sealed and peer is not None and peer._sealer is not None:
            if len(payload) + crypto.SEAL_OVERHEAD <= framing.DEFAULT_MAX_PAYLOAD:
                data += peer._sealer.seal(frame_type, payload)
        else:
            data += framing.encode_frame(frame_type, payload)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    events: list = []
    for start, end in zip(points, points[1:], strict=False):
        events += session.receive(bytes(data[start:end]))
    assert all(isinstance(e, _SESSION_EVENTS) for e in events), events
    fatal = [i for i, e in enumerate(events) if isinstance(e, ProtocolError)]
    assert fatal in ([], [len(events) - 1])
    for event in packets(events):
        assert ip_packet_problem(event.packet) is None
        assert event.vnet_header is None, "GSO_DATA without vnet_hdr negotiated"
    if state == "fresh":
        assert packets(events) == []
    for event in events:
        if isinstance(event, (FrameRejected, ProtocolError, framing.CloseReceived)):
            text = event.reason + getattr(event, "detail", "")
            assert text.isprintable(), text


def test_a_session_that_fails_mid_segment_holds_nothing_back():
    """The decoder pauses after a HELLO; when that HELLO ends the session, the rest of the
    segment is dropped, not kept (buffering stays bounded by one frame)."""
    server = Session("server")
    server.initiate()
    junk = framing.encode_frame(FrameType.DATA, b"\x45" * 60000) * 3
    events = server.receive(framing.encode_hello(Hello("server")) + junk)
    assert errors(events)[0][0] == "bad_role"
    assert server.decoder.buffered == 0


# -- the state machine ----------------------------------------------------------------------
def test_the_handshakes_walk_the_transition_table():
    clear_client, clear_server, *_ = pair(None, None)
    keyed_client, keyed_server, *_ = pair(KEY, KEY)
    assert clear_client.state is clear_server.state is State.ESTABLISHED
    assert keyed_client.state is keyed_server.state is State.SEALED
    lone = Session("server", psk=KEY)
    assert lone.state is State.IDLE
    lone.initiate()
    assert lone.state is State.HELLO_SENT
    lone.receive(framing.encode_packet(ipv4()))  # no HELLO first: the session fails
    assert lone.state is State.FAILED and lone.failed_in is State.HELLO_SENT
    assert lone.error is not None and lone.error.reason is RejectReason.NO_HELLO


@pytest.mark.parametrize(("state", "trigger"), [
    (State.IDLE, Trigger.PROOF), (State.IDLE, Trigger.CLEAR_HELLO),
    (State.HELLO_SENT, Trigger.PROOF), (State.ESTABLISHED, Trigger.PROOF),
    (State.SEALED, Trigger.KEYED_HELLO), (State.FAILED, Trigger.FAIL),
    (State.FAILED, Trigger.INITIATE)])
def test_an_illegal_transition_is_refused_with_a_clear_error(state, trigger):
    session = Session("client")
    session.state = state
    with pytest.raises(SessionStateError, match=f"client session: {trigger.name} is not "
                       f"allowed in state {state.name}") as info:
        session.move(trigger)
    assert session.state is state, "a refused move changed the state"
    assert info.value.state is state and info.value.trigger is trigger
    assert trigger not in TRANSITIONS[state]


def test_the_transition_table_is_closed_and_every_state_is_reachable():
    reached = {State.IDLE}
    for moves in TRANSITIONS.values():
        reached |= set(moves.values())
    assert reached == set(State) == set(TRANSITIONS)
    assert TRANSITIONS[State.FAILED] == {}, "nothing leaves FAILED"


def test_reject_reasons_are_one_enum_that_reads_as_its_text():
    """Statistics, logs and tests keep the words on the wire (``not_ip``), typed."""
    server = Session("server")
    server.initiate()
    server.receive(framing.encode_hello(Hello("client")))
    (event,) = server.receive(framing.encode_frame(FrameType.DATA, b"\x00" * 20))
    assert isinstance(event, FrameRejected) and event.reason is RejectReason.NOT_IP
    assert event.reason == "not_ip" and f"{event.reason}" == "not_ip"
    assert server.decoder.stats.rejected["not_ip"] == 1


@pytest.mark.parametrize("keyed", [False, True], ids=["clear", "keyed"])
def test_a_bad_header_right_after_a_good_frame_ends_the_session(keyed):
    """Found by the keyed data path's property test: a valid frame and a bad header in one
    receive() returned the packet and dropped the decoder's error, so the session stayed
    "established" while the decoder refused every later byte: a wedged tunnel that never
    dropped the peer. The error is now reported, the session fails and tells the peer."""
    key = KEY if keyed else None
    client, server, _, _ = pair(key, key)
    stream = client.encode_packet(ipv4(b"fine")) + b"\x00\x01" + bytes(6)
    events = server.receive(stream)
    assert [type(e) for e in events] == [PacketReceived, ProtocolError]
    assert events[1].reason == "bad_magic"
    assert server.state is State.FAILED
    assert server.data_to_send(), "the peer is told why"
