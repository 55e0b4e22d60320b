"""The measurements lesson 08's claims rest on: the MSS a SYN announces, and the summary of
the loss experiment."""

from __future__ import annotations

import pytest

from tunlab.errors import TunlabError
from tunlab.lab import TwoHostLab, measure


def test_loss_summary_counts_lost_echoes_and_the_share_kept() -> None:
    loss = {"throughput": {"TCP in the tunnel": [[0.0, 200.0], [5.0, 150.0]],
                           "direct TCP (underlay)": [[0.0, 20000.0], [5.0, 2000.0]]},
            "rtts": {"TCP in the tunnel @ 5% loss": [0.5, 31.0, 0.6],
                     "direct TCP @ 5% loss": [0.1, None, 0.1, None]}}
    facts = measure.loss_summary(loss)
    assert facts == {"tunnel_lost": 0, "direct_lost": 2, "tunnel_max_ms": 31.0,
                     "tunnel_kept_at_5": 0.75, "direct_kept_at_5": 0.1}


def test_describe_mss_takes_live_rows_or_their_recording() -> None:
    row = measure.AnnouncedMss("tunnel", "tun0", 1400, 1360, 1348, ("MSS", "Timestamp"), "ss")
    assert measure.describe_mss([row]) == measure.describe_mss([row.to_dict()])
    assert "1360" in measure.describe_mss([row])


@pytest.fixture(scope="module")
def lab():
    with TwoHostLab(label="msslab") as lab:
        yield lab


@pytest.mark.usefixtures("root")
def test_a_syn_announces_its_devices_mtu_minus_40(lab) -> None:
    lab.start_tunnel()
    try:
        rows = measure.announced_mss(lab, tunnel_mtus=(1400, 2000))
    finally:
        lab.stop_tunnel()
    assert [(r.device, r.mtu, r.syn_mss) for r in rows] == [
        ("veth0", 1500, 1460), ("tun0", 1400, 1360), ("tun0", 2000, 1960)]
    assert all(r.syn_options[0] == "MSS" and f"mss:{r.mss}" in r.ss_line for r in rows)
    # the MTU is put back afterwards
    assert '"mtu":1400' in lab.a.ip("-j", "link", "show", "tun0").replace(" ", "")


@pytest.mark.usefixtures("root")
def test_without_a_tunnel_the_mss_lookup_says_so(lab) -> None:
    with pytest.raises(TunlabError, match="is the tunnel running"):
        measure.tcp_mss(lab.a, lab.b, "10.9.0.2", "tun0", timeout=1.0)


@pytest.mark.usefixtures("root")
def test_loss_is_on_the_wire_the_sender_learns_nothing(lab) -> None:
    """Lesson 08's loss is a lossy cable: a's send() succeeds, b never gets the datagram. (A
    drop in a's output hook would fail a's send() with EPERM, which is not loss.)"""
    import socket

    from tunlab.kernel.counters import link_counters, snmp_counters

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(5):
                sock.sendto(b"lost", ("198.18.0.2", 9))    # raises on EPERM

    lab.a.exec(["ping", "-c1", "-W2", "198.18.0.2"])    # a knows b's MAC before the cable fails
    before, wire = snmp_counters(lab.b), link_counters(lab.b)
    measure.set_loss(lab.b, 100)
    try:
        lab.a.run(send)
    finally:
        measure.set_loss(lab.b, 0)
    after = snmp_counters(lab.b)
    assert link_counters(lab.b)["veth0.rx_packets"] - wire["veth0.rx_packets"] >= 5
    assert after["IpInReceives"] == before["IpInReceives"]
    assert measure.LOSS_TABLE not in lab.b.exec(["nft", "list", "ruleset"]).stdout


@pytest.mark.usefixtures("root")
def test_a_loss_outside_0_to_100_is_refused_and_changes_nothing(lab) -> None:
    with pytest.raises(TunlabError, match="between 0 and 100"):
        measure.set_loss(lab.b, 101)
    assert measure.LOSS_TABLE not in lab.b.exec(["nft", "list", "ruleset"]).stdout
