"""Which nftables table, chain, hook and rule decided a packet: rule tracing in a lab namespace.

:class:`NftTracer` adds a small tracing table (``table inet tunlab_trace``: chains at the
prerouting and output hooks, priority -500, rule ``meta nftrace set 1``) and runs
``nft -a monitor`` inside the namespace while the caller injects a packet. The kernel then
reports every rule the packet matched, in every table and chain, with the rule's handle and
verdict. :meth:`NftTracer.stop` removes the tracing table again, so the namespace holds exactly
the user's ruleset, and returns an :class:`NftTrace`: the chain passes, parsed into typed
steps, plus the ruleset (for the hook of each base chain). :meth:`NftTrace.verdict_for` names
the table, chain, hook and rule (or policy) that dropped or rejected one packet, and
:func:`propose_fix` turns that into the ``nft`` command that accepts the packet in that chain:
inserted *before* the dropping rule (by handle), or, for a policy, appended to the chain whose
end the packet reached (the base chain, or a ``goto`` target), or inserted before the
``return`` rule that sent it to the policy.

Load the ruleset before :meth:`NftTracer.start`: ``nft monitor`` prints rule text from the
cache it reads when it starts (rules added later are filled in from the ruleset at stop).

nft 1.0.6 has no JSON output for traces (``nft -j monitor trace`` prints text), so the text
lines are parsed; their format has been stable since nftables 0.6.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tunlab.errors import EnvironmentProblem, PrivilegeError, TunlabError
from tunlab.kernel.netns import Namespace

TRACE_TABLE = "tunlab_trace"
TRACE_FAMILY = "inet"
TRACE_PRIORITY = -500  # before raw (-300), conntrack (-200) and every usual user chain
_TRACE_RULESET = f"""create table {TRACE_FAMILY} {TRACE_TABLE}
add chain {TRACE_FAMILY} {TRACE_TABLE} pre {{ type filter hook prerouting priority {TRACE_PRIORITY}; policy accept; }}
add chain {TRACE_FAMILY} {TRACE_TABLE} out {{ type filter hook output priority {TRACE_PRIORITY}; policy accept; }}
add rule {TRACE_FAMILY} {TRACE_TABLE} pre meta nftrace set 1
add rule {TRACE_FAMILY} {TRACE_TABLE} out meta nftrace set 1
"""  # noqa: E501 - nft syntax reads best one statement per line
_NFNLGRP_NFTABLES, _NFNLGRP_NFTRACE = 7, 9  # linux/netfilter/nfnetlink.h
_NETLINK_NETFILTER = 12
_MAX_LINES = 20000  # a busy namespace cannot make the tracer grow without bound
INSTALL_FIX = "install nftables: `apt-get install nftables` (Debian/Ubuntu), `dnf install nftables`"
KERNEL_FIX = ("load nftables with `modprobe nf_tables` (and nft_chain_nat for NAT), or use a "
              "kernel built with CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET")


class Hook(str, Enum):
    """The netfilter hook a base chain is attached to."""

    INGRESS = "ingress"
    PREROUTING = "prerouting"
    INPUT = "input"
    FORWARD = "forward"
    OUTPUT = "output"
    POSTROUTING = "postrouting"
    EGRESS = "egress"


class RuleVerdict(str, Enum):
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


class StepKind(str, Enum):
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
        return Hook(name)
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


# -- parsing `nft -a monitor` text (sans-IO) -------------------------------------------------

_LINE = re.compile(r"^trace id (?P<id>[0-9a-f]+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) "
                   r"(?P<rest>.*)$")
_VERDICT = re.compile(r"\(verdict (?P<verdict>\w+)(?: (?P<target>[^)\s]+))?\)")
_HANDLE = re.compile(r"^(?P<text>.*?)\s*# handle (?P<handle>\d+)\s*$")
_UNKNOWN = re.compile(r"^unknown rule handle (?P<handle>\d+)")
_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")
_REJECT = re.compile(r"(^|\s)reject(\s|$)")
_FIELDS = {
    "iif": re.compile(r'(?<![\w])iif (?:"([^"]*)"|(\S+))'),
    "oif": re.compile(r'(?<![\w])oif (?:"([^"]*)"|(\S+))'),
    "src": re.compile(r"(?<![\w])ip6? saddr (\S+)"),
    "dst": re.compile(r"(?<![\w])ip6? daddr (\S+)"),
    "proto": re.compile(r"(?<![\w])(?:ip protocol|ip6 nexthdr) (\S+)"),
}


def parse_packet(text: str) -> TracedPacket:
    """The fields of a trace's ``packet:`` description."""
    values: dict[str, str | None] = {}
    for name, pattern in _FIELDS.items():
        match = pattern.search(text)
        values[name] = next((g for g in match.groups() if g is not None), None) if match else None
    version = 6 if re.search(r"(?<![\w])ip6 saddr", text) else (
        4 if re.search(r"(?<![\w])ip saddr", text) else None)
    return TracedPacket(text=text.strip(), version=version, **values)


def _parse_verdict(word: str) -> RuleVerdict:
    try:
        return RuleVerdict(word)
    except ValueError:
        return RuleVerdict.UNKNOWN


def parse_step(chain: str, rest: str) -> TraceStep | None:
    """One trace line's event (after ``trace id ID FAMILY TABLE CHAIN``), None for others."""
    if rest.startswith("policy "):
        words = rest.split()
        return TraceStep(chain=chain, kind=StepKind.POLICY,
                         verdict=_parse_verdict(words[1] if len(words) > 1 else ""))
    if rest.startswith("verdict "):  # a chain's return event (older kernels send these)
        words = rest.split()
        return TraceStep(chain=chain, kind=StepKind.RETURN, verdict=_parse_verdict(words[1]),
                         target=words[2] if len(words) > 2 else None)
    verdict_match = _VERDICT.search(rest)
    if verdict_match is None:
        return None
    verdict = _parse_verdict(verdict_match.group("verdict"))
    target = verdict_match.group("target")
    head = rest[:verdict_match.start()].strip()
    if head.startswith("rule "):
        match = _HANDLE.match(head[len("rule "):])
        text, handle = ((match.group("text"), int(match.group("handle"))) if match
                        else (head[len("rule "):], None))
        text = _COUNTER.sub("counter", text)
        if verdict is RuleVerdict.DROP and _REJECT.search(text):
            verdict = RuleVerdict.REJECT
        return TraceStep(chain=chain, kind=StepKind.RULE, verdict=verdict, handle=handle,
                         rule=text, target=target)
    if (match := _UNKNOWN.match(head)) is not None:
        return TraceStep(chain=chain, kind=StepKind.RULE, verdict=verdict,
                         handle=int(match.group("handle")), target=target)
    return None


def parse_trace(lines: Iterable[str], ruleset: Ruleset | None = None,
                skip_tables: Sequence[str] = (TRACE_TABLE,)) -> tuple[ChainPass, ...]:
    """Chain passes from ``nft monitor`` trace lines (other lines are ignored).

    A ``packet:`` line starts a pass (the kernel describes the packet once per base chain);
    the steps that follow with the same trace id belong to it, even when another packet's
    lines come in between (a ``reject`` sends its ICMP error while the rule is running).
    Tables in ``skip_tables`` (the tracer's own) are left out; ``ruleset`` supplies hooks and
    the text of rules the monitor did not know.
    """
    ruleset = ruleset or Ruleset()
    order: list[tuple[str, str, str, str, TracedPacket, list[TraceStep]]] = []
    open_pass: dict[str, int] = {}
    for line in lines:
        match = _LINE.match(line.rstrip("\n"))
        if match is None:
            continue
        trace_id, family, table, chain, rest = match.group("id", "family", "table", "chain",
                                                           "rest")
        if table in skip_tables:
            open_pass.pop(trace_id, None)
            continue
        if rest.startswith("packet:"):
            open_pass[trace_id] = len(order)
            order.append((trace_id, family, table, chain, parse_packet(rest[7:]), []))
            continue
        step = parse_step(chain, rest)
        index = open_pass.get(trace_id)
        if step is None or index is None or order[index][2] != table:
            continue
        if step.kind is StepKind.RULE and step.rule is None and step.handle is not None:
            text = ruleset.text_of(family, table, chain, step.handle)
            if text is not None:
                verdict = (RuleVerdict.REJECT if step.verdict is RuleVerdict.DROP
                           and _REJECT.search(text) else step.verdict)
                step = TraceStep(chain=chain, kind=step.kind, verdict=verdict,
                                 handle=step.handle, rule=text, target=step.target)
        order[index][5].append(step)
    passes = []
    for trace_id, family, table, base, packet, steps in order:
        info = ruleset.chain(family, table, base)
        passes.append(ChainPass(trace_id=trace_id, family=family, table=table, base_chain=base,
                                packet=packet, steps=tuple(steps),
                                hook=info.hook if info else None))
    return tuple(passes)


def parse_rule_listing(text: str) -> dict[tuple[str, str, str, int], str]:
    """Rule texts by (family, table, chain, handle) from ``nft -a list ruleset``."""
    out: dict[tuple[str, str, str, int], str] = {}
    family = table = chain = None
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"^table (\S+) (\S+) \{", line):
            family, table, chain = m.group(1), m.group(2), None
        elif m := re.match(r"^chain (\S+) \{", line):
            chain = m.group(1)
        elif (m := _HANDLE.match(line)) and family and table and chain:
            body = m.group("text")
            if body.startswith(("type ", "policy ")) or not body:
                continue
            out[(family, table, chain, int(m.group("handle")))] = _COUNTER.sub("counter", body)
    return out


def classify_nft_error(stderr: str, what: str) -> TunlabError:
    """The error to raise when ``nft`` failed with ``stderr`` while doing ``what``."""
    text = stderr.strip() or "no message"
    lowered = text.lower()
    if "cannot open network namespace" in lowered:
        return TunlabError(f"nft could not {what}: the lab's namespace is gone ({text})",
                           "stop the tracer before the lab is closed")
    if "operation not permitted" in lowered or "permission denied" in lowered:
        return PrivilegeError(f"nft could not {what}: {text}",
                              "run as root or with CAP_NET_ADMIN")
    if any(s in lowered for s in ("protocol not supported", "operation not supported",
                                  "address family not supported", "no such file or directory")):
        return EnvironmentProblem(f"this kernel has no usable nftables support ({what}: {text})",
                                  KERNEL_FIX)
    if "file exists" in lowered:
        return TunlabError(f"nft could not {what}: table {TRACE_FAMILY} {TRACE_TABLE} exists "
                           "already", "only one NftTracer can run in a namespace at a time")
    return TunlabError(f"nft could not {what}: {text}")


# -- the tracer (I/O) ------------------------------------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def monitor_subscribed(pid: int) -> bool:
    """True once process ``pid`` holds a netfilter netlink socket in the nf_tables and trace
    multicast groups: from then on the kernel queues every trace event for it.

    ``/proc/PID/net/netlink`` lists the sockets of the process's namespace with their group
    bitmap (bit n-1 for group n); ``/proc/PID/fd`` says which of them are the process's own.
    """
    wanted = (1 << (_NFNLGRP_NFTABLES - 1)) | (1 << (_NFNLGRP_NFTRACE - 1))
    inodes = _socket_inodes(pid)
    try:
        with open(f"/proc/{pid}/net/netlink") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        cols = row.split()
        if (len(cols) >= 10 and cols[1] == str(_NETLINK_NETFILTER) and cols[-1] in inodes
                and int(cols[3], 16) & wanted == wanted):
            return True
    return False


class _LineReader:
    """Reads a pipe line by line on its own thread; callers wait for a line they expect."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self.overflow = 0
        self._thread = threading.Thread(target=self._run, name="nft-monitor-reader",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._stream:
                with self._cond:
                    if len(self._lines) < _MAX_LINES:
                        self._lines.append(line)
                    else:
                        self.overflow += 1
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """True once a line satisfying ``predicate`` was read; False on timeout or EOF."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for line in self._lines[checked:]:
                    if predicate(line):
                        return True
                checked = len(self._lines)
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return False
                self._cond.wait(left)

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _chains_known(lines: Iterable[str], ruleset: Ruleset) -> bool:
    """True when every chain named in the trace lines is in ``ruleset`` (or the tracer's)."""
    for line in lines:
        match = _LINE.match(line)
        if match and match.group("table") != TRACE_TABLE and ruleset.chain(
                *match.group("family", "table", "chain")) is None:
            return False
    return True


def _table_event(*verbs: str) -> Callable[[str], bool]:
    """Matches the monitor's line for the tracing table being added or deleted."""
    def match(line: str) -> bool:
        words = line.split()
        return len(words) >= 4 and words[0] in verbs and words[1:4] == [
            "table", TRACE_FAMILY, TRACE_TABLE]
    return match


class NftTracer:
    """Trace every packet through nftables in ``ns`` between :meth:`start` and :meth:`stop`.

    The ``nft monitor`` process is owned by the tracer: :meth:`stop` (or leaving the ``with``
    block, also on errors) ends it and removes the tracing table. Waits are bounded:
    ``ready_timeout`` for the monitor to subscribe and see the tracing table, ``stop_timeout``
    for its end marker.

    Raises:
        EnvironmentProblem: ``nft`` is not installed or the kernel lacks nftables.
        PrivilegeError: not allowed to change the namespace's ruleset.
        TunlabError: a tracer already runs in ``ns``, or the monitor did not start in time.
    """

    def __init__(self, ns: Namespace, *, nft: str = "nft", ready_timeout: float = 3.0,
                 stop_timeout: float = 2.0) -> None:
        self.ns = ns
        self.nft = nft
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._reader: _LineReader | None = None
        self._stderr: Any = None
        self._table_added = False
        self._ruleset: Ruleset | None = None
        self.result: NftTrace | None = None
        self.timings: dict[str, float] = {}

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> NftTracer:
        """Start the monitor, add the tracing table; return once traces are being recorded."""
        if self._proc is not None:
            raise TunlabError("this NftTracer is already running", "call stop() first")
        self.result = None
        if shutil.which(self.nft) is None:
            raise EnvironmentProblem(f"`{self.nft}` (nftables) is not installed", INSTALL_FIX)
        started = time.monotonic()
        self._stderr = tempfile.TemporaryFile(mode="w+")
        try:
            if shutil.which("ip") is None:
                raise EnvironmentProblem("`ip` is not installed",
                                         "install iproute2: `apt-get install iproute2`")
            self._proc = self.ns.popen([self.nft, "-a", "monitor"], stdout=subprocess.PIPE,
                                       stderr=self._stderr, stdin=subprocess.DEVNULL,
                                       text=True, bufsize=1)
            self._reader = _LineReader(self._proc.stdout)
            # Read while the monitor starts up: the ruleset the packets will be judged by.
            self._ruleset = self.read_ruleset()
            self._wait_subscribed()
            result = self._nft(["-f", "-"], input=_TRACE_RULESET)
            if result.returncode != 0:
                raise classify_nft_error(result.stderr, "add the tracing table")
            self._table_added = True
            if not self._reader.wait_for(_table_event("add", "create"), self.ready_timeout):
                raise self._monitor_failure("did not report the tracing table")
        except BaseException:
            self._shutdown()
            raise
        self.timings["start"] = time.monotonic() - started
        return self

    def stop(self) -> NftTrace:
        """Remove the tracing table, end the monitor, and parse what it saw. Idempotent."""
        if self.result is not None:
            return self.result
        if self._proc is None or self._reader is None:
            raise TunlabError("this NftTracer was not started", "call start() first")
        started = time.monotonic()
        complete = False
        try:
            if self._table_added:
                result = self._nft(["delete", "table", TRACE_FAMILY, TRACE_TABLE])
                self._table_added = result.returncode != 0
                # The deletion is reported after every trace event queued before it: an end
                # marker for the packets the caller injected.
                complete = not self._table_added and self._reader.wait_for(
                    _table_event("delete"), self.stop_timeout)
            lines = self._reader.lines()
            complete = complete and self._reader.overflow == 0
        finally:
            self._shutdown()
        ruleset = self._ruleset
        unknown_rules = any("unknown rule handle" in line and TRACE_TABLE not in line
                            for line in lines)
        if ruleset is None or unknown_rules or not _chains_known(lines, ruleset):
            ruleset = self.read_ruleset(need_text=unknown_rules)  # changed while tracing
        self.result = NftTrace(passes=parse_trace(lines, ruleset), ruleset=ruleset,
                               lines=tuple(lines), complete=complete)
        self.timings["stop"] = time.monotonic() - started
        return self.result

    def read_ruleset(self, need_text: bool = False) -> Ruleset:
        """The namespace's ruleset now (``nft -j list ruleset``), without the tracing table."""
        result = self._nft(["-j", "list", "ruleset"])
        if result.returncode != 0:
            raise classify_nft_error(result.stderr, "list the ruleset")
        ruleset = Ruleset.from_json(result.stdout or "{}")
        if need_text:
            listing = self._nft(["-a", "list", "ruleset"])
            if listing.returncode == 0:
                texts = parse_rule_listing(listing.stdout)
                ruleset = Ruleset(chains=ruleset.chains, rule_text=tuple(texts.items()))
        return ruleset

    def __enter__(self) -> NftTracer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        else:  # keep the caller's exception; still leave nothing behind
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - the original error matters more
                self._shutdown()

    # -- helpers ---------------------------------------------------------------------------
    def _nft(self, args: Sequence[str], input: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(["ip", "netns", "exec", self.ns.name, self.nft, *args],
                                    capture_output=True, text=True, input=input, timeout=10)
        except FileNotFoundError as exc:
            raise EnvironmentProblem("`ip` is not installed",
                                     "install iproute2: `apt-get install iproute2`") from exc
        return result

    def _wait_subscribed(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while not monitor_subscribed(self._proc.pid):
            if self._proc.poll() is not None:
                raise self._monitor_failure("exited")
            if time.monotonic() > deadline:
                raise self._monitor_failure(f"did not subscribe within {self.ready_timeout} s")
            time.sleep(0.002)

    def _monitor_failure(self, what: str) -> TunlabError:
        stderr = ""
        if self._proc is not None and self._proc.poll() is not None and self._stderr:
            self._stderr.seek(0)
            stderr = self._stderr.read()
        if stderr:
            return classify_nft_error(stderr, f"monitor traces (`nft monitor` {what})")
        return TunlabError(f"`nft monitor` {what}",
                           "check that `nft monitor` runs in a network namespace here")

    def _shutdown(self) -> None:
        if self._table_added:
            self._nft(["delete", "table", TRACE_FAMILY, TRACE_TABLE])
            self._table_added = False
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=1)
            if self._reader is not None:
                self._reader.join(timeout=1)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


# -- the fix ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NftFix:
    """An accept for one packet in the chain that refused it.

    ``commands``: what a person types on a real host. ``nft_args``: the same commands without
    the leading ``nft``, one per line of an ``nft -f -`` script (see :func:`apply_fix`).
    """

    summary: str
    commands: tuple[str, ...]
    nft_args: tuple[str, ...]
    family: str
    table: str
    chain: str
    position: int | None = None  # the handle the accept goes before; None: appended
    match: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: summary, commands and the nft script lines."""
        return {"summary": self.summary, "commands": list(self.commands),
                "nft_args": list(self.nft_args)}


def _match(verdict: FirewallVerdict, packet: PacketInfo) -> str:
    """``iifname``/``oifname`` and the addresses, as the refusing chain sees the packet."""
    seen = verdict.packet
    if seen is not None and seen.src and seen.dst:  # NAT before the chain may have changed them
        packet = PacketInfo(seen.src, seen.dst, iif=packet.iif or seen.iif,
                            oif=packet.oif or seen.oif)
    parts = []
    incoming = verdict.hook in (None, Hook.PREROUTING, Hook.INPUT, Hook.FORWARD, Hook.INGRESS)
    if packet.iif and incoming:
        parts.append(f'iifname "{packet.iif}"')
    elif packet.oif and not incoming:
        parts.append(f'oifname "{packet.oif}"')
    proto = "ip" if packet.version == 4 else "ip6"
    family = verdict.family
    if family == "ip" and packet.version != 4 or family == "ip6" and packet.version != 6:
        raise TunlabError(f"an {family} table never sees IPv{packet.version} packets",
                          "pass the verdict of the packet's own trace")
    parts.append(f"{proto} saddr {packet.src} {proto} daddr {packet.dst}")
    return " ".join(parts)


def _require_rule(ruleset: Ruleset, verdict: FirewallVerdict, chain: str,
                  handle: int | None) -> None:
    where = f"{verdict.family} {verdict.table}"
    info = ruleset.chain(verdict.family, verdict.table, chain)
    if info is None:
        raise TunlabError(f"chain {chain} is not in table {where}",
                          "pass the ruleset the packet was traced with")
    if handle is not None and handle not in info.rules:
        raise TunlabError(f"rule handle {handle} is not in chain {chain} of table {where}",
                          "pass the ruleset the packet was traced with")


def propose_fix(verdict: FirewallVerdict, ruleset: Ruleset | str | Mapping[str, Any],
                packet: PacketInfo | Mapping[str, Any]) -> NftFix:
    """The nft command that lets ``packet`` through the chain that dropped or rejected it.

    A rule's drop or reject: ``insert rule FAMILY TABLE CHAIN position HANDLE <match> accept``
    (``insert ... position`` puts the new rule *before* that handle; an appended accept would
    come after a reject and change nothing). A policy drop: ``add rule FAMILY TABLE CHAIN
    <match> accept`` in the chain whose end the packet reached (after a ``goto``, its target),
    or, when a ``return`` rule sent it to the policy, an insert before that rule (see
    :attr:`ChainPass.policy_entry`). ``<match>`` is the packet's
    arrival device (``iifname``; ``oifname`` at output and postrouting) and its addresses as
    that chain saw them (after any NAT before it; from the trace, else from ``packet``).

    ``ruleset`` is ``nft -j list ruleset`` of the namespace (or :attr:`NftTrace.ruleset`); it
    must hold the chain and the rule. Whether the fix works is for the caller to prove by
    re-running the packet: another chain at a later hook may drop it too.

    Raises:
        TunlabError: the verdict is not a drop or reject, or does not fit the ruleset.
    """
    if not verdict.decision.refuses:
        raise TunlabError(f"the firewall's verdict was {verdict.decision.value}, not a drop",
                          "only a drop or a reject needs a fix")
    info = ruleset if isinstance(ruleset, Ruleset) else Ruleset.from_json(ruleset)
    if not isinstance(packet, PacketInfo):
        packet = PacketInfo.from_summary(packet)
    match = _match(verdict, packet)
    where = f"{verdict.family} {verdict.table}"
    hook = verdict.hook.value if verdict.hook else "unknown"
    if verdict.by_policy:
        chain = verdict.fell_off or verdict.base_chain
        position = verdict.returned_by
        _require_rule(info, verdict, chain, position)
        summary = (f"Chain {verdict.base_chain} of table {where} (hook {hook}) drops this "
                   f"packet by its policy: ")
        if position is None:
            args = f"add rule {where} {chain} {match} accept"
            summary += f"add an accept for it at the end of chain {chain}"
        else:
            args = f"insert rule {where} {chain} position {position} {match} accept"
            summary += (f"the return rule handle {position} of chain {chain} sends it there, "
                        f"so insert an accept for it before that rule")
        if chain != verdict.base_chain:
            summary += (f" (a goto left {verdict.base_chain} for {chain}, so the packet goes "
                        f"to the policy from there)")
    else:
        chain = verdict.chain
        position = verdict.handle
        _require_rule(info, verdict, chain, position)
        args = f"insert rule {where} {chain} position {position} {match} accept"
        summary = (f"Rule handle {verdict.handle} (`{verdict.rule}`) in chain {chain} of table "
                   f"{where} (hook {hook}) {verdict.decision.value}s this packet: insert an "
                   f"accept for it before that rule")
    return NftFix(summary=summary + ".", commands=(f"nft {args}",), nft_args=(args,),
                  family=verdict.family, table=verdict.table, chain=chain, position=position,
                  match=match)


def apply_fix(ns: Namespace, fix: NftFix, nft: str = "nft") -> None:
    """Apply ``fix`` to the ruleset of the lab namespace ``ns`` (one nft transaction)."""
    result = ns.exec([nft, "-f", "-"], check=False,
                     input="\n".join(fix.nft_args).encode() + b"\n")
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        raise classify_nft_error(stderr, f"apply the fix `{'; '.join(fix.nft_args)}`")
