"""start() returns when the endpoint is ready (trio's ``nursery.start``): a server when it
listens, a client when its first handshake completed; a client that cannot connect in time
stops, retries nothing behind the caller's back, and says which server it could not reach."""

from __future__ import annotations

import socket

import pytest
from labtools import KEY, start_server, wait_for_ping

from tunlab.errors import TunlabError
from tunlab.lab import UNDERLAY, TwoHostLab
from tunlab.tunnel import TunnelClient

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def lab():
    with TwoHostLab(label="start") as two_hosts:
        yield two_hosts


def _client(lab: TwoHostLab, port: int, **kwargs: object) -> TunnelClient:
    return TunnelClient(lab.open_device(lab.a, "tun0"), (UNDERLAY[1], port), namespace=lab.a,
                        backoff_max=0.1, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("psk", [None, KEY], ids=["clear", "psk"])
def test_a_started_client_is_connected_without_anyone_polling(lab, psk):
    server = start_server(lab, 5821, psk=psk)
    client = _client(lab, 5821, psk=psk).start(timeout=5)
    try:
        assert client.connected  # at once: start() returned after the handshake
        assert client.stats.connections == 1
        assert server.wait_connected(5)
        assert wait_for_ping(lab.a, "10.9.0.2")
    finally:
        client.stop()
        server.stop()


def test_a_started_server_already_listens(lab):
    server = start_server(lab, 5822)
    try:
        sock = lab.a.run(socket.create_connection, (UNDERLAY[1], 5822), 2)
        sock.close()
    finally:
        server.stop()


def test_a_client_without_a_server_stops_and_names_the_address(lab):
    client = _client(lab, 5823)
    with pytest.raises(TunlabError, match=r"no tunnel to the server 198\.18\.0\.2:5823 within "
                       r"0\.5 s \(last: .*refused") as info:
        client.start(timeout=0.5)
    assert "start the server first" in info.value.fix
    assert not client.running and not client.connected
    # Its reconnect loop ended with the failed start: a server that comes up now is not
    # connected to by anyone.
    attempts = client.attempts
    server = start_server(lab, 5823)
    try:
        assert not server.wait_connected(1.0)
        assert client.attempts == attempts and server.stats.connections == 0
    finally:
        server.stop()


def test_a_client_with_the_wrong_key_says_why_it_was_refused(lab):
    server = start_server(lab, 5824, psk=KEY)
    try:
        client = _client(lab, 5824, psk=b"not the key the server holds, long enough")
        with pytest.raises(TunlabError, match="5824.*auth_failed"):
            client.start(timeout=1)
        assert not client.running
    finally:
        server.stop()


def test_wait_false_returns_at_once_and_connects_in_the_background(lab):
    client = _client(lab, 5825).start(wait=False)
    try:
        assert client.running and not client.connected
        server = start_server(lab, 5825)
        try:
            assert client.wait_connected(10) and server.wait_connected(5)
        finally:
            server.stop()
    finally:
        client.stop()
