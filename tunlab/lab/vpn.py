"""Lesson 07's network: a laptop ``a``, a VPN server ``b`` and a host ``c`` on b's LAN.

The lab logic only (building host c, applying and reverting each fix, pinging and reading the
kernels' counters to say where the packet stopped); the lesson's panel is
:class:`tunlab.course.panels.fix_panel.FixPanel`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from tunlab.kernel.counters import counter_delta, snmp_counters

__all__ = ["diagnose_vpn_ping", "FIREWALL", "FIREWALL_FIX", "FIREWALL_UNFIX", "LAN_NET",
           "VPN_COUNTERS", "VpnScenario"]

LAN_NET = "192.168.50.0/24"
LAN_B, LAN_C = "192.168.50.1", "192.168.50.2"
FIREWALL = """table inet hostfw {
    chain forward {
        type filter hook forward priority filter; policy drop;
        counter comment "reached the policy: dropped"
    }
}
"""
FIREWALL_FIX = """flush chain inet hostfw forward
add rule inet hostfw forward ct state established,related accept
add rule inet hostfw forward iifname "tun0" oifname "lan0" accept
add rule inet hostfw forward counter comment "reached the policy: dropped"
"""
FIREWALL_UNFIX = """flush chain inet hostfw forward
add rule inet hostfw forward counter comment "reached the policy: dropped"
"""


class VpnScenario:
    """Lesson 07's network: the two-host lab plus host ``c`` on a LAN behind ``b``.

    ``a`` (10.9.0.1 on tun0) wants to reach ``c`` (192.168.50.2) through the tunnel to ``b``
    (10.9.0.2), which is also on c's LAN (lan0, 192.168.50.1). Host b starts like a typical
    machine: forwarding off, strict rp_filter, and a firewall whose forward policy is drop
    (as Docker sets it). Each fix in :attr:`FIXES` can be applied and reverted;
    :meth:`ping` reports where the packet stopped, from the kernels' own counters.
    """

    FIXES: dict[str, str] = {
        "route_a": "a: ip route add 192.168.50.0/24 dev tun0",
        "forward_b": "b: sysctl -w net.ipv4.ip_forward=1",
        "firewall_b": "b: nft: accept tun0 → lan0, and replies (ct state established)",
        "route_c": "c: ip route add 10.9.0.0/24 via 192.168.50.1",
        "rp_filter_b_off": "b: sysctl -w net.ipv4.conf.all.rp_filter=0 (was 1)",
    }
    REQUIRED = frozenset({"route_a", "forward_b", "firewall_b", "route_c"})

    @classmethod
    def for_lesson(cls, lesson: Any) -> VpnScenario | None:
        """The scenario in the lesson's two-host lab (host ``c`` registered as
        ``lesson.host("c")``), or None without a live lab."""
        if not lesson.live or lesson.lab is None:
            return None
        scenario = cls(lesson.lab)
        lesson.hosts["c"] = scenario.c
        return scenario

    def __init__(self, lab: Any) -> None:
        from tunlab.kernel import netns

        self.lab = lab
        self.a, self.b = lab.a, lab.b
        self.c = netns.create("c")
        lab.namespaces.append(self.c)  # removed with the lab
        self.applied: set[str] = set()
        self.commands: list[str] = []
        self._sh(self.b, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0",
                 "netns", self.c.name)
        self._sh(self.b, "ip", "addr", "add", f"{LAN_B}/24", "dev", "lan0")
        self._sh(self.b, "ip", "link", "set", "lan0", "up")
        self._sh(self.c, "ip", "addr", "add", f"{LAN_C}/24", "dev", "lan0")
        self._sh(self.c, "ip", "link", "set", "lan0", "up")
        self._sh(self.b, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
        self._sh(self.b, "nft", "-f", "-", input=FIREWALL)
        if getattr(lab, "client", None) is None:
            lab.start_tunnel()

    def _sh(self, ns: Any, *argv: str, input: str | None = None) -> str:
        host = {id(self.a): "a", id(self.b): "b"}.get(id(ns), "c")
        self.commands.append(f"[{host}] {' '.join(argv)}")
        return ns.exec(list(argv), input=input.encode() if input else None).stdout

    def apply(self, fix: str, on: bool = True) -> None:
        """Apply (``on``) or revert one fix by name."""
        if fix not in self.FIXES:
            raise KeyError(f"unknown fix {fix!r}; choose from {sorted(self.FIXES)}")
        if on == (fix in self.applied):
            return
        if fix == "route_a":
            self._sh(self.a, "ip", "route", "add" if on else "del", LAN_NET, "dev", "tun0")
        elif fix == "forward_b":
            self._sh(self.b, "sysctl", "-qw", f"net.ipv4.ip_forward={int(on)}")
        elif fix == "firewall_b":
            self._sh(self.b, "nft", "-f", "-", input=FIREWALL_FIX if on else FIREWALL_UNFIX)
        elif fix == "route_c":
            self._sh(self.c, "ip", "route", "add" if on else "del", "10.9.0.0/24", "via", LAN_B)
        elif fix == "rp_filter_b_off":
            self._sh(self.b, "sysctl", "-qw", f"net.ipv4.conf.all.rp_filter={0 if on else 1}")
        (self.applied.add if on else self.applied.discard)(fix)

    def set_fixes(self, fixes: set[str] | frozenset[str]) -> None:
        """Make exactly ``fixes`` applied (reverting the others)."""
        for fix in self.FIXES:
            self.apply(fix, fix in fixes)

    def _policy_drops(self) -> int:
        out = self.b.exec(["nft", "-j", "list", "chain", "inet", "hostfw", "forward"],
                          check=False).stdout
        try:
            items = json.loads(out)["nftables"]
        except (ValueError, KeyError):
            return 0
        for item in items:
            rule = item.get("rule")
            if rule and rule.get("comment", "").startswith("reached the policy"):
                for expr in rule.get("expr", []):
                    if "counter" in expr:
                        return int(expr["counter"]["packets"])
        return 0

    def ping(self, source: str | None = None) -> dict[str, Any]:
        """``ping -c1 192.168.50.2`` from a (``-I SOURCE`` when given); where it got to, from
        the counters of a, b and c."""
        snaps = {"a": snmp_counters(self.a), "b": snmp_counters(self.b), "c": snmp_counters(self.c)}
        drops0 = self._policy_drops()
        client = self.lab.client
        read0 = client.stats.read_packets if client else 0
        source_args = ["-I", source] if source else []
        result = self.a.exec(["ping", "-c1", "-W1", *source_args, LAN_C], check=False,
                             timeout=5)
        time.sleep(0.05)
        deltas = {host: counter_delta(snaps[host], snmp_counters(ns))
                  for host, ns in (("a", self.a), ("b", self.b), ("c", self.c))}
        policy = self._policy_drops() - drops0
        read = (client.stats.read_packets - read0) if client else 0
        output = (result.stdout + result.stderr).strip()
        stage, reason = diagnose_vpn_ping(result.returncode, output, read, deltas, policy)
        return {"fixes": sorted(self.applied), "ok": result.returncode == 0, "source": source,
                "output": output, "stage": stage, "reason": reason, "tunnel_read": read,
                "policy_drops": policy,
                "counters": {h: {k: v for k, v in d.items() if k in VPN_COUNTERS}
                             for h, d in deltas.items()}}

    def verify_fix_set(self, fixes: set[str] | frozenset[str]) -> tuple[bool, str]:
        """Exercise 07 against the kernels: ``fixes`` work, and each one is needed."""
        unknown = set(fixes) - set(self.FIXES)
        if unknown:
            return False, f"unknown fix names: {sorted(unknown)}; use {sorted(self.FIXES)}"
        previous = set(self.applied)
        try:
            self.set_fixes(set(fixes))
            result = self.ping()
            if not result["ok"]:
                return False, ("with exactly these fixes the ping still fails; the packet "
                               f"stopped here: {result['reason'] or 'no reply came back'}")
            for fix in sorted(fixes):
                self.set_fixes(set(fixes) - {fix})
                if self.ping()["ok"]:
                    return False, f"the ping also works without {fix}: it is not needed"
            return True, "the ping works with these fixes, and fails without any one of them"
        finally:
            self.set_fixes(previous)

    def close(self) -> None:
        """Nothing of its own to stop: namespace c goes with the lab."""


VPN_COUNTERS = ("IpOutNoRoutes", "IpInAddrErrors", "IpForwDatagrams", "IcmpInEchos",
                "IcmpOutEchoReps", "IcmpInEchoReps", "TcpExtIPReversePathFilter")


def diagnose_vpn_ping(rc: int, output: str, tunnel_read: int,
                      deltas: Mapping[str, Mapping[str, int]], policy_drops: int
                      ) -> tuple[int | None, str]:
    """Which step of the lesson's path (:data:`tunlab.course.panels.fix_panel.VPN_STEPS`)
    stopped the ping, and why (None when it worked)."""
    a, b, c = deltas.get("a", {}), deltas.get("b", {}), deltas.get("c", {})
    if rc == 0:
        return None, ""
    if "unreachable" in output.lower() or a.get("IpOutNoRoutes"):
        return 0, "a has no route to 192.168.50.2 (ENETUNREACH, IpOutNoRoutes)"
    if not tunnel_read:
        return 1, "nothing entered tun0"
    if b.get("TcpExtIPReversePathFilter"):
        return 4, "IP_RPFILTER on b"
    if b.get("IpInAddrErrors"):
        return 4, "IP_INADDRERRORS on b: forwarding is off"
    if policy_drops:
        return 5, "NETFILTER_DROP on b: forward policy drop"
    if not c.get("IcmpInEchos"):
        return 6, "the echo never reached c"
    if not c.get("IcmpOutEchoReps"):
        return 6, "c has no route back to 10.9.0.1: the reply is never sent"
    return 7, "the reply was lost on the way back"
