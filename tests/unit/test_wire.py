"""tunlab.packet.build builds and reads packets byte for byte as scapy does (property-tested)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from tunlab.packet import build as wire
from tunlab.packet import craft as packets

v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
protos4 = st.sampled_from([1, 6, 17, 253, 47, 0])
protos6 = st.sampled_from([58, 6, 17, 253, 47])
ports = st.one_of(st.none(), st.integers(0, 65535))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.tuples(v4, v4, protos4), st.tuples(v6, v6, protos6)), ports,
       st.integers(0, 255), st.binary(max_size=64), st.integers(0, 65535), st.booleans())
def test_build_is_scapys_packet(addresses, dport, ttl, payload, ident, df):
    src, dst, number = addresses
    version = ipaddress.ip_address(src).version
    dport = dport if number in (6, 17) else None
    df = df and version == 4
    mine = wire.build(src, dst, number, dport=dport, ttl=ttl, payload=payload, ident=ident,
                      df=df)
    assert mine == packets.craft_with_scapy(src, dst, number, dport=dport, ttl=ttl,
                                            payload=payload, ident=ident, df=df)
    assert wire.summarize(mine) == packets.summarize_with_scapy(mine)


REPLIES = [
    # what the kernel sends back in the fate corpus: ICMP errors quoting our packet, resets,
    # SYN-ACKs, ICMPv6 errors, a later IPv6 fragment
    "45c0003e00000000400125ce0a000201c8010203030251a400000000450000227475000040fd3b770a000201"
    "c80102037475",
]


def _scapy_cases():
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
    from scapy.layers.inet6 import (
        ICMPv6DestUnreach,
        ICMPv6EchoReply,
        ICMPv6MLReport2,
        ICMPv6PacketTooBig,
        IPv6,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
    )
    inner = IP(src="200.1.2.3", dst="10.0.2.1", proto=253) / b"tunlab"
    return [
        IP(src="10.0.2.1", dst="200.1.2.3") / ICMP(type=3, code=2) / IPerror(bytes(inner)),
        IP(src="192.0.2.1", dst="200.1.2.3") / ICMP(type=3, code=4, nexthopmtu=1280) / inner,
        IP(src="192.0.2.1", dst="200.1.2.3") / ICMP(type=11, code=0) / inner,
        IP(src="10.0.2.1", dst="200.1.2.3") / TCP(sport=9999, dport=40000, flags="RA"),
        IP(src="10.0.2.1", dst="200.1.2.3") / TCP(sport=80, dport=40000, flags="SA"),
        IP(src="10.0.2.1", dst="200.1.2.3", frag=100) / UDP(sport=1, dport=2),
        IPv6(src="fd00:2::1", dst="2001:db8::5") / ICMPv6EchoReply(id=1, seq=1),
        IPv6(src="fd00:2::1", dst="2001:db8::5") / ICMPv6DestUnreach(code=4) / IPv6(),
        IPv6(src="fd00:2::1", dst="fd00:2::5") / ICMPv6PacketTooBig(mtu=1280) / IPv6(),
        IPv6(src="fe80::1", dst="ff02::16") / IPv6ExtHdrHopByHop() / ICMPv6MLReport2(),
        IPv6(src="fd00:2::1", dst="2001:db8::5") / IPv6ExtHdrFragment(offset=10, nh=58)
        / (b"x" * 8),
        IPv6(src="fd00:2::1", dst="2001:db8::5") / IPv6ExtHdrFragment(offset=0) / UDP(dport=53),
    ]


def test_summaries_of_the_kernels_replies_are_scapys():
    cases = [bytes(p) for p in _scapy_cases()] + [bytes.fromhex(h) for h in REPLIES]
    for packet in cases:
        assert wire.summarize(packet) == packets.summarize_with_scapy(packet), packet.hex()


@given(st.binary(max_size=120))
def test_summarize_never_raises(data):
    wire.summarize(data)
