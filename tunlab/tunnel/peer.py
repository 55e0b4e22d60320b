"""A connected peer as the endpoint sees it."""

from __future__ import annotations

import socket
import threading
from typing import Any

from tunlab.proto.framing import VNET_FEATURE
from tunlab.proto.session import Session
from tunlab.tunnel.tuning import NOTSENT_LOWAT, SEND_TIMEOUT

__all__ = ["Peer", "tune_underlay"]


def tune_underlay(sock: socket.socket) -> None:
    """Socket options of a connected underlay socket: no Nagle delay, a bounded unsent queue
    (TCP_NOTSENT_LOWAT, where the kernel has it), and the send timeout of the simple path."""
    sock.settimeout(SEND_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lowat = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, lowat, NOTSENT_LOWAT)
    except OSError:  # a kernel without it: the socket buffer alone bounds the queue
        pass


class Peer:
    """One connected peer: its socket, its session and how to send to it."""


    def __init__(self, sock: socket.socket, session: Session, address: Any) -> None:
        self.sock = sock
        self.session = session
        self.address = address
        self.send_lock = threading.Lock()
        self.closed = False
        self.early: list[Any] = []  # events that arrived in the same read as the handshake's end
        self.vnet = VNET_FEATURE in session.features  # both ends take super-packets

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.sock.sendall(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

