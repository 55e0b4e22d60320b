"""Every scenario of the fate corpus against the live kernel: verdict, reasons, replies, words,
and each fix re-run on its own to prove its ``verdict_after``; then the same packet without
tracefs, whose verdict must agree (counters and captures alone never claim a delivery)."""

from __future__ import annotations

import shlex
import time

import pytest
from fate_corpus import SCENARIOS, Scenario

from tunlab.fate import Verdict, fate, parse_args
from tunlab.fate.report import FateReport

MARTIAN_RATELIMIT_WINDOW = 5.5  # net.core.message_cost (5 s) and a margin


def _request(scenario: Scenario):
    args = shlex.split(scenario.args)
    if scenario.ruleset:
        args += ["--nft-ruleset-text", scenario.ruleset]
    return parse_args(args)


def _reply_matches(reply, expected: tuple) -> bool:
    if expected[1] == "tcp":
        return reply.dev == expected[0] and reply.proto == "tcp" and \
            reply.tcp_flags == expected[2]
    dev, proto, icmp_type, icmp_code = expected
    return (reply.dev, reply.proto, reply.icmp_type, reply.icmp_code) == (
        dev, proto, icmp_type, icmp_code)


def _check_words(report: FateReport, scenario: Scenario) -> None:
    for phrase in scenario.says:
        assert phrase in report.explanation, (phrase, report.explanation)
    for phrase in scenario.not_says:
        assert phrase not in report.explanation, (phrase, report.explanation)


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    request = _request(scenario)
    report = fate(request)
    assert report.verdict == scenario.verdict, report.explanation
    if not scenario.extra.get("any_reason"):
        assert tuple(report.drop_reasons) == scenario.reasons, report.drop_locations
    if not scenario.extra.get("any_replies"):
        assert len(report.replies) == len(scenario.replies), report.replies
    for expected in scenario.replies:
        assert any(_reply_matches(r, expected) for r in report.replies), report.replies
    if scenario.martian and not report.martian_log:
        # The kernel rate-limits martian lines machine-wide (10 per 5 s): the report must say
        # so, and after the limit's window the same packet must be logged.
        assert "martian line" in report.missing_evidence, report.to_dict()
        time.sleep(MARTIAN_RATELIMIT_WINDOW)
        report = fate(request)
    assert bool(report.martian_log) == scenario.martian, report.martian_log
    _check_words(report, scenario)

    working = report.working_fixes
    if scenario.fix is None:
        assert not working, [f.to_dict() for f in working]
        assert "Fixes, each tried" not in report.explanation
    else:
        assert working, report.explanation
        assert str(working[0].verdict_after) == scenario.fix
        if scenario.fix_has:
            assert any(scenario.fix_has in " ".join(f.commands) for f in working), \
                [f.commands for f in working]
    for fix in report.fixes:
        assert fix.verified
        if fix.works:
            assert fix.summary in report.explanation
        # A fix is only words if the same call with its arguments appended does what it says.
        again = fate(parse_args([*request.to_args(), *fix.fate_args]), verify_fixes=False)
        assert again.verdict == fix.verdict_after, (fix.to_dict(), again.explanation)

    untraced = fate(request, verify_fixes=False, trace=False)
    assert untraced.verdict == report.verdict, untraced.explanation
    assert "tracefs" in untraced.missing_evidence
    if untraced.verdict == Verdict.DROPPED and not untraced.drop_reasons:
        assert "the counters say" in untraced.explanation.lower()


def test_the_corpus_covers_the_options() -> None:
    joined = " ".join(s.args for s in SCENARIOS)
    for option in ("--route", "--listen udp", "--listen tcp", "--nft-rule", "--dev wan0",
                   "--dev mytun ", "--ttl 1", "--proto 253", "--proto udp", "--proto tcp"):
        assert option in joined, option
    assert len(SCENARIOS) >= 60
    assert len([s for s in SCENARIOS if s.family == 6]) >= 15
