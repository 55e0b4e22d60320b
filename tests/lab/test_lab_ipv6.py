"""IPv6 in the seed lab: addresses, default route, a real ICMPv6 echo, routes, MTU, counters."""

from __future__ import annotations

import os
import select
import threading

import pytest

from tunlab.errors import TunlabError
from tunlab.kernel import counters, tracefs
from tunlab.lab import SeedLab
from tunlab.packet import craft as packets

root = pytest.mark.skipif(os.geteuid() != 0,
                          reason="builds a network namespace and TUN devices: needs root")


def _read_reply(device, wanted: dict[str, object], timeout: float = 1.0) -> dict[str, object]:
    """The first packet out of ``device`` whose summary has the ``wanted`` fields (bounded)."""
    poller = select.poll()
    poller.register(device.fileno(), select.POLLIN)
    for _ in range(20):  # router solicitations and MLD reports may come first
        if not poller.poll(timeout * 1000):
            break
        summary = packets.summarize(os.read(device.fileno(), 65535))
        if all(summary.get(k) == v for k, v in wanted.items()):
            return summary
    return {}


@pytest.mark.usefixtures("root")
@root
def test_uplink_lab_has_the_ipv6_addresses_and_a_default_route_via_wan0():
    with SeedLab("v6", uplink=True) as lab:
        brief = lab.ns.ip("-6", "-br", "addr")
        for dev, address in (("mytun", "fd00::1/64"), ("mytun2", "fd00:2::1/64"),
                             ("wan0", "2001:db8::1/64")):
            line = next(x for x in brief.splitlines() if x.startswith(dev + " "))
            assert address in line
        assert "tentative" not in lab.ns.ip("-6", "addr")  # usable at once
        assert "default dev wan0" in lab.ns.ip("-6", "route")
        route = lab.ns.ip("-6", "route", "get", "2001:4860::8888")
        assert "dev wan0" in route and "src 2001:db8::1" in route
        assert any("-6 route add default dev wan0" in c for c in lab.commands)


@pytest.mark.usefixtures("root")
@root
def test_seed_lab_without_uplink_stays_ipv4_only():
    with SeedLab("v4only") as lab:
        assert "fd00" not in lab.ns.ip("-6", "addr")


@pytest.mark.usefixtures("root")
@root
@pytest.mark.parametrize("src, reply_dev", [("fd00:2::99", "mytun2"), ("2001:db8::99", "wan0")])
def test_icmpv6_echo_written_into_mytun2_gets_an_echo_reply(src, reply_dev):
    with SeedLab("v6echo", uplink=True) as lab:
        devices = {name: lab.device(name) for name in ("mytun", "mytun2", "wan0")}
        before = counters.snmp6_counters(lab.ns, per_device=True)
        lab.ns.run(devices["mytun2"].write, packets.craft(src, "fd00:2::1", ttl=0))
        reply = _read_reply(devices[reply_dev], {"icmp_type": 129})
        assert reply["src"] == "fd00:2::1" and reply["dst"] == src
        assert reply["proto"] == "icmp6" and reply["icmp_code"] == 0
        delta = counters.counter_delta(before, counters.snmp6_counters(lab.ns, per_device=True))
        assert delta["Icmp6InEchos"] == 1 and delta["Icmp6OutEchoReplies"] == 1
        assert delta["mytun2.Icmp6InEchos"] == 1


@pytest.mark.usefixtures("root")
@root
def test_snmp6_counters_are_the_lab_namespaces_own():
    with SeedLab("snmp6", uplink=True) as lab:
        outside = counters.snmp6_counters(lab.ns)["Icmp6InEchos"]
        lab.ns.exec(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", "fd00:2::1"])
        inside = counters.snmp6_counters(lab.ns)
        assert inside["Icmp6InEchos"] == outside + 2
        snapshot = counters.snapshot_counters(lab.ns)
        assert snapshot["Icmp6InEchos"] == outside + 2
        assert not any(key.startswith("lo.Ip6") for key in snapshot)  # per device: opt-in


@pytest.mark.usefixtures("root")
@root
def test_extra_routes_of_every_kind_and_a_refused_one_changes_nothing():
    with SeedLab("routes", uplink=True) as lab:
        lab.add_route("blackhole 203.0.113.0/24")
        lab.add_route("unreachable 2001:db8:99::/48")
        lab.add_route("prohibit fd00:9::/64")
        lab.add_route("-6 blackhole 64:ff9b::/96")
        v4, v6 = lab.ns.ip("route"), lab.ns.ip("-6", "route")
        assert "blackhole 203.0.113.0/24" in v4
        assert "unreachable 2001:db8:99::/48" in v6 and "prohibit fd00:9::/64" in v6
        assert "blackhole 64:ff9b::/96" in v6
        commands = list(lab.commands)
        for spec in ("bogus 10.9.9.0/24", "", "-6", "blackhole 'unclosed"):
            with pytest.raises(TunlabError):
                lab.add_route(spec)
        assert (lab.ns.ip("route"), lab.ns.ip("-6", "route")) == (v4, v6)
        assert lab.commands == commands


@pytest.mark.usefixtures("root")
@root
def test_set_mtu_and_ipv6_leaves_a_device_below_1280():
    with SeedLab("mtu", uplink=True) as lab:
        lab.set_mtu("wan0", 1280)
        assert "mtu 1280" in lab.ns.ip("link", "show", "wan0")
        assert "2001:db8::1" in lab.ns.ip("-6", "addr", "show", "wan0")
        lab.set_mtu("mytun", 1000)  # documented: the kernel disables IPv6 on the device
        assert "fd00::1" not in lab.ns.ip("-6", "addr", "show", "mytun")
        for dev, mtu in (("eth0", 1500), ("wan0", 67), ("wan0", 70000), ("wan0", True)):
            with pytest.raises(TunlabError):
                lab.set_mtu(dev, mtu)
        assert "mtu 1280" in lab.ns.ip("link", "show", "wan0")


@pytest.mark.usefixtures("root")
@root
def test_icmpv6_drop_is_traced_as_ipv6():
    with SeedLab("v6drop", uplink=True) as lab:
        device = lab.device("mytun2")
        writer = lab.ns.run(threading.get_native_id)
        with tracefs.DropTracer(pid=writer, label="v6drop") as tracer:
            lab.ns.run(device.write, packets.craft("fd00:2::99", "fd00:2::1", 253))
        ours = [d for d in tracer.drops if d.reason == "IP_NOPROTO"]
        assert ours and all(d.is_ipv6 and not d.is_ipv4 for d in ours)


def test_drop_family_properties():
    v6 = tracefs.Drop(reason="X", location="f", protocol=tracefs.ETH_P_IPV6, pid=1, timestamp=0.0)
    v4 = tracefs.Drop(reason="X", location="f", protocol=tracefs.ETH_P_IP, pid=1, timestamp=0.0)
    assert v6.is_ipv6 and not v6.is_ipv4 and v4.is_ipv4 and not v4.is_ipv6
