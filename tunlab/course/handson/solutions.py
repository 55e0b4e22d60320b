"""Lesson 09's reference solutions, shown folded by :func:`solution` and used by the tests to prove
that every check passes a right answer.
"""

from __future__ import annotations

import fcntl
import html
import inspect
import os
import select
import socket
import struct
from collections.abc import Callable
from typing import Any

from tunlab import course
from tunlab.kernel.tun import IFF_NO_PI, IFF_TUN, TUNSETIFF

__all__ = ["make_reply", "open_tun", "PI_IPV4", "pump", "read_ping", "reference", "solution",
           "udp_pump"]

PI_IPV4 = b"\x00\x00\x08\x00"  # struct tun_pi {flags 0, proto ETH_P_IP}


def open_tun(name: str, no_pi: bool = True) -> int:
    """Attach to the TUN device ``name`` of the calling thread's namespace; returns the fd.

    Exactly the two system calls a VPN program makes: ``open("/dev/net/tun")`` and the
    ``TUNSETIFF`` ioctl with ``IFF_TUN`` (a layer-3 device) and, unless ``no_pi=False``,
    ``IFF_NO_PI`` (no 4-byte packet-information header before each packet).
    """
    # Written out, not tunlab.kernel.tun.attach_fd: this is the code participants read.
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    flags = IFF_TUN | (IFF_NO_PI if no_pi else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def read_ping(fd: int) -> bytes:
    """Reference for 09a: the first IPv4 packet read from ``fd`` (IPv6 ones are skipped)."""
    for _ in range(100):  # new devices also send IPv6 router solicitations
        packet = os.read(fd, 2048)  # one read() = one whole packet
        if packet and packet[0] >> 4 == 4:
            return packet
    raise TimeoutError("no IPv4 packet among the first 100")


def make_reply(request: bytes) -> bytes:
    """Reference for 09b: the ICMP echo reply to the echo request ``request`` (an IPv4 packet)."""
    from scapy.layers.inet import ICMP, IP

    ip = IP(request)
    echo = ip[ICMP]
    reply = (IP(src=ip.dst, dst=ip.src)
             / ICMP(type=0, id=echo.id, seq=echo.seq)
             / bytes(echo.payload))
    return bytes(reply)  # bytes() fills in lengths and both checksums


def pump(tun_fd: int, sock: socket.socket) -> None:
    """Reference for 09c: forward packets both ways until the peer closes ``sock``; each packet
    crosses the stream socket as a 2-byte big-endian length, then the packet."""
    buffer = b""
    while True:
        ready, _, _ = select.select([tun_fd, sock.fileno()], [], [], 1.0)
        if tun_fd in ready:
            packet = os.read(tun_fd, 2048)
            sock.sendall(struct.pack("!H", len(packet)) + packet)
        if sock.fileno() in ready:
            data = sock.recv(65536)
            if not data:
                return  # the peer closed the connection
            buffer += data
            while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack("!H", buffer[:2])[0]:
                size = struct.unpack("!H", buffer[:2])[0]
                os.write(tun_fd, buffer[2:2 + size])  # a stream may split or join frames
                buffer = buffer[2 + size:]


def udp_pump(tun_fd: int, sock: socket.socket) -> None:
    """Reference for 09d: forward packets both ways between ``tun_fd`` and a connected UDP
    socket, one datagram per packet, until the socket is shut down."""
    while True:
        ready, _, _ = select.select([tun_fd, sock.fileno()], [], [], 1.0)
        if tun_fd in ready:
            sock.send(os.read(tun_fd, 2048))  # one packet, one datagram: no length needed
        if sock.fileno() in ready:
            packet = sock.recv(2048)
            if not packet:
                return  # the socket was shut down
            os.write(tun_fd, packet)


_REFERENCES: dict[str, Callable[..., Any]] = {"09a": read_ping, "09b": make_reply, "09c": pump,
                                               "09d": udp_pump}


def reference(exercise: str) -> Callable[..., Any]:
    """The reference solution of ``exercise`` ("09a", "09b", "09c" or "09d")."""
    return _REFERENCES[exercise]


def solution(exercise: str) -> course.Note:
    """The reference solution's source, folded (click to open): the last resort after the
    hints."""
    source = inspect.getsource(_REFERENCES[exercise])
    return course.Note(
        f'<details class="tunlab-hint"><summary>Reference solution for {exercise} (try the '
        f"hints first)</summary><pre>{html.escape(source)}</pre></details>",
        f"Reference solution for {exercise}:\n{source}")
