"""Live counters of an endpoint, for both directions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tunlab.proto.framing import RejectReason

__all__ = ["TunnelStats"]


@dataclass
class TunnelStats:
    """Live counters for both directions. Read them any time; they only grow."""

    read_packets: int = 0       # device -> tunnel: packets read from the TUN device
    read_bytes: int = 0
    frames_sent: int = 0        # frames (and their bytes, headers included) sent to the peer
    bytes_sent: int = 0
    dropped_no_peer: int = 0    # read while no peer was connected
    frames_received: int = 0    # tunnel -> device: valid packet frames received
    bytes_received: int = 0
    written_packets: int = 0    # packets written into the TUN device
    written_bytes: int = 0
    write_errors: int = 0
    rejected: Counter[RejectReason] = field(default_factory=Counter)  # by reason
    connections: int = 0
    disconnects: int = 0
    busy_poll_spins: int = 0    # fast path: passes that polled instead of sleeping (busy_poll_us)

    def snapshot(self) -> dict[str, Any]:
        """A plain dict copy, safe to keep while the tunnel runs on."""
        data = {k: v for k, v in self.__dict__.items() if k != "rejected"}
        data["rejected"] = {str(reason): n for reason, n in self.rejected.items()}
        return data
