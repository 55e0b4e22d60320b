"""Crafting and dissecting packets (tunlab.packet.craft): pure, no root."""

from __future__ import annotations

import pytest

from tunlab.errors import TunlabError
from tunlab.packet import craft as packets
from tunlab.packet.validate import ip_packet_problem


@pytest.mark.parametrize("proto, dport, expected", [("icmp", None, "icmp"), ("udp", 53, "udp"),
                                                    ("tcp", 53, "tcp"), (253, None, 253)])
def test_crafted_packets_are_valid_ip(proto, dport, expected):
    raw = packets.craft("200.1.2.3", "10.0.2.1", proto, dport=dport, ttl=7)
    assert ip_packet_problem(raw) is None
    info = packets.summarize(raw)
    assert (info["src"], info["dst"], info["proto"], info["ttl"]) == (
        "200.1.2.3", "10.0.2.1", expected, 7)
    assert raw[9] == packets.protocol_number(proto)
    if dport is not None:
        assert (info["sport"], info["dport"]) == (packets.SPORT, dport)


@pytest.mark.parametrize("proto, dport, expected, next_header", [
    ("icmp", None, "icmp6", 58), ("icmp6", None, "icmp6", 58), (58, None, "icmp6", 58),
    ("udp", 53, "udp", 17), ("tcp", 22, "tcp", 6), (253, None, 253, 253)])
def test_crafted_ipv6_packets_are_valid_and_summarize_like_ipv4(proto, dport, expected,
                                                                next_header):
    raw = packets.craft("2001:db8::99", "fd00:2::1", proto, dport=dport, ttl=3)
    assert ip_packet_problem(raw) is None
    assert raw[0] >> 4 == 6 and raw[6] == next_header and raw[7] == 3  # next header, hop limit
    info = packets.summarize(raw)
    assert (info["version"], info["src"], info["dst"], info["proto"], info["ttl"],
            info["len"]) == (6, "2001:db8::99", "fd00:2::1", expected, 3, len(raw))
    if expected == "icmp6":
        assert (info["icmp_type"], info["icmp_code"]) == (128, 0)  # echo request
    if dport is not None:
        assert (info["sport"], info["dport"]) == (packets.SPORT, dport)
    if expected == "tcp":
        assert info["tcp_flags"] == "S"


def test_ipv6_checksums_are_what_the_kernel_checks():
    from scapy.layers.inet6 import UDP, ICMPv6EchoRequest, IPv6

    for proto, layer, name in (("icmp", ICMPv6EchoRequest, "cksum"), ("udp", UDP, "chksum")):
        raw = packets.craft("fd00::1", "fd00:2::1", proto)
        parsed = IPv6(raw)
        sent = getattr(parsed[layer], name)
        setattr(parsed[layer], name, None)  # scapy computes it again, over the pseudo-header
        assert getattr(IPv6(bytes(parsed))[layer], name) == sent != 0


def test_addresses_are_normalized_and_link_local_and_multicast_work():
    raw = packets.craft("FE80::0001", "ff02::1")
    info = packets.summarize(raw)
    assert (info["src"], info["dst"]) == ("fe80::1", "ff02::1")
    assert packets.check_ip("FD00:0002::0001") == "fd00:2::1"
    assert packets.check_ip("10.0.2.1") == "10.0.2.1"


@pytest.mark.parametrize("src, dst", [("10.0.0.1", "0.0.0.0"), ("fd00::1", "fd00:2::1")])
def test_ttl_zero_is_allowed(src, dst):
    raw = packets.craft(src, dst, ttl=0)
    assert packets.summarize(raw)["ttl"] == 0


@pytest.mark.parametrize("src, dst, proto", [
    ("10.0.0.1", "10.0.2.1", "icmp"), ("10.0.0.1", "10.0.2.1", "udp"),
    ("10.0.0.1", "10.0.2.1", "tcp"), ("10.0.0.1", "10.0.2.1", 253),
    ("fd00::1", "fd00:2::1", "icmp"), ("fd00::1", "fd00:2::1", "udp"),
    ("fd00::1", "fd00:2::1", "tcp"), ("fd00::1", "fd00:2::1", 253)])
@pytest.mark.parametrize("size", [1400, 48 + 20])
def test_size_is_the_total_ip_length(src, dst, proto, size):
    raw = packets.craft(src, dst, proto, size=size)
    assert len(raw) == size and ip_packet_problem(raw) is None
    assert packets.summarize(raw)["len"] == size


def test_df_sets_the_ipv4_dont_fragment_flag_only_when_asked():
    assert packets.craft("10.0.0.1", "10.0.2.1", df=True)[6] & 0x40
    assert not packets.craft("10.0.0.1", "10.0.2.1")[6] & 0x40


def test_icmp_echo_request_fields_and_dissection():
    raw = packets.craft("10.0.0.1", "10.0.0.2")
    info = packets.summarize(raw)
    assert (info["icmp_type"], info["icmp_code"]) == (8, 0)
    text = packets.dissect(raw)
    assert "###[ IP ]###" in text and "echo-request" in text
    text6 = packets.dissect(packets.craft("fd00::1", "fd00::2"))
    assert "###[ IPv6 ]###" in text6 and "Echo Request" in text6


@pytest.mark.parametrize("kwargs, words", [
    ({"src": "300.1.2.3", "dst": "10.0.0.1"}, "not an IPv4 or IPv6 address"),
    ({"src": "1.2.3.4", "dst": "x"}, "not an IPv4 or IPv6 address"),
    ({"src": "fd00::1", "dst": "10.0.0.1"}, "same IP version"),
    ({"src": "10.0.0.1", "dst": "fd00::1"}, "same IP version"),
    ({"src": "fe80::1%mytun", "dst": "fe80::2"}, "zone index"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "proto": 256}, "outside 0-255"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "proto": "gre"}, "unknown protocol"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "proto": "icmp6"}, "needs IPv6"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "ttl": 300}, "TTL 300"),
    ({"src": "fd00::1", "dst": "fd00::2", "ttl": -1}, "hop limit -1"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "proto": "udp", "dport": 70000}, "outside 0-65535"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "proto": "icmp", "dport": 53}, "ICMP has no ports"),
    ({"src": "fd00::1", "dst": "fd00::2", "proto": "icmp", "dport": 53}, "ICMPv6 has no ports"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "proto": 253, "dport": 53}, "no ports"),
    ({"src": "fd00::1", "dst": "fd00::2", "df": True}, "IPv4 flag"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "size": 27}, "outside 28-65535"),
    ({"src": "fd00::1", "dst": "fd00::2", "proto": "tcp", "size": 59}, "outside 60-65535"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "size": 65536}, "outside"),
])
def test_bad_parameters_are_clear_errors(kwargs, words):
    with pytest.raises(TunlabError) as info:
        packets.craft(**kwargs)
    assert words in info.value.message and info.value.fix


def test_protocol_numbers_by_family():
    assert packets.protocol_number("icmp") == 1
    assert packets.protocol_number("icmp", 6) == 58
    assert packets.protocol_number("icmp6") == 58
    assert packets.protocol_number("17", 6) == 17


def test_icmp_error_names_the_packet_it_quotes():
    from scapy.layers.inet import ICMP, IP

    original = packets.craft("200.1.2.3", "10.0.2.1", 253)
    error = bytes(IP(src="10.0.2.1", dst="200.1.2.3") / ICMP(type=3, code=2) / original[:28])
    assert packets.icmp_quoted_packet(error) == {"src": "200.1.2.3", "dst": "10.0.2.1",
                                                 "proto": 253}
    assert packets.icmp_quoted_packet(original) is None


def test_icmp_frag_needed_and_packet_too_big_carry_the_mtu():
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

    big = packets.craft("10.0.0.1", "192.0.2.99", size=1400, df=True)
    frag = bytes(IP(src="10.0.2.1", dst="10.0.0.1") / ICMP(type=3, code=4, nexthopmtu=1280)
                 / big[:28])
    assert packets.summarize(frag)["mtu"] == 1280
    big6 = packets.craft("fd00::1", "2001:db8::99", "udp", size=1400)
    too_big = bytes(IPv6(src="fd00::1", dst="fd00::1") / ICMPv6PacketTooBig(mtu=1280)
                    / big6[:1232])
    info = packets.summarize(too_big)
    assert (info["icmp_type"], info["mtu"]) == (2, 1280)
    assert packets.icmp_quoted_packet(too_big) == {"src": "fd00::1", "dst": "2001:db8::99",
                                                   "proto": "udp"}
    assert packets.icmp_quoted_packet(big6) is None


def test_ipv6_summary_looks_behind_extension_headers():
    from scapy.layers.inet6 import ICMPv6MLReport2, IPv6, IPv6ExtHdrHopByHop, RouterAlert

    report = bytes(IPv6(src="fe80::1", dst="ff02::16", hlim=1)
                   / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2())
    info = packets.summarize(report)
    assert (info["proto"], info["icmp_type"], info["ttl"]) == ("icmp6", 143, 1)


def test_a_later_ipv6_fragment_has_no_upper_layer_header_to_read():
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, fragment6

    big = (IPv6(src="fd00:2::1", dst="fd00:2::99") / IPv6ExtHdrFragment()
           / ICMPv6EchoRequest(data=bytes(1400)))  # bytes(1400): zeros, as the kernel pads
    first, second = fragment6(big, 1280)
    assert packets.summarize(bytes(first))["icmp_type"] == 128
    later = packets.summarize(bytes(second))
    assert later["proto"] == "icmp6" and "icmp_type" not in later

