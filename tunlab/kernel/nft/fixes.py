"""The ``nft`` command that lets a refused packet through, in the chain that refused it.

:func:`propose_fix` inserts an accept rule *before* the dropping rule (by handle), or, for a
policy, appends it to the chain whose end the packet reached (the base chain, or a ``goto``
target), or inserts it before the ``return`` rule that sent it to the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunlab.errors import TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.kernel.nft.model import FirewallVerdict, Hook, PacketInfo, Ruleset
from tunlab.kernel.nft.parse import classify_nft_error

__all__ = ["apply_fix", "NftFix", "propose_fix"]


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
        stderr = (result.stderr.decode(errors="replace") if isinstance(result.stderr, bytes)
                  else str(result.stderr))
        raise classify_nft_error(stderr, f"apply the fix `{'; '.join(fix.nft_args)}`")
