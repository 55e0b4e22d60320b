"""The kernel's verdict in plain words, with the change that would make the packet arrive.

Kept apart from the measuring code so that every sentence can be tested on its own and
improved by someone who teaches rather than traces.
"""

from __future__ import annotations

from typing import Any

REASON_MEANING = {
    "IP_INADDRERRORS": "the destination is not an address of this host and the host does not "
                       "forward (IpInAddrErrors)",
    "IP_LOCAL_SOURCE": "the source address is one of this host's own addresses (a martian "
                       "source)",
    "IP_INVALID_SOURCE": "the source address can never be a sender (multicast, broadcast, "
                         "zero)",
    "IP_RPFILTER": "reverse-path filter: the route back to the source does not use the "
                   "interface the packet came in on",
    "NETFILTER_DROP": "a firewall (netfilter/nftables) rule or chain policy dropped it",
    "IP_NOPROTO": "delivered locally, but no handler exists for its IP protocol number",
    "IP_INHDR": "something is wrong in the IP header, or the TTL ran out while forwarding",
    "IP_INNOROUTES": "the kernel has no route to the destination",
    "IP_OUTNOROUTES": "the kernel has no route for a packet it was about to send",
    "NO_SOCKET": "no socket is listening for it (closed port)",
    "OTHERHOST": "the packet was addressed to another host's hardware address",
    "DEV_READY": "the outgoing device is not ready (e.g. a TUN device nobody reads)",
    "FULL_RING": "the device's queue is full: its reader is too slow",
    "TUN_FILTER": "dropped by the TUN device's filter",
    "NOT_SPECIFIED": "dropped at a place that gives no reason (older kernels say this often)",
    "IP_LOCALNET": "a loopback (127/8) address arrived on a non-loopback device",
    "IP_INVALID_DEST": "the destination is not valid for this packet",
}


def _fmt_proto(sent: dict[str, Any]) -> str:
    return str(sent.get("proto", "?"))


def _reply_words(replies: list[dict[str, Any]]) -> str:
    words = []
    for r in replies:
        kind = f"{r.get('proto')}"
        if r.get("proto") == "icmp":
            kind = {(0, 0): "an echo reply", (11, 0): "ICMP time exceeded",
                    (3, 3): "ICMP port unreachable", (3, 2): "ICMP protocol unreachable",
                    (3, 1): "ICMP host unreachable", (3, 0): "ICMP net unreachable"}.get(
                (r.get("icmp_type"), r.get("icmp_code")),
                f"ICMP type {r.get('icmp_type')} code {r.get('icmp_code')}")
        elif r.get("proto") == "tcp" and "R" in str(r.get("tcp_flags", "")):
            kind = "a TCP reset (RST)"
        words.append(f"{kind} from {r.get('src')} out of {r.get('dev')}")
    return "; ".join(words)


def explain(verdict: str, reasons: list[str], sent: dict[str, Any],
            replies: list[dict[str, Any]], settings: dict[str, str],
            forwarded_via: str | None = None, martian_log: list[str] | None = None,
            counters: dict[str, int] | None = None) -> str:
    """One paragraph: what the kernel did with the packet, why, and what to change."""
    src, dst = sent.get("src", "the source"), sent.get("dst", "the destination")
    forward = settings.get("net.ipv4.ip_forward", "?")
    rp = settings.get("net.ipv4.conf.all.rp_filter", "?")
    parts: list[str] = []
    answered = f" The kernel answered with {_reply_words(replies)}." if replies else ""
    if verdict == "forwarded":
        via = f" out of {forwarded_via}" if forwarded_via else ""
        parts.append(f"Forwarded: {dst} is not this host's, ip_forward={forward}, and the route "
                     f"to {dst} leads{via}, so the kernel passed it on (TTL decremented).")
        return " ".join(parts) + answered
    if verdict == "delivered":
        parts.append(f"Delivered: {dst} is an address of this host (see `ip route show table "
                     f"local`), so the packet was handed to the local {_fmt_proto(sent)} stack."
                     + answered)
        if not replies:
            parts.append("No reply was seen: either none was due, or it left through a "
                         "device the lab was not reading.")
        return " ".join(parts)
    for reason in reasons:
        parts.append(_explain_reason(reason, sent, settings, forward, rp, src, dst))
    if martian_log:
        parts.append(f"The kernel log says: \"{martian_log[0]}\".")
    text = f"Dropped ({', '.join(reasons)}). " + " ".join(parts) + answered
    return text.strip()


def _explain_reason(reason: str, sent: dict[str, Any], settings: dict[str, str], forward: str,
                    rp: str, src: str, dst: str) -> str:
    if reason == "IP_INADDRERRORS":
        if forward == "0":
            return (f"{dst} is not an address of this host, and IP forwarding is off "
                    f"(net.ipv4.ip_forward=0), so the kernel has nowhere to take it. Fix: to "
                    f"route it on, set net.ipv4.ip_forward=1; to deliver it here, address it to "
                    f"one of this host's addresses.")
        return (f"{dst} is not an address of this host and cannot be forwarded (no usable "
                f"route). Fix: add a route to {dst} (`ip route get {dst}` shows the lookup).")
    if reason == "IP_LOCAL_SOURCE":
        return (f"The packet claims to come from {src}, which is an address of this very host, "
                f"yet it arrived from outside through a device. The kernel calls that a martian "
                f"source and drops it. Fix: net.ipv4.conf.all.accept_local=1 lets a host accept "
                f"packets from its own addresses (keep rp_filter at 0 or 2); the real fix is "
                f"what a VPN has: two hosts, so the source is not local to the receiver.")
    if reason == "IP_RPFILTER":
        mode = {"1": "strict (rp_filter=1)", "2": "loose (rp_filter=2)"}.get(rp, f"rp_filter={rp}")
        if rp == "2":
            return (f"Reverse-path filter in loose mode: the kernel has no route back to {src} "
                    f"at all, so it treats the source as spoofed. Fix: add a route to {src} "
                    f"(or a default route), or set net.ipv4.conf.all.rp_filter=0.")
        indev = sent.get("dev", "DEV")
        return (f"Reverse-path filter, {mode}: the route back to {src} does not leave through "
                f"the device the packet came in on, so the kernel treats the source as spoofed. "
                f"Fix: add a route to {src} via that device (`ip route add {src} dev {indev}`), "
                f"or relax to net.ipv4.conf.all.rp_filter=2 (loose: any route back will do) or 0.")
    if reason == "NETFILTER_DROP":
        indev = sent.get("dev", "mytun2")
        return ("A firewall dropped it: an nftables/iptables rule or a chain's drop policy "
                "(function nft_do_chain). A host firewall whose forward chain has policy drop "
                "(as Docker sets FORWARD DROP) eats forwarded tunnel traffic this way. Fix: "
                "accept the tunnel's traffic in that chain, e.g. `nft add rule inet TABLE "
                f"forward iifname \"{indev}\" accept` (`nft list ruleset` shows the chains).")
    if reason == "IP_NOPROTO":
        proto = sent.get("proto", "?")
        return (f"The packet got past routing and reached local delivery at {dst}, but no "
                f"handler is registered for IP protocol {proto}, so the kernel answers ICMP "
                f"protocol unreachable and drops it. Fix: send a protocol the host handles "
                f"(ICMP 1, TCP 6, UDP 17) or run a program with a raw socket for protocol "
                f"{proto}. If you did not mean to send protocol {proto}, check byte 9 of the "
                f"IP header of the packet your tunnel writes.")
    if reason == "IP_INHDR":
        ttl = sent.get("ttl")
        if isinstance(ttl, int) and ttl <= 1:
            return (f"The TTL ran out: the packet arrived with TTL {ttl} and forwarding would "
                    f"make it 0, so the kernel drops it and sends ICMP time exceeded back (this "
                    f"is how traceroute works). Fix: send it with a larger TTL.")
        return "The IP header is malformed (bad length, version or checksum). Fix the sender."
    if reason == "NO_SOCKET":
        port = sent.get("dport", "?")
        answer = "a TCP reset" if sent.get("proto") == "tcp" else "ICMP port unreachable"
        return (f"Nothing listens on {sent.get('proto')} port {port} at {dst}, so the kernel "
                f"refuses it ({answer} goes back). Fix: start a server on port {port}.")
    if reason == "IP_INNOROUTES":
        return (f"There is no route to {dst}. Fix: add one (`ip route add {dst} dev DEV`), and "
                f"check `ip route get {dst}`.")
    meaning = REASON_MEANING.get(reason)
    if meaning:
        return f"{reason}: {meaning}."
    return (f"{reason}: see the comment on SKB_DROP_REASON_{reason} in the kernel's "
            f"include/net/dropreason-core.h.")
