"""The kernel's verdict on one crafted packet: live (:func:`tunlab.fate.packet_fate`) with root,
recorded without; the cases recorded for read-only mode."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tunlab.course import evidence as recorded_evidence
from tunlab.course.lesson import START_HINT
from tunlab.course.recording import RECORDED_DIR, to_jsonable
from tunlab.fate.report import FateReport, Verdict
from tunlab.kernel.host import is_privileged

__all__ = ["fate", "FATE_CASE_INPUTS", "FATE_CASES", "fate_key", "FORWARD_ACCEPT_TUNNEL_RULESET",
           "FORWARD_DROP_RULESET", "live_fate", "record_fate_cases", "recorded_fate",
           "SEED_SYSCTLS"]

FATE_CASES = RECORDED_DIR / "fate_cases.json"


def fate_key(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
             ttl: int = 64, dev: str = "mytun2", sysctls: dict[str, Any] | None = None,
             nft_ruleset: str | None = None) -> str:
    """A canonical string for one :func:`tunlab.fate.packet_fate` call (recording lookup key)."""
    settings = {k: str(v) for k, v in sorted((sysctls or {}).items())}
    nft = nft_ruleset.strip() if nft_ruleset else ""
    return json.dumps({"src": src, "dst": dst, "proto": str(proto),
                       "dport": dport if str(proto) in ("udp", "tcp", "17", "6") else None,
                       "ttl": int(ttl), "dev": dev, "sysctls": settings,
                       "nft": hashlib.sha256(nft.encode()).hexdigest()[:12] if nft else None},
                      sort_keys=True)


def recorded_fate(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
                  ttl: int = 64, dev: str = "mytun2", sysctls: dict[str, Any] | None = None,
                  nft_ruleset: str | None = None, **extra: Any) -> FateReport:
    """The recorded fate report for these inputs (``recorded`` set).

    Used when the kernel cannot run the experiment (no root). Unrecorded inputs give the verdict
    :attr:`~tunlab.fate.report.Verdict.NOT_RECORDED` and an explanation of how to run it live.
    """
    cases = json.loads(FATE_CASES.read_text()) if FATE_CASES.exists() else {}
    extra = {k: v for k, v in extra.items() if k != "verify_fixes" and v}
    key = fate_key(src, dst, proto, dport, ttl, dev, sysctls, nft_ruleset) if not extra else ""
    if key in cases:
        return replace(FateReport.from_dict(cases[key]), recorded=True)
    return FateReport(verdict=Verdict.NOT_RECORDED, drop_reasons=[], martian_log=[],
                      replies=[], counters={}, recorded=True,
                      explanation="This combination was not recorded. Start the lab as root "
                                  f"(`{START_HINT}`) and the kernel itself will answer.")


def live_fate(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
              ttl: int = 64, dev: str = "mytun2", sysctls: dict[str, Any] | None = None,
              nft_ruleset: str | None = None, **extra: Any) -> FateReport:
    """Ask the kernel: :func:`tunlab.fate.packet_fate` in a fresh namespace.

    ``extra``: the other options of packet_fate (``routes``, ``nft_rules``, ``mtus``,
    ``listen``, ``size``, ``df``, ``verify_fixes``).
    """
    from tunlab.fate import packet_fate

    report = packet_fate(src, dst, proto=proto, dport=dport, ttl=ttl, dev=dev,
                         sysctls=sysctls, nft_ruleset=nft_ruleset, **extra)
    if recorded_evidence.lacks_traced_evidence(report):  # the no-sudo kernel: a root run's
        report = recorded_evidence.with_recorded_evidence(
            report, sysctls, lambda settings: recorded_fate(
                src, dst, proto, dport, ttl, dev, settings, nft_ruleset, **extra))
    return report


def fate(src: str, dst: str, **kwargs: Any) -> FateReport:
    """The kernel's verdict when the lab can run, else the recorded one (see recorded_fate)."""
    if is_privileged():
        return live_fate(src, dst, **kwargs)
    return recorded_fate(src, dst, **kwargs)


FORWARD_DROP_RULESET = """table inet hostfw {
    chain forward {
        type filter hook forward priority filter; policy drop;
    }
}"""
"""A host firewall that drops everything forwarded (as Docker's FORWARD policy DROP does)."""

FORWARD_ACCEPT_TUNNEL_RULESET = """table inet hostfw {
    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname "mytun2" oifname "mytun" accept
        ct state established,related accept
    }
}"""
"""The same firewall with the fix: what arrives from the tunnel (mytun2) may go on to mytun."""

SEED_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.all.accept_local", "net.ipv4.conf.all.log_martians")

# The cases the notebooks and the packet builder's defaults use; recorded for read-only mode.
FATE_CASE_INPUTS: list[dict[str, Any]] = [
    *({"src": src, "dst": "10.0.0.2",
       "sysctls": {"net.ipv4.ip_forward": fwd, "net.ipv4.conf.all.rp_filter": rp,
                   "net.ipv4.conf.all.accept_local": al, "net.ipv4.conf.all.log_martians": lm},
       "nft_ruleset": nft}
      for src in ("10.0.0.1", "200.1.2.3", "10.0.2.33", "10.0.2.1", "127.0.0.1")
      for fwd in (0, 1) for rp in (0, 1, 2) for al in (0, 1) for lm in (1,)
      for nft in (None, FORWARD_DROP_RULESET)
      if not (nft and fwd == 0)),
    {"src": "200.1.2.3", "dst": "10.0.0.2", "nft_ruleset": FORWARD_ACCEPT_TUNNEL_RULESET,
     "sysctls": {"net.ipv4.ip_forward": 1}},
    {"src": "200.1.2.3", "dst": "10.0.0.2", "nft_ruleset": FORWARD_DROP_RULESET,
     "sysctls": {"net.ipv4.ip_forward": 1}},
    {"src": "10.0.0.1", "dst": "10.0.2.33", "dev": "mytun",
     "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.log_martians": 1}},
    {"src": "200.1.2.3", "dst": "10.0.2.1", "proto": 253, "sysctls": {}},
    {"src": "200.1.2.3", "dst": "10.0.2.1", "proto": "icmp", "sysctls": {}},
    {"src": "200.1.2.3", "dst": "10.0.2.1", "proto": "udp", "dport": 9, "sysctls": {}},
    {"src": "10.0.0.1", "dst": "10.0.0.2", "sysctls": {}},
    # what participants type into the builder most: the seed's own martian (on mytun), a zero
    # source, and IPv6
    *({"src": src, "dst": dst, "dev": dev, "sysctls": {
        "net.ipv4.ip_forward": fwd, "net.ipv4.conf.all.rp_filter": rp,
        "net.ipv4.conf.all.accept_local": al, "net.ipv4.conf.all.log_martians": 1}}
      for src, dst, dev in (("10.0.0.1", "10.0.2.33", "mytun"), ("0.0.0.0", "10.0.2.1", "mytun2"),
                            ("0.0.0.0", "10.0.0.2", "mytun2"))
      for fwd in (0, 1) for rp in (0, 1, 2) for al in (0, 1)),
    *({"src": src, "dst": dst, "sysctls": {"net.ipv6.conf.all.forwarding": fwd}}
      for src, dst in (("2001:db8::5", "fd00::2"), ("2001:db8::5", "fd00:2::1"),
                       ("fd00::1", "fd00::2"))
      for fwd in (0, 1)),
    # lesson 06's builder as preset (protocol 253) and as exercise 06 asks (UDP to port 9)
    *({"src": "200.1.2.3", "dst": "10.0.2.1", "proto": proto, "dport": dport, "sysctls": {
        "net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
        "net.ipv4.conf.all.accept_local": 0, "net.ipv4.conf.all.log_martians": 1}}
      for proto, dport in ((253, None), ("udp", 9))),
]


def record_fate_cases(cases: Iterable[dict[str, Any]] | None = None,
                      progress: Callable[[str], None] | None = None) -> Path:
    """Run every case through the real kernel and store the reports (needs root)."""
    RECORDED_DIR.mkdir(parents=True, exist_ok=True)
    stored = json.loads(FATE_CASES.read_text()) if FATE_CASES.exists() else {}
    for case in cases if cases is not None else FATE_CASE_INPUTS:
        args = dict(case)
        src, dst = args.pop("src"), args.pop("dst")
        report = live_fate(src, dst, **args)
        stored[fate_key(src, dst, **args)] = to_jsonable(report)
        if progress:
            progress(f"{src} -> {dst} {args}: {report.verdict} {report.drop_reasons}")
    FATE_CASES.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    return FATE_CASES


