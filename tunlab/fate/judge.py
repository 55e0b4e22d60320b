"""The verdict from the evidence, without I/O: what one injection's raw facts (drop reasons,
martian lines, captured packets, counter deltas) prove the kernel did with the packet.

With drop reasons traced, a reason means dropped; without them (the no-sudo kernel, or no
tracefs) the verdict rests on counters and captures, and "delivered" needs a delivery counter:
a packet that arrived and was neither delivered nor forwarded was dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunlab.fate.report import DropSite, Evidence, FateReport, Reply, Verdict
from tunlab.fate.settings import EffectiveSettings
from tunlab.kernel import martians, tracefs
from tunlab.packet import craft as packets

__all__ = ["counter_drops", "DROP_COUNTERS", "judge", "MARTIAN_REASONS", "Observation"]

MARTIAN_REASONS = frozenset({"IP_LOCAL_SOURCE", "IP_INVALID_SOURCE", "IP_RPFILTER",
                             "IP_LOCALNET", "IP_INVALID_DEST"})


# Counters that rise when the kernel drops a packet on input, in the order they are checked.
DROP_COUNTERS = ("IpInAddrErrors", "IpInHdrErrors", "IpInUnknownProtos", "IpInNoRoutes",
                 "IpInDiscards", "TcpExtIPReversePathFilter", "UdpNoPorts", "UdpInErrors",
                 "IpOutNoRoutes", "Ip6InAddrErrors", "Ip6InHdrErrors", "Ip6InNoRoutes",
                 "Ip6InUnknownProtos", "Ip6InTooBigErrors", "Ip6InDiscards", "Udp6NoPorts",
                 "TcpOutRsts", "IcmpInErrors", "Icmp6InErrors", "IcmpOutDestUnreachs",
                 "Icmp6OutDestUnreachs", "UdpIgnoredMulti", "Udp6IgnoredMulti",
                 "IcmpOutTimeExcds", "Icmp6OutTimeExcds", "Icmp6OutPktTooBigs")


@dataclass
class Observation:
    """The raw facts of one injection, before they are judged."""

    packet: dict[str, Any]
    drops: list[tracefs.Drop]
    other_drops: list[tracefs.Drop]
    martian_lines: list[str]
    captured: list[tuple[str, bytes]]
    counters: dict[str, int]
    settings: dict[str, str]
    effective: EffectiveSettings | None
    evidence: list[Evidence] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    tracing: str = "tracefs"


def _same_flow(summary: dict[str, Any], sent: dict[str, Any]) -> bool:
    return all(summary.get(k) == sent.get(k) for k in ("src", "dst", "proto"))


def _is_echo_reply(summary: dict[str, Any]) -> bool:
    return summary.get("icmp_type") in (0, 129) and summary.get("proto") in (
        "icmp", "icmp6", "ipv6-icmp")


def judge(obs: Observation, devices: list[str]) -> FateReport:
    """The verdict and the facts, from what the kernel showed (no words yet)."""
    sent = obs.packet
    version = sent.get("version", 4)
    ip_drops = [d for d in obs.drops if (d.protocol == tracefs.ETH_P_IPV6) == (version == 6)]
    reasons: list[str] = []
    for drop in ip_drops:
        if drop.reason not in reasons:
            reasons.append(drop.reason)
    if len(reasons) > 1 and "NOT_SPECIFIED" in reasons:
        reasons.remove("NOT_SPECIFIED")
    sites = [DropSite(d.reason, d.location) for d in ip_drops if d.reason in reasons]
    martian_lines = obs.martian_lines
    logging_on = obs.effective.log_martians.value if obs.effective else 1
    if not logging_on:
        # The kernel log is shared by every namespace: with logging off for this device, any
        # martian line seen now was written for some other lab's packet.
        martian_lines = []
    elif sent:
        martian_lines = martians.matching_martians(martian_lines, sent["src"], sent["dst"],
                                                devices)
    missing = dict(obs.missing)
    if logging_on and not martian_lines and Evidence.KERNEL_LOG in obs.evidence and \
            MARTIAN_REASONS.intersection(reasons):
        missing["martian line"] = (
            "log_martians is on, yet the kernel logged no line for this martian: it "
            "rate-limits these messages (net.core.message_burst lines per "
            "net.core.message_cost seconds, machine-wide), so it was probably suppressed")
    replies: list[Reply] = []
    forwarded_via, forwarded_ttl = None, None
    for dev, data in obs.captured:
        summary = packets.summarize(data)
        if sent and _same_flow(summary, sent) and not _is_echo_reply(summary):
            forwarded_via, forwarded_ttl = dev, summary.get("ttl")
            continue
        replies.append(Reply.from_summary(dev, summary))
    counters = obs.counters
    captured = Evidence.CAPTURE in obs.evidence
    forwarded_count = counters.get("IpForwDatagrams", 0) + counters.get(
        "Ip6OutForwDatagrams", 0)
    if Evidence.TRACEFS in obs.evidence:
        if forwarded_via or (not reasons and forwarded_count > 0 and not captured):
            verdict = Verdict.FORWARDED
        elif reasons:
            verdict = Verdict.DROPPED
        elif _delivered_by_counters(counters, version):
            verdict = Verdict.DELIVERED
        else:
            verdict = _verdict_from_counters(counters, version, forwarded_via, captured)
    else:
        # Without tracing, what crossed lo (a tunnel's own TCP, in the demo and lesson 06) must
        # not pass for the packet's delivery: the packet itself came in through a TUN device.
        loopback = counters.get("lo.rx_packets", 0) if version == 4 else 0
        verdict = _verdict_from_counters(counters, version, forwarded_via, captured, loopback)
    return FateReport(verdict=verdict, drop_reasons=reasons, martian_log=martian_lines,
                      replies=replies, counters=counters, drop_locations=sites,
                      reply_drops=[DropSite(d.reason, d.location) for d in obs.other_drops
                                   if d.protocol in (tracefs.ETH_P_IP, tracefs.ETH_P_IPV6)],
                      packet=sent, settings=obs.settings,
                      effective_settings=obs.effective.to_dict() if obs.effective else {},
                      forwarded_via=forwarded_via, forwarded_ttl=forwarded_ttl,
                      evidence=list(obs.evidence),
                      missing_evidence=missing, tracing=obs.tracing)


def _delivered_by_counters(counters: dict[str, int], version: int, loopback: int = 0) -> bool:
    key = "Ip6InDelivers" if version == 6 else "IpInDelivers"
    return counters.get(key, 0) - loopback > 0 and not counter_drops(counters)


def counter_drops(counters: dict[str, int]) -> list[str]:
    """The drop counters that rose (see :data:`DROP_COUNTERS`)."""
    return [name for name in DROP_COUNTERS if counters.get(name, 0) > 0]


def _verdict_from_counters(counters: dict[str, int], version: int,
                           forwarded_via: str | None, captured: bool = False,
                           loopback: int = 0) -> Verdict:
    """The verdict without drop reasons: what the counters and captures prove.

    ``captured``: the lab read every device the packet could leave by, so a forwarded packet
    must have been seen leaving; IpForwDatagrams alone counts it before the forward hook's
    firewall and the way out have had their say. ``loopback``: packets that crossed lo
    meanwhile (each one received and delivered, none of them the packet judged).
    """
    received = counters.get("Ip6InReceives" if version == 6 else "IpInReceives", 0) - loopback
    forwarded = counters.get("Ip6OutForwDatagrams" if version == 6 else "IpForwDatagrams", 0)
    if forwarded_via:
        return Verdict.FORWARDED
    if counter_drops(counters):
        # IpForwDatagrams counts a packet before the forward hook's firewall sees it, so a
        # drop counter (or an ICMP error sent) outweighs it.
        return Verdict.DROPPED
    if forwarded:
        return Verdict.DROPPED if captured else Verdict.FORWARDED
    if _delivered_by_counters(counters, version, loopback):
        return Verdict.DELIVERED
    if received > 0:
        # It arrived, and was neither delivered nor forwarded: the kernel dropped it, at a
        # place that counts nothing in this namespace (martian sources count only in the
        # machine-wide rt_cache statistics).
        return Verdict.DROPPED
    return Verdict.UNKNOWN
