"""What happened in an endpoint, as timestamped records for notebooks to show and plot."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TunnelEvent:
    """Something that happened, with a monotonic timestamp; ``data`` only for packet events."""

    time: float
    kind: str
    detail: str = ""
    size: int = 0
    data: bytes | None = None
