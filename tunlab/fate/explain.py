"""The verdict in plain words, and the changes that might let the packet through.

:func:`diagnose` turns a report's facts into a cause (sentences that state only what the
kernel showed, with the settings it really applied) and candidate fixes. Candidates are not
shown to anyone until :mod:`tunlab.fate.fixes` has tried each in a fresh lab; :func:`render`
then writes the paragraph a participant reads, naming only the fixes the kernel confirmed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunlab.fate import reasons as catalogue
from tunlab.fate.changes import (
    AddRoute,
    Change,
    ClearDf,
    DeleteRoute,
    Listen,
    NftCommand,
    SetMtu,
    SetSysctl,
    SetTtl,
)
from tunlab.fate.report import Evidence, FateReport, Fix, Verdict
from tunlab.fate.request import FateRequest

__all__ = ["COUNTER_MEANINGS", "diagnose", "Diagnosis", "Explainer", "EXPLAINERS", "render",
           "ROUTE_TYPE_WORDS", "sysctl_fix"]

COUNTER_MEANINGS = {name: info.meaning for name, info in catalogue.COUNTERS.items()}


@dataclass
class Diagnosis:
    """What happened and why (facts only), and what might help (to be verified)."""

    cause: list[str] = field(default_factory=list)
    candidates: list[Fix] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)   # for the sender, not the host


def sysctl_fix(key: str, value: int | str, summary: str) -> Fix:
    """A fix that is one setting."""
    return Fix(summary=summary, changes=(SetSysctl(key, str(value)),))


def _family(request: FateRequest) -> int:
    return request.family


def _is_local_src(report: FateReport) -> bool:
    return report.route_back.startswith("local ")


def _dst_kind(report: FateReport, request: FateRequest) -> str:
    """"broadcast", "multicast", "local" or "" for the destination, as the kernel routes it."""
    address = ipaddress.ip_address(request.dst)
    if address.is_multicast:
        return "multicast"
    if request.dst == "255.255.255.255" or report.route_in.startswith("broadcast "):
        return "broadcast"
    if report.route_in.startswith("local "):
        return "local"
    return ""


def _listen_fix(proto: str, port: int) -> Fix:
    return Fix(summary=f"run a program that listens on {proto} port {port}",
               changes=(Listen(proto, port),))


def diagnose(report: FateReport, request: FateRequest) -> Diagnosis:
    """The cause of the verdict in words, and candidate fixes to try."""
    diagnosis = Diagnosis()
    if report.verdict != Verdict.DROPPED:
        return diagnosis
    if not report.drop_reasons:
        diagnosis.cause.append(_counter_cause(report))
        # Without drop reasons, a counter that names its cause still leads to the fixes
        # worth trying; each is proved by the kernel like any other.
        for reason in _reasons_from_counters(report):
            _diagnose_reason(reason, report, request, diagnosis)
        return diagnosis
    for reason in report.drop_reasons:
        _diagnose_reason(reason, report, request, diagnosis)
    return diagnosis


def _reasons_from_counters(report: FateReport) -> list[str]:
    from tunlab.fate.judge import counter_drops

    reasons = []
    for name in counter_drops(report.counters):
        info = catalogue.COUNTERS.get(name)
        if info and info.reason and info.reason != "NOT_SPECIFIED" and info.reason not in reasons:
            reasons.append(info.reason)
    if not reasons and report.counters.get("rt_cache.in_martian_src", 0) > 0:
        # Martian sources are counted only machine-wide (another lab may have added to it), so
        # a cause is named only when the packet's own source proves it.
        src = ipaddress.ip_address(report.packet.get("src", "0.0.0.0"))
        if _is_local_src(report):
            reasons.append("IP_LOCAL_SOURCE")
        elif src.is_multicast or src.is_unspecified or str(src) == "255.255.255.255":
            reasons.append("IP_INVALID_SOURCE")
    return reasons


def _counter_cause(report: FateReport) -> str:
    from tunlab.fate.judge import counter_drops

    seen = counter_drops(report.counters)
    forwarding = report.counters.get("IpForwDatagrams", 0) + report.counters.get(
        "Ip6OutForwDatagrams", 0)
    lacking = "; ".join(f"{what}: {why}" for what, why in report.missing_evidence.items())
    if seen:
        said = ", ".join(f"{name} +{report.counters[name]} ({COUNTER_MEANINGS.get(name, '')})"
                         for name in seen)
        text = f"The counters say: {said}."
    elif forwarding and Evidence.CAPTURE in report.evidence:
        text = ("The counters say the kernel began to forward it (IpForwDatagrams +1), yet it "
                "left through none of the lab's devices: something on the way out dropped it "
                "without counting, and a firewall's forward chain is the usual suspect "
                "(`nft list ruleset`).")
    else:
        text = ("The counters say it arrived (IpInReceives) but was neither delivered nor "
                "forwarded; no counter of this namespace names the cause (martian sources "
                "are counted only machine-wide, in /proc/net/stat/rt_cache in_martian_src).")
    if lacking:
        text += f" Drop reasons were not available ({lacking})."
    return text


def _diagnose_reason(reason: str, report: FateReport, request: FateRequest,
                     diagnosis: Diagnosis) -> None:
    EXPLAINERS.get(reason, _generic)(reason, report, request, diagnosis)


def _generic(reason: str, report: FateReport, request: FateRequest, diagnosis: Diagnosis) -> None:
    diagnosis.cause.append(f"{reason}: {catalogue.meaning(reason)}.")


def _inaddrerrors(reason: str, report: FateReport, request: FateRequest,
                  diagnosis: Diagnosis) -> None:
    eff, dev, src, dst = report.effective_settings, request.dev, request.src, request.dst
    add = diagnosis.cause.append
    if request.family == 6:
        add(f"{dst} is not an address of this host, and IPv6 forwarding is off "
            f"(net.ipv6.conf.all.forwarding=0), so the kernel has nowhere to take it.")
        diagnosis.candidates.append(sysctl_fix(
            "net.ipv6.conf.all.forwarding", 1, "turn on IPv6 forwarding"))
    elif eff.get("ip_forward") == 0:
        add(f"{dst} is not an address of this host, and IP forwarding is off "
            f"(net.ipv4.ip_forward=0), so the kernel has nowhere to take it.")
        diagnosis.candidates.append(sysctl_fix(
            "net.ipv4.ip_forward", 1, "turn on IP forwarding"))
    elif eff.get("forwarding") == 0:
        add(f"{dst} is not an address of this host, and although net.ipv4.ip_forward=1, "
            f"forwarding is off on the device it came in on "
            f"(net.ipv4.conf.{dev}.forwarding=0): the kernel asks the arrival device.")
        diagnosis.candidates.append(sysctl_fix(
            f"net.ipv4.conf.{dev}.forwarding", 1, f"turn on forwarding on {dev}"))
    else:
        add(f"{dst} is not an address of this host and the kernel's lookup gave no way to "
            f"forward it (`ip route get {dst} from {src} iif {dev}` says: "
            f"{report.route_in or 'nothing'}).")
    diagnosis.advice.append("to deliver it here instead, address it to one of this "
                            "host's addresses")


def _local_source(reason: str, report: FateReport, request: FateRequest,
                  diagnosis: Diagnosis) -> None:
    diagnosis.cause.append(
        f"The packet claims to come from {request.src}, an address of this very host, yet it "
        f"arrived from outside on {request.dev}. The kernel calls that a martian source "
        f"(accept_local={report.effective_settings.get('accept_local', 0)}).")
    diagnosis.candidates.append(sysctl_fix(
        "net.ipv4.conf.all.accept_local", 1,
        "let the host accept packets from its own addresses"))
    diagnosis.advice.append("the real fix is what a VPN has: two hosts, so the source is "
                            "not local to the receiver")


def _rpfilter(reason: str, report: FateReport, request: FateRequest,
              diagnosis: Diagnosis) -> None:
    _diagnose_rpfilter(report, request, diagnosis)


def _invalid_source(reason: str, report: FateReport, request: FateRequest,
                    diagnosis: Diagnosis) -> None:
    diagnosis.cause.append(f"{request.src} can never be a sender's address (zero, multicast or "
                           f"broadcast), so the kernel drops it as a martian source.")
    diagnosis.advice.append("the sender must use a real unicast source address")


def _localnet(reason: str, report: FateReport, request: FateRequest,
              diagnosis: Diagnosis) -> None:
    diagnosis.cause.append(
        f"A loopback (127/8) address arrived on {request.dev}, which is not the loopback "
        f"device (route_localnet={report.effective_settings.get('route_localnet', 0)}).")
    diagnosis.candidates.append(sysctl_fix(
        "net.ipv4.conf.all.route_localnet", 1, "let 127/8 addresses be routed"))


def _netfilter(reason: str, report: FateReport, request: FateRequest,
               diagnosis: Diagnosis) -> None:
    _diagnose_firewall(report, request, diagnosis)


def _noproto(reason: str, report: FateReport, request: FateRequest,
             diagnosis: Diagnosis) -> None:
    proto = request.proto
    diagnosis.cause.append(
        f"The packet reached local delivery at {request.dst}, but no handler is registered "
        f"for IP protocol {proto}, so the kernel drops it.")
    diagnosis.advice.append(f"send a protocol the host handles (ICMP 1, TCP 6, UDP 17) or "
                            f"run a program with a raw socket for protocol {proto}; if you did "
                            f"not mean protocol {proto}, check byte 9 of the IP header your "
                            f"tunnel writes")


def _inhdr(reason: str, report: FateReport, request: FateRequest, diagnosis: Diagnosis) -> None:
    src, dst, dev = request.src, request.dst, request.dev
    v6 = request.family == 6
    loopback = [a for a in (src, dst) if ipaddress.ip_address(a).is_loopback]
    ttl_word = "hop limit" if v6 else "TTL"
    if v6 and loopback:
        diagnosis.cause.append(
            f"{loopback[0]} is the loopback address, which may only appear on lo; arriving "
            f"on {dev} it makes the header invalid (Ip6InHdrErrors).")
        diagnosis.advice.append("the sender must use a real source address")
    elif request.ttl <= 1:
        diagnosis.cause.append(
            f"The {ttl_word} ran out: the packet arrived with {ttl_word} {request.ttl} and "
            f"forwarding would take it below 1, so the kernel drops it instead of "
            f"forwarding (this is how traceroute works).")
        ping = f"ping -6 -t 64 {dst}" if v6 else f"ping -t 64 {dst}"
        diagnosis.candidates.append(Fix(
            summary=f"send it with a larger {ttl_word} (the sender's setting)",
            changes=(SetTtl(64, ping),)))
    else:
        diagnosis.cause.append("The kernel found the IP header invalid (length, version, "
                               "options or checksum).")


def _no_socket(reason: str, report: FateReport, request: FateRequest,
               diagnosis: Diagnosis) -> None:
    proto = str(request.proto)
    port = request.dport or (80 if proto == "tcp" else 9)
    diagnosis.cause.append(f"Nothing listens on {proto} port {port} at {request.dst}, so the "
                           f"kernel refuses it.")
    if proto in ("udp", "tcp"):
        diagnosis.candidates.append(_listen_fix(proto, port))


def _invalid_proto(reason: str, report: FateReport, request: FateRequest,
                   diagnosis: Diagnosis) -> None:
    if str(request.proto) not in ("icmp", "1"):
        _generic(reason, report, request, diagnosis)
        return
    kind = _dst_kind(report, request) or "broadcast or multicast"
    diagnosis.cause.append(
        f"{request.dst} is a {kind} address, and this host ignores echo requests to broadcast "
        f"and multicast addresses (net.ipv4.icmp_echo_ignore_broadcasts="
        f"{report.effective_settings.get('icmp_echo_ignore_broadcasts', 1)}, the default).")
    diagnosis.candidates.append(sysctl_fix(
        "net.ipv4.icmp_echo_ignore_broadcasts", 0,
        "answer echo requests to broadcast and multicast addresses"))


def _discarding_route(report: FateReport, request: FateRequest) -> bool:
    """A blackhole, unreachable or prohibit route decided (the request's own, or ip_error)."""
    return bool(_route_covering(request)) or any(site.location == "ip_error"
                                                  for site in report.drop_locations)


def _not_specified(reason: str, report: FateReport, request: FateRequest,
                   diagnosis: Diagnosis) -> None:
    if str(request.proto) in ("udp", "17") and _dst_kind(report, request) in (
            "broadcast", "multicast"):
        port = request.dport or 9
        diagnosis.cause.append(
            f"{request.dst} is a {_dst_kind(report, request)} address and no socket is bound "
            f"to UDP port {port}; the kernel frees such a datagram without a reason code, and "
            f"never answers a broadcast with port unreachable.")
        diagnosis.candidates.append(_listen_fix("udp", port))
    elif _discarding_route(report, request):
        _diagnose_route_type(report, request, diagnosis)
    else:
        _generic(reason, report, request, diagnosis)


def _innoroutes(reason: str, report: FateReport, request: FateRequest,
                diagnosis: Diagnosis) -> None:
    if _discarding_route(report, request):
        _diagnose_route_type(report, request, diagnosis)
    else:
        diagnosis.cause.append(
            f"The kernel has no route to {request.dst} (`ip route get {request.dst} from "
            f"{request.src} iif {request.dev}`: {report.route_in or 'nothing'}).")


def _outnoroutes(reason: str, report: FateReport, request: FateRequest,
                 diagnosis: Diagnosis) -> None:
    if _discarding_route(report, request):
        _diagnose_route_type(report, request, diagnosis)
    else:
        _generic(reason, report, request, diagnosis)


def _pkt_too_big(reason: str, report: FateReport, request: FateRequest,
                 diagnosis: Diagnosis) -> None:
    v6 = request.family == 6
    out_dev = _out_device(report.route_in)
    why = ("IPv6 routers never fragment" if v6 else
           "its don't-fragment flag forbids splitting it")
    diagnosis.cause.append(
        f"The packet ({report.packet.get('len')} bytes) is larger than the MTU of "
        f"{out_dev or 'the way out'}, and {why}, so the kernel drops it and tells the "
        f"sender the MTU it can use (path MTU discovery).")
    if out_dev:
        diagnosis.candidates.append(Fix(summary=f"raise the MTU of {out_dev} to 1500",
                                        changes=(SetMtu(out_dev, 1500),)))
    if not v6:
        size = int(report.packet.get("len", 1400)) - 28
        diagnosis.candidates.append(Fix(
            summary="let routers fragment it: clear don't-fragment (the sender's setting)",
            changes=(ClearDf(f"ping -M dont -s {size} {request.dst}"),)))


Explainer = Callable[[str, FateReport, FateRequest, Diagnosis], None]

EXPLAINERS: dict[str, Explainer] = {
    "IP_INADDRERRORS": _inaddrerrors,
    "IP_LOCAL_SOURCE": _local_source,
    "IP_RPFILTER": _rpfilter,
    "IP_INVALID_SOURCE": _invalid_source,
    "IP_LOCALNET": _localnet,
    "NETFILTER_DROP": _netfilter,
    "IP_NOPROTO": _noproto,
    "IP_INHDR": _inhdr,
    "NO_SOCKET": _no_socket,
    "INVALID_PROTO": _invalid_proto,
    "NOT_SPECIFIED": _not_specified,
    "IP_INNOROUTES": _innoroutes,
    "IP_OUTNOROUTES": _outnoroutes,
    "PKT_TOO_BIG": _pkt_too_big,
}
"""One explainer per drop reason: it states the cause from the run's own evidence and proposes
candidate fixes (each tried by :mod:`tunlab.fate.fixes` before anyone sees it). A reason without
an entry is explained by the catalogue's meaning (:func:`_generic`)."""


ROUTE_TYPE_WORDS = {
    "blackhole": "a blackhole route: the kernel discards the packet and tells nobody",
    "unreachable": "an unreachable route: the kernel discards it and answers ICMP host "
                   "unreachable",
    "prohibit": "a prohibit route: the kernel discards it and answers ICMP administratively "
                "prohibited",
}


def _route_covering(request: FateRequest) -> str | None:
    """The request's own --route of a discarding type that covers the destination."""
    dst = ipaddress.ip_address(request.dst)
    for spec in request.routes:
        words = spec.split()
        if len(words) >= 2 and words[0] in ROUTE_TYPE_WORDS:
            try:
                if dst in ipaddress.ip_network(words[1], strict=False):
                    return spec
            except ValueError:
                continue
    return None


def _diagnose_route_type(report: FateReport, request: FateRequest,
                         diagnosis: Diagnosis) -> None:
    lookup = report.route_in or "nothing"
    kind = lookup.split()[0] if lookup.split() else ""
    if kind not in ROUTE_TYPE_WORDS:
        kind = next((k for k in ROUTE_TYPE_WORDS if k in lookup.lower()), "")
    spec = _route_covering(request)
    if spec and not kind:
        kind = spec.split()[0]
    if kind:
        diagnosis.cause.append(
            f"The route to {request.dst} is {ROUTE_TYPE_WORDS[kind]} (`ip route get "
            f"{request.dst} from {request.src} iif {request.dev}`: {lookup}).")
    else:
        diagnosis.cause.append(
            f"The route lookup sent it to ip_error (`ip route get {request.dst} from "
            f"{request.src} iif {request.dev}`: {lookup}), which gives no drop reason.")
    if spec:
        diagnosis.candidates.append(Fix(summary=f"remove the {spec.split()[0]} route",
                                        changes=(DeleteRoute(spec),)))


def _out_device(lookup: str) -> str | None:
    """The ``dev X`` of an ``ip route get`` answer."""
    words = lookup.split()
    return words[words.index("dev") + 1] if "dev" in words[:-1] else None


def _rp_values(eff: dict[str, Any]) -> tuple[int, str]:
    return int(eff.get("rp_filter", 0)), eff.get("sources", {}).get("rp_filter", "")


def _diagnose_rpfilter(report: FateReport, request: FateRequest, diagnosis: Diagnosis) -> None:
    eff = report.effective_settings
    dev, src = request.dev, request.src
    value, source = _rp_values(eff)
    mode = {1: "strict", 2: "loose"}.get(value, str(value))
    back = report.route_back or "no route"
    if _is_local_src(report):
        diagnosis.cause.append(
            f"Reverse-path filter, {mode} mode ({source}): {src} is one of this host's own "
            f"addresses, so the route back to it is the local table's (`ip route get {src}`: "
            f"{back}), which leaves through lo, not {dev}. No route added to the main table "
            f"can change that: the local table is consulted first.")
    elif value == 2:
        diagnosis.cause.append(
            f"Reverse-path filter, loose mode ({source}): the kernel has no usable route "
            f"back to {src} at all (`ip route get {src}`: {back}).")
    else:
        diagnosis.cause.append(
            f"Reverse-path filter, {mode} mode ({source}): the route back to {src} "
            f"(`ip route get {src}`: {back}) does not leave through {dev}, the device the "
            f"packet came in on, so the kernel treats the source as spoofed.")
        diagnosis.candidates.append(Fix(summary=f"route {src} back through {dev}",
                                        changes=(AddRoute(f"{src} dev {dev}"),)))
    dev_value = int(eff.get("inputs", {}).get("rp_filter", {}).get(dev, 0))
    if value == 1:
        diagnosis.candidates.append(sysctl_fix(
            "net.ipv4.conf.all.rp_filter", 2,
            "relax the reverse-path filter to loose mode (any route back will do)"))
    off: tuple[Change, ...] = (SetSysctl("net.ipv4.conf.all.rp_filter", "0"),)
    if dev_value:
        off += (SetSysctl(f"net.ipv4.conf.{dev}.rp_filter", "0"),)
    diagnosis.candidates.append(Fix(
        summary="turn the reverse-path filter off (both all and the device: the kernel uses "
                "the larger value)" if dev_value else "turn the reverse-path filter off",
        changes=off))


def _diagnose_firewall(report: FateReport, request: FateRequest, diagnosis: Diagnosis) -> None:
    decision = report.firewall
    if decision is None:
        diagnosis.cause.append(
            "A firewall dropped it: an nftables (or iptables) rule or a chain's drop policy "
            "(function nft_do_chain); tracing could not name which. `nft -a list ruleset` "
            "shows the chains, and `nft monitor trace` with `meta nftrace set 1` follows a "
            "packet through them.")
        return
    diagnosis.cause.append(decision.describe())
    hook = decision.hook.value if decision.hook else ""
    if hook == "forward" and decision.by_policy:
        diagnosis.cause.append("A host firewall whose forward chain has policy drop (as "
                               "Docker sets FORWARD DROP) eats forwarded tunnel traffic "
                               "this way.")
    if decision.decision.value == "reject":
        diagnosis.cause.append("A reject drops the packet and answers the sender, so the "
                               "kernel's drop reason is still NETFILTER_DROP.")
    fix = report.firewall_fix
    if fix is not None:
        where = (f"before rule handle {fix.position}" if fix.position is not None
                 else "at the end of the chain, before its policy")
        diagnosis.candidates.append(Fix(
            summary=f"accept this packet in chain {fix.chain} of table {fix.family} "
                    f"{fix.table}, {where}",
            changes=tuple(NftCommand(line) for line in fix.nft_args)))


def render(report: FateReport, diagnosis: Diagnosis, request: FateRequest) -> str:
    """The paragraph a participant reads: verdict, cause, the kernel's answers, verified fixes."""
    replies = (" The kernel answered with " + "; ".join(r.describe() for r in report.replies)
               + ".") if report.replies else ""
    if report.verdict == Verdict.FORWARDED:
        return _render_forwarded(report, request) + replies
    if report.verdict == Verdict.DELIVERED:
        return _render_delivered(report, request, replies)
    if report.verdict == Verdict.UNKNOWN:
        return ("Unknown: the lab saw no evidence of what happened to the packet (no drop "
                "reason, no counter, no packet out of a device)." + _missing(report))
    head = (f"Dropped ({', '.join(report.drop_reasons)}"
            + (f" in {report.drop_locations[0].location}" if report.drop_locations else "")
            + "). ") if report.drop_reasons else "Dropped, say the counters. "
    parts = [head + " ".join(diagnosis.cause)]
    if report.martian_log:
        parts.append(f"The kernel log says: \"{report.martian_log[0]}\".")
    elif "martian line" in report.missing_evidence:
        parts.append("No martian line was seen: the kernel rate-limits these messages, so "
                     "it was probably suppressed (run it again in a few seconds).")
    elif Evidence.KERNEL_LOG in report.evidence and report.drop_reasons and any(
            r in ("IP_LOCAL_SOURCE", "IP_RPFILTER", "IP_INVALID_SOURCE")
            for r in report.drop_reasons) and not report.effective_settings.get("log_martians"):
        parts.append(f"No martian line was logged: log_martians is off for {request.dev}.")
    text = " ".join(parts) + replies
    return text + _render_fixes(report, diagnosis)


def _render_forwarded(report: FateReport, request: FateRequest) -> str:
    via = (f" out of {report.forwarded_via}" if report.forwarded_via
           else " out of the host (the lab could not watch that device)")
    ttl = (f" (TTL {request.ttl} -> {report.forwarded_ttl})"
           if report.forwarded_ttl is not None else "")
    eff = report.effective_settings
    switch = ("IPv6 forwarding is on" if request.family == 6 else
              f"forwarding is on for {request.dev} (net.ipv4.conf.{request.dev}.forwarding="
              f"{eff.get('forwarding', '?')})")
    return (f"Forwarded: {request.dst} is not this host's, {switch}, and the route to "
            f"{request.dst} leads{via}, so the kernel passed it on{ttl}.")


def _render_delivered(report: FateReport, request: FateRequest, replies: str) -> str:
    proto = report.packet.get("proto", request.proto)
    text = (f"Delivered: {request.dst} is an address of this host, so the packet was handed "
            f"to the local {proto} stack.") + replies
    if not report.replies:
        if report.counters.get("lo.tx_packets", 0) > 0:
            text += (f" The answer went out through lo: the reply's destination {request.src} "
                     f"is this host's own address.")
        else:
            text += " No packet left through the lab's devices in response."
    return text


def _missing(report: FateReport) -> str:
    if not report.missing_evidence:
        return ""
    return " Missing: " + "; ".join(f"{k} ({v})" for k, v in report.missing_evidence.items()) + "."


def _render_fixes(report: FateReport, diagnosis: Diagnosis) -> str:
    working = report.working_fixes
    tried = [f for f in report.fixes if f.verified and not f.works]
    out = ""
    if working:
        out += " Fixes, each tried in a fresh lab with this packet: " + "; or ".join(
            f"{fix.summary} (`{'; '.join(fix.commands)}`: then {fix.verdict_after})"
            for fix in working) + "."
    for fix in tried:
        after = f", {', '.join(fix.reasons_after)}" if fix.reasons_after else ""
        out += (f" Tried, not enough on its own: {fix.summary} (`{'; '.join(fix.commands)}`: "
                f"still {fix.verdict_after}{after}).")
    if diagnosis.candidates and not report.fixes:
        out += " (Possible fixes were not tried in this run, so none is shown.)"
    elif not working and report.fixes:
        out += " No change tunlab tried lets this packet through."
    for advice in diagnosis.advice:
        out += f" Note: {advice}."
    return out
