"""The fate layer's logic without a kernel: requests and their arguments, the effective-settings
rules, explanations of given facts, and fix verification with a scripted runner."""

from __future__ import annotations

import pytest

from tunlab.errors import TunlabError
from tunlab.fate import changes, explain, fixes
from tunlab.fate.experiment import rules_ruleset
from tunlab.fate.report import DropSite, FateReport, Fix, Reply, Verdict
from tunlab.fate.request import FateRequest, parse_args
from tunlab.fate.settings import Combined, EffectiveSettings


def _effective(dev: str = "mytun2", rp_all: int = 0, rp_dev: int = 0, fwd: int = 0,
               ip_forward: int = 0, log_all: int = 1, log_dev: int = 0) -> dict:
    return EffectiveSettings(
        device=dev, ip_forward=ip_forward,
        forwarding=Combined(fwd, ip_forward, fwd, "device"),
        rp_filter=Combined(max(rp_all, rp_dev), rp_all, rp_dev, "max"),
        log_martians=Combined(int(bool(log_all or log_dev)), log_all, log_dev, "or"),
        accept_local=Combined(0, 0, 0, "or"), route_localnet=Combined(0, 0, 0, "or"),
        icmp_echo_ignore_broadcasts=1).to_dict()


def _report(reasons: list[str], eff: dict, **kwargs) -> FateReport:
    return FateReport(verdict=Verdict.DROPPED if reasons else kwargs.pop("verdict"),
                      drop_reasons=reasons, martian_log=[], replies=kwargs.pop("replies", []),
                      counters=kwargs.pop("counters", {}), effective_settings=eff,
                      drop_locations=[DropSite(r, "somewhere") for r in reasons], **kwargs)


def test_arguments_round_trip() -> None:
    args = ["--src", "200.1.2.3", "--dst", "10.0.0.2", "--proto", "udp", "--dport", "53",
            "--ttl", "0", "--dev", "wan0", "--set", "net.ipv4.ip_forward=1",
            "--route", "blackhole 10.0.0.0/25", "--route-del", "blackhole 10.0.0.0/25",
            "--mtu", "wan0=1280", "--listen", "udp", "53", "--nft-rule",
            "forward ip saddr 200.1.2.3 drop", "--size", "300", "--df"]
    request = parse_args(args)
    assert parse_args(request.to_args()) == request
    assert request.ttl == 0 and request.mtus == (("wan0", 1280),)


def test_appended_arguments_win_as_on_the_command_line() -> None:
    request = parse_args(["--src", "200.1.2.3", "--dst", "10.0.0.2", "--ttl", "1"])
    assert parse_args([*request.to_args(), "--ttl", "64"]).ttl == 64
    more = request.apply([changes.SetSysctl("net.ipv4.ip_forward", "1")])
    assert more.settings == {"net.ipv4.ip_forward": "1"}


CHANGES = [
    changes.SetSysctl("net.ipv4.ip_forward", "1"),
    changes.SetSysctl("net.ipv4.conf.mytun2.rp_filter", "0"),
    changes.AddRoute("200.1.2.3 dev mytun2"),
    changes.DeleteRoute("blackhole 10.0.0.0/24"),
    changes.NftCommand('insert rule inet hostfw forward position 2 iifname "mytun2" accept'),
    changes.Listen("udp", 53),
    changes.SetMtu("wan0", 1500),
    changes.SetTtl(64, "ping -t 64 10.0.0.2"),
    changes.ClearDf("ping -M dont -s 1400 10.0.0.2"),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: type(c).__name__)
def test_a_change_shown_as_arguments_is_the_change_made(change) -> None:
    """What a fix shows (its ``tunlab fate`` arguments) does what the fix did in the lab."""
    request = parse_args(["--src", "200.1.2.3", "--dst", "10.0.0.2", "--ttl", "1", "--df",
                          "--set", "net.ipv4.ip_forward=0", "--mtu", "wan0=1280"])
    assert parse_args([*request.to_args(), *change.fate_args()]) == request.apply([change])
    assert change.command() and change.command() == change.command().strip()


@pytest.mark.parametrize("args, match", [
    (["--src", "1.2.3", "--dst", "10.0.0.1"], "not an IPv4 or IPv6"),
    (["--src", "1.2.3.4", "--dst", "fd00::1"], "same IP version"),
    (["--src", "1.2.3.4", "--dst", "10.0.0.1", "--dport", "53"], "no ports"),
    (["--src", "1.2.3.4", "--dst", "10.0.0.1", "--ttl", "256"], "TTL"),
    (["--src", "1.2.3.4", "--dst", "10.0.0.1", "--dev", "eth0"], "seed topology"),
    (["--src", "1.2.3.4", "--dst", "10.0.0.1", "--nft-rule", "drop"], "hook"),
    (["--src", "1.2.3.4", "--dst", "10.0.0.1", "--mtu", "wan0"], "DEV=N"),
    (["--src", "1.2.3.4", "--dst", "10.0.0.1", "--listen", "sctp", "9"], "socket"),
    (["--src", "1.2.3.4", "--dst", "10.0.0.1", "--nft-cmd", "list ruleset"], "rule command"),
    (["--src", "fd00::2", "--dst", "fd00::1", "--df"], "IPv4 flag"),
    (["--src", "1.2.3.4"], "required"),
])
def test_bad_arguments_are_clear_errors(args: list[str], match: str) -> None:
    with pytest.raises(TunlabError, match=match):
        parse_args(args)


def test_rules_become_one_accepting_chain_per_hook() -> None:
    text = rules_ruleset(["forward ip saddr 200.1.2.3 drop", "input tcp dport 22 drop",
                          "forward udp dport 53 accept"])
    assert text.count("hook forward") == 1 and text.count("hook input") == 1
    assert text.index("ip saddr 200.1.2.3 drop") < text.index("udp dport 53 accept")


def test_effective_settings_combine_like_the_kernel() -> None:
    eff = _effective(rp_all=0, rp_dev=1, log_all=0, log_dev=1)
    assert eff["rp_filter"] == 1 and eff["log_martians"] == 1
    assert "net.ipv4.conf.mytun2.rp_filter=1" in eff["sources"]["rp_filter"]


def test_rp_filter_set_on_the_device_is_named_and_its_fix_clears_both() -> None:
    request = FateRequest(src="200.1.2.3", dst="10.0.2.1")
    report = _report(["IP_RPFILTER"], _effective(rp_all=0, rp_dev=1),
                     route_back="200.1.2.3 dev wan0 src 192.0.2.1")
    diagnosis = explain.diagnose(report, request)
    text = " ".join(diagnosis.cause)
    assert "strict mode" in text and "net.ipv4.conf.mytun2.rp_filter=1" in text
    off = [f for f in diagnosis.candidates if "off" in f.summary][0]
    assert off.fate_args == ["--set", "net.ipv4.conf.all.rp_filter=0",
                             "--set", "net.ipv4.conf.mytun2.rp_filter=0"]


def test_a_local_source_gets_no_route_fix() -> None:
    request = FateRequest(src="10.0.0.1", dst="10.0.2.1")
    report = _report(["IP_RPFILTER"], _effective(rp_all=1),
                     route_back="local 10.0.0.1 dev lo src 10.0.0.1")
    diagnosis = explain.diagnose(report, request)
    assert "local table" in " ".join(diagnosis.cause)
    assert not [f for f in diagnosis.candidates if "--route" in f.fate_args]


def test_device_forwarding_is_the_cause_when_ip_forward_is_on() -> None:
    request = FateRequest(src="10.0.2.33", dst="200.1.2.3")
    report = _report(["IP_INADDRERRORS"], _effective(ip_forward=1, fwd=0))
    diagnosis = explain.diagnose(report, request)
    assert "net.ipv4.conf.mytun2.forwarding=0" in " ".join(diagnosis.cause)
    assert diagnosis.candidates[0].fate_args == ["--set", "net.ipv4.conf.mytun2.forwarding=1"]


def test_only_fixes_the_kernel_confirmed_are_called_fixes() -> None:
    request = FateRequest(src="10.0.0.1", dst="10.0.0.2")
    first = _report(["IP_INADDRERRORS"], _effective())
    after_forwarding = _report(["IP_LOCAL_SOURCE"], _effective(ip_forward=1, fwd=1))

    def runner(req: FateRequest) -> FateReport:
        settings = req.settings
        if settings.get("net.ipv4.conf.all.accept_local") == "1":
            return _report([], _effective(ip_forward=1, fwd=1), verdict=Verdict.FORWARDED)
        return after_forwarding

    diagnosis = explain.diagnose(first, request)
    first.fixes = fixes.verify(request, diagnosis.candidates, runner)
    text = explain.render(first, diagnosis, request)
    assert first.working_fixes[0].fate_args == [
        "--set", "net.ipv4.ip_forward=1", "--set", "net.ipv4.conf.all.accept_local=1"]
    assert "Tried, not enough on its own: turn on IP forwarding" in text
    assert text.index("Fixes, each tried") < text.index("Tried, not enough")


def test_verification_is_bounded() -> None:
    request = FateRequest(src="10.0.0.1", dst="10.0.0.2")
    calls = []

    def runner(req: FateRequest) -> FateReport:
        calls.append(req)
        return _report(["IP_RPFILTER"], _effective(rp_all=1), route_back="x dev wan0")

    candidates = [Fix(f"fix {i}", (changes.SetTtl(i + 2, "ping"),)) for i in range(10)]
    fixes.verify(request, candidates, runner, max_runs=3)
    assert len(calls) == 3


def test_no_evidence_is_not_a_delivery() -> None:
    report = _report([], {}, verdict=Verdict.UNKNOWN)
    text = explain.render(report, explain.Diagnosis(), FateRequest("200.1.2.3", "10.0.2.1"))
    assert text.startswith("Unknown")


def test_replies_in_words() -> None:
    reply = Reply(dev="wan0", src="10.0.2.1", dst="200.1.2.3", proto="icmp", icmp_type=3,
                  icmp_code=2)
    assert reply.describe() == "ICMP protocol unreachable from 10.0.2.1 out of wan0"
    syn_ack = Reply(dev="wan0", src="10.0.2.1", dst="200.1.2.3", proto="tcp", tcp_flags="SA")
    assert syn_ack.describe().startswith("a TCP SYN-ACK")


def test_the_reported_settings_come_from_the_effective_read():
    from tunlab.fate.experiment import WATCHED_SYSCTLS, _watched
    from tunlab.fate.settings import Combined, EffectiveSettings

    def combined(all_value: int, dev_value: int) -> Combined:
        return Combined(value=max(all_value, dev_value), all=all_value, device=dev_value,
                        rule="max")

    effective = EffectiveSettings(
        device="mytun", ip_forward=1, forwarding=combined(0, 0), rp_filter=combined(2, 0),
        log_martians=combined(1, 0), accept_local=combined(0, 1),
        route_localnet=combined(0, 0), icmp_echo_ignore_broadcasts=1, ipv6_forwarding=0)
    watched = _watched(effective)
    assert tuple(watched) == WATCHED_SYSCTLS
    # the `all` values, never the device's or the combination's
    assert watched == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2",
                       "net.ipv4.conf.all.accept_local": "0",
                       "net.ipv4.conf.all.log_martians": "1"}
