"""A hostile peer against whole endpoints (issue 14, finding 1): a fake server, an on-path
relay that injects frames into an established keyed session, and the command-line server.

The frame used is a 2 KB HELLO of 1,000 nested JSON lists. On the code before the fix it raised
RecursionError in the connection thread: a keyed client stopped retrying for good, a keyed
server's pump died without dropping its peer (the tunnel wedged), and the CLI server exited 2.
Now each is a clean refusal: the client retries, the server drops that peer and goes on.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from labtools import KEY, ping, start_client, start_server, wait_for, wait_for_ping
from protohelp import hostile_steps

from tunlab.kernel.netns import Namespace
from tunlab.lab import UNDERLAY, TwoHostLab
from tunlab.packet.validate import ip_packet_problem
from tunlab.proto import framing
from tunlab.proto.framing import HEADER, HEADER_SIZE, FrameType
from tunlab.proto.session import Session
from tunlab.tunnel import TunnelClient, TunnelServer

pytestmark = pytest.mark.usefixtures("root")

NESTED_HELLO = framing.encode_frame(FrameType.HELLO, b"[" * 1000 + b"]" * 1000)


@pytest.fixture
def lab():
    with TwoHostLab() as two_hosts:
        yield two_hosts


def _listen(ns: Namespace, address: tuple[str, int]) -> socket.socket:
    return ns.run(socket.create_server, address)


class FakeServer:
    """Answers every connection with ``reply`` and hangs up; counts the connections."""

    def __init__(self, ns: Namespace, port: int, reply: bytes) -> None:
        self.listener = _listen(ns, (UNDERLAY[1], port))
        self.reply = reply
        self.served = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.1)
            if not ready:
                continue
            sock, _ = self.listener.accept()
            with sock:
                sock.settimeout(2)
                with contextlib.suppress(OSError):
                    sock.recv(65536)  # the client's HELLO
                    sock.sendall(self.reply)
            self.served += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


class Relay:
    """An on-path relay: forwards whole frames both ways and can inject one between two.

    Listens on 127.0.0.1:``port`` in ``ns``; each connection gets its own upstream connection to
    the server (so a reconnecting client gets a fresh path). Bounded: every wait has a timeout.
    """

    def __init__(self, ns: Namespace, port: int, upstream: tuple[str, int]) -> None:
        self.ns = ns
        self.upstream = upstream
        self.listener = _listen(ns, ("127.0.0.1", port))
        self.connections = 0
        self._pending: dict[str, list[bytes]] = {"to_server": [], "to_client": []}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def inject(self, direction: str, data: bytes) -> None:
        """Put ``data`` into the current connection's ``direction`` at the next frame boundary."""
        with self._lock:
            self._pending[direction].append(data)

    def _accept(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.1)
            if not ready:
                continue
            client, _ = self.listener.accept()
            try:
                server = self.ns.run(socket.create_connection, self.upstream, 5)
            except OSError:
                client.close()
                continue
            self.connections += 1
            with self._lock:
                for queue in self._pending.values():
                    queue.clear()
            done = threading.Event()
            for source, sink, direction in ((client, server, "to_server"),
                                            (server, client, "to_client")):
                thread = threading.Thread(target=self._forward,
                                          args=(source, sink, direction, done), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _forward(self, source: socket.socket, sink: socket.socket, direction: str,
                 done: threading.Event) -> None:
        buffer = bytearray()
        try:
            while not self._stop.is_set() and not done.is_set():
                ready, _, _ = select.select([source], [], [], 0.05)
                with self._lock:
                    injected, self._pending[direction] = self._pending[direction], []
                for data in injected:  # between two whole frames: buffer holds only a partial one
                    sink.sendall(data)
                if not ready:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                buffer += data
                while len(buffer) >= HEADER_SIZE:
                    end = HEADER_SIZE + HEADER.unpack_from(buffer)[3]
                    if len(buffer) < end:
                        break
                    sink.sendall(buffer[:end])
                    del buffer[:end]
        except OSError:
            pass
        finally:
            done.set()
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.listener.close()


@contextlib.contextmanager
def _stopping(*endpoints: TunnelServer | TunnelClient) -> Iterator[None]:
    try:
        yield
    finally:
        for endpoint in endpoints:
            endpoint.stop()


def test_a_keyed_client_meeting_a_hostile_hello_keeps_retrying(lab):
    """(a) A fake server answers with the nested HELLO; the real one comes back later."""
    fake = FakeServer(lab.b, 5901, NESTED_HELLO)
    client = start_client(lab, 5901, psk=KEY, backoff_initial=0.05, backoff_max=0.2)
    with _stopping(client):
        try:
            assert wait_for(lambda: fake.served >= 3 and client.stats.rejected["no_hello"] >= 3,
                            timeout=10), (fake.served, dict(client.stats.rejected))
            assert client.running and client.failure is None
        finally:
            fake.close()
        server = start_server(lab, 5901, psk=KEY)
        with _stopping(server):
            assert wait_for(lambda: client.connected and server.connected, timeout=10)
            assert wait_for_ping(lab.a, "10.9.0.2")
            assert " 0% packet loss" in ping(lab.a, "10.9.0.2", count=5)


def test_a_keyed_server_refuses_a_hostile_hello_and_serves_the_next_client(lab, caplog):
    """(b), in process: the connection is refused, nothing fails, the next client is served."""
    server = start_server(lab, 5902, psk=KEY)
    with _stopping(server):
        for _ in range(3):
            sock = lab.a.run(socket.create_connection, (UNDERLAY[1], 5902), 5)
            sock.sendall(NESTED_HELLO)
            sock.close()
        assert wait_for(lambda: server.stats.rejected["no_hello"] == 3), server.stats.rejected
        assert server.running and server.failure is None and server.error is None
        client = start_client(lab, 5902, psk=KEY, wait=True)
        with _stopping(client):
            assert server.wait_connected(5)
            assert wait_for_ping(lab.a, "10.9.0.2")
    assert not [r for r in caplog.records if "failed" in r.getMessage()
                and "thread" in r.getMessage()]


def test_the_cli_server_survives_a_hostile_hello_and_exits_0(lab, tmp_path, tunlab_cmd):
    """(b), the command line: no "thread failed", a clean SIGTERM still exits 0."""
    key = tmp_path / "tunnel.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    proc = lab.b.popen([*tunlab_cmd, "server", "--dev", "tun0", "--listen",
                        f"{UNDERLAY[1]}:5903", "--psk-file", str(key)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = None
    try:
        def hostile_hello() -> bool:
            try:
                sock = lab.a.run(socket.create_connection, (UNDERLAY[1], 5903), 1)
            except OSError:
                return False  # not listening yet
            with sock:
                sock.sendall(NESTED_HELLO)
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    while sock.recv(65536):  # until the server hangs up
                        pass
            return True

        assert wait_for(hostile_hello, timeout=10)
        assert hostile_hello()
        client = start_client(lab, 5903, psk=KEY)
        assert wait_for(lambda: client.connected, timeout=10)
        assert wait_for_ping(lab.a, "10.9.0.2")
    finally:
        if client is not None:
            client.stop()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "thread failed" not in err and "Traceback" not in err, err
    assert err.count("no_hello") == 2, err


@pytest.mark.parametrize("fast", [False, True], ids=["simple", "fast"])
@pytest.mark.parametrize("direction", ["to_server", "to_client"])
def test_a_frame_injected_into_a_keyed_session_does_not_wedge_it(lab, fast, direction):
    """(c) An on-path relay injects the nested HELLO, in the clear, into an established keyed
    session: the receiving side ends that connection, and the tunnel comes back by itself."""
    server = TunnelServer(lab.open_device(lab.b, "tun0", vnet_hdr=fast), (UNDERLAY[1], 5904),
                          namespace=lab.b, psk=KEY).start()
    relay = Relay(lab.a, 5905, (UNDERLAY[1], 5904))
    client = TunnelClient(lab.open_device(lab.a, "tun0", vnet_hdr=fast), ("127.0.0.1", 5905),
                          namespace=lab.a, psk=KEY, backoff_initial=0.05,
                          backoff_max=0.2).start()
    try:
        with _stopping(client, server):
            assert wait_for(lambda: client.connected and server.connected)
            assert wait_for_ping(lab.a, "10.9.0.2")
            victim = server if direction == "to_server" else client
            relay.inject(direction, NESTED_HELLO)
            assert wait_for(lambda: victim.stats.rejected["unsealed"] == 1), \
                victim.stats.rejected
            assert wait_for(lambda: relay.connections >= 2 and client.connected
                            and server.connected, timeout=10), relay.connections
            assert wait_for_ping(lab.a, "10.9.0.2")
            assert " 0% packet loss" in ping(lab.a, "10.9.0.2", count=5)
            assert server.failure is None and client.failure is None
            assert server.running and client.running
    finally:
        relay.close()


# -- whole connections: a property over what a peer may send after a genuine handshake --------
@pytest.fixture(scope="module", params=[None, KEY], ids=["clear", "keyed"])
def served(request):
    with TwoHostLab() as two_hosts:
        server = start_server(two_hosts, 5906, psk=request.param, record_packets=True,
                              handshake_timeout=2.0)
        try:
            yield two_hosts, server, request.param
        finally:
            server.stop()  # raises the first unexpected exception of any connection


_PROPERTY = settings(max_examples=25, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow,
                                            HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(steps=hostile_steps)
def test_no_frame_sequence_ends_the_server_or_writes_a_malformed_packet(served, steps):
    """Each example: a genuine client handshake (with the key in keyed mode), then frames of
    every type with hostile payloads, sealed or in the clear. The server never fails, keeps
    running, and every packet it wrote into its device was a well-formed IP packet."""
    lab, server, psk = served
    sock = lab.a.run(socket.create_connection, (UNDERLAY[1], 5906), 5)
    with sock:
        session = Session("client", psk=psk)
        session.initiate()
        sock.sendall(session.data_to_send())
        sock.settimeout(5)
        while not session.established:
            data = sock.recv(65536)
            assert data, "the server hung up during a genuine handshake"
            session.receive(data)
            sock.sendall(session.data_to_send())
        for sealed, frame_type, payload in steps:
            if sealed and session._sealer is not None:
                frame = session._sealer.seal(frame_type, payload)
            else:
                frame = framing.encode_frame(frame_type, payload)
            with contextlib.suppress(OSError):  # the server may have hung up already
                sock.sendall(frame)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # until the server is done with this connection
                pass
    assert wait_for(lambda: not server.connected, timeout=5)
    assert server.running and server.failure is None and server.error is None
    for event in server.events({"written"}):
        assert event.data is not None and ip_packet_problem(event.data) is None


def test_after_the_property_a_genuine_client_still_gets_through(served):
    lab, server, psk = served
    client = start_client(lab, 5906, psk=psk, wait=True)
    with _stopping(client):
        assert server.wait_connected(5)
        assert wait_for_ping(lab.a, "10.9.0.2")
        assert " 0% packet loss" in ping(lab.a, "10.9.0.2", count=5)
