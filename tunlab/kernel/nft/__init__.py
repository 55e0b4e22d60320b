"""Which nftables table, chain, hook and rule decided a packet, and the rule that lets it pass.

:mod:`.model` the trace as types, :mod:`.parse` nft's text, :mod:`.tracer` tracing in a lab
namespace, :mod:`.fixes` the accept rule placed where the packet was refused.
"""

from tunlab.kernel.nft.fixes import NftFix, apply_fix, propose_fix
from tunlab.kernel.nft.model import FirewallVerdict, Hook, NftTrace, PacketInfo, Ruleset
from tunlab.kernel.nft.parse import classify_nft_error
from tunlab.kernel.nft.tracer import NftTracer

__all__ = ["FirewallVerdict", "Hook", "NftFix", "NftTrace", "NftTracer", "PacketInfo", "Ruleset",
           "apply_fix", "classify_nft_error", "propose_fix"]
