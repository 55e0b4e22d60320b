"""The seed's vpn-server and vpn-client running in a lesson's lab, restarted in a new lab."""

from __future__ import annotations

import threading
from typing import Any

from tunlab.course.cleanup import register_cleanup, unregister_cleanup
from tunlab.errors import TunlabError

__all__ = ["seed_tunnel", "SeedTunnel"]


class SeedTunnel:
    """The seed's vpn-server on mytun2 and vpn-client on mytun, inside the lesson's lab.

    The server listens on 127.0.0.1 (a free port) in the lab namespace; both record packets,
    so the hops can be shown. With ``capture=True`` the start is captured with tcpdump on
    ``lo`` (HELLOs included) and ``pings`` echo requests are sent: :attr:`session` then holds
    the frames found (dicts, see :meth:`tunlab.proto.scapy_layer.CapturedFrame.to_dict`).
    Without a live lab, ``server`` and ``client`` stay None. Stopped by :meth:`close` (also
    when the kernel stops).
    """

    def __init__(self, lesson: Any, capture: bool = False, pings: int = 2) -> None:
        self.lesson = lesson
        self.server: Any = None
        self.client: Any = None
        self.session: list[dict[str, Any]] = []
        self.session_error = ""
        self.generation = 0
        self._lock = threading.RLock()
        if not lesson.live or lesson.lab is None:
            return
        if hasattr(lesson, "attach"):
            lesson.attach(self)  # stopped before the lab goes, restarted by ensure()
        self._start(capture, pings)

    def _start(self, capture: bool = False, pings: int = 2) -> None:
        from tunlab.tunnel import TunnelServer

        lab = self.lesson.lab
        self.server = TunnelServer(lab.device("mytun2"), ("127.0.0.1", 0), namespace=lab.ns,
                                   record_packets=True).start()
        self.generation = getattr(self.lesson, "generation", 0)
        register_cleanup(self)
        if capture:
            from tunlab.lab.capture import capture as tcpdump

            port = self.server.address[1]
            with tcpdump(lab.ns, "lo", f"tcp port {port}") as cap:
                self._start_client()
                for _ in range(pings):
                    lab.ns.exec(["ping", "-c1", "-W1", "10.0.0.2"], check=False, timeout=5)
            self.session = [f.to_dict() for f in cap.frames(port)]
            self.pcap = str(cap.path)
        else:
            self._start_client()

    def _start_client(self) -> None:
        from tunlab.tunnel import TunnelClient

        lab = self.lesson.lab
        self.client = TunnelClient(lab.device("mytun"), self.server.address, namespace=lab.ns,
                                   record_packets=True).start(timeout=5)
        if not self.server.wait_connected(5):
            raise TunlabError("the vpn-server did not take the vpn-client's connection in 5 s",
                              "run the cell again; the server's events say why it refused")

    @property
    def running(self) -> bool:
        """Both ends run, connected, in the lesson's current lab."""
        return (self.server is not None and self.client is not None
                and self.server.running and self.client.running
                and self.client.connected
                and self.generation == getattr(self.lesson, "generation", 0)
                and getattr(self.lesson, "lab_ready", True))

    def ensure(self) -> SeedTunnel:
        """Running again in a live lab: after :meth:`close`, ``lesson.finish()`` or a reset,
        the lab is rebuilt when needed and a new server and client start in it."""
        if not self.lesson.live or getattr(self.lesson, "kind", "seed") is None:
            return self
        with self._lock:
            if self.running:
                return self
            self.close()
            if hasattr(self.lesson, "ensure_lab"):
                self.lesson.ensure_lab()
                if self not in getattr(self.lesson, "_attached", [self]):
                    self.lesson.attach(self)
            self._start()
        return self

    @property
    def port(self) -> int | None:
        return self.server.address[1] if self.server is not None else None

    def close(self) -> None:
        """Stop client and server and let go of the devices (they stay; the lab removes
        them), so that a new tunnel can attach to them."""
        for endpoint in (self.client, self.server):
            if endpoint is not None:
                endpoint.stop()
                endpoint.device.close()
        unregister_cleanup(self)


def seed_tunnel(lesson: Any, server: Any = None) -> SeedTunnel | None:
    """The lesson's :class:`SeedTunnel` (the one whose server is ``server`` when given), or a
    new one; None without a live lab. Panels call ``.ensure()`` on it before each use."""
    if not getattr(lesson, "live", False) or getattr(lesson, "kind", "seed") != "seed":
        return None
    tunnels = lesson.attached(SeedTunnel) if hasattr(lesson, "attached") else []
    for tunnel in tunnels:
        if server is None or tunnel.server is server:
            return tunnel
    if tunnels:
        return tunnels[-1]
    if lesson.lab is None or not getattr(lesson, "lab_ready", True):
        lesson.ensure_lab()
    return SeedTunnel(lesson)


