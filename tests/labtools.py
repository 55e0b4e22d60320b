"""Small helpers shared by the reliability and security tests (hostile input, faults, psk)."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable

from tunlab.kernel.netns import Namespace
from tunlab.lab import UNDERLAY, TwoHostLab
from tunlab.tunnel import TunnelClient, TunnelServer

KEY = b"tunlab test key: 0123456789abcdef"


def default_signals() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT, SIGTERM or SIGHUP: the child
    starts with all three at their defaults, whatever the test run inherited. Under `nohup`
    (as a CI job may be started) SIGHUP is ignored, and a lab rightly leaves an ignored signal
    alone, so the hang-up test would test nohup instead of the lab."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return the last verdict."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def link_stats(ns: Namespace, dev: str) -> dict[str, dict[str, int]]:
    """The kernel's own counters of ``dev`` (``ip -s -j link show``): rx/tx packets, bytes."""
    (link,) = json.loads(ns.ip("-s", "-j", "link", "show", "dev", dev))
    return link["stats64"]


def kernel_rx_packets(ns: Namespace, dev: str) -> int:
    """Packets the kernel received *from* a TUN device, i.e. packets user space wrote into it."""
    return int(link_stats(ns, dev)["rx"]["packets"])


def rss_kib() -> int:
    """Resident set size of this process in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def ping(ns: Namespace, address: str, count: int = 10) -> str:
    """``ping -c COUNT`` from ``ns``; returns its output (the caller checks the loss line)."""
    return ns.exec(["ping", "-c", str(count), "-i", "0.02", "-W", "1", address],
                   check=False, timeout=count + 10).stdout


def wait_for_ping(ns: Namespace, address: str, timeout: float = 8.0) -> bool:
    """True once one ping from ``ns`` to ``address`` gets an answer."""
    return wait_for(lambda: ns.exec(["ping", "-c1", "-W1", address], check=False
                                    ).returncode == 0, timeout, step=0.05)


def start_server(lab: TwoHostLab, port: int, psk: bytes | None = None,
                 **kwargs: object) -> TunnelServer:
    """A tunnel server in ``lab.b`` on the underlay address, attached to b's tun0."""
    device = lab.open_device(lab.b, "tun0")
    return TunnelServer(device, (UNDERLAY[1], port), namespace=lab.b, psk=psk,
                        **kwargs).start()  # type: ignore[arg-type]


def start_client(lab: TwoHostLab, port: int, psk: bytes | None = None, wait: bool = False,
                 **kwargs: object) -> TunnelClient:
    """A tunnel client in ``lab.a`` attached to a's tun0, connecting to the server in b.

    It connects in the background unless ``wait``: many tests start one that must be refused
    (a wrong key, a hostile server) and watch it retry."""
    device = lab.open_device(lab.a, "tun0")
    return TunnelClient(device, (UNDERLAY[1], port), namespace=lab.a, psk=psk,
                        **kwargs).start(wait=wait)  # type: ignore[arg-type]


def connect_from(ns: Namespace, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection from inside ``ns`` to the server's underlay address."""
    return ns.run(socket.create_connection, (UNDERLAY[1], port), timeout)
