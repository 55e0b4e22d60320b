"""What the kernel does with each packet of the fate corpus, as measured on kernel 6.18.

Each scenario is a ``tunlab fate`` call and what the kernel must say: the verdict, the drop
reasons, the replies (device, protocol, ICMP type/code or TCP flags), whether a martian line
is logged, phrases the explanation must (and must not) contain, and the verdict the first
working fix gives (``None``: tunlab must not claim that any change it tried lets it through).
tests/test_fate_corpus.py runs every scenario against the live kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FWD = "--set net.ipv4.ip_forward=1"
FWD6 = "--set net.ipv6.conf.all.forwarding=1"
FORWARD_POLICY_DROP = """table inet hostfw {
    chain forward { type filter hook forward priority filter; policy drop; }
}"""


@dataclass(frozen=True)
class Scenario:
    id: str
    args: str
    verdict: str
    reasons: tuple[str, ...] = ()
    replies: tuple[tuple, ...] = ()  # (dev, proto, icmp type, code) or (dev, "tcp", flags)
    martian: bool = False
    says: tuple[str, ...] = ()
    not_says: tuple[str, ...] = ()
    fix: str | None = None                # verdict_after of the first working fix
    fix_has: str | None = None            # ... whose commands contain this
    ruleset: str | None = None            # an nft ruleset given as a file
    family: int = 4
    extra: dict = field(default_factory=dict)


SCENARIOS: list[Scenario] = [
    # -- the seed's own packets and hints
    Scenario("seed-forwarding-off", "--src 10.0.0.1 --dst 10.0.0.2", "dropped",
             ("IP_INADDRERRORS",), says=("net.ipv4.ip_forward=0",
                                         "Tried, not enough on its own: turn on IP forwarding"),
             fix="forwarded", fix_has="accept_local=1"),
    Scenario("seed-forwarding-on-martian", f"--src 10.0.0.1 --dst 10.0.0.2 {FWD}", "dropped",
             ("IP_LOCAL_SOURCE",), martian=True,
             says=("martian source 10.0.0.2 from 10.0.0.1, on dev mytun2",),
             fix="forwarded", fix_has="accept_local=1"),
    Scenario("seed-journal-martian-on-mytun", f"--src 10.0.0.1 --dst 10.0.2.33 --dev mytun {FWD}",
             "dropped", ("IP_LOCAL_SOURCE",), martian=True,
             says=("martian source 10.0.2.33 from 10.0.0.1, on dev mytun",), fix="forwarded"),
    Scenario("seed-public-source-forwarded", f"--src 200.1.2.3 --dst 10.0.0.2 {FWD}",
             "forwarded", says=("out of mytun", "TTL 64 -> 63")),
    Scenario("seed-noproto", "--src 200.1.2.3 --dst 10.0.2.1 --proto 253", "dropped",
             ("IP_NOPROTO",), replies=(("wan0", "icmp", 3, 2),),
             says=("ICMP protocol unreachable from 10.0.2.1 out of wan0",)),
    Scenario("seed-host-firewall", f"--src 200.1.2.3 --dst 10.0.0.2 {FWD}", "dropped",
             ("NETFILTER_DROP",), ruleset=FORWARD_POLICY_DROP,
             says=("policy", "forward"), fix="forwarded", fix_has='iifname "mytun2"'),
    Scenario("seed-ping-I-mytun", "--src 10.0.0.1 --dst 10.0.2.1 --dev mytun", "dropped",
             ("IP_LOCAL_SOURCE",), martian=True, fix="delivered", fix_has="accept_local=1"),
    Scenario("seed-ping-I-accept-local",
             "--src 10.0.0.1 --dst 10.0.2.1 --dev mytun --set net.ipv4.conf.all.accept_local=1",
             "delivered", says=("out through lo",)),
    # -- reverse-path filtering, with the values the kernel really applies
    Scenario("rp-strict-all", "--src 200.1.2.3 --dst 10.0.0.2 "
             f"{FWD} --set net.ipv4.conf.all.rp_filter=1", "dropped", ("IP_RPFILTER",),
             martian=True, says=("strict mode", "dev wan0"), fix="forwarded",
             fix_has="ip route add 200.1.2.3 dev mytun2"),
    Scenario("rp-loose-all", "--src 200.1.2.3 --dst 10.0.0.2 "
             f"{FWD} --set net.ipv4.conf.all.rp_filter=2", "forwarded"),
    Scenario("rp-strict-device-only", "--src 200.1.2.3 --dst 10.0.2.1 "
             "--set net.ipv4.conf.mytun2.rp_filter=1", "dropped", ("IP_RPFILTER",),
             martian=True, says=("net.ipv4.conf.mytun2.rp_filter=1", "strict mode"),
             not_says=("rp_filter=0 (",), fix="delivered"),
    Scenario("rp-device-loose-all-strict", "--src 200.1.2.3 --dst 10.0.2.1 "
             "--set net.ipv4.conf.all.rp_filter=1 --set net.ipv4.conf.mytun2.rp_filter=2",
             "delivered", replies=(("wan0", "icmp", 0, 0),)),  # max(1, 2) = 2: loose
    Scenario("rp-local-source-accept-local", "--src 10.0.0.1 --dst 10.0.2.1 "
             "--set net.ipv4.conf.all.accept_local=1 --set net.ipv4.conf.all.rp_filter=1",
             "dropped", ("IP_RPFILTER",), martian=True, says=("local table",),
             not_says=("ip route add 10.0.0.1",), fix="delivered", fix_has="rp_filter"),
    Scenario("rp-wan0-subnet-source", "--src 10.0.2.7 --dst 10.0.2.1 --dev wan0 "
             "--set net.ipv4.conf.all.rp_filter=1", "dropped", ("IP_RPFILTER",), martian=True,
             fix="delivered", fix_has="ip route add 10.0.2.7 dev wan0"),
    Scenario("rp-then-noproto", "--src 200.1.2.3 --dst 10.0.2.1 --proto 253 "
             "--set net.ipv4.conf.all.rp_filter=1", "dropped", ("IP_RPFILTER",), martian=True,
             says=("still dropped, IP_NOPROTO",), fix=None),
    # -- martian logging: all OR device
    Scenario("martian-log-device-only", "--src 0.0.0.0 --dst 10.0.2.1 "
             "--set net.ipv4.conf.all.log_martians=0 --set net.ipv4.conf.mytun2.log_martians=1",
             "dropped", ("IP_INVALID_SOURCE",), martian=True,
             says=("martian source 10.0.2.1 from 0.0.0.0, on dev mytun2",)),
    Scenario("martian-log-off", f"--src 10.0.0.1 --dst 10.0.0.2 {FWD} "
             "--set net.ipv4.conf.all.log_martians=0", "dropped", ("IP_LOCAL_SOURCE",),
             says=("log_martians is off for mytun2",), fix="forwarded"),
    Scenario("invalid-source-broadcast", "--src 255.255.255.255 --dst 10.0.2.1", "dropped",
             ("IP_INVALID_SOURCE",), martian=True, says=("real unicast source",)),
    Scenario("invalid-source-multicast", "--src 224.0.0.5 --dst 10.0.2.1", "dropped",
             ("IP_INVALID_SOURCE",), martian=True),
    Scenario("loopback-source", "--src 127.0.0.1 --dst 10.0.2.1", "dropped", ("IP_LOCALNET",),
             martian=True, fix="delivered", fix_has="route_localnet=1"),
    Scenario("loopback-destination", "--src 200.1.2.3 --dst 127.0.0.1", "dropped",
             ("IP_LOCALNET",), martian=True, fix="delivered"),
    # -- forwarding, per device
    Scenario("forwarding-off-on-arrival-device", "--src 10.0.2.33 --dst 200.1.2.3 "
             f"{FWD} --set net.ipv4.conf.mytun2.forwarding=0", "dropped", ("IP_INADDRERRORS",),
             says=("net.ipv4.conf.mytun2.forwarding=0",), not_says=("add a route",),
             fix="forwarded", fix_has="net.ipv4.conf.mytun2.forwarding=1"),
    Scenario("forwarding-off-on-other-device", "--src 200.1.2.3 --dst 10.0.0.2 "
             f"{FWD} --set net.ipv4.conf.mytun.forwarding=0", "forwarded"),
    Scenario("forward-out-of-wan0", f"--src 200.1.2.3 --dst 192.0.2.99 {FWD}", "forwarded",
             says=("out of wan0",)),
    Scenario("forward-back-out-of-mytun2", f"--src 200.1.2.3 --dst 10.0.2.33 {FWD}",
             "forwarded", says=("out of mytun2",)),
    Scenario("ttl-1-forwarded", f"--src 200.1.2.3 --dst 10.0.0.2 --ttl 1 {FWD}", "dropped",
             ("IP_INHDR",), replies=(("wan0", "icmp", 11, 0),), says=("TTL",),
             fix="forwarded", fix_has="ping -t 64"),
    Scenario("ttl-1-local", "--src 200.1.2.3 --dst 10.0.2.1 --ttl 1", "delivered",
             replies=(("wan0", "icmp", 0, 0),)),
    # -- local delivery and sockets
    Scenario("echo-local", "--src 200.1.2.3 --dst 10.0.2.1", "delivered",
             replies=(("wan0", "icmp", 0, 0),)),
    Scenario("echo-local-other-device-address", "--src 200.1.2.3 --dst 10.0.0.1",
             "delivered", replies=(("wan0", "icmp", 0, 0),)),
    Scenario("echo-from-tunnel-subnet", "--src 10.0.2.7 --dst 10.0.2.1", "delivered",
             replies=(("mytun2", "icmp", 0, 0),)),
    Scenario("echo-arrives-on-wan0", "--src 200.1.2.3 --dst 10.0.2.1 --dev wan0", "delivered",
             replies=(("wan0", "icmp", 0, 0),)),
    Scenario("udp-closed-port", "--src 200.1.2.3 --dst 10.0.2.1 --proto udp --dport 9999",
             "dropped", ("NO_SOCKET",), replies=(("wan0", "icmp", 3, 3),),
             says=("port 9999",), fix="delivered", fix_has="9999"),
    Scenario("udp-listener", "--src 200.1.2.3 --dst 10.0.2.1 --proto udp --dport 53 "
             "--listen udp 53", "delivered"),
    Scenario("udp-listener-other-port", "--src 200.1.2.3 --dst 10.0.2.1 --proto udp "
             "--dport 53 --listen udp 9", "dropped", ("NO_SOCKET",),
             replies=(("wan0", "icmp", 3, 3),), fix="delivered"),
    Scenario("tcp-closed-port", "--src 200.1.2.3 --dst 10.0.2.1 --proto tcp --dport 9999",
             "dropped", ("NO_SOCKET",), replies=(("wan0", "tcp", "RA"),), fix="delivered"),
    Scenario("tcp-listener-syn-ack", "--src 200.1.2.3 --dst 10.0.2.1 --proto tcp --dport 80 "
             "--listen tcp 80", "delivered", replies=(("wan0", "tcp", "SA"),),
             says=("a TCP SYN-ACK from 10.0.2.1 out of wan0",)),
    # -- broadcasts and multicast
    Scenario("echo-limited-broadcast", "--src 200.1.2.3 --dst 255.255.255.255", "dropped",
             ("INVALID_PROTO",), says=("icmp_echo_ignore_broadcasts=1",),
             fix="delivered", fix_has="icmp_echo_ignore_broadcasts=0"),
    Scenario("echo-subnet-broadcast", "--src 200.1.2.3 --dst 10.0.2.255", "dropped",
             ("INVALID_PROTO",), says=("broadcast address",), fix="delivered"),
    Scenario("echo-all-hosts-multicast", "--src 200.1.2.3 --dst 224.0.0.1", "dropped",
             ("INVALID_PROTO",), says=("multicast address",), fix="delivered"),
    Scenario("udp-broadcast-no-listener", "--src 200.1.2.3 --dst 10.0.2.255 --proto udp "
             "--dport 9", "dropped", ("NOT_SPECIFIED",), says=("no socket is bound",),
             not_says=("older kernels",), fix="delivered", fix_has="nc -lu 9"),
    Scenario("udp-limited-broadcast-no-listener", "--src 200.1.2.3 --dst 255.255.255.255 "
             "--proto udp --dport 9", "dropped", ("NOT_SPECIFIED",), fix="delivered"),
    # -- routes of the discarding kinds
    Scenario("route-blackhole", f"--src 200.1.2.3 --dst 10.0.0.2 {FWD} "
             "--route 'blackhole 10.0.0.0/25'", "dropped", ("NOT_SPECIFIED",),
             says=("blackhole route",), fix="forwarded", fix_has="ip route del blackhole"),
    Scenario("route-unreachable", f"--src 200.1.2.3 --dst 10.0.0.2 {FWD} "
             "--route 'unreachable 10.0.0.0/25'", "dropped", ("NOT_SPECIFIED",),
             replies=(("wan0", "icmp", 3, 1),), says=("unreachable route",), fix="forwarded"),
    Scenario("route-prohibit", f"--src 200.1.2.3 --dst 10.0.0.2 {FWD} "
             "--route 'prohibit 10.0.0.0/25'", "dropped", ("NOT_SPECIFIED",),
             replies=(("wan0", "icmp", 3, 13),), says=("prohibit route",), fix="forwarded"),
    Scenario("route-back-through-tunnel", "--src 200.1.2.3 --dst 10.0.2.1 "
             "--set net.ipv4.conf.all.rp_filter=1 --route '200.1.2.3 dev mytun2'",
             "delivered", replies=(("mytun2", "icmp", 0, 0),)),
    # -- firewalls: which table, chain, hook and rule
    Scenario("nft-input-rule-drop", "--src 200.1.2.3 --dst 10.0.2.1 "
             "--nft-rule 'input ip saddr 200.1.2.3 drop'", "dropped", ("NETFILTER_DROP",),
             says=("chain input", "hook input", "handle"), not_says=("forward chain has",),
             fix="delivered", fix_has="insert rule"),
    Scenario("nft-input-reject", "--src 200.1.2.3 --dst 10.0.2.1 "
             "--nft-rule 'input reject with icmp type admin-prohibited'", "dropped",
             ("NETFILTER_DROP",), replies=(("wan0", "icmp", 3, 13),),
             says=("rejected", "hook input"), fix="delivered", fix_has="insert rule"),
    Scenario("nft-forward-reject", f"--src 200.1.2.3 --dst 10.0.0.2 {FWD} "
             "--nft-rule 'forward ip daddr 10.0.0.2 reject'", "dropped", ("NETFILTER_DROP",),
             replies=(("wan0", "icmp", 3, 3),), says=("rejected", "hook forward"),
             fix="forwarded", fix_has="insert rule"),
    Scenario("nft-forward-accept-rule", f"--src 200.1.2.3 --dst 10.0.0.2 {FWD} "
             "--nft-rule 'forward iifname \"mytun2\" accept'", "forwarded"),
    # -- TTL 0, sizes and the MTU of the way out
    Scenario("ttl-0-local", "--src 200.1.2.3 --dst 10.0.2.1 --ttl 0", "delivered",
             replies=(("wan0", "icmp", 0, 0),)),
    Scenario("ttl-0-forwarded", f"--src 200.1.2.3 --dst 10.0.0.2 --ttl 0 {FWD}", "dropped",
             ("IP_INHDR",), replies=(("wan0", "icmp", 11, 0),), fix="forwarded"),
    Scenario("frag-needed-df", f"--src 200.1.2.3 --dst 192.0.2.99 {FWD} --mtu wan0=1280 "
             "--size 1400 --df", "dropped", ("PKT_TOO_BIG",), replies=(("wan0", "icmp", 3, 4),),
             says=("MTU of wan0",), fix="forwarded", fix_has="mtu 1500"),
    Scenario("fragmented-without-df", f"--src 200.1.2.3 --dst 192.0.2.99 {FWD} "
             "--mtu wan0=1280 --size 1400", "forwarded", says=("out of wan0",)),
    # -- IPv6: the lab has fd00::1/64 on mytun, fd00:2::1/64 on mytun2, 2001:db8::1/64 on wan0
    Scenario("v6-echo-local", "--src 2001:db8::5 --dst fd00:2::1", "delivered",
             replies=(("wan0", "icmp6", 129, 0),), family=6),
    Scenario("v6-forwarding-off", "--src 2001:db8::5 --dst fd00::2", "dropped",
             ("IP_INADDRERRORS",), says=("net.ipv6.conf.all.forwarding=0",), fix="forwarded",
             fix_has="net.ipv6.conf.all.forwarding=1", family=6),
    Scenario("v6-forwarded", f"--src 2001:db8::5 --dst fd00::2 {FWD6}", "forwarded",
             says=("out of mytun", "IPv6 forwarding is on"), family=6),
    Scenario("v6-own-source-forwarded", f"--src fd00::1 --dst fd00::2 {FWD6}", "forwarded",
             family=6),  # IPv6 has no martian-source check: the packet goes on
    Scenario("v6-own-source-local", "--src fd00::1 --dst fd00:2::1", "delivered", family=6),
    Scenario("v6-hop-limit-1", f"--src 2001:db8::5 --dst fd00::2 --ttl 1 {FWD6}", "dropped",
             ("IP_INHDR",), replies=(("wan0", "icmp6", 3, 0),), says=("hop limit",),
             fix="forwarded", family=6),
    Scenario("v6-hop-limit-0-local", "--src 2001:db8::5 --dst fd00:2::1 --ttl 0",
             "delivered", replies=(("wan0", "icmp6", 129, 0),), family=6),
    Scenario("v6-udp-closed-port", "--src 2001:db8::5 --dst fd00:2::1 --proto udp "
             "--dport 9999", "dropped", ("NO_SOCKET",), replies=(("wan0", "icmp6", 1, 4),),
             fix="delivered", family=6),
    Scenario("v6-tcp-closed-port", "--src 2001:db8::5 --dst fd00:2::1 --proto tcp "
             "--dport 9999", "dropped", ("NO_SOCKET",), replies=(("wan0", "tcp", "RA"),),
             fix="delivered", family=6),
    Scenario("v6-tcp-listener", "--src 2001:db8::5 --dst fd00:2::1 --proto tcp --dport 80 "
             "--listen tcp 80", "delivered", replies=(("wan0", "tcp", "SA"),), family=6),
    Scenario("v6-udp-listener", "--src 2001:db8::5 --dst fd00:2::1 --proto udp --dport 53 "
             "--listen udp 53", "delivered", family=6),
    Scenario("v6-noproto", "--src 2001:db8::5 --dst fd00:2::1 --proto 253", "dropped",
             ("IP_NOPROTO",), replies=(("wan0", "icmp6", 4, 1),), family=6),
    Scenario("v6-link-local-source", "--src fe80::5 --dst fd00:2::1", "delivered",
             replies=(("mytun2", "icmp6", 129, 0),), family=6),
    Scenario("v6-loopback-source", "--src ::1 --dst fd00:2::1", "dropped", ("IP_INHDR",),
             says=("loopback address",), family=6),
    Scenario("v6-forward-out-of-wan0", f"--src 2001:db8::5 --dst 2001:db8::99 {FWD6}",
             "forwarded", says=("out of wan0",), family=6),
    Scenario("v6-packet-too-big", f"--src fd00:2::5 --dst 2001:db8::99 {FWD6} "
             "--mtu wan0=1280 --size 1400", "dropped", ("PKT_TOO_BIG",),
             replies=(("mytun2", "icmp6", 2, 0),), says=("IPv6 routers never fragment",),
             fix="forwarded", fix_has="mtu 1500", family=6),
    Scenario("v6-route-blackhole", f"--src 2001:db8::5 --dst fd00::2 {FWD6} "
             "--route 'blackhole fd00::2/128'", "dropped", family=6, fix="forwarded",
             fix_has="ip route del blackhole", extra={"any_reason": True}),
    Scenario("v6-route-prohibit", f"--src 2001:db8::5 --dst fd00::2 {FWD6} "
             "--route 'prohibit fd00::2/128'", "dropped", family=6, fix="forwarded",
             extra={"any_reason": True, "any_replies": True}),
    Scenario("v6-nft-input-drop", "--src 2001:db8::5 --dst fd00:2::1 "
             "--nft-rule 'input ip6 saddr 2001:db8::5 drop'", "dropped", ("NETFILTER_DROP",),
             says=("hook input",), fix="delivered", fix_has="insert rule", family=6),
]

