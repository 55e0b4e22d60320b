"""The fast data path: virtio-net headers, offload negotiation in the HELLO, super-packets.

The software offload code is checked against scapy's own checksums; the tunnel is checked with
real TUN devices opened with IFF_VNET_HDR in two namespaces, fast with fast and fast with simple.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
from scapy.layers.inet import IP, TCP
from transfer import transfer

from tunlab.kernel.tun import IFF_VNET_HDR, TunDevice
from tunlab.lab import TwoHostLab
from tunlab.packet import validate, vnet
from tunlab.packet.vnet import OffloadError, VnetHeader
from tunlab.tunnel import VNET_FEATURE, EventKind


def _super_packet(payload_size: int, flags: str = "PA") -> bytes:
    packet = IP(src="10.9.0.1", dst="10.9.0.2", id=100) / TCP(
        sport=40000, dport=5201, seq=1000, flags=flags) / (bytes(range(256)) * 300)[:payload_size]
    return bytes(packet)


def _valid_checksums(raw: bytes) -> bool:
    parsed = IP(raw)
    expected_ip, expected_tcp = parsed.chksum, parsed[TCP].chksum
    del parsed.chksum
    del parsed[TCP].chksum
    rebuilt = IP(bytes(parsed))
    return rebuilt.chksum == expected_ip and rebuilt[TCP].chksum == expected_tcp


def test_tcp_super_packet_is_cut_like_the_kernel_would():
    packet = _super_packet(3500, flags="FPA")
    header = VnetHeader(flags=vnet.F_NEEDS_CSUM, gso_type=vnet.GSO_TCPV4, hdr_len=40,
                        gso_size=1448, csum_start=20, csum_offset=16)
    segments = vnet.resolve(header.pack(), packet)
    assert [len(s) - 40 for s in segments] == [1448, 1448, 604]
    assert b"".join(s[40:] for s in segments) == packet[40:]
    assert [IP(s)[TCP].seq for s in segments] == [1000, 2448, 3896]
    # FIN and PSH belong to the last segment only
    assert [str(IP(s)[TCP].flags) for s in segments] == ["A", "A", "FPA"]
    assert all(_valid_checksums(s) for s in segments)
    assert len({IP(s).id for s in segments}) == 3


def test_checksum_only_offload_is_completed():
    packet = bytearray(_super_packet(100))
    # What the kernel leaves in the field: the pseudo-header's sum, not yet complemented.
    pseudo = packet[12:20] + bytes((0, 6)) + (len(packet) - 20).to_bytes(2, "big")
    packet[36:38] = (~(validate.internet_checksum(pseudo) or 0xFFFF) & 0xFFFF).to_bytes(2, "big")
    header = VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=20, csum_offset=16)
    (finished,) = vnet.resolve(header.pack(), bytes(packet))
    assert _valid_checksums(finished)


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("header, why", [
    (VnetHeader(gso_type=vnet.GSO_TCPV4, gso_size=0), "gso_size 0"),
    (VnetHeader(gso_type=vnet.GSO_TCPV4, gso_size=1), "more than"),
    (VnetHeader(gso_type=vnet.GSO_UDP, gso_size=1000), "cannot segment"),
    (VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=5000, csum_offset=16), "checksum position"),
])
def test_headers_asking_for_impossible_or_unbounded_work_are_refused(header, why):
    with pytest.raises(OffloadError, match=why):
        vnet.resolve(header.pack(), _super_packet(3000))


def _link(ns, dev: str) -> dict:
    return json.loads(ns.ip("-j", "-d", "link", "show", dev))[0]


@pytest.mark.usefixtures("root")
def test_fast_endpoints_negotiate_super_packets_and_carry_tcp_intact():
    with TwoHostLab(mtu=1500, tun_mtu=1500) as lab:
        before = _link(lab.b, "tun0")
        server, client = lab.start_tunnel(fast=True)
        assert server.device.vnet_hdr and client.device.vnet_hdr
        assert VNET_FEATURE in server.features and VNET_FEATURE in client.features
        assert server.device.offloads_enabled(), "TUNSETOFFLOAD did not take"
        sent, arrived = transfer(lab.a, lab.b, "10.9.0.2", 16 * 1024 * 1024)
        assert sent == arrived
        # The kernel handed over super-packets: far fewer, far larger reads than 1,500 bytes.
        stats = client.stats
        assert stats.read_bytes / stats.read_packets > 3000, stats
        assert server.stats.written_packets > 0
        # Each side's pump runs as SCHED_BATCH (a wake-up of it does not preempt its waker);
        # nothing else changed policy, this thread included.
        batch = {t.name.split("-")[1] for t in threading.enumerate()
                 if t.name.startswith("tunlab-") and t.native_id is not None
                 and os.sched_getscheduler(t.native_id) == os.SCHED_BATCH}
        assert batch == {"server", "client"}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        lab.stop_tunnel()
        lab.close_devices()
        after = _link(lab.b, "tun0")
        # The device is left as found: no vnet_hdr flag, no offloads.
        assert after["linkinfo"] == before["linkinfo"]
        assert not after["linkinfo"]["info_data"].get("vnet_hdr")


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("fast", [(True, False), (False, True)],
                         ids=["fast-server-simple-client", "simple-server-fast-client"])
def test_fast_and_simple_endpoints_interoperate(fast):
    with TwoHostLab(mtu=1500, tun_mtu=1500) as lab:
        server, client = lab.start_tunnel(fast=fast)
        assert server.features == client.features == frozenset()
        fast_end = server if fast[0] else client
        assert not fast_end.device.offloads_enabled(), "offloads on for a peer that cannot"
        ping = lab.a.exec(["ping", "-c5", "-i", "0.05", "-W", "1", "10.9.0.2"], check=False)
        assert " 0% packet loss" in ping.stdout, ping.stdout
        sent, arrived = transfer(lab.a, lab.b, "10.9.0.2", 4 * 1024 * 1024)
        assert sent == arrived
        assert client.stats.read_bytes / client.stats.read_packets <= 1500


@pytest.mark.usefixtures("root")
def test_plain_reopen_after_a_killed_fast_reader_switches_offloads_off():
    with TwoHostLab() as lab:
        fast = lab.a.run(lambda: TunDevice.open("tun0", vnet_hdr=True))
        fast.set_offload(0x07)
        # A killed fast reader: the descriptor goes away without close()'s repairs.
        os.close(fast.fd)
        fast.fd, fast._ns_fd, fast.offload = -1, -1, 0
        fast._ctl.close()
        plain = lab.open_device(lab.a, "tun0")
        assert not plain.offloads_enabled()
        assert not plain.flags & IFF_VNET_HDR


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("psk", [None, b"k" * 32], ids=["clear", "keyed"])
def test_full_speed_both_ways_at_once_neither_deadlocks_nor_corrupts(psk):
    """Both pumps sending as fast as they can: sends must never block each other. Keyed, every
    super-packet is sealed in place in its read buffer and opened straight from the receive
    buffer, with frames cut by recv() kept there: the bytes must still arrive exactly."""
    with TwoHostLab(mtu=1500, tun_mtu=1500) as lab:
        server, client = lab.start_tunnel(fast=True, psk=psk)
        assert VNET_FEATURE in client.features and (psk is None) != ("psk" in client.features)
        results: dict[str, tuple[str, str]] = {}

        def run(name, sender, receiver, address, port):
            results[name] = transfer(sender, receiver, address, 32 * 1024 * 1024, port=port)

        threads = [threading.Thread(target=run, args=("a->b", lab.a, lab.b, "10.9.0.2", 7101)),
                   threading.Thread(target=run, args=("b->a", lab.b, lab.a, "10.9.0.1", 7102))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert set(results) == {"a->b", "b->a"}
        for sent, arrived in results.values():
            assert sent == arrived
        assert lab.client.connected and lab.server.connected


@pytest.mark.usefixtures("root")
def test_fast_path_sealed_and_recording_every_packet():
    """The session's path (sealed super-packets) and per-packet events, on the fast path."""
    with TwoHostLab(mtu=1500, tun_mtu=1500) as lab:
        server, client = lab.start_tunnel(fast=True, psk=b"k" * 32, record_packets=True)
        assert VNET_FEATURE in client.features and "psk" in client.features
        ping = lab.a.exec(["ping", "-c3", "-i", "0.05", "-W", "1", "10.9.0.2"], check=False)
        assert " 0% packet loss" in ping.stdout, ping.stdout
        sent, arrived = transfer(lab.a, lab.b, "10.9.0.2", 4 * 1024 * 1024)
        assert sent == arrived
        # Typed kinds that still read, compare and serialize as their plain names.
        kinds = {e.kind for e in [*client.events(), *server.events()]}
        assert all(type(kind) is EventKind for kind in kinds)
        assert {EventKind.ESTABLISHED, EventKind.READ, "written"} <= kinds
        assert json.loads(json.dumps([e.kind for e in client.events()]))[0] in set(EventKind)
        reads = [e for e in client.events({"read"}) if e.data and e.data[9] == 1]
        written = [e for e in server.events({"written"}) if e.data and e.data[9] == 1]
        assert len(reads) >= 3 and len(written) >= 3  # the ICMP echoes, seen on both ends


@pytest.mark.usefixtures("root")
def test_crafted_offload_headers_put_nothing_on_a_plain_device():
    """Issue 14, finding 2: the simple path finishes offloads in software, and a peer's header
    must not make it write a packet with a false length (or raise something unexpected)."""
    from labtools import kernel_rx_packets
    from offload_cases import CRAFTED, tcp4

    from tunlab.errors import InvalidPacketError

    with TwoHostLab() as lab:
        device = lab.open_device(lab.a, "tun0")  # closed with the lab
        before = kernel_rx_packets(lab.a, "tun0")
        for case in CRAFTED:
            header, packet = case.values
            with pytest.raises(InvalidPacketError, match="refusing to write"):
                device.write_packet(packet, header.pack())
        assert kernel_rx_packets(lab.a, "tun0") == before
        # A header that describes its packet still works, and counts as one packet.
        good = VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=20, csum_offset=16)
        device.write_packet(tcp4(), good.pack())
        assert kernel_rx_packets(lab.a, "tun0") == before + 1
