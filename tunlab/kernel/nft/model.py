"""What an nftables trace says, as types: hooks, verdicts, the steps of one chain pass, the
ruleset's base chains, and the verdict that decided one packet (:meth:`NftTrace.verdict_for`).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tunlab.errors import TunlabError

__all__ = ["ChainInfo", "ChainPass", "FirewallVerdict", "Hook", "NftTrace", "PacketInfo",
           "Ruleset", "RuleVerdict", "StepKind", "TRACE_FAMILY", "TRACE_PRIORITY", "TRACE_TABLE",
           "TracedPacket", "TraceStep"]

TRACE_TABLE = "tunlab_trace"


TRACE_FAMILY = "inet"


TRACE_PRIORITY = -500  # before raw (-300), conntrack (-200) and every usual user chain


class Hook(StrEnum):
    """The netfilter hook a base chain is attached to."""

    INGRESS = "ingress"
    PREROUTING = "prerouting"
    INPUT = "input"
    FORWARD = "forward"
    OUTPUT = "output"
    POSTROUTING = "postrouting"
    EGRESS = "egress"


class RuleVerdict(StrEnum):
    """What one traced rule (or a chain's policy) did with the packet."""

    CONTINUE = "continue"
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"  # the kernel reports drop; the rule's text says it rejected
    JUMP = "jump"
    GOTO = "goto"
    RETURN = "return"
    QUEUE = "queue"
    STOLEN = "stolen"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """True when this verdict ends the packet's walk through the base chain."""
        return self in (RuleVerdict.ACCEPT, RuleVerdict.DROP, RuleVerdict.REJECT,
                        RuleVerdict.QUEUE, RuleVerdict.STOLEN)

    @property
    def refuses(self) -> bool:
        """True for the verdicts that stop the packet: drop and reject."""
        return self in (RuleVerdict.DROP, RuleVerdict.REJECT)


class StepKind(StrEnum):
    """A trace event: a rule matched, a chain's policy applied, or a chain returned."""

    RULE = "rule"
    POLICY = "policy"
    RETURN = "return"


@dataclass(frozen=True)
class TracedPacket:
    """The packet as the kernel described it when it entered a base chain."""

    iif: str | None = None
    oif: str | None = None
    src: str | None = None
    dst: str | None = None
    proto: str | None = None
    version: int | None = None
    text: str = ""


@dataclass(frozen=True)
class TraceStep:
    """One trace event inside a chain pass."""

    chain: str
    kind: StepKind
    verdict: RuleVerdict
    handle: int | None = None
    rule: str | None = None
    target: str | None = None  # the chain of a jump or goto


@dataclass(frozen=True)
class ChainPass:
    """One packet's walk through one base chain (and the chains it jumped to)."""

    trace_id: str
    family: str
    table: str
    base_chain: str
    packet: TracedPacket
    steps: tuple[TraceStep, ...]
    hook: Hook | None = None

    @property
    def final(self) -> TraceStep | None:
        """The step that decided this pass (accept, drop, reject, policy), if one was seen."""
        for step in self.steps:
            if step.verdict.is_final:
                return step
        return None

    @property
    def policy_entry(self) -> tuple[str, int | None]:
        """Where the packet left for the policy: ``(chain, None)`` when it reached the end of
        ``chain``, ``(chain, handle)`` when the ``return`` rule ``handle`` sent it there.

        The chain is the base chain, unless a ``goto`` replaced it: then a rule appended to
        the base chain is never reached, and an accept belongs at the end of the goto's target
        (or before the return rule).
        """
        stack, returned_by = [self.base_chain], None
        for step in self.steps:
            if step.kind is StepKind.POLICY:  # reported in the base chain's name
                break
            if step.chain != stack[-1]:
                if step.chain in stack:  # the chains above it returned without an event
                    del stack[stack.index(step.chain) + 1:]
                else:
                    stack[-1] = step.chain
            if step.verdict is RuleVerdict.JUMP and step.target:
                stack.append(step.target)
            elif step.verdict is RuleVerdict.GOTO and step.target:
                stack[-1] = step.target
            elif step.verdict is RuleVerdict.RETURN:
                if len(stack) > 1:
                    stack.pop()
                elif step.kind is StepKind.RULE:
                    returned_by = step.handle
        return stack[0], returned_by

    @property
    def fell_off(self) -> str:
        """The chain from which the packet went to the policy (see :attr:`policy_entry`)."""
        return self.policy_entry[0]


@dataclass(frozen=True)
class PacketInfo:
    """Which packet to look for: its addresses, and the devices it came in / went out on."""

    src: str
    dst: str
    iif: str | None = None
    oif: str | None = None

    def __post_init__(self) -> None:
        for what, address in (("source", self.src), ("destination", self.dst)):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise TunlabError(f"{what} {address!r} is not an IP address",
                                  "write it like 200.1.2.3 or 2001:db8::1") from None
        if ipaddress.ip_address(self.src).version != ipaddress.ip_address(self.dst).version:
            raise TunlabError(f"{self.src} and {self.dst} are not of the same IP version",
                              "give two IPv4 or two IPv6 addresses")

    @property
    def version(self) -> int:
        """4 or 6."""
        return ipaddress.ip_address(self.src).version

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> PacketInfo:
        """From a packet summary (``src``, ``dst``, and ``dev``: the device it was written to)."""
        return cls(str(summary["src"]), str(summary["dst"]), iif=summary.get("dev"),
                   oif=summary.get("oif"))

    def matches(self, packet: TracedPacket) -> bool:
        """True when the traced ``packet`` is this one (same addresses and devices, if known)."""
        if packet.src is None or packet.dst is None:
            return False
        if (ipaddress.ip_address(packet.src) != ipaddress.ip_address(self.src)
                or ipaddress.ip_address(packet.dst) != ipaddress.ip_address(self.dst)):
            return False
        if self.iif and packet.iif and packet.iif != self.iif:
            return False
        return not (self.oif and packet.oif and packet.oif != self.oif)


@dataclass(frozen=True)
class ChainInfo:
    """A chain of the ruleset: its hook and policy when it is a base chain, its rule handles."""

    family: str
    table: str
    name: str
    hook: Hook | None = None
    policy: str | None = None
    priority: int | None = None
    rules: tuple[int, ...] = ()


def _hook(name: object) -> Hook | None:
    try:
        return Hook(str(name)) if isinstance(name, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Ruleset:
    """The chains of ``nft -j list ruleset`` (without the tracer's own table)."""

    chains: tuple[ChainInfo, ...] = ()
    rule_text: tuple[tuple[tuple[str, str, str, int], str], ...] = ()

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> Ruleset:
        """Parse ``nft -j list ruleset`` output (a string or the decoded object)."""
        chains: dict[tuple[str, str, str], dict[str, Any]] = {}
        rules: dict[tuple[str, str, str], list[int]] = {}
        try:
            obj = json.loads(data) if isinstance(data, str) else data
            for item in obj.get("nftables", []) if obj else []:
                if "chain" in item:
                    c = item["chain"]
                    chains[(c["family"], c["table"], c["name"])] = c
                elif "rule" in item:
                    r = item["rule"]
                    rules.setdefault((r["family"], r["table"], r["chain"]), []).append(
                        int(r["handle"]))
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise TunlabError("not the JSON of `nft -j list ruleset`",
                              "pass what `nft -j list ruleset` prints") from exc
        infos = []
        for key, c in chains.items():
            if key[1] == TRACE_TABLE:
                continue
            infos.append(ChainInfo(family=key[0], table=key[1], name=key[2],
                                   hook=_hook(c.get("hook")), policy=c.get("policy"),
                                   priority=c.get("prio"), rules=tuple(rules.get(key, ()))))
        return cls(chains=tuple(infos))

    def chain(self, family: str, table: str, name: str) -> ChainInfo | None:
        """The chain called ``name`` in ``family table``, or None."""
        for info in self.chains:
            if (info.family, info.table, info.name) == (family, table, name):
                return info
        return None

    def text_of(self, family: str, table: str, chain: str, handle: int) -> str | None:
        """The rule's text as ``nft list`` prints it, when it was read (see NftTracer)."""
        return dict(self.rule_text).get((family, table, chain, handle))


@dataclass(frozen=True)
class FirewallVerdict:
    """The firewall's decision on one packet: who decided, where, and how."""

    decision: RuleVerdict  # ACCEPT, DROP, REJECT (or QUEUE/STOLEN)
    family: str
    table: str
    chain: str          # the chain holding the deciding rule (the base chain for a policy)
    base_chain: str
    hook: Hook | None
    handle: int | None  # None: the chain's policy decided
    rule: str | None
    trace_id: str
    fell_off: str = ""  # for a policy: the chain from which the packet went to the policy
    returned_by: int | None = None  # ... by this `return` rule, not by reaching its end
    packet: TracedPacket | None = None  # as this chain saw it (after any NAT before it)

    @property
    def by_policy(self) -> bool:
        """True when no rule decided and the base chain's policy did."""
        return self.handle is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``--json`` output)."""
        return {"decision": self.decision.value, "family": self.family, "table": self.table,
                "chain": self.chain, "base_chain": self.base_chain,
                "hook": self.hook.value if self.hook else None, "handle": self.handle,
                "rule": self.rule, "policy": self.by_policy, "text": self.describe()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FirewallVerdict:
        """The verdict back from :meth:`to_dict` (a recording): what :meth:`describe` needs."""
        hook = data.get("hook")
        return cls(decision=RuleVerdict(data["decision"]), family=str(data["family"]),
                   table=str(data["table"]), chain=str(data["chain"]),
                   base_chain=str(data["base_chain"]), hook=Hook(hook) if hook else None,
                   handle=data.get("handle"), rule=data.get("rule"), trace_id="")

    def describe(self) -> str:
        """One sentence for a person."""
        hook = self.hook.value if self.hook else "unknown"
        where = f"table {self.family} {self.table}, chain {self.chain}"
        if self.chain != self.base_chain:
            where += f" (reached from base chain {self.base_chain})"
        if self.by_policy:
            how = f"by the policy {self.decision.value} of chain {self.base_chain}"
        else:
            how = f"by rule handle {self.handle}: `{self.rule}`"
        action = {RuleVerdict.ACCEPT: "accepted", RuleVerdict.DROP: "dropped",
                  RuleVerdict.REJECT: "rejected"}.get(self.decision, self.decision.value)
        return f"The firewall {action} the packet at hook {hook}, {where}, {how}."


@dataclass(frozen=True)
class NftTrace:
    """Everything one :class:`NftTracer` run saw."""

    passes: tuple[ChainPass, ...]
    ruleset: Ruleset
    lines: tuple[str, ...] = ()
    complete: bool = True  # False: the monitor's end marker did not arrive in time

    def passes_for(self, packet: PacketInfo) -> tuple[ChainPass, ...]:
        """The chain passes of ``packet``, in the order the kernel walked them.

        A pass belongs to the packet when its addresses match, or when it has the same trace
        id as the packet's previous pass at a hook that can follow that one (NAT may have
        changed the addresses on the way). The hook order keeps out a later packet that got
        the same trace id (the kernel derives it from the buffer's address, which is reused).
        """
        out: list[ChainPass] = []
        for chain_pass in self.passes:
            if packet.matches(chain_pass.packet):
                out.append(chain_pass)
            elif out and chain_pass.trace_id == out[-1].trace_id and _follows(
                    out[-1].hook, chain_pass.hook):
                out.append(chain_pass)
        return tuple(out)

    def verdict_for(self, packet: PacketInfo) -> FirewallVerdict | None:
        """The first pass that dropped or rejected ``packet``; else the last that accepted it.

        None when the packet went through no traced chain at all.
        """
        passes = self.passes_for(packet)
        accepted: FirewallVerdict | None = None
        for chain_pass in passes:
            step = chain_pass.final
            if step is None:
                continue
            verdict = _verdict(chain_pass, step)
            if step.verdict.refuses:
                return verdict
            accepted = verdict
        return accepted


_NEXT_HOOKS = {
    Hook.INGRESS: {Hook.INGRESS, Hook.PREROUTING, Hook.INPUT, Hook.FORWARD},
    Hook.PREROUTING: {Hook.PREROUTING, Hook.INPUT, Hook.FORWARD},
    Hook.INPUT: {Hook.INPUT},
    Hook.FORWARD: {Hook.FORWARD, Hook.POSTROUTING},
    Hook.OUTPUT: {Hook.OUTPUT, Hook.POSTROUTING},
    Hook.POSTROUTING: {Hook.POSTROUTING, Hook.EGRESS},
    Hook.EGRESS: {Hook.EGRESS},
}


def _follows(previous: Hook | None, hook: Hook | None) -> bool:
    return previous is not None and hook is not None and hook in _NEXT_HOOKS[previous]


def _verdict(chain_pass: ChainPass, step: TraceStep) -> FirewallVerdict:
    entry = chain_pass.policy_entry if step.kind is StepKind.POLICY else ("", None)
    return FirewallVerdict(decision=step.verdict, family=chain_pass.family,
                           table=chain_pass.table, chain=step.chain,
                           base_chain=chain_pass.base_chain, hook=chain_pass.hook,
                           handle=step.handle, rule=step.rule, trace_id=chain_pass.trace_id,
                           fell_off=entry[0], returned_by=entry[1], packet=chain_pass.packet)
