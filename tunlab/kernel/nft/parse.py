"""Reading nft's text: ``nft monitor trace`` lines into typed steps, ``nft -a list`` into rule
texts by handle, and nft's error messages into errors that say how to fix them.

nft 1.0.6 has no JSON output for traces (``nft -j monitor trace`` prints text), so the text
lines are parsed; their format has been stable since nftables 0.6.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from tunlab.errors import EnvironmentProblem, PrivilegeError, TunlabError
from tunlab.kernel.nft.model import (
    TRACE_FAMILY,
    TRACE_TABLE,
    ChainPass,
    Ruleset,
    RuleVerdict,
    StepKind,
    TracedPacket,
    TraceStep,
)

__all__ = ["classify_nft_error", "KERNEL_FIX", "parse_packet", "parse_rule_listing", "parse_step",
           "parse_trace"]

KERNEL_FIX = ("load nftables with `modprobe nf_tables` (and nft_chain_nat for NAT), or use a "
              "kernel built with CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET")


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
