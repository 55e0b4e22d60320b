"""One catalogue of the kernel's drop reasons: what each means and where in the path it happens.

Names are the kernel's (``SKB_DROP_REASON_`` removed), as read from the kfree_skb event's
format file. The meanings paraphrase the comments in include/net/dropreason-core.h.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CounterInfo", "COUNTERS", "meaning", "ReasonInfo", "REASONS", "Stage", "stage"]


class Stage(StrEnum):
    """Where on the receive path a drop happens (the path figure's boxes)."""

    DEVICE = "device"          # the device and the core receive code
    ROUTING = "routing"        # the input route lookup and its checks (martians, rp_filter)
    FIREWALL = "firewall"      # netfilter / nftables
    FORWARDING = "forwarding"  # ip_forward and the way out
    LOCAL = "local delivery"   # the protocol handlers and sockets


@dataclass(frozen=True)
class ReasonInfo:
    """What a drop reason means, in one clause, and where it happens."""

    meaning: str
    stage: Stage


REASONS: dict[str, ReasonInfo] = {
    "IP_INADDRERRORS": ReasonInfo(
        "the destination is not an address of this host and the device it came in on does "
        "not forward (IpInAddrErrors)", Stage.ROUTING),
    "IP_LOCAL_SOURCE": ReasonInfo(
        "the source address is one of this host's own addresses (a martian source)",
        Stage.ROUTING),
    "IP_INVALID_SOURCE": ReasonInfo(
        "the source address can never be a sender (zero, multicast, broadcast)", Stage.ROUTING),
    "IP_INVALID_DEST": ReasonInfo("the destination is not valid for this packet",
                                  Stage.ROUTING),
    "IP_LOCALNET": ReasonInfo(
        "a loopback (127/8) address arrived on a non-loopback device", Stage.ROUTING),
    "IP_RPFILTER": ReasonInfo(
        "reverse-path filter: the route back to the source does not use the device the "
        "packet came in on", Stage.ROUTING),
    "IP_INNOROUTES": ReasonInfo("the kernel has no route to the destination", Stage.ROUTING),
    "IP_OUTNOROUTES": ReasonInfo("no route for a packet the host was about to send",
                                 Stage.FORWARDING),
    "IP_INHDR": ReasonInfo(
        "the IP header is invalid, or the TTL ran out while forwarding", Stage.FORWARDING),
    "IPV6_NOT_ENABLED": ReasonInfo("IPv6 is disabled on the device", Stage.DEVICE),
    "IPV6DISABLED": ReasonInfo("IPv6 is disabled on the device", Stage.DEVICE),
    "PKT_TOO_BIG": ReasonInfo("the packet is larger than the MTU of the way out and may "
                              "not be fragmented", Stage.FORWARDING),
    "NETFILTER_DROP": ReasonInfo(
        "a firewall (netfilter/nftables) rule or chain policy dropped it", Stage.FIREWALL),
    "IP_NOPROTO": ReasonInfo(
        "delivered locally, but no handler exists for its IP protocol number", Stage.LOCAL),
    "NO_SOCKET": ReasonInfo("no socket is listening for it (closed port)", Stage.LOCAL),
    "INVALID_PROTO": ReasonInfo(
        "the protocol handler refused it (for ICMP: an echo to a broadcast or multicast "
        "address while net.ipv4.icmp_echo_ignore_broadcasts=1)", Stage.LOCAL),
    "SOCKET_FILTER": ReasonInfo("a socket filter (BPF) refused it", Stage.LOCAL),
    "TCP_CSUM": ReasonInfo("bad TCP checksum", Stage.LOCAL),
    "ICMP_CSUM": ReasonInfo("bad ICMP checksum", Stage.LOCAL),
    "IP_CSUM": ReasonInfo("bad IP header checksum", Stage.ROUTING),
    "PKT_TOO_SMALL": ReasonInfo("shorter than its headers say", Stage.DEVICE),
    "UDP_CSUM": ReasonInfo("bad UDP checksum", Stage.LOCAL),
    "OTHERHOST": ReasonInfo("the packet was addressed to another host's hardware address",
                            Stage.DEVICE),
    "DEV_READY": ReasonInfo("the outgoing device is not ready (e.g. a TUN device nobody "
                            "reads)", Stage.FORWARDING),
    "FULL_RING": ReasonInfo("the device's queue is full: its reader is too slow",
                            Stage.FORWARDING),
    "TUN_FILTER": ReasonInfo("dropped by the TUN device's filter", Stage.DEVICE),
    "NOT_SPECIFIED": ReasonInfo(
        "dropped at a place in the kernel that gives no reason code", Stage.LOCAL),
}


def meaning(reason: str) -> str:
    """The reason's meaning in one clause, or where to look it up."""
    info = REASONS.get(reason)
    if info:
        return info.meaning
    return (f"see the comment on SKB_DROP_REASON_{reason} in the kernel's "
            "include/net/dropreason-core.h")


def stage(reason: str) -> Stage:
    """Where on the path ``reason`` happens (unknown reasons: local delivery)."""
    info = REASONS.get(reason)
    return info.stage if info else Stage.LOCAL


@dataclass(frozen=True)
class CounterInfo:
    """What a counter's rise says, and the drop reason that goes with it (if any)."""

    reason: str
    meaning: str


COUNTERS: dict[str, CounterInfo] = {
    "IpInAddrErrors": CounterInfo(
        "IP_INADDRERRORS", "not for this host, and the device it came in on does not forward "
        "(net.ipv4.conf.DEV.forwarding=0, which ip_forward=0 sets everywhere): ip_error() drops "
        "it"),
    "IpInHdrErrors": CounterInfo("IP_INHDR", "a bad IP header, or a TTL that ran out"),
    "IpInUnknownProtos": CounterInfo("IP_NOPROTO", "no handler for this IP protocol"),
    "IpInNoRoutes": CounterInfo("IP_INNOROUTES", "no route to the destination"),
    "IpOutNoRoutes": CounterInfo("IP_OUTNOROUTES", "no route for a packet this host sends"),
    "TcpExtIPReversePathFilter": CounterInfo(
        "IP_RPFILTER", "rp_filter: the reply would leave by another device"),
    "UdpNoPorts": CounterInfo("NO_SOCKET", "no socket on the UDP port"),
    "UdpIgnoredMulti": CounterInfo("NOT_SPECIFIED", "a UDP broadcast or multicast nobody "
                                   "listens for (never answered)"),
    "TcpOutRsts": CounterInfo("", "a TCP reset was sent (closed port)"),
    "IcmpInErrors": CounterInfo("", "ICMP refused the message (for an echo: sent to a "
                                "broadcast or multicast address)"),
    "IcmpOutDestUnreachs": CounterInfo("", "an ICMP destination unreachable was sent"),
    "IcmpOutTimeExcds": CounterInfo("", "an ICMP time exceeded was sent"),
    "IpForwDatagrams": CounterInfo("", "counted for forwarding (before the forward hook's "
                                   "firewall and the way out have had their say)"),
    "IcmpInEchos": CounterInfo("", "an echo request was delivered to this host's ICMP"),
    "Ip6InAddrErrors": CounterInfo("IP_INADDRERRORS", "not for this host, and IPv6 "
                                   "forwarding is off"),
    "Ip6InNoRoutes": CounterInfo("IP_INNOROUTES", "no IPv6 route to the destination"),
    "Ip6InUnknownProtos": CounterInfo("IP_NOPROTO", "no handler for the next header"),
    "Ip6InTooBigErrors": CounterInfo("PKT_TOO_BIG", "larger than the way out allows"),
    "Ip6InHdrErrors": CounterInfo("IP_INHDR", "a bad IPv6 header, or a hop limit that ran "
                                  "out"),
    "Udp6NoPorts": CounterInfo("NO_SOCKET", "no socket on the UDP port"),
}
