"""tunlab.proto.scapy_layer: the scapy layer agrees with tunlab's codec, and a real tcpdump
capture of tunnel traffic dissects into the frames that were sent."""

from __future__ import annotations

import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from tunlab.lab import SeedLab, capture
from tunlab.proto import framing, scapy_layer
from tunlab.proto.framing import Hello
from tunlab.proto.scapy_layer import TunlabFrame
from tunlab.tunnel import TunnelClient, TunnelServer


def echo(payload: bytes = b"x" * 56) -> bytes:
    return bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=1, seq=1) / payload)


def test_scapy_builds_exactly_what_the_codec_encodes():
    packet = echo()
    built = TunlabFrame() / IP(packet)
    assert bytes(built) == framing.encode_packet(packet)


def test_dissecting_a_data_frame_gives_the_ip_packet():
    frame = TunlabFrame(framing.encode_packet(echo()))
    assert frame.magic == b"TL" and frame.version == 1 and frame.type == 2
    assert frame.length == 84
    assert IP in frame and ICMP in frame
    assert frame[IP].src == "10.0.0.1" and frame[IP].dst == "10.0.0.2"
    assert "DATA" in frame.summary() or "DATA" in frame.mysummary()


def test_ipv6_hello_and_keepalive_frames():
    v6 = bytes(IPv6(src="fe80::1", dst="ff02::2") / b"hi")
    assert IPv6 in TunlabFrame(framing.encode_packet(v6))
    hello = TunlabFrame(framing.encode_hello(Hello("client", frozenset({"x"}))))
    assert hello.sprintf("%type%") == "HELLO"
    assert isinstance(hello.payload, Raw) and b'"role":"client"' in bytes(hello.payload)
    keepalive = TunlabFrame(framing.encode_keepalive())
    assert keepalive.length == 0 and keepalive.sprintf("%type%") == "KEEPALIVE"


def test_frames_from_stream_cuts_batches_and_keeps_partial_rest():
    a, b = framing.encode_packet(echo(b"a" * 10)), framing.encode_packet(echo(b"b" * 300))
    frames, rest = scapy_layer.frames_from_stream(a + b + a[:5])
    assert [off for off, _ in frames] == [0, len(a)]
    assert [bytes(f) for _, f in frames] == [a, b]
    assert rest == a[:5]
    frames, rest = scapy_layer.frames_from_stream(b"GET / HTTP/1.1\r\n")
    assert frames == [] and rest.startswith(b"GET")


def _segment(seq: int, data: bytes, sport: int = 40000, dport: int = 5555) -> IP:
    return IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=sport, dport=dport, seq=seq,
                                                     flags="PA") / data


def test_tcp_streams_reorder_drop_retransmits_and_stop_at_gaps():
    stream = framing.encode_packet(echo(b"1" * 20)) + framing.encode_packet(echo(b"2" * 20))
    cut = 30
    segs = [_segment(1000 + cut, stream[cut:]), _segment(1000, stream[:cut]),
            _segment(1000, stream[:cut])]  # out of order + a retransmission
    streams = scapy_layer.tcp_streams(segs)
    assert streams[("127.0.0.1", 40000, "127.0.0.1", 5555)] == stream
    found = scapy_layer.dissect_packets(segs, port=5555)
    assert [f.type_name for f in found] == ["DATA", "DATA"]
    assert found[1].offset == len(stream) // 2
    gap = scapy_layer.tcp_streams([_segment(1000, stream[:10]), _segment(1020, stream[20:])])
    assert list(gap.values()) == [stream[:10]]
    assert scapy_layer.dissect_packets(segs, port=9) == []


def test_bind_port_lets_scapy_dissect_tcp_payload_directly():
    scapy_layer.bind_port(45678)
    pkt = IP(bytes(_segment(1, framing.encode_packet(echo()), dport=45678)))
    assert TunlabFrame in pkt and pkt[TunlabFrame][IP].dst == "10.0.0.2"


@pytest.mark.usefixtures("root")
def test_a_real_capture_of_the_tunnel_dissects_into_hellos_and_the_pings():
    with SeedLab("scapy") as lab:
        server = TunnelServer(lab.device("mytun2"), ("127.0.0.1", 0), namespace=lab.ns).start()
        try:
            port = server.address[1]
            with capture.capture(lab.ns, "lo", f"tcp port {port}") as cap:
                client = TunnelClient(lab.device("mytun"), server.address,
                                      namespace=lab.ns).start(timeout=5)
                try:
                    assert server.wait_connected(5)
                    for size in (56, 500):
                        lab.ns.exec(["ping", "-c1", "-W1", "-s", str(size), "10.0.0.2"],
                                    check=False)
                    time.sleep(0.1)
                finally:
                    client.stop()
        finally:
            server.stop()
    frames = cap.frames(port)
    kinds = [f.type_name for f in frames]
    assert kinds.count("HELLO") == 2, kinds
    echoes = [f for f in frames if f.type_name == "DATA" and ICMP in f.frame
              and f.frame[IP].dst == "10.0.0.2" and f.frame[ICMP].type == 8]
    assert [f.frame.length for f in echoes] == [84, 528]
    assert all(f.dport == port for f in echoes)  # client -> server direction
    row = echoes[0].to_dict()
    assert row["type"] == "DATA" and row["inner_src"] == "10.0.0.1" and row["length"] == 84
    assert "->" in echoes[0].summary()
    assert cap.packets()  # the raw capture is there too
    cap.path.unlink()
