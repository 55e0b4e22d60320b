"""What happened in an endpoint, as timestamped records for notebooks to show and plot."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["EventKind", "TunnelEvent"]


class EventKind(StrEnum):
    """What a :class:`TunnelEvent` records. A str: ``event.kind == "sent"`` works, and JSON and
    the notebooks' tables show the plain name."""

    LISTENING = "listening"        # the server listens
    ACCEPTED = "accepted"          # the server accepted a connection (handshake next)
    CONNECTED = "connected"        # the client's connection is up (handshake next)
    ESTABLISHED = "established"    # the handshake finished: packets may flow
    REPLACED = "replaced"          # a newer connection from the same client took over
    RETRY = "retry"                # the client waits, then connects again
    DISCONNECTED = "disconnected"  # a peer left, with the reason
    STOPPED = "stopped"            # stop() was called
    SENT = "sent"                  # a packet went to the peer (with record_packets)
    READ = "read"                  # a packet was read from the device (with record_packets)
    WRITTEN = "written"            # a packet was written into the device (with record_packets)
    REJECTED = "rejected"          # a frame or packet was refused, with the reason
    WRITE_ERROR = "write_error"    # the kernel refused a write into the device
    OFFLOAD = "offload"            # the device's offloads were switched
    DEVICE_GONE = "device_gone"    # the TUN device disappeared
    ERROR = "error"                # something failed on our side


@dataclass(frozen=True)
class TunnelEvent:
    """Something that happened, with a monotonic timestamp; ``data`` only for packet events."""

    time: float
    kind: EventKind
    detail: str = ""
    size: int = 0
    data: bytes | None = None
