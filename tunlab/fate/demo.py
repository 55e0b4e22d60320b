"""The seed's example goal, end to end, inside a fresh private namespace.

my-packet -> routing via 10.0.0.1/24 (mytun) -> vpn-client encapsulates -> TCP -> vpn-server
decapsulates -> the raw packet is released on mytun2 -> what the kernel does with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunlab.errors import TunlabError
from tunlab.lab import SeedLab
from tunlab.tunnel import TunnelClient, TunnelEvent, TunnelServer

__all__ = ["DemoResult", "PING_COMMAND", "PING_TARGET", "run_demo"]

PING_TARGET = "10.0.0.2"
PING_COMMAND = ["ping", PING_TARGET, "-c1", "-W1"]


def _is_our_echo(packet: bytes) -> bool:
    """The ping's ICMPv4 echo request (new TUN devices also emit IPv6 router solicitations)."""
    return (len(packet) >= 21 and packet[0] >> 4 == 4 and packet[9] == 1
            and packet[(packet[0] & 0x0F) * 4] == 8)


def _describe(packet: bytes) -> dict[str, Any]:
    from tunlab.packet.craft import summarize

    info = summarize(packet)
    info["hex"] = packet.hex()
    return info


@dataclass
class DemoResult:
    """Everything the demo saw, hop by hop."""

    sent: dict[str, Any]
    client: dict[str, int]
    server: dict[str, int]
    released: dict[str, Any]
    fate: Any
    frame_hex: str
    hops: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The object ``tunlab demo --json`` prints (see DESIGN.md)."""
        return {"sent": self.sent, "client": self.client, "server": self.server,
                "released": self.released, "fate": self.fate, "frame_hex": self.frame_hex,
                "hops": self.hops, "commands": self.commands}


def _first(events: list[TunnelEvent], kind: str) -> TunnelEvent | None:
    for event in events:
        if event.kind == kind and event.data is not None and _is_our_echo(
                event.data if kind != "sent" else event.data[8:]):
            return event
    return None


def run_demo(progress: Callable[[str], None] | None = None, trace: bool = True) -> DemoResult:
    """Run the seed's example goal once and return what happened at each hop.

    ``progress`` is called with one line per step, for a CLI or notebook to show as it goes.
    ``trace`` also records what the kernel did with the released packet (drop reasons,
    replies, counters) through :mod:`tunlab.fate`.
    """
    say = progress or (lambda line: None)
    with SeedLab("demo") as lab:
        say(f"namespace {lab.ns.name}: mytun 10.0.0.1/24 and mytun2 10.0.2.1/24 created "
            "by scripts/create_named_tuntap_devices.sh")
        server = TunnelServer(lab.device("mytun2"), ("127.0.0.1", 0), namespace=lab.ns,
                              record_packets=True)
        with server.start():
            client = TunnelClient(lab.device("mytun"), server.address, namespace=lab.ns,
                                  record_packets=True)
            say("vpn-server attached to mytun2, listening on {}:{}".format(*server.address))
            with client.start(timeout=5):  # returns connected, or raises TunlabError
                if not server.wait_connected(5):
                    raise TunlabError("the vpn-server did not take the vpn-client's connection",
                                      "see the server's events for why it refused it")
                say("vpn-client attached to mytun, connected to the server over TCP")

                def inject() -> None:
                    say(f"$ {' '.join(PING_COMMAND)}")
                    lab.ns.exec(PING_COMMAND, check=False, timeout=5)
                    server.wait_until(lambda: _first(server.events(), "written") is not None,
                                      timeout=3)

                fate = _observe(lab, server, inject) if trace else "not traced"
            client_events, server_events = client.events(), server.events()
            client_stats, server_stats = client.stats.snapshot(), server.stats.snapshot()
        read, sent_frame = _first(client_events, "read"), _first(client_events, "sent")
        written = _first(server_events, "written")
        if read is None or written is None or sent_frame is None:
            raise RuntimeError("the ping's echo request did not make it through the tunnel")
        assert read.data is not None and written.data is not None and sent_frame.data is not None
        sent, released = _describe(read.data), _describe(written.data)
        hops = [
            f"the kernel routed the ping ({sent['src']} -> {sent['dst']}, {sent['proto']}) "
            f"into mytun: the vpn-client read {len(read.data)} bytes",
            f"the vpn-client framed it: {len(sent_frame.data)} bytes "
            f"(8-byte tunlab header {sent_frame.data[:8].hex()} + the packet) sent over TCP",
            f"the vpn-server decoded the frame and wrote {len(written.data)} bytes into mytun2"
            + (" - the very packet that was sent" if written.data == read.data else
               " - DIFFERENT from what was sent"),
        ]
        if isinstance(fate, dict):
            hops.append(f"the kernel's verdict on the released packet: {fate.get('verdict')} "
                        f"{fate.get('drop_reasons') or ''}".rstrip())
        return DemoResult(
            sent={**sent, "command": " ".join(PING_COMMAND)},
            # read = frames_sent + dropped_no_peer: what the kernel routed into mytun before
            # the connection stood (an IPv6 router solicitation, usually) had nowhere to go.
            client={"read": client_stats["read_packets"],
                    "frames_sent": client_stats["frames_sent"],
                    "bytes": client_stats["bytes_sent"],
                    "dropped_no_peer": client_stats["dropped_no_peer"]},
            server={"frames_received": server_stats["frames_received"],
                    "written": server_stats["written_packets"]},
            released=released, fate=fate, frame_hex=sent_frame.data.hex(), hops=hops,
            commands=list(lab.commands))


def _observe(lab: SeedLab, server: TunnelServer, inject: Callable[[], None]) -> dict[str, Any]:
    """The kernel's handling of the released packet, traced in the server's writer thread."""
    from tunlab.fate import observe

    def released() -> bytes | None:
        event = _first(server.events(), "written")
        return event.data if event else None

    report = observe(lab.ns, inject, writer_tid=server.writer_tid,
                     writer_comm=server.writer_comm, capture_devices=(),
                     packet=released, dev="mytun2")
    return report.to_dict()
