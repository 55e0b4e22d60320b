"""The tunnel server: accept clients on TCP, one active at a time."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Any

from tunlab.errors import TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.kernel.tun import TunDevice
from tunlab.proto.framing import RejectReason
from tunlab.tunnel.address import parse_hostport
from tunlab.tunnel.endpoint import Endpoint
from tunlab.tunnel.events import EventKind
from tunlab.tunnel.peer import tune_underlay

__all__ = ["TunnelServer"]

log = logging.getLogger("tunlab.tunnel")


class TunnelServer(Endpoint):
    """Accept tunnel clients on TCP and forward between them and a TUN device.

    One client is active at a time; a new client that completes the handshake replaces the old
    one (a restarted client need not wait for the server to notice the old connection died).
    Connections that do not finish the handshake within ``handshake_timeout`` are closed; at
    most ``max_pending`` handshakes run at once.
    """

    role = "server"

    def __init__(self, device: TunDevice, listen: tuple[str, int] | str = ("127.0.0.1", 0), *,
                 namespace: Namespace | None = None, handshake_timeout: float = 5.0,
                 max_pending: int = 64, record_packets: bool = False,
                 psk: bytes | None = None, busy_poll_us: int = 0) -> None:
        super().__init__(device, namespace=namespace, record_packets=record_packets, psk=psk,
                         busy_poll_us=busy_poll_us)
        self.listen_address = parse_hostport(listen) if isinstance(listen, str) else listen
        self.handshake_timeout = handshake_timeout
        self._pending = threading.BoundedSemaphore(max_pending)
        self._listener: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address actually listened on (the port is filled in when 0 was asked)."""
        if self._listener is None:
            raise RuntimeError("server not started")
        return self._listener.getsockname()[:2]

    def _prepare(self) -> None:
        def bind() -> socket.socket:
            family = socket.AF_INET6 if ":" in self.listen_address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(self.listen_address)
            except OSError as exc:
                sock.close()
                host, port = self.listen_address
                if exc.errno == errno.EADDRINUSE:
                    raise TunlabError(f"port {port} on {host} is already in use",
                                      "stop the other server or pick another --listen port"
                                      ) from exc
                raise TunlabError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                  "use an address of this host, e.g. 127.0.0.1") from exc
            sock.listen(16)
            return sock

        self._listener = self.namespace.run(bind) if self.namespace else bind()
        self._event(EventKind.LISTENING, "{}:{}".format(*self.address))
        log.info("server: listening on %s:%d, device %s", *self.address, self.device.name)
        self._spawn(self._accept_loop, "accept")

    def _close_sockets(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        super()._close_sockets()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            if not self._wait_readable(self._listener):
                continue
            try:
                sock, address = self._listener.accept()
            except OSError:
                continue
            if not self._pending.acquire(blocking=False):
                self.stats.rejected[RejectReason.TOO_MANY_PENDING] += 1
                self._event(EventKind.REJECTED, f"{address}: too many handshakes at once")
                log.warning("server: rejected %s: too_many_pending (too many handshakes at "
                            "once)", address)
                sock.close()
                continue
            self._event(EventKind.ACCEPTED, f"{address}")
            self._spawn(self._serve, "connection", sock, address, essential=False)

    def _serve(self, sock: socket.socket, address: Any) -> None:
        peer = None
        try:
            try:
                peer = self._handshake(sock, address, self.handshake_timeout)
            finally:
                self._pending.release()
            if peer is None or self._stop.is_set():
                if peer:
                    peer.close()
                return
            tune_underlay(sock)
            self.stats.connections += 1
            self._set_peer(peer)
            self._event(EventKind.CONNECTED, f"client {address}")
            log.info("server: client %s connected", address)
            self._receive_loop(peer)
        except Exception as exc:  # noqa: BLE001 - one connection's failure ends only that one
            self._connection_failed(address, peer, sock, exc)
