"""The tunnel client: connect to a server, reconnect with backoff when the connection drops."""

from __future__ import annotations

import logging
import socket

from tunlab.errors import TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.kernel.tun import TunDevice
from tunlab.tunnel.address import parse_hostport
from tunlab.tunnel.endpoint import Endpoint
from tunlab.tunnel.events import EventKind
from tunlab.tunnel.peer import tune_underlay

__all__ = ["TunnelClient"]

log = logging.getLogger("tunlab.tunnel")


class TunnelClient(Endpoint):
    """Connect to a tunnel server and forward between it and a TUN device.

    While the server is unreachable the client retries with exponential backoff (from
    ``backoff_initial`` up to ``backoff_max`` seconds); when the connection drops, it reconnects.
    :meth:`start` returns once the first connection is up (or, with ``wait=False``, at once).
    """

    role = "client"

    def __init__(self, device: TunDevice, server: tuple[str, int] | str, *,
                 namespace: Namespace | None = None, backoff_initial: float = 0.05,
                 backoff_max: float = 2.0, connect_timeout: float = 2.0,
                 record_packets: bool = False, psk: bytes | None = None,
                 busy_poll_us: int = 0) -> None:
        super().__init__(device, namespace=namespace, record_packets=record_packets, psk=psk,
                         busy_poll_us=busy_poll_us)
        self.server_address = parse_hostport(server) if isinstance(server, str) else server
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.attempts = 0

    def _prepare(self) -> None:
        self._spawn(self._connect_loop, "connection")

    def _wait_ready(self, timeout: float) -> None:
        if self.wait_connected(timeout):
            return
        host, port = self.server_address
        trouble = self.error or self._last_trouble()
        self._shutdown()
        raise TunlabError(
            f"no tunnel to the server {host}:{port} within {timeout:g} s"
            + (f" (last: {trouble})" if trouble else ""),
            "start the server first (tunlab server --listen ...), check the address and port, "
            "and give both ends the same --psk-file (or none)") from self.failure

    def _last_trouble(self) -> str:
        """What went wrong in the last connection attempt, from the recorded events."""
        for event in reversed(self.events({"retry", "rejected", "disconnected", "error"})):
            return event.detail
        return ""

    def _connect_loop(self) -> None:
        backoff = self.backoff_initial
        while not self._stop.is_set():
            self.attempts += 1
            if self._connect_once(backoff):
                backoff = self.backoff_initial
                continue
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    def _connect_once(self, backoff: float) -> bool:
        """One connection, served until it ends; False when none was established.

        Whatever goes wrong in it (a refusal, or an unexpected exception, which is kept and
        logged) costs this connection only: the caller tries again.
        """
        host, port = self.server_address
        try:
            sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        except OSError as exc:
            self._event(EventKind.RETRY, f"{host}:{port}: {exc.strerror or exc}; again in "
                        f"{backoff:.2f} s")
            return False
        peer = None
        try:
            peer = self._handshake(sock, (host, port), timeout=5.0)
            if peer is None:
                return False
            tune_underlay(sock)
            self.stats.connections += 1
            self._set_peer(peer)
            self._event(EventKind.CONNECTED, f"server {host}:{port}")
            log.info("client: connected to %s:%d", host, port)
            self._receive_loop(peer)
            return True
        except Exception as exc:  # noqa: BLE001 - one connection's failure ends only that one
            self._connection_failed((host, port), peer, sock, exc)
            return False
