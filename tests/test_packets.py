"""Crafting and dissecting packets (tunlab.packets)."""

from __future__ import annotations

import pytest

from tunlab import packets
from tunlab.errors import TunlabError
from tunlab.ippacket import ip_packet_problem


@pytest.mark.parametrize("proto, expected", [("icmp", "icmp"), ("udp", "udp"),
                                             ("tcp", "tcp"), (253, 253)])
def test_crafted_packets_are_valid_ip(proto, expected):
    raw = packets.craft("200.1.2.3", "10.0.2.1", proto, dport=53, ttl=7)
    assert ip_packet_problem(raw) is None
    info = packets.summarize(raw)
    assert (info["src"], info["dst"], info["proto"], info["ttl"]) == (
        "200.1.2.3", "10.0.2.1", expected, 7)
    assert raw[9] == packets.protocol_number(proto)


def test_icmp_echo_request_fields_and_dissection():
    raw = packets.craft("10.0.0.1", "10.0.0.2")
    info = packets.summarize(raw)
    assert (info["icmp_type"], info["icmp_code"]) == (8, 0)
    text = packets.dissect(raw)
    assert "###[ IP ]###" in text and "echo-request" in text


@pytest.mark.parametrize("kwargs", [
    {"src": "300.1.2.3", "dst": "10.0.0.1"}, {"src": "1.2.3.4", "dst": "x"},
    {"src": "1.2.3.4", "dst": "10.0.0.1", "proto": 256},
    {"src": "1.2.3.4", "dst": "10.0.0.1", "proto": "gre"},
    {"src": "1.2.3.4", "dst": "10.0.0.1", "ttl": 300},
    {"src": "1.2.3.4", "dst": "10.0.0.1", "proto": "udp", "dport": 70000},
])
def test_bad_parameters_are_clear_errors(kwargs):
    with pytest.raises(TunlabError):
        packets.craft(**kwargs)


def test_icmp_error_names_the_packet_it_quotes():
    from scapy.all import ICMP, IP

    original = packets.craft("200.1.2.3", "10.0.2.1", 253)
    error = bytes(IP(src="10.0.2.1", dst="200.1.2.3") / ICMP(type=3, code=2) / original[:28])
    assert packets.icmp_quoted_packet(error) == {"src": "200.1.2.3", "dst": "10.0.2.1",
                                                 "proto": 253}
    assert packets.icmp_quoted_packet(original) is None
