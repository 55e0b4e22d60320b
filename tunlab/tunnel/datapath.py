"""Where a packet meets the device: write what the peer sent, finish what the kernel offloaded,
count and record both directions, and say when the device failed.

An :class:`~tunlab.tunnel.endpoint.Endpoint` owns one :class:`Datapath`. Its own threads (the
simple path) and the fast path's :class:`~tunlab.tunnel.pump.FastPump` use it alike, so the
pump needs nothing of the endpoint's internals: the device, the counters, the event log, the
stop flag and the wake-up descriptor all come from here.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from tunlab.errors import InvalidPacketError
from tunlab.kernel.tun import TunDevice
from tunlab.packet.vnet import VNET_HDR_SIZE, OffloadError, resolve
from tunlab.proto.framing import (
    CloseReceived,
    FrameRejected,
    PacketReceived,
    ProtocolError,
    RejectReason,
)
from tunlab.tunnel.events import EventKind, TunnelEvent
from tunlab.tunnel.stats import TunnelStats

__all__ = ["Datapath"]

log = logging.getLogger("tunlab.tunnel")
# A write into the device failed with one of these: the device is gone, not just the packet.
DEVICE_GONE_ERRNOS = (errno.EBADFD, errno.EBADF, errno.ENXIO)


class Datapath:
    """One endpoint's device, counters and event log, and what both data paths do with them.

    ``stopping`` is set when the endpoint stops; ``wake_fd`` becomes readable then (poll it
    beside the device and the socket). ``on_device_failed(reason)`` is called once the device
    failed while the endpoint was not stopping: the endpoint then shuts down.
    """

    def __init__(self, device: TunDevice, *, role: str, stats: TunnelStats,
                 record_packets: bool, max_events: int, busy_poll_us: int,
                 stopping: threading.Event, wake_fd: int,
                 on_device_failed: Callable[[str], None]) -> None:
        self.device = device
        self.role = role
        self.stats = stats
        self.record_packets = record_packets
        self.busy_poll_us = busy_poll_us
        self.stopping = stopping
        self.wake_fd = wake_fd
        self.events: deque[TunnelEvent] = deque(maxlen=max_events)
        self._on_device_failed = on_device_failed

    def event(self, kind: EventKind, detail: str = "", size: int = 0,
              data: bytes | None = None) -> None:
        """Record that ``kind`` happened now (``data``: the packet, for packet events)."""
        self.events.append(TunnelEvent(time.monotonic(), kind, detail, size, data))

    def deliver(self, events: Iterable[Any], stats: TunnelStats) -> str | None:
        """Write the packets among the session's ``events`` into the device, count what was
        refused; return a reason when the connection is dead (protocol error, close, device
        gone), else None."""
        for event in events:
            if isinstance(event, PacketReceived):
                stats.frames_received += 1
                stats.bytes_received += len(event.packet)
                try:
                    self.device.write_packet(event.packet, event.vnet_header)
                except InvalidPacketError as exc:
                    stats.rejected[RejectReason.BAD_OFFLOAD] += 1
                    self.event(EventKind.REJECTED, str(exc), len(event.packet))
                    continue
                except OSError as exc:
                    stats.write_errors += 1
                    if exc.errno in DEVICE_GONE_ERRNOS:
                        self.device_failed(exc)
                        return "device gone"
                    self.event(EventKind.WRITE_ERROR, str(exc), len(event.packet))
                    continue
                stats.written_packets += 1
                stats.written_bytes += len(event.packet)
                if self.record_packets:
                    # a copy: on the copy-free path the packet is a view of a reused buffer
                    self.event(EventKind.WRITTEN, f"to {self.device.name}", len(event.packet),
                               bytes(event.packet))
            elif isinstance(event, FrameRejected):
                stats.rejected[event.reason] += 1
                self.event(EventKind.REJECTED, f"{event.reason}: {event.detail}")
                log.warning("%s: dropped a frame: %s (%s)", self.role, event.reason, event.detail)
            elif isinstance(event, ProtocolError):
                stats.rejected[event.reason] += 1
                self.event(EventKind.REJECTED, f"{event.reason}: {event.detail}")
                log.warning("%s: closing connection: %s (%s)", self.role, event.reason,
                            event.detail)
                return f"protocol error: {event.reason}"
            elif isinstance(event, CloseReceived):
                return f"peer closed: {event.reason}"
        return None

    def device_failed(self, exc: OSError) -> None:
        """A read or write on the device failed for good: record why, and tell the endpoint
        (unless it is stopping anyway, which closes the device's readers on purpose)."""
        if self.stopping.is_set():
            return
        reason = f"device {self.device.name} failed: {os.strerror(exc.errno or 0)}"
        if exc.errno in (errno.EBADFD, errno.EIO, errno.ENXIO, errno.EBADF):
            reason = f"device {self.device.name} was removed or is down ({exc})"
        log.error("%s: %s; stopping", self.role, reason)
        self.event(EventKind.DEVICE_GONE, reason)
        self._on_device_failed(reason)

    def finish(self, view: memoryview) -> list[bytes]:
        """Finish an offloaded read in software for a peer that takes plain packets only."""
        try:
            return resolve(view[:VNET_HDR_SIZE], view[VNET_HDR_SIZE:])
        except OffloadError as exc:
            self.stats.rejected[RejectReason.BAD_OFFLOAD] += 1
            self.event(EventKind.REJECTED, f"not sent: {exc}")
            return []

    def record_reads(self, batch: Iterable[memoryview]) -> None:
        """Record each read (virtio-net header in front) as a READ event with its packet."""
        for view in batch:
            self.event(EventKind.READ, f"from {self.device.name}", len(view) - VNET_HDR_SIZE,
                       bytes(view[VNET_HDR_SIZE:]))
