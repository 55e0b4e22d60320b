"""What happens to this packet? Ask the kernel, then say it in plain words, with fixes it confirmed.

:func:`packet_fate` builds the seed's host in a fresh namespace (mytun, mytun2 and the uplink
wan0), applies the request's settings, routes and firewall rules, writes one crafted packet
into a device the way the vpn-server releases packets, and reports what the kernel did: drop
reasons (tracefs), martian lines, replies, counter deltas, the settings the kernel applied, and
an explanation whose fixes were each tried in another fresh lab. :func:`observe` is the same
measurement around any action (the demo uses it around a real tunnel).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tunlab.fate import experiment, explain, fixes
from tunlab.fate.reasons import REASONS, Stage, meaning, stage
from tunlab.fate.report import DropSite, Evidence, FateReport, Fix, Reply, Verdict
from tunlab.fate.request import FateRequest, parse_args, request
from tunlab.kernel.netns import Namespace

__all__ = ["DropSite", "Evidence", "FateReport", "FateRequest", "Fix",
           "REASONS", "Reply", "Stage", "Verdict", "fate", "meaning", "observe",
           "packet_fate", "parse_args", "request", "stage"]


def fate(req: FateRequest, *, verify_fixes: bool = True, trace: bool = True) -> FateReport:
    """The kernel's answer for ``req``, explained; with ``verify_fixes`` each fix is tried."""
    started = time.monotonic()
    report = experiment.run(req, trace=trace)
    diagnosis = explain.diagnose(report, req)
    if verify_fixes and diagnosis.candidates:
        report.fixes = fixes.verify(req, diagnosis.candidates,
                                    lambda r: experiment.run(r, trace=trace))
    report.explanation = explain.render(report, diagnosis, req)
    report.elapsed = time.monotonic() - started
    return report


def observe(ns: Namespace, inject: Callable[[], None], **kwargs: Any) -> FateReport:
    """What the kernel did while ``inject()`` wrote a packet, explained (fixes are not tried:
    the packet came from outside, so it cannot be replayed). Arguments as
    :func:`tunlab.fate.experiment.observe`."""
    report = experiment.observe(ns, inject, **kwargs)
    sent = report.packet
    if sent.get("src") and sent.get("dst"):
        req = FateRequest(src=sent["src"], dst=sent["dst"], proto=sent.get("proto", "icmp"),
                          dev=sent.get("dev", "mytun2"))
        report.explanation = explain.render(report, explain.diagnose(report, req), req)
    return report


def packet_fate(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
                ttl: int = 64, dev: str = "mytun2", sysctls: dict[str, Any] | None = None,
                nft_ruleset: str | None = None, *, verify_fixes: bool = True,
                trace: bool = True, **extra: Any) -> FateReport:
    """Write one crafted packet into ``dev`` in a fresh seed lab; report the kernel's answer.

    ``sysctls`` are applied first (``{"net.ipv4.ip_forward": 1}``); ``log_martians`` is on
    unless set, so the kernel names martians. ``extra``: ``routes``, ``nft_rules``, ``mtus``
    (``{"wan0": 1280}``), ``listen`` (``[("udp", 53)]``), ``size``, ``df``. Everything happens
    in private namespaces that are removed afterwards, also on errors.
    """
    started = time.monotonic()
    req = request(src, dst, proto=proto, dport=dport, ttl=ttl, dev=dev, sysctls=sysctls,
                  nft_ruleset=nft_ruleset, **extra)
    report = fate(req, verify_fixes=verify_fixes, trace=trace)
    report.elapsed = time.monotonic() - started
    return report
