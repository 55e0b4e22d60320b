"""Pre-shared keys: the key file checks, the crypto pieces, and real tunnels between namespaces
that carry traffic only with the right key and never show it in the clear on the wire."""

from __future__ import annotations

import itertools
import logging
import os
import select
import signal
import subprocess
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labtools import (
    KEY,
    kernel_rx_packets,
    ping,
    start_client,
    start_server,
    wait_for,
    wait_for_ping,
)
from protohelp import cut_at, ipv4, pair, pump

from tunlab.errors import TunlabError
from tunlab.lab import TwoHostLab
from tunlab.proto import crypto, framing
from tunlab.proto.framing import (
    VNET_FEATURE,
    EncodeError,
    FrameType,
    PacketReceived,
    ProtocolError,
)
from tunlab.proto.session import Session

# -- load_psk -------------------------------------------------------------------------------


def _key_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "tunnel.key"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_load_psk_reads_a_private_key_file(tmp_path):
    path = _key_file(tmp_path, b"  c2VjcmV0LWtleS1mb3ItdGhlLXR1bm5lbA==\n")
    assert crypto.load_psk(path) == b"c2VjcmV0LWtleS1mb3ItdGhlLXR1bm5lbA=="
    assert crypto.load_psk(str(path)) == crypto.load_psk(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_load_psk_refuses_a_file_others_can_access(tmp_path, mode):
    path = _key_file(tmp_path, b"x" * 32, mode)
    with pytest.raises(TunlabError) as info:
        crypto.load_psk(path)
    assert info.value.fix == f"chmod 600 {path}"
    assert f"{mode:04o}" in info.value.message and str(path) in info.value.message


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("content, message", [
    (b"", "is empty"), (b" \n\t\n", "is empty"), (b"short", r"too short \(5 bytes"),
    (b"x" * 5000, "too long"),
])
def test_load_psk_refuses_empty_short_and_huge_keys(tmp_path, content, message):
    with pytest.raises(TunlabError, match=message) as info:
        crypto.load_psk(_key_file(tmp_path, content))
    assert "urandom" in info.value.fix


def test_load_psk_missing_file_and_directory(tmp_path):
    with pytest.raises(TunlabError, match="does not exist") as info:
        crypto.load_psk(tmp_path / "nope.key")
    assert "chmod 600" in info.value.fix and "nope.key" in info.value.fix
    with pytest.raises(TunlabError, match="directory|not a regular file"):
        crypto.load_psk(tmp_path)


def test_load_psk_does_not_hang_on_a_fifo(tmp_path):
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(TunlabError, match="not a regular file"):
        crypto.load_psk(fifo)


# -- crypto pieces ----------------------------------------------------------------------------
def test_derived_keys_are_distinct_and_depend_on_every_input():
    nonce_a, nonce_b = b"a" * 32, b"b" * 32
    keys = crypto.derive_keys(KEY, nonce_a, nonce_b, b"t" * 32)
    values = [keys.client_to_server, keys.server_to_client, keys.client_auth, keys.server_auth]
    assert len(set(values)) == 4 and all(len(v) == 32 for v in values)
    for other in (crypto.derive_keys(KEY + b"!", nonce_a, nonce_b, b"t" * 32),
                  crypto.derive_keys(KEY, nonce_b, nonce_a, b"t" * 32),
                  crypto.derive_keys(KEY, nonce_a, nonce_b, b"u" * 32)):
        assert other.client_to_server != keys.client_to_server
    assert keys.sending("client") == keys.receiving("server")
    assert keys.sending("server") == keys.receiving("client")


def test_transcript_hash_cannot_be_shifted_between_hellos():
    assert crypto.transcript_hash(b"ab", b"c") != crypto.transcript_hash(b"a", b"bc")


def test_sealer_and_opener_counters():
    key = os.urandom(32)
    sealer, opener = crypto.Sealer(key), crypto.Opener(key)
    frames = [sealer.seal(FrameType.DATA, ipv4(bytes([i]))) for i in range(3)]
    for i, frame in enumerate(frames):
        assert opener.open(frame[8:]) == (FrameType.DATA, ipv4(bytes([i])))
    with pytest.raises(crypto.SealError) as info:
        opener.open(frames[1][8:])
    assert info.value.reason == "replayed"
    with pytest.raises(crypto.SealError) as info:
        crypto.Opener(os.urandom(32)).open(frames[0][8:])
    assert info.value.reason == "forged"
    sealer.counter = crypto.MAX_COUNTER
    with pytest.raises(EncodeError, match="exhausted"):
        sealer.seal(FrameType.DATA, ipv4())


def test_sealed_frames_respect_the_payload_limit():
    sealer = crypto.Sealer(os.urandom(32))
    biggest = b"\0" * (crypto.DEFAULT_MAX_PAYLOAD - crypto.SEAL_OVERHEAD)
    assert len(sealer.seal(FrameType.DATA, biggest)) == 8 + crypto.DEFAULT_MAX_PAYLOAD
    with pytest.raises(EncodeError):
        sealer.seal(FrameType.DATA, biggest + b"!")


def test_a_gso_super_packet_fits_sealed():
    client, server, *_ = pair(KEY, KEY, features=frozenset({VNET_FEATURE}))
    packet = ipv4(b"g" * (65535 - 20))
    frame = client.encode_packet(packet, vnet_header=bytes(10))
    (event,) = server.receive(frame)
    assert event.packet == packet


# -- cipher negotiation -----------------------------------------------------------------------
AES, CHACHA = crypto.Cipher.AES_256_GCM, crypto.Cipher.CHACHA20_POLY1305


@pytest.mark.parametrize("text, expected", [
    ("processor\t: 0\nflags\t\t: fpu vme sse2 aes avx2\n", True),
    ("processor\t: 0\nflags\t\t: fpu vme sse2 avx2 vaes\n", False),   # vaes alone is no aes
    ("Features\t: fp asimd evtstrm aes pmull sha1\n", True),            # arm64
    ("model name\t: aes-less CPU\n", False),
])
def test_cpu_has_aes_reads_the_cpu_flags(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert crypto.cpu_has_aes(str(cpuinfo)) is expected
    assert crypto.cpu_has_aes(str(tmp_path / "missing")) is False


def test_aes_gcm_leads_the_offer_only_with_aes_instructions():
    assert crypto.preferred_ciphers(has_aes=True) == (AES, CHACHA)
    assert crypto.preferred_ciphers(has_aes=False) == (CHACHA, AES)


@pytest.mark.parametrize("client, server, expected", [
    ((AES, CHACHA), (AES, CHACHA), AES),
    ((AES, CHACHA), (CHACHA, AES), CHACHA),     # the server picks
    ((CHACHA, AES), (AES, CHACHA), AES),
    ((CHACHA,), (AES, CHACHA), CHACHA),
    ((AES,), (CHACHA,), None),
    ((), (AES, CHACHA), None),
])
def test_the_server_picks_its_most_preferred_cipher_the_client_offers(client, server, expected):
    assert crypto.choose_cipher(client, server) is expected


@pytest.mark.parametrize("info, expected", [
    ({}, (CHACHA,)),                                     # a peer from before the negotiation
    ({"ciphers": ["aes-256-gcm", "chacha20-poly1305"]}, (AES, CHACHA)),
    ({"ciphers": ["rot13", "chacha20-poly1305"]}, (CHACHA,)),   # unknown names are skipped
    ({"ciphers": []}, ()),
    ({"ciphers": "aes-256-gcm"}, None),
    ({"ciphers": [1, 2]}, None),
    ({"ciphers": ["aes-256-gcm"] * 9}, None),
])
def test_a_cipher_offer_is_read_strictly(info, expected):
    assert crypto.offered_ciphers(info) == expected


def _session(role: str, offer: tuple[crypto.Cipher, ...], monkeypatch) -> Session:
    monkeypatch.setattr(crypto, "preferred_ciphers", lambda has_aes=None: offer)
    session = Session(role, psk=KEY)
    session.initiate()
    return session


@pytest.mark.parametrize("client_offer, server_offer, expected", [
    ((AES, CHACHA), (AES, CHACHA), AES),
    ((AES, CHACHA), (CHACHA, AES), CHACHA),
    ((CHACHA, AES), (AES, CHACHA), AES),
    ((CHACHA,), (AES, CHACHA), CHACHA),
])
def test_both_sides_seal_with_the_negotiated_cipher(monkeypatch, client_offer, server_offer,
                                                    expected):
    client = _session("client", client_offer, monkeypatch)
    server = _session("server", server_offer, monkeypatch)
    client_events, server_events = pump(client, server)
    assert client.established and server.established, (client_events, server_events)
    assert client.cipher is server.cipher is expected
    assert client._sealer is not None and client._sealer.cipher is expected
    for sender, receiver in ((client, server), (server, client)):
        (event,) = receiver.receive(sender.encode_packet(ipv4(b"both ways")))
        assert event.packet == ipv4(b"both ways")


def test_no_cipher_in_common_fails_the_handshake_on_both_sides(monkeypatch):
    client = _session("client", (AES,), monkeypatch)
    server = _session("server", (CHACHA,), monkeypatch)
    client_events, server_events = pump(client, server)
    for events in (client_events, server_events):
        (error,) = [e for e in events if isinstance(e, ProtocolError)]
        assert error.reason == "auth_failed" and "no cipher in common" in error.detail
    assert not client.established and not server.established


def test_a_peer_from_before_the_negotiation_gets_chacha20(monkeypatch):
    monkeypatch.setattr(crypto, "preferred_ciphers", lambda has_aes=None: (AES, CHACHA))
    old = Session("client", psk=KEY)
    old.info.pop(crypto.CIPHERS_INFO_KEY)  # what tunlab sent before: no cipher list
    old.initiate()
    server = _session("server", (AES, CHACHA), monkeypatch)
    pump(old, server)
    assert old.established and server.established
    assert old.cipher is server.cipher is CHACHA


def _rewrite_hello(frame: bytes, **info_changes: object) -> bytes:
    """The same HELLO frame with its ``info`` changed (what an on-path attacker sends on)."""
    decoder = framing.Decoder()
    (event,) = decoder.feed(frame)
    info = {**event.hello.info, **info_changes}
    info = {k: v for k, v in info.items() if v is not None}
    return framing.encode_hello(framing.Hello(event.hello.role, event.hello.features, info))


@pytest.mark.parametrize("forged_offer", [["chacha20-poly1305"], None],
                         ids=["aes-stripped", "offer-removed"])
@pytest.mark.parametrize("victim", ["server", "client"])
def test_a_cipher_downgrade_on_the_path_breaks_the_key_proof(monkeypatch, victim, forged_offer):
    client = _session("client", (AES, CHACHA), monkeypatch)
    server = _session("server", (AES, CHACHA), monkeypatch)
    to_server, to_client = client.data_to_send(), server.data_to_send()
    if victim == "server":  # the client's offer loses AES-GCM on its way
        to_server = _rewrite_hello(to_server, ciphers=forged_offer)
    else:                   # the server's preference is rewritten on its way
        to_client = _rewrite_hello(to_client, ciphers=forged_offer)
    events = server.receive(to_server) + client.receive(to_client)
    assert {client.cipher, server.cipher} == {AES, CHACHA}  # the attacker split the choice ...
    client_events, server_events = pump(client, server)
    events += client_events + server_events
    # ... and the key proof over the transcript notices, before any packet is accepted.
    assert not client.established and not server.established
    assert "auth_failed" in {e.reason for e in events if isinstance(e, ProtocolError)}
    assert not [e for e in events if isinstance(e, PacketReceived)]


# -- real tunnels -----------------------------------------------------------------------------
@pytest.fixture
def lab():
    with TwoHostLab() as two_hosts:
        yield two_hosts
        two_hosts.stop_tunnel()


PATTERN = "74756e6c61622d736563726574"  # "tunlab-secret", what ping -p puts in each request


def _capture_while_pinging(lab: TwoHostLab, port: int, tmp_path: Path) -> tuple[str, bytes]:
    pcap = tmp_path / "underlay.pcap"
    dump = lab.a.popen(["tcpdump", "--immediate-mode", "-U", "-n", "-i", "veth0", "-w", str(pcap),
                        f"tcp port {port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert dump.stderr is not None
        ready, _, _ = select.select([dump.stderr], [], [], 5)
        assert ready and b"listening on" in dump.stderr.readline(), "tcpdump did not start"
        out = lab.a.exec(["ping", "-c", "5", "-i", "0.02", "-W", "1", "-p", PATTERN,
                          "10.9.0.2"], check=False).stdout
        # Each request and reply is one TCP segment each way (plus ACKs): wait for them.
        wait_for(lambda: pcap.stat().st_size > 24 + 10 * 100, 3)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.communicate(timeout=5)
    return out, pcap.read_bytes()


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("psk", [KEY, None], ids=["psk", "clear"])
def test_a_keyed_tunnel_carries_traffic_and_hides_it_on_the_wire(lab, tmp_path, psk):
    server = start_server(lab, 5601, psk=psk)
    client = start_client(lab, 5601, psk=psk, wait=True)
    try:
        assert server.wait_connected(5)
        assert wait_for_ping(lab.a, "10.9.0.2")
        out, captured = _capture_while_pinging(lab, 5601, tmp_path)
        assert " 0% packet loss" in out, out
        secret = bytes.fromhex(PATTERN)
        if psk is None:
            assert secret in captured, "control: the clear mode must show the payload"
        else:
            assert secret not in captured, "the payload crossed the underlay in the clear"
            assert server.stats.written_packets >= 5
        assert server.stats.rejected == {} and client.stats.rejected == {}
    finally:
        client.stop()
        server.stop()


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("cipher", [AES, CHACHA], ids=lambda c: c.value)
def test_a_keyed_tunnel_carries_a_ping_with_each_cipher(lab, monkeypatch, cipher):
    monkeypatch.setattr(crypto, "preferred_ciphers", lambda has_aes=None: (cipher,))
    used: list[crypto.Cipher] = []
    for each, make in list(crypto._AEAD.items()):
        monkeypatch.setitem(crypto._AEAD, each, lambda key, each=each, make=make:
                            (used.append(each), make(key))[1])
    server = start_server(lab, 5603, psk=KEY)
    client = start_client(lab, 5603, psk=KEY)
    try:
        assert wait_for(lambda: client.connected and server.connected)
        assert wait_for_ping(lab.a, "10.9.0.2")
        out = ping(lab.a, "10.9.0.2", 5)
        assert " 0% packet loss" in out, out
        assert server.stats.written_packets >= 5 and client.stats.written_packets >= 5
        # A sealer and an opener on each end, all of the one cipher offered.
        assert len(used) >= 4 and set(used) == {cipher}
    finally:
        client.stop()
        server.stop()


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("client_psk, server_psk, server_says", [
    (b"the wrong key, but long enough!", KEY, "keys on the two ends differ"),
    (None, KEY, "client has no pre-shared key"),
    (KEY, None, "client requires a pre-shared key"),
], ids=["wrong-key", "client-without-key", "server-without-key"])
def test_a_peer_that_cannot_prove_the_key_gets_nothing_written(lab, caplog, client_psk,
                                                               server_psk, server_says):
    caplog.set_level(logging.WARNING, logger="tunlab.tunnel")
    rx_before = kernel_rx_packets(lab.b, "tun0")
    server = start_server(lab, 5602, psk=server_psk)
    client = start_client(lab, 5602, psk=client_psk, backoff_max=0.2)
    try:
        assert wait_for(lambda: server.stats.rejected["auth_failed"] >= 2
                        and client.stats.rejected["auth_failed"] >= 2)
        # The client's device sees traffic, and none of it may come out on the server's side.
        out = ping(lab.a, "10.9.0.2", count=3)
        assert "100% packet loss" in out
        assert not server.connected and not client.connected
        assert server.stats.written_packets == 0 and server.stats.frames_received == 0
        assert kernel_rx_packets(lab.b, "tun0") == rx_before
        assert server.running and server.error is None
    finally:
        client.stop()
        server.stop()
    server_lines = [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("server: rejected")]
    assert server_lines and all("auth_failed" in line and server_says in line
                                for line in server_lines)
    client_lines = [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("client: rejected")]
    assert client_lines and all("auth_failed" in line for line in client_lines)


@pytest.mark.usefixtures("root")
def test_cli_endpoints_with_a_key_file(lab, tmp_path, tunlab_cmd):
    key = _key_file(tmp_path, b"cli shared key 0123456789abcdef\n")
    server = lab.b.popen([*tunlab_cmd, "server", "--dev", "tun0", "--listen",
                          "198.18.0.2:5603", "--psk-file", str(key)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = lab.a.popen([*tunlab_cmd, "client", "--dev", "tun0", "--server",
                          "198.18.0.2:5603", "--psk-file", str(key)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_ping(lab.a, "10.9.0.2", timeout=10)
        assert " 0% packet loss" in ping(lab.a, "10.9.0.2", count=10)
    finally:
        for proc in (client, server):
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=10) for proc in (client, server)]
    assert client.returncode == 0 and server.returncode == 0, outputs
    assert all("UNAUTHENTICATED" not in err for _, err in outputs)


@pytest.mark.usefixtures("root")
def test_cli_server_writes_nothing_for_a_client_with_another_key(lab, tmp_path, tunlab_cmd):
    key = _key_file(tmp_path, b"cli shared key 0123456789abcdef\n")
    rx_before = kernel_rx_packets(lab.b, "tun0")
    server = lab.b.popen([*tunlab_cmd, "server", "--dev", "tun0", "--listen",
                          "198.18.0.2:5604", "--psk-file", str(key)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = start_client(lab, 5604, psk=b"not the key in the server's file", backoff_max=0.2)
    try:
        assert wait_for(lambda: client.stats.rejected["auth_failed"] >= 2, timeout=10)
        assert "100% packet loss" in ping(lab.a, "10.9.0.2", count=3)
        assert kernel_rx_packets(lab.b, "tun0") == rx_before
    finally:
        client.stop()
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=10)
    assert server.returncode == 0, err
    refusals = [line for line in err.splitlines() if "auth_failed" in line]
    assert refusals and all("keys on the two ends differ" in line for line in refusals)
    assert "UNAUTHENTICATED" not in err


# -- the keyed data path (receive_packets) agrees with receive ---------------------------------
def _twin_keyed_receivers() -> tuple[Session, Session, Session]:
    """A sender and two receivers that hold the same session keys: the handshake's nonces are
    made deterministic, so two handshakes derive the same keys."""
    sessions = []
    for _ in range(2):
        counter = itertools.count(1)

        def token_bytes(n: int, counter: itertools.count = counter) -> bytes:
            return next(counter).to_bytes(n, "big")

        with mock.patch("tunlab.proto.session.secrets.token_bytes", token_bytes):
            client, server, _, _ = pair(features=frozenset({VNET_FEATURE}))
        assert client.sealed and server.sealed
        sessions.append((client, server))
    return sessions[0][0], sessions[0][1], sessions[1][1]


_KEYED_OPS = st.lists(st.one_of(
    st.tuples(st.just("packet"), st.integers(0, 600)),
    st.tuples(st.just("gso"), st.integers(1, 600)),
    st.tuples(st.just("keepalive"), st.just(0)),
    st.tuples(st.just("tamper"), st.integers(0, 10_000)),
    st.tuples(st.just("junk"), st.integers(1, 30)),
), max_size=10)


def _normalized(events: list) -> list:
    return [PacketReceived(bytes(e.packet), e.vnet_header and bytes(e.vnet_header))
            if isinstance(e, PacketReceived) else e for e in events]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_KEYED_OPS, st.lists(st.integers(0, 3000), max_size=8))
def test_the_keyed_data_path_gives_what_receive_gives(ops, cuts):
    """The fast pump opens sealed frames straight from its receive buffer and keeps an
    unfinished frame itself (receive_packets with keep_tail). For any stream a key holder or
    an attacker makes (packets, super-packets, keepalives, a flipped byte, junk), cut anywhere,
    the events, their order and the end state are exactly those of receive()."""
    sender, reference, fast = _twin_keyed_receivers()
    frames = []
    for op, n in ops:
        if op == "packet":
            frames.append(sender.encode_packet(ipv4(b"p" * n)))
        elif op == "gso":
            frames.append(sender.encode_packet(ipv4(b"g" * n), bytes(10)))
        elif op == "keepalive":
            frames.append(sender.encode_keepalive())
        elif op == "tamper" and frames:
            frame = bytearray(frames[-1])
            frame[n % len(frame)] ^= 0x40
            frames[-1] = bytes(frame)
        elif op == "junk":
            frames.append(bytes(range(n)))
    chunks = cut_at(b"".join(frames), cuts)
    expected: list = []
    for chunk in chunks:
        expected += reference.receive(chunk)
    got: list = []
    kept = b""
    for chunk in chunks:
        data = kept + chunk
        packets, events, keep = fast.receive_packets(data, keep_tail=True)
        got += [PacketReceived(bytes(p), h and bytes(h)) for p, h in packets] + events
        kept = data[len(data) - keep:] if keep else b""
        assert keep < framing.HEADER_SIZE + framing.DEFAULT_MAX_PAYLOAD
    if kept:
        got += fast.receive(kept)
    assert _normalized(got) == _normalized(expected)
    assert fast.state == reference.state
    ours, theirs = fast.decoder.stats, reference.decoder.stats
    assert (ours.frames, ours.packets, ours.packet_bytes) == \
        (theirs.frames, theirs.packets, theirs.packet_bytes)
    # receive() decodes a whole chunk before opening its frames, so after a forged frame it
    # may also count a bad header further on, which the data path never looks at.
    assert ours.rejected <= theirs.rejected
    assert fast.decoder.buffered == reference.decoder.buffered


@pytest.mark.parametrize("cipher", list(crypto.Cipher))
def test_sealing_in_place_gives_the_frame_seal_gives(cipher):
    key = bytes(range(32))
    packet = ipv4(b"in place" * 50)
    header = bytes(range(10))
    by_copy = crypto.Sealer(key, cipher)
    in_place = crypto.Sealer(key, cipher)
    out = bytearray(1 + len(header) + len(packet) + crypto.SEALED_FRAME_OVERHEAD)
    for _ in range(3):  # counters advance alike
        plaintext = memoryview(bytes([FrameType.GSO_DATA]) + header + packet)
        frame = in_place.seal_into(out, plaintext)
        assert bytes(frame) == by_copy.seal(FrameType.GSO_DATA, header, packet)
    with pytest.raises(EncodeError, match="does not fit"):
        in_place.seal_into(bytearray(70_000), memoryview(bytes(framing.DEFAULT_MAX_PAYLOAD)))


def test_encode_packet_into_refuses_what_encode_packet_refuses():
    client, server, _, _ = pair(features=frozenset({VNET_FEATURE}))
    out = bytearray(2048)
    good = ipv4(b"ok")
    frame = client.encode_packet_into(out, memoryview(bytes([FrameType.DATA]) + good))
    assert [bytes(e.packet) for e in server.receive(bytes(frame))] == [good]
    for plaintext, message in [
        (bytes([FrameType.DATA]) + b"\x00garbage", "IP"),
        (bytes([FrameType.GSO_DATA]) + bytes(10), "no packet"),
        (bytes([FrameType.KEEPALIVE]), "not a packet frame"),
    ]:
        with pytest.raises(EncodeError, match=message):
            client.encode_packet_into(out, memoryview(plaintext))
    plain_client, _, _, _ = pair(None, None)
    with pytest.raises(RuntimeError, match="sealed"):
        plain_client.encode_packet_into(out, memoryview(bytes([FrameType.DATA]) + good))
    no_vnet, _, _, _ = pair()
    with pytest.raises(EncodeError, match="not negotiated"):
        no_vnet.encode_packet_into(out, memoryview(bytes([FrameType.GSO_DATA]) + bytes(10) + good))
