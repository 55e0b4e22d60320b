"""Software offload (:mod:`tunlab.packet.vnet`) against hostile virtio-net headers: whatever a peer
puts in the header, what comes out is a finished, well-formed IP packet or a clean refusal.

Pure tests (no root, no network). The three crafted frames are those of issue 14, finding 2.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from offload_cases import CRAFTED, spoil_checksum, tcp4, tcp6, udp4, udp6
from scapy.layers.inet import IP, TCP

from tunlab.packet import vnet
from tunlab.packet.validate import checksum_problem, finished_packet_problem, ip_packet_problem
from tunlab.packet.vnet import OffloadError, VnetHeader

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("header, packet", CRAFTED)
def test_the_crafted_frames_are_refused_cleanly(header, packet):
    assert ip_packet_problem(packet) is None, "each frame passed the decoder's check"
    with pytest.raises(OffloadError):
        vnet.resolve(header.pack(), packet)


@pytest.mark.parametrize("header, packet, why", [
    (VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=20, csum_offset=6), tcp4(), "not the TCP"),
    (VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=20, csum_offset=16), udp4(), "not the UDP"),
    (VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=40, csum_offset=16), tcp4(), "not the TCP"),
    (VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=20, csum_offset=2),
     bytes(IP(src="10.9.0.1", dst="10.9.0.2", proto=1) / b"\x08\0\0\0\0\0\0\0"), "protocol 1"),
    (VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=20, csum_offset=16),
     bytes(IP(src="10.9.0.1", dst="10.9.0.2", flags="MF") / TCP() / b"x"), "fragment"),
    (VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=20, csum_offset=16), tcp4()[:-1],
     "claims"),
    (VnetHeader(gso_type=vnet.GSO_TCPV4, gso_size=100), tcp6(b"s" * 500), "IPv6 packet"),
    (VnetHeader(gso_type=vnet.GSO_TCPV6, gso_size=100), udp6(b"s" * 500), "protocol 17"),
    (VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, gso_size=100, csum_start=21,
                csum_offset=16), tcp4(b"s" * 500), "checksum position"),
])
def test_headers_that_do_not_describe_the_packet_are_refused(header, packet, why):
    with pytest.raises(OffloadError, match=why):
        vnet.resolve(header.pack(), packet)


@pytest.mark.parametrize("packet, start, field", [
    (tcp4(), 20, 16), (tcp6(), 40, 16), (udp4(), 20, 6), (udp6(), 40, 6),
    (tcp4(b"odd"), 20, 16),
])
def test_a_checksum_is_completed_from_scratch(packet, start, field):
    header = VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=start, csum_offset=field)
    (finished,) = vnet.resolve(header.pack(), spoil_checksum(packet, start + field))
    assert finished == packet  # scapy computed the same checksum
    assert finished_packet_problem(finished) is None


def test_checksum_problem_sees_each_kind_of_wrong_sum():
    assert checksum_problem(tcp4()) is None and checksum_problem(udp6()) is None
    assert "IPv4 header" in checksum_problem(spoil_checksum(tcp4(), 10))
    assert "TCP checksum" in checksum_problem(spoil_checksum(tcp4(), 36))
    assert "UDP checksum" in checksum_problem(spoil_checksum(udp6(), 46))
    no_sum = bytearray(udp4())
    no_sum[26:28] = b"\0\0"
    assert checksum_problem(bytes(no_sum)) is None  # IPv4 UDP may go without one


# -- properties -------------------------------------------------------------------------------
_PACKETS = st.builds(lambda make, payload: make(payload),
                     st.sampled_from([tcp4, tcp6, udp4, udp6]), st.binary(max_size=3000))
_HEADERS = st.builds(VnetHeader, flags=st.integers(0, 255),
                     gso_type=st.sampled_from([0, 1, 3, 4, 5, 0x81, 0x84, 7, 255]),
                     hdr_len=st.integers(0, 0xFFFF), gso_size=st.integers(0, 0xFFFF),
                     csum_start=st.one_of(st.sampled_from([0, 1, 20, 40, 60]),
                                          st.integers(0, 0xFFFF)),
                     csum_offset=st.one_of(st.sampled_from([0, 2, 4, 6, 16]),
                                           st.integers(0, 0xFFFF)))


@SETTINGS
@given(header=_HEADERS, packet=_PACKETS, flips=st.lists(st.tuples(st.integers(0, 4000),
                                                                   st.integers(0, 255)),
                                                         max_size=3))
def test_every_packet_resolve_returns_is_finished_and_well_formed(header, packet, flips):
    """Any header, any (possibly damaged) packet: finished packets or one OffloadError."""
    damaged = bytearray(packet)
    for position, value in flips:
        damaged[position % len(damaged)] = value
    try:
        pieces = vnet.resolve(header.pack(), bytes(damaged))
    except OffloadError:
        return
    if not vnet.needs_work(header.pack()):
        assert pieces == [bytes(damaged)]  # nothing asked, nothing touched
        return
    assert pieces
    for piece in pieces:
        assert finished_packet_problem(piece) is None, piece.hex()


@SETTINGS
@given(payload=st.binary(min_size=1, max_size=6000), mss=st.integers(1, 1500),
       v6=st.booleans())
def test_segments_carry_the_payload_in_order(payload, mss, v6):
    packet = tcp6(payload) if v6 else tcp4(payload)
    header = VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV6 if v6 else
                        vnet.GSO_TCPV4, gso_size=mss, csum_start=40 if v6 else 20,
                        csum_offset=16)
    try:
        segments = vnet.resolve(header.pack(), packet)
    except OffloadError as exc:
        assert "more than" in str(exc)
        return
    l3 = 40 if v6 else 20
    assert b"".join(s[l3 + 20:] for s in segments) == payload
    assert all(finished_packet_problem(s) is None for s in segments)
