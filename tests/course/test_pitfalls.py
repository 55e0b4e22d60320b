"""Lesson 01's pitfall on a real device: a bare IP packet written to a TUN device opened
without IFF_NO_PI is counted as received and dropped, and never reaches IP."""

from __future__ import annotations

import pytest

from tunlab.course import pitfalls
from tunlab.errors import TunlabError
from tunlab.kernel import netns

STATS = """\
2: mytun: <NO-CARRIER,POINTOPOINT,MULTICAST,NOARP,UP> mtu 1500 qdisc pfifo_fast state DOWN
    link/none
    RX:  bytes packets errors dropped  missed   mcast
            80       1      0       1       0       0
    TX:  bytes packets errors dropped carrier collsns
           216       3      0       2       0       0
"""


def test_link_stats_reads_the_lines_participants_see() -> None:
    stats = pitfalls.link_stats(STATS)
    assert stats["rx_packets"] == 1 and stats["rx_dropped"] == 1 and stats["rx_bytes"] == 80
    assert stats["tx_packets"] == 3 and stats["tx_dropped"] == 2


def test_describe_takes_a_live_result_or_its_recording() -> None:
    live = pitfalls.BareWrite("mytun", 84, 0x54, 1, 80, 1, 0)
    assert pitfalls.describe(live) == pitfalls.describe(live.to_dict())
    assert "proto = 0x0054" in pitfalls.describe(live)


@pytest.fixture
def device():
    with netns.create("pitfall") as ns:
        ns.ip("tuntap", "add", "dev", "mytun", "mode", "tun")
        ns.ip("addr", "add", "10.0.0.1/24", "dev", "mytun")
        ns.ip("link", "set", "mytun", "up")
        yield ns


@pytest.mark.usefixtures("root")
def test_a_bare_write_into_a_pi_device_is_received_and_dropped_before_ip(device) -> None:
    result = pitfalls.write_bare_ip(device, "mytun")
    assert result.written == 84
    assert result.taken_as_proto == 84          # the IPv4 total length, read as tun_pi.proto
    assert (result.rx_packets, result.rx_bytes, result.rx_dropped) == (1, 80, 1)
    assert result.ip_in_receives == 0


@pytest.mark.usefixtures("root")
def test_the_same_write_with_a_pi_header_reaches_ip(device) -> None:
    """The control: with the four bytes the device expects, IP receives the packet, so the
    drop above is the missing header's doing and not the lab's."""
    import os
    import time

    from tunlab.kernel.counters import link_counters, snmp_counters
    from tunlab.kernel.tun import IFF_TUN, attach_fd
    from tunlab.packet.build import build

    packet = build("10.0.0.2", "10.0.0.1", 1, payload=bytes(56))
    before, ip_before = link_counters(device), snmp_counters(device)

    def write() -> None:
        fd = attach_fd("mytun", IFF_TUN)
        try:
            os.write(fd, b"\x00\x00\x08\x00" + packet)
            time.sleep(0.2)
        finally:
            os.close(fd)

    device.run(write)
    after, ip_after = link_counters(device), snmp_counters(device)
    assert after["mytun.rx_packets"] - before["mytun.rx_packets"] == 1
    assert after["mytun.rx_dropped"] - before["mytun.rx_dropped"] == 0
    assert ip_after["IpInReceives"] - ip_before["IpInReceives"] == 1


@pytest.mark.usefixtures("root")
def test_a_missing_device_is_a_clear_error_and_creates_nothing(device) -> None:
    with pytest.raises(TunlabError, match="no device nosuchtun"):
        pitfalls.write_bare_ip(device, "nosuchtun")
    assert "nosuchtun" not in device.ip("link", "show")


@pytest.mark.usefixtures("root")
def test_a_busy_device_is_a_clear_error(device) -> None:
    from tunlab.kernel.tun import TunDevice

    holder = device.run(TunDevice.open, "mytun")
    try:
        with pytest.raises(TunlabError, match="mytun is already attached by another program"):
            pitfalls.write_bare_ip(device, "mytun")
    finally:
        holder.close()
