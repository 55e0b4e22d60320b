"""The typed results of a fate experiment: verdict, replies, drop sites, fixes, the report.

Dicts appear only at the edges: :meth:`FateReport.to_dict` is the ``tunlab fate --json``
object (and what recordings store).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

__all__ = ["DropSite", "Evidence", "FateReport", "Fix", "Reply", "reply_kind", "Verdict"]

if TYPE_CHECKING:
    from tunlab.fate.changes import Change
    from tunlab.kernel.nft.fixes import NftFix
    from tunlab.kernel.nft.model import FirewallVerdict


class Verdict(StrEnum):
    """What the kernel did with the packet. A ``str`` enum, so it compares equal to its value."""

    DROPPED = "dropped"
    DELIVERED = "delivered"
    FORWARDED = "forwarded"
    UNKNOWN = "unknown"   # the evidence the lab could gather does not say
    NOT_RECORDED = "not recorded"  # no root here, and no recording of this packet


class Evidence(StrEnum):
    """Where a report's facts come from."""

    TRACEFS = "tracefs"          # skb:kfree_skb drop reasons tied to our packet
    COUNTERS = "counters"        # nstat, /proc/net/snmp6, ip -s link, rt_cache
    KERNEL_LOG = "kernel log"    # martian lines in /dev/kmsg
    CAPTURE = "capture"          # packets read back out of the lab's TUN devices
    NFTRACE = "nftrace"          # nftables rule tracing


@dataclass(frozen=True)
class Reply:
    """A packet the kernel sent out of one of the lab's devices in response."""

    dev: str
    src: str
    dst: str
    proto: str | int
    icmp_type: int | None = None
    icmp_code: int | None = None
    sport: int | None = None
    dport: int | None = None
    tcp_flags: str | None = None

    @classmethod
    def from_summary(cls, dev: str, summary: dict[str, Any]) -> Reply:
        """From :func:`tunlab.packet.craft.summarize`'s dict."""
        return cls(dev=dev, src=str(summary.get("src")), dst=str(summary.get("dst")),
                   proto=summary.get("proto", "?"), icmp_type=summary.get("icmp_type"),
                   icmp_code=summary.get("icmp_code"), sport=summary.get("sport"),
                   dport=summary.get("dport"), tcp_flags=summary.get("tcp_flags"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reply:
        """The reply back from :meth:`to_dict` (a recording)."""
        return cls(dev=str(data["dev"]), src=str(data["src"]), dst=str(data["dst"]),
                   proto=data["proto"], icmp_type=data.get("icmp_type"),
                   icmp_code=data.get("icmp_code"), sport=data.get("sport"),
                   dport=data.get("dport"), tcp_flags=data.get("tcp_flags"))

    @property
    def is_icmp(self) -> bool:
        return self.proto in ("icmp", "icmp6", "ipv6-icmp")

    def describe(self) -> str:
        """``ICMP port unreachable from 10.0.2.1 out of wan0``."""
        return f"{reply_kind(self)} from {self.src} out of {self.dev}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dev": self.dev, "src": self.src, "dst": self.dst,
                               "proto": self.proto}
        for key in ("icmp_type", "icmp_code", "sport", "dport", "tcp_flags"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


_ICMP4_NAMES: dict[tuple[int | None, int | None], str] = {
                (0, 0): "an ICMP echo reply", (11, 0): "ICMP time exceeded",
                (3, 3): "ICMP port unreachable", (3, 2): "ICMP protocol unreachable",
                (3, 1): "ICMP host unreachable", (3, 0): "ICMP net unreachable",
                (3, 4): "ICMP fragmentation needed", (3, 13): "ICMP administratively prohibited",
                (3, 10): "ICMP host prohibited", (3, 9): "ICMP net prohibited"}
_ICMP6_NAMES: dict[tuple[int | None, int | None], str] = {
                (129, 0): "an ICMPv6 echo reply", (3, 0): "ICMPv6 time exceeded",
                (1, 4): "ICMPv6 port unreachable", (1, 0): "ICMPv6 no route",
                (1, 1): "ICMPv6 administratively prohibited", (1, 3): "ICMPv6 address unreachable",
                (1, 6): "ICMPv6 reject route", (2, 0): "ICMPv6 packet too big",
                (4, 1): "ICMPv6 parameter problem (unknown next header)"}


def reply_kind(reply: Reply) -> str:
    """The reply in words: "ICMP port unreachable", "a TCP reset (RST)", ..."""
    key = (reply.icmp_type, reply.icmp_code)
    if reply.proto == "icmp":
        return _ICMP4_NAMES.get(key, f"ICMP type {reply.icmp_type} code {reply.icmp_code}")
    if reply.proto in ("icmp6", "ipv6-icmp"):
        return _ICMP6_NAMES.get(key, f"ICMPv6 type {reply.icmp_type} code {reply.icmp_code}")
    if reply.proto == "tcp":
        flags = reply.tcp_flags or ""
        if "R" in flags:
            return "a TCP reset (RST)"
        if "S" in flags and "A" in flags:
            return "a TCP SYN-ACK"
        return f"TCP [{flags}]"
    return str(reply.proto)


@dataclass(frozen=True)
class DropSite:
    """One drop the kernel traced for the packet: its reason and the function that dropped it."""

    reason: str
    location: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "location": self.location}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DropSite:
        return cls(str(data["reason"]), str(data["location"]))


@dataclass
class Fix:
    """A change that would let the packet through, tried in a fresh lab before it is shown.

    ``changes``: what the fix changes, as data (:mod:`tunlab.fate.changes`); the request with
    them applied is what the kernel was asked again. ``verdict_after`` and ``reasons_after`` are
    what it did with the packet then.
    """

    summary: str
    changes: tuple[Change, ...]
    verdict_after: Verdict | None = None
    reasons_after: list[str] = field(default_factory=list)
    verified: bool = False

    @property
    def commands(self) -> list[str]:
        """What a person types on a real host to make the fix."""
        return [change.command() for change in self.changes]

    @property
    def fate_args(self) -> list[str]:
        """The arguments that, appended to the same ``tunlab fate`` call, make it in the lab."""
        return [arg for change in self.changes for arg in change.fate_args()]

    @property
    def works(self) -> bool:
        """Verified, and the packet then got through (delivered or forwarded)."""
        return self.verified and self.verdict_after in (Verdict.DELIVERED, Verdict.FORWARDED)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "commands": self.commands,
                "fate_args": self.fate_args,
                "verdict_after": str(self.verdict_after) if self.verdict_after else None,
                "reasons_after": self.reasons_after, "verified": self.verified}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fix:
        """The fix back from :meth:`to_dict` (a recording), its changes read from its
        arguments."""
        from tunlab.fate.changes import from_args

        after = data.get("verdict_after")
        return cls(summary=str(data["summary"]),
                   changes=from_args(list(data["fate_args"]), list(data["commands"])),
                   verdict_after=Verdict(after) if after else None,
                   reasons_after=list(data.get("reasons_after") or []),
                   verified=bool(data.get("verified")))


@dataclass
class FateReport:
    """The kernel's answer for one packet. ``to_dict()`` is the ``tunlab fate --json`` object."""

    verdict: Verdict
    drop_reasons: list[str]
    martian_log: list[str]
    replies: list[Reply]
    counters: dict[str, int]
    explanation: str = ""
    drop_locations: list[DropSite] = field(default_factory=list)
    reply_drops: list[DropSite] = field(default_factory=list)
    packet: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    effective_settings: dict[str, Any] = field(default_factory=dict)
    fixes: list[Fix] = field(default_factory=list)
    firewall: FirewallVerdict | None = None       # the nft rule or policy that refused it
    firewall_fix: NftFix | None = None            # the accept that would pass it (untried)
    forwarded_via: str | None = None
    forwarded_ttl: int | None = None
    route_back: str = ""            # `ip route get SRC` in the lab: the reverse path
    route_in: str = ""              # `ip route get DST from SRC iif DEV`: the input lookup
    evidence: list[Evidence] = field(default_factory=list)
    missing_evidence: dict[str, str] = field(default_factory=dict)
    tracing: str = "tracefs"
    elapsed: float = 0.0
    # Without root, a recorded root run of this same packet answers (``recorded``); where a
    # live run lacked tracefs or the kernel log, a root run's reasons and lines stand beside
    # it, labelled (tunlab.course.evidence), never in drop_reasons or martian_log.
    recorded: bool = False
    recorded_drop_reasons: list[str] = field(default_factory=list)
    recorded_martian_log: list[str] = field(default_factory=list)

    @property
    def working_fixes(self) -> list[Fix]:
        """The fixes the kernel confirmed: with each, the packet got through."""
        return [f for f in self.fixes if f.works]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "drop_reasons": self.drop_reasons,
                "martian_log": self.martian_log,
                "replies": [r.to_dict() for r in self.replies],
                "counters": self.counters, "explanation": self.explanation,
                "fixes": [f.to_dict() for f in self.fixes],
                "effective_settings": self.effective_settings,
                "firewall": self.firewall.to_dict() if self.firewall else None,
                "drop_locations": [d.to_dict() for d in self.drop_locations],
                "reply_drops": [d.to_dict() for d in self.reply_drops],
                "packet": self.packet, "settings": self.settings,
                "forwarded_via": self.forwarded_via, "forwarded_ttl": self.forwarded_ttl,
                "route_back": self.route_back, "route_in": self.route_in,
                "evidence": [str(e) for e in self.evidence],
                "missing_evidence": self.missing_evidence,
                "tracing": self.tracing, "elapsed": round(self.elapsed, 3),
                **({"recorded": True} if self.recorded else {}),
                **({"recorded_drop_reasons": self.recorded_drop_reasons}
                   if self.recorded_drop_reasons else {}),
                **({"recorded_martian_log": self.recorded_martian_log}
                   if self.recorded_martian_log else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FateReport:
        """The report back from :meth:`to_dict`: a recording, or a ``tunlab fate --json``."""
        from tunlab.kernel.nft.model import FirewallVerdict

        firewall = data.get("firewall")
        return cls(
            verdict=Verdict(data["verdict"]), drop_reasons=list(data.get("drop_reasons") or []),
            martian_log=list(data.get("martian_log") or []),
            replies=[Reply.from_dict(r) for r in data.get("replies") or []],
            counters=dict(data.get("counters") or {}),
            explanation=str(data.get("explanation") or ""),
            drop_locations=[DropSite.from_dict(d) for d in data.get("drop_locations") or []],
            reply_drops=[DropSite.from_dict(d) for d in data.get("reply_drops") or []],
            packet=dict(data.get("packet") or {}), settings=dict(data.get("settings") or {}),
            effective_settings=dict(data.get("effective_settings") or {}),
            fixes=[Fix.from_dict(f) for f in data.get("fixes") or []],
            firewall=FirewallVerdict.from_dict(firewall) if firewall else None,
            forwarded_via=data.get("forwarded_via"), forwarded_ttl=data.get("forwarded_ttl"),
            route_back=str(data.get("route_back") or ""),
            route_in=str(data.get("route_in") or ""),
            evidence=[Evidence(e) for e in data.get("evidence") or []],
            missing_evidence=dict(data.get("missing_evidence") or {}),
            tracing=str(data.get("tracing") or "tracefs"),
            elapsed=float(data.get("elapsed") or 0.0), recorded=bool(data.get("recorded")),
            recorded_drop_reasons=list(data.get("recorded_drop_reasons") or []),
            recorded_martian_log=list(data.get("recorded_martian_log") or []))

    @staticmethod
    def is_report(data: object) -> bool:
        """True when ``data`` (JSON) has the shape of :meth:`to_dict`'s output."""
        return isinstance(data, Mapping) and {"verdict", "drop_reasons", "martian_log",
                                               "replies", "counters"} <= set(data)

    def _repr_html_(self) -> str:
        rows = [f"<b>{html.escape(str(self.verdict).upper())}</b> "
                + html.escape(" ".join(self.drop_reasons))]
        rows += [f"kernel log: <code>{html.escape(line)}</code>" for line in self.martian_log]
        rows += [f"reply: {html.escape(r.describe())}" for r in self.replies]
        rows.append(html.escape(self.explanation))
        return "<div class='tunlab-fate'>" + "<br>".join(rows) + "</div>"
