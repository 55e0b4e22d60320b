"""nftables rule tracing (tunlab.kernel.nft): the kernel names the chain and rule that refused a
packet, and the proposed accept, applied in a fresh lab, lets the same packet through."""

from __future__ import annotations

import os
import re
import select
import time
from dataclasses import dataclass

import pytest

from tunlab.errors import EnvironmentProblem, PrivilegeError, TunlabError
from tunlab.kernel import sysctl
from tunlab.kernel.netns import Namespace
from tunlab.kernel.nft.fixes import NftFix, apply_fix, propose_fix
from tunlab.kernel.nft.model import (
    TRACE_TABLE,
    FirewallVerdict,
    Hook,
    NftTrace,
    PacketInfo,
    Ruleset,
    RuleVerdict,
    StepKind,
)
from tunlab.kernel.nft.parse import classify_nft_error, parse_trace
from tunlab.kernel.nft.tracer import NftTracer
from tunlab.kernel.tun import TunDevice
from tunlab.lab import SeedLab
from tunlab.packet import craft as packets

SRC, FORWARDED, LOCAL = "200.1.2.3", "192.0.2.99", "10.0.2.1"
SRC6, FORWARDED6 = "2001:db8:200::3", "2001:db8:99::99"


# -- a lab run: ruleset, optional fix, one packet written into mytun2, traced -----------------

@dataclass
class Run:
    trace: NftTrace
    info: PacketInfo
    wan0: list[bytes]     # what the kernel sent out of wan0 while the tracer ran
    listing: str          # `nft -a list ruleset` before the packet: the handles, read by hand
    listing_after: str    # ... after the tracer stopped
    pids_after: list[int]

    @property
    def verdict(self) -> FirewallVerdict | None:
        return self.trace.verdict_for(self.info)


def _read_all(device: TunDevice, window: float = 1.0, quiet: float = 0.2) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + window
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([device.fileno()], [], [], min(left, quiet))
        if not ready:
            break
        try:
            out.append(os.read(device.fileno(), 65535))
        except BlockingIOError:
            continue
    return out


def _ipv6_lab(lab: SeedLab) -> None:
    # SeedLab(uplink=True) has fd00:2::1 on mytun2, 2001:db8::1 and the default route on wan0
    sysctl.set(lab.ns, "net.ipv6.conf.all.forwarding", 1)


def _craft6(src: str, dst: str) -> bytes:
    return packets.craft(src, dst, "icmp", ident=7)


def run_packet(ruleset: str, dst: str, fix: NftFix | None = None, src: str = SRC) -> Run:
    """One packet from ``src`` to ``dst`` written into mytun2 of a fresh lab with ``ruleset``."""
    with SeedLab("nfttrace", uplink=True) as lab:
        sysctl.set(lab.ns, "net.ipv4.ip_forward", 1)
        ipv6 = ":" in dst
        if ipv6:
            _ipv6_lab(lab)
        lab.ns.exec(["nft", "-f", "-"], input=ruleset.encode())
        if fix is not None:
            apply_fix(lab.ns, fix)
        listing = lab.ns.exec(["nft", "-a", "list", "ruleset"]).stdout
        writer, wan = lab.device("mytun2"), lab.device("wan0")
        for device in (writer, wan):
            os.set_blocking(device.fileno(), False)
        time.sleep(0.02)
        _read_all(wan, window=0.05, quiet=0.02)  # router solicitations from the link coming up
        packet = _craft6(src, dst) if ipv6 else packets.craft(src, dst)
        with NftTracer(lab.ns) as tracer:
            lab.ns.run(writer.write, packet)
            sent = _read_all(wan)
        assert tracer.result is not None
        return Run(trace=tracer.result, info=PacketInfo(src, dst, iif="mytun2"), wan0=sent,
                   listing=listing,
                   listing_after=lab.ns.exec(["nft", "-a", "list", "ruleset"]).stdout,
                   pids_after=lab.ns.pids())


def handle_of(listing: str, chain: str, needle: str) -> int:
    """The handle of the rule containing ``needle`` in ``chain``, read from ``nft -a list``."""
    current = None
    for line in listing.splitlines():
        if m := re.match(r"\s*chain (\S+) \{", line):
            current = m.group(1)
        elif current == chain and needle in line and "# handle" in line:
            return int(line.rsplit("# handle", 1)[1])
    raise AssertionError(f"no rule with {needle!r} in chain {chain}:\n{listing}")


def _summaries(run: Run) -> list[dict]:
    return [packets.summarize(p) for p in run.wan0 if p and p[0] >> 4 in (4, 6)]


def forwarded(run: Run) -> bool:
    """The kernel sent the packet itself out of wan0."""
    return any(s.get("src") == run.info.src and s.get("dst") == run.info.dst
               for s in _summaries(run))


def answered(run: Run) -> bool:
    """The kernel delivered the echo request locally: its echo reply left through wan0."""
    return any(s.get("src") == run.info.dst and s.get("dst") == run.info.src
               and s.get("icmp_type") == 0 for s in _summaries(run))


def icmp_errors(run: Run) -> list[tuple[int, int]]:
    return [(s["icmp_type"], s["icmp_code"]) for s in _summaries(run)
            if s.get("dst") == run.info.src and s.get("icmp_type") == 3]


# -- the scenarios ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    ruleset: str
    dst: str
    family: str
    table: str
    chain: str
    base_chain: str
    hook: Hook
    decision: RuleVerdict
    needle: str | None          # text of the refusing rule; None: the policy
    passes: str                 # "forwarded" or "answered" once fixed
    icmp_error: tuple[int, int] | None = None  # what a reject sends back before the fix


SCENARIOS = {
    "forward-policy-drop": Scenario(
        """table inet hostfw {
            chain forward { type filter hook forward priority filter; policy drop; }
        }""", FORWARDED, "inet", "hostfw", "forward", "forward", Hook.FORWARD,
        RuleVerdict.DROP, None, "forwarded"),
    "forward-drop-rule": Scenario(
        """table inet hostfw {
            chain forward {
                type filter hook forward priority filter; policy accept;
                ip daddr 10.9.9.9 accept
                counter
                iifname "mytun2" ip saddr 200.0.0.0/8 counter drop
                counter
            }
        }""", FORWARDED, "inet", "hostfw", "forward", "forward", Hook.FORWARD,
        RuleVerdict.DROP, "ip saddr 200.0.0.0/8", "forwarded"),
    "forward-reject-rule": Scenario(
        """table inet hostfw {
            chain forward {
                type filter hook forward priority filter; policy accept;
                ip daddr 192.0.2.0/24 reject
                counter
            }
        }""", FORWARDED, "inet", "hostfw", "forward", "forward", Hook.FORWARD,
        RuleVerdict.REJECT, "reject", "forwarded", icmp_error=(3, 3)),
    "input-policy-drop": Scenario(
        """table inet hostfw {
            chain input { type filter hook input priority filter; policy drop; }
        }""", LOCAL, "inet", "hostfw", "input", "input", Hook.INPUT,
        RuleVerdict.DROP, None, "answered"),
    "input-reject-admin-prohibited": Scenario(
        """table inet hostfw {
            chain input {
                type filter hook input priority filter; policy accept;
                iifname "lo" accept
                ip saddr 200.1.2.3 reject with icmp type admin-prohibited
            }
        }""", LOCAL, "inet", "hostfw", "input", "input", Hook.INPUT,
        RuleVerdict.REJECT, "admin-prohibited", "answered", icmp_error=(3, 13)),
    "ip-family-table-after-an-inet-one": Scenario(
        """table inet allow {
            chain forward { type filter hook forward priority filter; policy accept; counter; }
        }
        table ip legacy {
            chain FORWARD {
                type filter hook forward priority 10; policy accept;
                ip daddr 192.0.2.99 counter drop
            }
        }""", FORWARDED, "ip", "legacy", "FORWARD", "FORWARD", Hook.FORWARD,
        RuleVerdict.DROP, "ip daddr 192.0.2.99", "forwarded"),
    "drop-in-a-chain-reached-by-jump": Scenario(
        """table inet hostfw {
            chain forward {
                type filter hook forward priority filter; policy accept;
                iifname "mytun2" jump from_tunnel
                counter
            }
            chain from_tunnel {
                ip saddr 10.0.0.0/8 return
                ip saddr 200.1.2.3 counter drop
            }
        }""", FORWARDED, "inet", "hostfw", "from_tunnel", "forward", Hook.FORWARD,
        RuleVerdict.DROP, "ip saddr 200.1.2.3", "forwarded"),
    "policy-reached-after-a-goto": Scenario(
        """table inet hostfw {
            chain forward {
                type filter hook forward priority filter; policy drop;
                iifname "mytun2" goto from_tunnel
            }
            chain from_tunnel { counter; }
        }""", FORWARDED, "inet", "hostfw", "forward", "forward", Hook.FORWARD,
        RuleVerdict.DROP, None, "forwarded"),
    "ipv6-forward-drop-rule": Scenario(
        """table inet hostfw {
            chain forward {
                type filter hook forward priority filter; policy accept;
                meta nfproto ipv6 ip6 daddr 2001:db8:99::/48 drop
            }
        }""", FORWARDED6, "inet", "hostfw", "forward", "forward", Hook.FORWARD,
        RuleVerdict.DROP, "ip6 daddr 2001:db8:99::/48", "forwarded"),
}


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("name", SCENARIOS)
def test_the_trace_names_the_refusing_chain_and_its_fix_lets_the_packet_through(name):
    case = SCENARIOS[name]
    src = SRC6 if ":" in case.dst else SRC
    before = run_packet(case.ruleset, case.dst, src=src)
    # The kernel refused it: nothing of it left, only the reject's ICMP error if any.
    assert not forwarded(before) and not answered(before), before.wan0
    if case.icmp_error:
        assert icmp_errors(before) == [case.icmp_error]
    verdict = before.verdict
    assert verdict is not None, before.trace.lines
    assert (verdict.family, verdict.table, verdict.chain, verdict.base_chain, verdict.hook,
            verdict.decision) == (case.family, case.table, case.chain, case.base_chain,
                                  case.hook, case.decision)
    if case.needle is None:
        assert verdict.by_policy and verdict.rule is None
    else:
        assert verdict.handle == handle_of(before.listing, case.chain, case.needle)
        assert case.needle in (verdict.rule or "")
    assert verdict.table in verdict.describe() and verdict.chain in verdict.describe()
    # The tracer leaves the ruleset as it found it, and no process behind.
    assert TRACE_TABLE not in before.listing_after
    assert re.sub(r"packets \d+ bytes \d+", "", before.listing_after) == \
        re.sub(r"packets \d+ bytes \d+", "", before.listing)
    assert before.pids_after == []

    fix = propose_fix(verdict, before.trace.ruleset, before.info)
    assert fix.commands == tuple(f"nft {args}" for args in fix.nft_args)
    if case.needle is None:
        assert fix.nft_args[0].startswith(f"add rule {case.family} {case.table} ")
    else:
        assert fix.nft_args[0].startswith(
            f"insert rule {case.family} {case.table} {case.chain} position {verdict.handle} ")
    assert fix.nft_args[0].endswith(" accept") and 'iifname "mytun2"' in fix.nft_args[0]

    after = run_packet(case.ruleset, case.dst, fix=fix, src=src)
    assert (forwarded if case.passes == "forwarded" else answered)(after), after.wan0
    assert icmp_errors(after) == []
    accepted = after.verdict
    assert accepted is not None and accepted.decision is RuleVerdict.ACCEPT
    assert accepted.rule is not None and accepted.rule.endswith("accept")


@pytest.mark.usefixtures("root")
def test_a_goto_makes_the_fix_go_where_the_packet_fell_into_the_policy():
    case = SCENARIOS["policy-reached-after-a-goto"]
    run = run_packet(case.ruleset, case.dst)
    assert run.verdict is not None and run.verdict.fell_off == "from_tunnel"
    fix = propose_fix(run.verdict, run.trace.ruleset, run.info)
    assert fix.chain == "from_tunnel"
    naive = NftFix(summary="append to the base chain", family="inet", table="hostfw",
                   chain="forward", nft_args=(f"add rule inet hostfw forward {fix.match} accept",),
                   commands=())
    still = run_packet(case.ruleset, case.dst, fix=naive)
    assert not forwarded(still)  # the goto never comes back to the base chain


@pytest.mark.usefixtures("root")
def test_an_appended_accept_does_not_undo_a_reject_before_it():
    case = SCENARIOS["forward-reject-rule"]
    naive = NftFix(summary="append", family="inet", table="hostfw", chain="forward",
                   nft_args=(f'add rule inet hostfw forward iifname "mytun2" ip saddr {SRC} '
                             f"ip daddr {FORWARDED} accept",), commands=())
    run = run_packet(case.ruleset, case.dst, fix=naive)
    assert not forwarded(run) and icmp_errors(run) == [case.icmp_error]
    assert run.verdict is not None and run.verdict.decision is RuleVerdict.REJECT


@pytest.mark.usefixtures("root")
def test_a_reply_dropped_at_the_output_hook_is_found_under_its_own_addresses():
    ruleset = """table inet hostfw {
        chain output {
            type filter hook output priority filter; policy accept;
            ip daddr 200.1.2.3 icmp type echo-reply counter drop
        }
    }"""
    run = run_packet(ruleset, LOCAL)
    assert not answered(run)
    assert run.verdict is None  # the request met no chain of the user's ruleset
    reply = PacketInfo(LOCAL, SRC, oif="wan0")
    verdict = run.trace.verdict_for(reply)
    assert verdict is not None
    assert (verdict.hook, verdict.chain, verdict.decision) == (Hook.OUTPUT, "output",
                                                              RuleVerdict.DROP)
    assert verdict.handle == handle_of(run.listing, "output", "echo-reply")
    fix = propose_fix(verdict, run.trace.ruleset, reply)
    assert fix.nft_args == (f'insert rule inet hostfw output position {verdict.handle} '
                            f'oifname "wan0" ip saddr {LOCAL} ip daddr {SRC} accept',)
    assert answered(run_packet(ruleset, LOCAL, fix=fix))


@pytest.mark.usefixtures("root")
def test_after_dnat_the_packet_is_followed_and_the_fix_matches_the_new_address():
    ruleset = """table ip nat {
        chain prerouting {
            type nat hook prerouting priority dstnat; policy accept;
            ip daddr 192.0.2.99 dnat to 192.0.2.77
        }
    }
    table inet hostfw {
        chain forward { type filter hook forward priority filter; policy drop; }
    }"""
    run = run_packet(ruleset, FORWARDED)
    verdict = run.verdict
    assert verdict is not None and (verdict.table, verdict.chain, verdict.by_policy) == (
        "hostfw", "forward", True)
    assert [p.table for p in run.trace.passes_for(run.info)] == ["nat", "hostfw"]
    fix = propose_fix(verdict, run.trace.ruleset, run.info)
    assert "ip daddr 192.0.2.77" in fix.nft_args[0]
    after = run_packet(ruleset, FORWARDED, fix=fix)
    assert any(s.get("src") == SRC and s.get("dst") == "192.0.2.77" for s in _summaries(after))


@pytest.mark.usefixtures("root")
def test_a_rule_added_while_tracing_is_named_with_its_text():
    with SeedLab("nfttrace", uplink=True) as lab:
        sysctl.set(lab.ns, "net.ipv4.ip_forward", 1)
        writer = lab.device("mytun2")
        with NftTracer(lab.ns) as tracer:
            # nft monitor read its rule cache before this table existed
            lab.ns.exec(["nft", "-f", "-"], input=b"""table ip late {
                chain forward { type filter hook forward priority 0; ip saddr 200.1.2.3 drop; }
            }""")
            lab.ns.run(writer.write, packets.craft(SRC, FORWARDED))
        assert tracer.result is not None
        assert any("unknown rule handle" in line and "late" in line
                   for line in tracer.result.lines)
        verdict = tracer.result.verdict_for(PacketInfo(SRC, FORWARDED, iif="mytun2"))
        assert verdict is not None and verdict.table == "late"
        assert verdict.rule == "ip saddr 200.1.2.3 drop"
        assert verdict.to_dict()["hook"] == "forward"


@pytest.mark.usefixtures("root")
def test_an_accepted_packet_needs_no_fix():
    run = run_packet("""table inet hostfw {
        chain forward { type filter hook forward priority filter; policy accept; counter; }
    }""", FORWARDED)
    assert forwarded(run)
    verdict = run.verdict
    assert verdict is not None and verdict.decision is RuleVerdict.ACCEPT and verdict.by_policy
    with pytest.raises(TunlabError, match="not a drop"):
        propose_fix(verdict, run.trace.ruleset, run.info)


@pytest.mark.usefixtures("root")
def test_the_tracer_cleans_up_when_the_caller_fails():
    with SeedLab("nfttrace", uplink=True) as lab:
        with pytest.raises(RuntimeError), NftTracer(lab.ns):
            raise RuntimeError("the caller's own failure")
        assert TRACE_TABLE not in lab.ns.exec(["nft", "list", "ruleset"]).stdout
        assert lab.ns.pids() == []


@pytest.mark.usefixtures("root")
def test_a_second_tracer_in_the_same_namespace_is_refused_and_changes_nothing():
    with SeedLab("nfttrace", uplink=True) as lab, NftTracer(lab.ns):
        with pytest.raises(TunlabError, match="only one NftTracer"):
            NftTracer(lab.ns).start()
        assert TRACE_TABLE in lab.ns.exec(["nft", "list", "ruleset"]).stdout
        assert len(lab.ns.pids()) == 1  # the first tracer's monitor


def test_nft_not_installed_is_an_environment_problem_with_the_fix():
    with pytest.raises(EnvironmentProblem) as error:
        NftTracer(Namespace("never-created"), nft="nft-is-not-installed-here").start()
    assert "apt-get install nftables" in error.value.fix


# -- pure: parsing recorded monitor output, error classification, fix text ---------------------

# Recorded from nft 1.0.6 on kernel 6.18: a reject in a chain reached by jump. The ICMP error
# the reject sends is traced (as another packet) before the reject rule's own event.
RECORDED = """\
add table inet tunlab_trace # handle 2
trace id a8e734da inet tunlab_trace pre packet: iif "mytun2" ip saddr 200.1.2.3 ip daddr 192.0.2.99 ip protocol icmp ip length 34
trace id a8e734da inet tunlab_trace pre unknown rule handle 3 (verdict continue)
trace id a8e734da inet tunlab_trace pre policy accept 
trace id a8e734da inet hostfw forward packet: iif "mytun2" oif "wan0" ip saddr 200.1.2.3 ip daddr 192.0.2.99 ip dscp cs0 ip ttl 63 ip protocol icmp ip length 34
trace id a8e734da inet hostfw forward rule iifname "mytun2" jump sub # handle 4 (verdict jump sub)
trace id b9994649 inet tunlab_trace out packet: oif "wan0" ip saddr 192.0.2.1 ip daddr 200.1.2.3 ip protocol icmp icmp type destination-unreachable
trace id b9994649 inet tunlab_trace out unknown rule handle 4 (verdict continue)
trace id a8e734da inet hostfw sub rule ip daddr 192.0.2.99 counter packets 0 bytes 0 reject with icmp admin-prohibited # handle 7 (verdict drop)
delete table inet tunlab_trace # handle 2
"""  # noqa: E501, W291 - nft's own lines, trailing space included
RECORDED_RULESET = {"nftables": [
    {"metainfo": {"version": "1.0.6"}},
    {"table": {"family": "inet", "name": "hostfw", "handle": 1}},
    {"chain": {"family": "inet", "table": "hostfw", "name": "forward", "handle": 1,
               "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
    {"chain": {"family": "inet", "table": "hostfw", "name": "sub", "handle": 2}},
    {"rule": {"family": "inet", "table": "hostfw", "chain": "forward", "handle": 4,
              "expr": []}},
    {"rule": {"family": "inet", "table": "hostfw", "chain": "sub", "handle": 7, "expr": []}},
]}


def test_recorded_trace_parses_into_one_pass_with_the_reject_in_the_jumped_chain():
    ruleset = Ruleset.from_json(RECORDED_RULESET)
    passes = parse_trace(RECORDED.splitlines(), ruleset)
    assert len(passes) == 1  # the tracer's own table is left out
    (only,) = passes
    assert (only.table, only.base_chain, only.hook) == ("hostfw", "forward", Hook.FORWARD)
    assert only.packet.iif == "mytun2" and only.packet.oif == "wan0"
    assert [(s.chain, s.kind, s.verdict, s.handle) for s in only.steps] == [
        ("forward", StepKind.RULE, RuleVerdict.JUMP, 4),
        ("sub", StepKind.RULE, RuleVerdict.REJECT, 7)]
    assert only.steps[1].rule == "ip daddr 192.0.2.99 counter reject with icmp admin-prohibited"
    info = PacketInfo(SRC, FORWARDED, iif="mytun2")
    verdict = NftTrace(passes=passes, ruleset=ruleset).verdict_for(info)
    assert verdict is not None and (verdict.chain, verdict.handle) == ("sub", 7)
    fix = propose_fix(verdict, RECORDED_RULESET, info)
    assert fix.nft_args == ('insert rule inet hostfw sub position 7 iifname "mytun2" '
                            "ip saddr 200.1.2.3 ip daddr 192.0.2.99 accept",)
    assert NftTrace(passes=passes, ruleset=ruleset).verdict_for(
        PacketInfo(SRC, FORWARDED, iif="mytun")) is None  # another arrival device


def test_a_fix_for_a_rule_the_ruleset_does_not_hold_is_refused():
    verdict = FirewallVerdict(decision=RuleVerdict.DROP, family="inet", table="hostfw",
                              chain="sub", base_chain="forward", hook=Hook.FORWARD, handle=99,
                              rule="drop", trace_id="1")
    with pytest.raises(TunlabError, match="handle 99"):
        propose_fix(verdict, RECORDED_RULESET, PacketInfo(SRC, FORWARDED, iif="mytun2"))


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("bad", ["not json", '{"nftables": [{"chain": {"name": "x"}}]}', "[1]"])
def test_a_ruleset_that_is_not_nft_json_is_refused(bad):
    with pytest.raises(TunlabError, match="nft -j list ruleset"):
        Ruleset.from_json(bad)


def test_bad_packet_addresses_are_refused():
    with pytest.raises(TunlabError, match="not an IP address"):
        PacketInfo("200.1.2", FORWARDED)
    with pytest.raises(TunlabError, match="same IP version"):
        PacketInfo(SRC, FORWARDED6)


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize(("stderr", "kind"), [
    ("netlink: Error: cache initialization failed: Protocol not supported", EnvironmentProblem),
    ("Error: Could not process rule: Operation not supported", EnvironmentProblem),
    ("Error: Could not process rule: Operation not permitted", PrivilegeError),
    ("Error: Could not process rule: File exists", TunlabError),
])
def test_nft_failures_are_named_with_a_fix(stderr, kind):
    error = classify_nft_error(stderr, "add the tracing table")
    assert type(error) is kind and error.fix
