"""A lesson's claims about a result: quiet when the kernel agrees, an error when it does not."""

from __future__ import annotations

import pytest

from tunlab.course.claims import ClaimMismatch, expect, expect_each

NOPROTO = {"verdict": "dropped", "drop_reasons": ["IP_NOPROTO"], "martian_log": [],
           "replies": [{"dev": "wan0", "proto": "icmp", "icmp_type": 3, "icmp_code": 2,
                        "src": "10.0.2.1", "dst": "200.1.2.3"}],
           "counters": {"IpInUnknownProtos": 1}, "explanation": "Dropped (IP_NOPROTO)."}


def test_agreeing_claims_pass_and_say_what_was_checked() -> None:
    checked = expect(NOPROTO, verdict="dropped", reasons=["IP_NOPROTO"],
                     replies=[("wan0", "icmp", 3, 2)], counters={"IpInUnknownProtos": 1})
    assert "IP_NOPROTO" in checked._repr_html_()


@pytest.mark.parametrize("claim", [
    {"verdict": "delivered"},
    {"reasons": ["IP_RPFILTER"]},
    {"no_replies": True},                       # lesson 06 once said no reply leaves
    {"replies": [("mytun2", "icmp", 3, 2)]},
    {"martian": True},
    {"counters": {"IpInUnknownProtos": 2}},
    {"says": ["accept_local"]},
])
def test_a_claim_the_kernel_contradicts_is_an_error(claim: dict) -> None:
    with pytest.raises(ClaimMismatch):
        expect(NOPROTO, **claim)


def test_a_suppressed_martian_line_is_named_not_hidden() -> None:
    report = {**NOPROTO, "drop_reasons": ["IP_RPFILTER"],
              "missing_evidence": {"martian line": "rate limited"}}
    checked = expect(report, martian=True)
    assert "rate limit" in repr(checked)
    with pytest.raises(ClaimMismatch):
        expect({**report, "missing_evidence": {}}, martian=True)


def test_labelled_results() -> None:
    with pytest.raises(ClaimMismatch, match="did not produce"):
        expect_each([("a", NOPROTO)], {"b": {"verdict": "dropped"}})
    expect_each([("a", NOPROTO)], {"a": {"verdict": "dropped"}})
