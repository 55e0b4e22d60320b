"""Latency knobs of the fast path: busy polling after the last packet (``busy_poll_us``,
``--busy-poll``) and the bounded unsent queue of the underlay socket (TCP_NOTSENT_LOWAT).

No timed assertions: the spin counter proves that busy polling polls, and that the default
does not; `make bench` measures what it buys."""

from __future__ import annotations

import socket

import pytest
from labtools import ping, wait_for_ping

from tunlab.errors import TunlabError
from tunlab.lab import UNDERLAY, TwoHostLab
from tunlab.tunnel import TunnelClient, TunnelServer
from tunlab.tunnel.tuning import NOTSENT_LOWAT

pytestmark = pytest.mark.usefixtures("root")

TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


@pytest.fixture
def lab():
    with TwoHostLab(label="busy") as two_hosts:
        yield two_hosts


def _pair(lab: TwoHostLab, port: int, busy_poll_us: int) -> tuple[TunnelServer, TunnelClient]:
    server = TunnelServer(lab.open_device(lab.b, "tun0", vnet_hdr=True), (UNDERLAY[1], port),
                          namespace=lab.b, busy_poll_us=busy_poll_us).start()
    client = TunnelClient(lab.open_device(lab.a, "tun0", vnet_hdr=True), (UNDERLAY[1], port),
                          namespace=lab.a, busy_poll_us=busy_poll_us).start(timeout=5)
    assert server.wait_connected(5)
    return server, client


@pytest.mark.parametrize("busy_poll_us", [0, 200_000], ids=["default", "busy-poll"])
def test_busy_polling_polls_and_the_default_does_not(lab, busy_poll_us):
    server, client = _pair(lab, 5831, busy_poll_us)
    try:
        assert wait_for_ping(lab.a, "10.9.0.2")
        assert " 0% packet loss" in ping(lab.a, "10.9.0.2", count=5)
        spins = (server.stats.busy_poll_spins, client.stats.busy_poll_spins)
        if busy_poll_us:
            assert min(spins) > 0, spins  # both ends polled after their packets
        else:
            assert spins == (0, 0)
    finally:
        client.stop()
        server.stop()


def test_the_underlay_keeps_little_unsent_data(lab):
    server, client = _pair(lab, 5832, 0)
    try:
        for endpoint in (server, client):
            peer = endpoint._peer
            assert peer is not None
            assert peer.sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT) == NOTSENT_LOWAT
    finally:
        client.stop()
        server.stop()


@pytest.mark.parametrize(("value", "vnet_hdr", "message"), [
    (-1, True, "outside 0-"), (2_000_000, True, "outside 0-"),
    (100, False, "needs the fast path")])
def test_a_bad_busy_poll_is_refused_with_the_fix(lab, value, vnet_hdr, message):
    device = lab.open_device(lab.a, "tun0", vnet_hdr=vnet_hdr)
    with pytest.raises(TunlabError, match=message) as info:
        TunnelClient(device, (UNDERLAY[1], 5833), namespace=lab.a, busy_poll_us=value)
    assert info.value.fix
