"""The kernel's real verdicts for the seed's scenarios and beyond (tunlab.fate)."""

from __future__ import annotations

import time

import pytest

from tunlab.fate import packet_fate

pytestmark = pytest.mark.usefixtures("root")

FORWARD = {"net.ipv4.ip_forward": 1}
FORWARD_DROP = """table inet hostfw {
    chain forward { type filter hook forward priority filter; policy drop; }
}"""


def _fate_with_martian(*args, **kwargs):
    """packet_fate, once more after the kernel's martian rate limit (10 lines per 5 s,
    machine-wide) when the report says it suppressed the line."""
    report = packet_fate(*args, **kwargs)
    if not report.martian_log and "martian line" in report.missing_evidence:
        time.sleep(5.5)
        report = packet_fate(*args, **kwargs)
    return report


def _icmp(report, dev, icmp_type, icmp_code):
    return [r for r in report.replies if r.proto == "icmp" and r.dev == dev
            and (r.icmp_type, r.icmp_code) == (icmp_type, icmp_code)]


def test_seed_packet_with_forwarding_off_is_an_address_error():
    report = packet_fate("10.0.0.1", "10.0.0.2")
    assert report.verdict == "dropped"
    assert report.drop_reasons == ["IP_INADDRERRORS"]
    assert report.drop_locations[0].location == "ip_error"
    assert report.martian_log == []
    assert report.counters.get("IpInAddrErrors") == 1
    assert "net.ipv4.ip_forward=1" in report.explanation


def test_seed_packet_with_forwarding_on_is_a_martian_local_source():
    report = _fate_with_martian("10.0.0.1", "10.0.0.2", sysctls=FORWARD)
    assert report.drop_reasons == ["IP_LOCAL_SOURCE"]
    assert report.martian_log == ["martian source 10.0.0.2 from 10.0.0.1, on dev mytun2"]
    assert report.counters.get("rt_cache.in_martian_src", 0) >= 1
    assert "accept_local=1" in report.explanation


def test_strict_reverse_path_filter_drops_a_source_routed_elsewhere():
    report = _fate_with_martian("200.1.2.3", "10.0.0.2",
                                sysctls={**FORWARD, "net.ipv4.conf.all.rp_filter": 1})
    assert report.drop_reasons == ["IP_RPFILTER"]
    assert report.martian_log == ["martian source 10.0.0.2 from 200.1.2.3, on dev mytun2"]
    assert report.counters.get("TcpExtIPReversePathFilter") == 1
    assert "rp_filter=2" in report.explanation
    assert "`ip route add 200.1.2.3 dev mytun2`" in report.explanation  # the real device


def test_loose_reverse_path_filter_lets_it_through():
    report = packet_fate("200.1.2.3", "10.0.0.2",
                         sysctls={**FORWARD, "net.ipv4.conf.all.rp_filter": 2})
    assert report.verdict == "forwarded"
    assert report.drop_reasons == []
    # What the report says the namespace held: read there, the `all` values as set.
    assert report.settings == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2",
                               "net.ipv4.conf.all.accept_local": "0",
                               "net.ipv4.conf.all.log_martians": "1"}


def test_host_firewall_forward_policy_drop():
    report = packet_fate("200.1.2.3", "10.0.0.2", sysctls=FORWARD, nft_ruleset=FORWARD_DROP)
    assert report.drop_reasons == ["NETFILTER_DROP"]
    assert report.drop_locations[0].location == "nft_do_chain"
    assert report.firewall is not None and report.firewall.by_policy
    assert report.firewall.hook.value == "forward" and report.firewall.table == "hostfw"
    assert "policy drop" in report.explanation
    assert 'nft add rule inet hostfw forward iifname "mytun2"' in report.explanation


def test_unknown_protocol_is_ip_noproto_with_protocol_unreachable():
    report = packet_fate("200.1.2.3", "10.0.2.1", proto=253)
    assert report.drop_reasons == ["IP_NOPROTO"]
    assert report.counters.get("IpInUnknownProtos") == 1
    assert _icmp(report, "wan0", 3, 2), report.replies
    assert "protocol 253" in report.explanation


def test_echo_request_to_a_local_address_is_answered():
    report = packet_fate("200.1.2.3", "10.0.2.1")
    assert report.verdict == "delivered"
    assert report.drop_reasons == []
    reply = _icmp(report, "wan0", 0, 0)
    assert reply and reply[0].src == "10.0.2.1" and reply[0].dst == "200.1.2.3"


def test_a_sender_on_the_tunnel_subnet_gets_its_reply_back_through_mytun2():
    report = packet_fate("10.0.2.7", "10.0.2.1")
    assert report.verdict == "delivered"
    assert _icmp(report, "mytun2", 0, 0)


def test_forwarding_sends_the_packet_out_of_the_other_device():
    report = packet_fate("200.1.2.3", "10.0.0.2", sysctls=FORWARD)
    assert report.verdict == "forwarded"
    assert report.counters.get("IpForwDatagrams") == 1
    assert report.counters.get("mytun.tx_packets") == 1
    assert "mytun" in report.explanation


def test_ttl_expiry_answers_time_exceeded():
    report = packet_fate("200.1.2.3", "10.0.0.2", ttl=1, sysctls=FORWARD)
    assert report.verdict == "dropped"
    assert report.drop_reasons == ["IP_INHDR"]
    assert _icmp(report, "wan0", 11, 0)
    assert "TTL" in report.explanation


def test_closed_udp_port_answers_port_unreachable():
    report = packet_fate("200.1.2.3", "10.0.2.1", proto="udp", dport=9999)
    assert report.drop_reasons == ["NO_SOCKET"]
    assert _icmp(report, "wan0", 3, 3)
    assert "port 9999" in report.explanation


def test_closed_tcp_port_answers_reset():
    report = packet_fate("200.1.2.3", "10.0.2.1", proto="tcp", dport=9999)
    assert report.drop_reasons == ["NO_SOCKET"]
    resets = [r for r in report.replies if r.proto == "tcp" and "R" in (r.tcp_flags or "")]
    assert resets and resets[0].sport == 9999


def test_ping_minus_I_case_a_packet_from_our_own_address_is_a_martian():
    # `ping -I mytun 10.0.2.1` sends from 10.0.0.1; carried through a tunnel it comes back in
    # on a device with a source that is this host's own address.
    report = _fate_with_martian("10.0.0.1", "10.0.2.1", dev="mytun")
    assert report.drop_reasons == ["IP_LOCAL_SOURCE"]
    assert report.martian_log == ["martian source 10.0.2.1 from 10.0.0.1, on dev mytun"]


def test_accept_local_lets_it_in_and_the_reply_loops_back_via_lo():
    report = packet_fate("10.0.0.1", "10.0.2.1", dev="mytun",
                         sysctls={"net.ipv4.conf.all.accept_local": 1})
    assert report.verdict == "delivered"
    assert report.drop_reasons == []
    assert report.counters.get("lo.tx_packets", 0) >= 1  # the echo reply went to ourselves
    assert report.replies == []


def test_report_dict_has_the_contract_keys():
    report = packet_fate("200.1.2.3", "10.0.2.1").to_dict()
    for key in ("verdict", "drop_reasons", "martian_log", "replies", "counters", "explanation"):
        assert key in report
    assert report["packet"]["dev"] == "mytun2"


@pytest.mark.parametrize("kwargs, match", [
    ({"src": "1.2.3", "dst": "10.0.0.1"}, "not an IPv4 or IPv6"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "proto": "smtp"}, "unknown protocol"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "ttl": 256}, "TTL"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "dport": 53}, "no ports"),
    ({"src": "1.2.3.4", "dst": "fd00::1"}, "same IP version"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "dev": "eth0"}, "seed topology"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "sysctls": {"net.ipv4.nonsense": 1}}, "no such"),
    ({"src": "1.2.3.4", "dst": "10.0.0.1", "nft_ruleset": "this is not nft"}, "nft refused"),
])
def test_bad_input_is_a_clear_error(kwargs, match):
    from tunlab.errors import TunlabError

    with pytest.raises(TunlabError, match=match):
        packet_fate(**kwargs)


def test_drop_reasons_are_traced_inside_a_pid_namespace(tunlab_cmd):
    # In a container the writer's thread id is not the id tracefs records (the host's), so
    # fate matches its writer by a unique thread name instead.
    import json
    import subprocess

    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", *tunlab_cmd, "fate",
                             "--src", "200.1.2.3", "--dst", "10.0.2.1", "--proto", "253",
                             "--json", "--no-verify"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["drop_reasons"] == ["IP_NOPROTO"]
    assert "tracefs" in report["evidence"]


def test_without_tracefs_the_counters_decide_and_say_so():
    report = packet_fate("10.0.0.1", "10.0.0.2", verify_fixes=False, trace=False)
    assert report.verdict == "dropped" and report.drop_reasons == []
    assert "tracefs" in report.missing_evidence
    assert "The counters say: IpInAddrErrors +1" in report.explanation
