"""A fast-path reader killed with SIGKILL leaves its TUN device with offloads on (issue 14,
finding 3). The next reader, tunlab's or a raw one like lesson 01's, must get finished packets:
valid IPv4, TCP and UDP checksums, checked by scapy on what the kernel really hands over."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP

from tunlab.kernel import netns, ownership
from tunlab.kernel.netns import Namespace
from tunlab.kernel.ownership import Kind
from tunlab.kernel.tun import IFF_NO_PI, IFF_TUN, TunDevice, attach_fd

pytestmark = pytest.mark.usefixtures("root")

DEVICE, ADDRESS, PEER = "tun0", "192.0.2.1/24", "192.0.2.2"  # TEST-NET-1, inside our namespace

# Opens the device for the fast path with every offload on, says so, then waits to be killed.
HOLDER = r"""
import time
from tunlab.kernel.tun import OFFLOAD_FAST, TunDevice
device = TunDevice.open("tun0", vnet_hdr=True)
device.set_offload(OFFLOAD_FAST)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def ns() -> Iterator[Namespace]:
    with netns.create("killfast") as namespace:
        namespace.ip("tuntap", "add", "dev", DEVICE, "mode", "tun")  # persistent, like the seed's
        namespace.ip("addr", "add", ADDRESS, "dev", DEVICE)
        namespace.ip("link", "set", DEVICE, "up")
        yield namespace


def _kill_a_fast_reader(ns: Namespace) -> None:
    holder = ns.popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline().strip()
        assert line == "ready", holder.stderr.read() if holder.stderr else line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    info = json.loads(ns.ip("-j", "-d", "link", "show", DEVICE))[0]["linkinfo"]["info_data"]
    assert info.get("vnet_hdr"), "the killed reader should have left vnet_hdr on"


def _provoke_traffic() -> None:
    """A TCP connect and a UDP datagram to an address routed through the TUN device."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"x" * 200, (PEER, 9))
    with socket.socket() as tcp:
        tcp.settimeout(0.3)
        try:
            tcp.connect((PEER, 80))
        except OSError:
            pass  # nobody answers: the SYN is what we wanted to see


def _read_ipv4(read: Callable[[], bytes], fd: int, wanted: int = 2) -> list[IP]:
    """Up to ``wanted`` IPv4 TCP/UDP packets from the device (bounded wait)."""
    found: list[IP] = []
    deadline = time.monotonic() + 3
    while len(found) < wanted and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        packet = read()
        if packet and packet[0] >> 4 == 4:
            parsed = IP(packet)
            if parsed.haslayer(TCP) or parsed.haslayer(UDP):
                found.append(parsed)
    return found


def _checksums_valid(packet: IP) -> bool:
    fresh = packet.copy()
    del fresh.chksum
    layer = fresh[TCP] if fresh.haslayer(TCP) else fresh[UDP]
    del layer.chksum
    rebuilt = IP(bytes(fresh))
    inner = TCP if packet.haslayer(TCP) else UDP
    return (rebuilt.chksum == packet.chksum
            and rebuilt[inner].chksum == packet[inner].chksum)


def _assert_finished_packets(ns: Namespace, read: Callable[[], bytes], fd: int) -> None:
    ns.run(_provoke_traffic)
    packets = ns.run(_read_ipv4, read, fd)
    protocols = {p.sprintf("%IP.proto%") for p in packets}
    assert {"tcp", "udp"} <= protocols, f"expected a TCP and a UDP packet, read {packets}"
    bad = [p.summary() for p in packets if not _checksums_valid(p)]
    assert not bad, f"packets with checksums left for the reader to finish: {bad}"


def test_a_plain_tunlab_open_after_a_killed_fast_reader_reads_finished_packets(ns):
    _kill_a_fast_reader(ns)
    device = ns.run(lambda: TunDevice.open(DEVICE))
    try:
        assert not device.offloads_enabled()
        _assert_finished_packets(ns, device.read, device.fileno())
    finally:
        device.close()


def test_cleanup_restores_the_device_for_a_raw_reader(ns, tunlab_cmd):
    """Lesson 01 reads through its own raw descriptor: only `tunlab cleanup` can help it."""
    _kill_a_fast_reader(ns)
    # this test's own record: other labs on the machine may have a tun0 of their own
    mine = f"{os.stat(ns.path).st_ino}:{DEVICE}"
    records = [r for r in ownership.records(Kind.TUN) if r.name.endswith(mine)]
    assert records, "the fast open wrote no ownership record for the persistent device"
    cleanup = subprocess.run([*tunlab_cmd, "cleanup"], capture_output=True, text=True,
                             timeout=60)
    assert cleanup.returncode == 0, cleanup.stderr
    assert f"restored TUN device {DEVICE}" in cleanup.stdout, cleanup.stdout
    assert not [r for r in ownership.records(Kind.TUN) if r.name == records[0].name]

    fd = ns.run(attach_fd, DEVICE, IFF_TUN | IFF_NO_PI)  # a plain reader, not tunlab's
    try:
        _assert_finished_packets(ns, lambda: os.read(fd, 65600), fd)
    finally:
        os.close(fd)


def test_a_new_fast_open_puts_back_the_state_before_the_killed_one(ns):
    """The vnet_hdr flag the killed reader left is not the device's own: close clears it."""
    _kill_a_fast_reader(ns)
    device = ns.run(lambda: TunDevice.open(DEVICE, vnet_hdr=True))
    device.close()
    info = json.loads(ns.ip("-j", "-d", "link", "show", DEVICE))[0]["linkinfo"]["info_data"]
    assert not info.get("vnet_hdr")
