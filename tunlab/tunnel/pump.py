"""The fast path's pump: both directions of one connection in one thread, without copies.

Used when the device was opened with ``vnet_hdr=True``. While a peer is connected one
:class:`FastPump` owns the device and alternates non-blocking steps: receive from the peer and
write into the device, then read the device and send to the peer. A reply the kernel queued
during the write is read in the same pass; when a pass found nothing to do, the pump spins
briefly (see :meth:`FastPump._linger`) and then sleeps in poll() until a side is ready.
docs/performance.md ("History of the fast path") explains, with measurements, why it is built
this way.

Invariants:

* sends never block: what the socket does not take waits in :attr:`FastPump.pending`, and the
  device is not read until it is gone (back-pressure: the device's queue fills and the kernel
  drops, as a router does), so two endpoints sending to each other at full speed cannot
  deadlock; and the read buffers are not reused while ``pending`` may still point into them;
* an idle tunnel wakes nothing: after the last packet the pump spins for at most
  ``max(SPIN_SECONDS, busy_poll)`` and polls with a timer only while a conversation is going on
  (``KEEP_WARM_SECONDS``), then sleeps until a packet or ``stop()``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tunlab.packet.vnet import VNET_HDR_SIZE, ZERO_HEADER
from tunlab.proto import framing
from tunlab.proto.crypto import SEALED_FRAME_OVERHEAD
from tunlab.proto.framing import PacketReceived, RejectReason
from tunlab.tunnel.events import EventKind
from tunlab.tunnel.peer import Peer
from tunlab.tunnel.tuning import (
    KEEP_WARM_SECONDS,
    KEEP_WARM_TICK_MS,
    READ_BATCH,
    READ_BATCH_BYTES,
    READ_BUFFER,
    RECV_SIZE,
    SPIN_SECONDS,
)

__all__ = ["FastPump", "Framer", "prefer_batch_scheduling"]

if TYPE_CHECKING:
    from tunlab.tunnel.datapath import Datapath

Framer = Callable[[list[memoryview]], list[Any]]


class FastPump:
    """One connection's data path on the fast path; :meth:`run` until the connection ends.

    The endpoint holds the device for the pump (nobody else reads it meanwhile) and drops the
    peer afterwards with the reason :meth:`run` returns.
    """

    def __init__(self, datapath: Datapath, peer: Peer) -> None:
        self.datapath = datapath
        self.peer = peer
        self.stats = datapath.stats
        self.sock = peer.sock
        self.session = peer.session
        self.sock.settimeout(None)  # blocking socket; every call below passes MSG_DONTWAIT
        self.device_fd = datapath.device.fileno()
        self.sock_fd = self.sock.fileno()
        os.set_blocking(self.device_fd, False)
        self.rbuffer = bytearray(RECV_SIZE)
        self.rview = memoryview(self.rbuffer)
        self.kept = 0  # bytes of an unfinished frame at the start of rbuffer
        # Each packet is read one byte into its buffer: a keyed session puts the inner frame
        # type there and seals type + packet in place (see _seal_batch).
        buffers = [bytearray(1 + READ_BUFFER) for _ in range(READ_BATCH)]
        self.views = [memoryview(buffer)[1:] for buffer in buffers]
        self.iovecs = [[view] for view in self.views]
        self.poller = select.poll()
        self.poller.register(self.device_fd, select.POLLIN)
        self.poller.register(self.sock_fd, select.POLLIN)
        self.poller.register(datapath.wake_fd, select.POLLIN)
        self.pending: list[Any] = []  # frame pieces the socket has not taken yet
        self.sealed_out: dict[int, bytearray] | None = None  # per read buffer, see _seal_batch
        self.frame_batch = self._framer()
        self.why: str | None = None  # set when the connection must end
        self.try_receive = self.try_read = True
        # Timestamps (time.monotonic) of the last pass that did something, the last packet
        # written into the device and the last two packets read from it.
        self.last_work = self.last_from_peer = 0.0
        self.last_from_device = self.previous_from_device = 0.0
        self.awaiting_answer = False  # we sent what the device gave us; the peer's answer is due
        self.wrote = self.read = False  # what the current pass did
        self.busy_poll = datapath.busy_poll_us / 1e6  # seconds of polling before a sleep

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> str:
        """Pump until the peer leaves, the connection fails or the endpoint stops; say why."""
        stop = self.datapath.stopping
        self.why = self.datapath.deliver(self.peer.early, self.stats)
        prefer_batch_scheduling()
        while self.why is None and not self.peer.closed and not stop.is_set():
            self.wrote = self.read = False
            busy = self._receive()
            if self.why is not None:
                break
            busy = self._send() or busy
            if self.why is not None:
                break
            if busy:
                self._worked()
            elif not self._linger():
                self._sleep()
        if stop.is_set():
            return "stopped"
        return self.why or "closed by peer"

    def _receive(self) -> bool:
        """Peer -> device: one non-blocking receive, its packets written; True if data came.

        A frame that the receive cut in two stays at the start of the buffer (``kept`` bytes)
        and the next receive appends to it: one move of at most a frame, where handing it to
        the decoder would cost a copy of everything received after it.
        """
        if not self.try_receive:
            return False
        kept = self.kept
        try:
            size = self.sock.recv_into(self.rview[kept:], RECV_SIZE - kept, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            self.why = f"receive failed: {exc}"
            return False
        deliver = self.datapath.deliver
        if size == 0:
            if kept:  # the decoder judges what the peer left unfinished
                self.kept = 0
                self.why = deliver(self.session.receive(bytes(self.rview[:kept])), self.stats)
            self.why = (self.why or deliver(self.session.end_of_stream(), self.stats)
                        or "closed by peer")
            return False
        end = kept + size
        data = self.rview[:end]
        if self.datapath.record_packets:
            self.why = deliver(self.session.receive(data), self.stats)
            return True
        packets, events, self.kept = self.session.receive_packets(data, keep_tail=True)
        if packets:
            self.why = self._write_packets(packets)
            self.wrote = True
            self.awaiting_answer = False
        if events and self.why is None:
            self.why = deliver(events, self.stats)
        if self.kept:
            self.rview[:self.kept] = self.rview[end - self.kept:end]  # memmove: may overlap
        return True

    def _send(self) -> bool:
        """Device -> peer: send what waits, then read and send a batch; True if it read any."""
        try:
            if self.pending:
                self.pending = _send_some(self.sock.sendmsg, self.pending)
            if not self.pending and self.try_read:
                self._read_and_send()
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.why = f"send failed: {exc}"
            else:
                self.datapath.device_failed(exc)
                self.why = "device gone"
        return self.read

    def _read_and_send(self) -> None:
        """The first packet goes out at once (a lone ping should not wait for the read that
        finds the device empty); the rest of a burst goes in batches. The read buffers are not
        reused until ``pending`` is empty, so what the socket did not take yet may point into
        them without a copy. Raises BlockingIOError when the device is empty."""
        readv, iovecs, views = os.readv, self.iovecs, self.views
        size = readv(self.device_fd, iovecs[0])
        self.read = True
        # Read right after our write: the kernel's reply to it, i.e. we answer.
        self.awaiting_answer = not self.wrote
        self.pending = _send_some(self.sock.sendmsg, self.frame_batch([views[0][:size]]))
        batch: list[memoryview] = []
        budget = READ_BATCH_BYTES - size
        for index in range(1, READ_BATCH if not self.pending else 1):
            try:
                size = readv(self.device_fd, iovecs[index])
            except BlockingIOError:
                break
            batch.append(views[index][:size])
            budget -= size
            if budget <= 0:
                break
        if batch:
            self.pending = _send_some(self.sock.sendmsg, self.frame_batch(batch))

    def _worked(self) -> None:
        """After a pass that did something: try both sides again at once."""
        self.try_receive = self.try_read = True
        self.last_work = now = time.monotonic()
        if self.wrote:
            self.last_from_peer = now
        if self.read:
            self.previous_from_device, self.last_from_device = self.last_from_device, now

    def _linger(self) -> bool:
        """After a pass that found nothing: keep trying (True) instead of sleeping?

        With ``busy_poll_us`` (like the kernel's SO_BUSY_POLL) both sides keep polling, by
        non-blocking reads, for that long after the last packet; each such pass is counted
        in ``stats.busy_poll_spins``. Without it, only the side that sent a request spins, for
        ``SPIN_SECONDS``, so that the answer is read by a warm thread rather than a woken one.
        sched_yield() in between keeps the peer, ping and the kernel running on a machine with
        few cores.
        """
        idle = time.monotonic() - self.last_work
        if idle < self.busy_poll:
            self.stats.busy_poll_spins += 1
            os.sched_yield()
            return True
        if self.awaiting_answer and idle < SPIN_SECONDS:
            os.sched_yield()
            return True
        return False

    def _sleep(self) -> None:
        """poll() until a side is ready: the socket (and its room, while frames wait), the
        device (only when nothing waits), or stop()."""
        pending = bool(self.pending)
        self.poller.modify(self.device_fd, 0 if pending else select.POLLIN)
        self.poller.modify(self.sock_fd, select.POLLIN | (select.POLLOUT if pending else 0))
        self.try_receive = self.try_read = False
        # A conversation: the last two packets from the device and the last one from the peer
        # all came within the window (two stray packets that cross, such as the router
        # solicitations of two fresh devices, are not one). It polls with a timer tick: a
        # thread that ran a millisecond ago wakes faster and finds its caches warm.
        since = time.monotonic() - min(self.last_from_peer, self.previous_from_device)
        ready = self.poller.poll(KEEP_WARM_TICK_MS if since < KEEP_WARM_SECONDS else None)
        if not ready:  # a tick: run the data path once, finding nothing, and poll again
            self.try_receive = self.try_read = True
            return
        for fd, _ in ready:
            if fd == self.sock_fd:
                self.try_receive = True
            elif fd == self.device_fd:
                self.try_read = True

    # -- framing and writing -----------------------------------------------------------------
    def _framer(self) -> Framer:
        """The function that frames batches of (virtio-net header + packet) reads, chosen once
        per connection.

        The common case, clear mode with a super-packet peer, is a tight closure: per packet an
        8-byte header and a view of the read buffer, no copy. A keyed session with such a peer
        seals each packet in place (:meth:`_seal_batch`); peers that take plain packets go
        through the session (:meth:`_frame_batch`).
        """
        if self.peer.vnet and self.session.sealed:
            return self._seal_batch
        if not self.peer.vnet:
            return self._frame_batch
        stats = self.stats
        pack = framing.HEADER.pack
        magic, version, gso = framing.MAGIC, framing.VERSION, int(framing.FrameType.GSO_DATA)
        overhead = framing.HEADER_SIZE
        record = self.datapath.record_packets
        record_reads = self.datapath.record_reads

        def frame(batch: list[memoryview]) -> list[Any]:
            if record:
                record_reads(batch)
            pieces: list[Any] = []
            total = 0
            for view in batch:
                size = len(view)
                total += size
                pieces.append(pack(magic, version, gso, size))
                pieces.append(view)
            count = len(batch)
            stats.read_packets += count
            stats.read_bytes += total - VNET_HDR_SIZE * count
            stats.frames_sent += count
            stats.bytes_sent += total + overhead * count
            return pieces

        return frame

    def _count_reads(self, batch: list[memoryview]) -> None:
        """Count (and, with record_packets, record) reads of (virtio-net header + packet)."""
        self.stats.read_packets += len(batch)
        self.stats.read_bytes += sum(map(len, batch)) - VNET_HDR_SIZE * len(batch)
        if self.datapath.record_packets:
            self.datapath.record_reads(batch)

    def _unsendable(self, view: memoryview, exc: framing.EncodeError) -> None:
        self.stats.rejected[RejectReason.UNSENDABLE] += 1
        self.datapath.event(EventKind.REJECTED, f"not sent: {exc}", len(view))

    def _count_sent(self, pieces: list[Any]) -> list[Any]:
        self.stats.frames_sent += len(pieces)
        self.stats.bytes_sent += sum(map(len, pieces))
        return pieces

    def _seal_batch(self, batch: list[memoryview]) -> list[Any]:
        """Sealed GSO_DATA frames for a keyed session with a super-packet peer, without copies:
        the inner type goes into the byte in front of each read, the AEAD reads type + packet
        straight from the read buffer and writes the frame into that buffer's own output
        buffer (reused, like the read buffer, only once ``pending`` is empty)."""
        self._count_reads(batch)
        if self.sealed_out is None:
            self.sealed_out = {id(view.obj): bytearray(1 + READ_BUFFER + SEALED_FRAME_OVERHEAD)
                               for view in self.views}
        seal, gso = self.session.encode_packet_into, framing.FrameType.GSO_DATA
        pieces: list[Any] = []
        for view in batch:
            plaintext = memoryview(view.obj)[:1 + len(view)]  # type byte, header, packet
            plaintext[0] = gso
            try:
                pieces.append(seal(self.sealed_out[id(view.obj)], plaintext))
            except framing.EncodeError as exc:
                self._unsendable(view, exc)
        return self._count_sent(pieces)

    def _frame_batch(self, batch: list[memoryview]) -> list[Any]:
        """Frames for a peer without super-packets (keyed or not), through the session: each
        read is finished in software (checksums, segmentation) where the kernel left it so."""
        datapath = self.datapath
        self._count_reads(batch)
        pieces: list[Any] = []
        encode = self.session.encode_packet
        for view in batch:
            try:
                if view[0] & 1 or view[1]:  # read before the offloads went off
                    pieces.extend(encode(p) for p in datapath.finish(view))
                else:
                    pieces.append(encode(view[VNET_HDR_SIZE:]))
            except framing.EncodeError as exc:
                self._unsendable(view, exc)
        return self._count_sent(pieces)

    def _write_packets(self, packets: list[tuple[Any, Any]]) -> str | None:
        """Write checked ``(packet, vnet_header)`` views from the decoder into the device.

        One writev() each: the header as it came (a plain packet gets an all-zero one), then
        the packet; no copy. The decoder already applied every check; what the kernel still
        refuses (a nonsensical virtio-net header: EINVAL) is counted by the careful path.
        """
        stats = self.stats
        writev = os.writev
        fd = self.device_fd
        count = nbytes = 0
        fatal = None
        for packet, header in packets:
            try:
                writev(fd, (ZERO_HEADER if header is None else header, packet))
            except OSError:
                # counted there, once
                fatal = self.datapath.deliver(
                    [PacketReceived(bytes(packet), header and bytes(header))], stats)
                if fatal:
                    break
                continue
            count += 1
            nbytes += len(packet)
        stats.frames_received += count
        stats.bytes_received += nbytes
        stats.written_packets += count
        stats.written_bytes += nbytes
        return fatal


def prefer_batch_scheduling() -> None:
    """Make the calling thread SCHED_BATCH: same share of the CPU, but a wake-up of it does not
    preempt the thread that woke it, so the threads of one round trip stay on one CPU. Best
    effort: no privilege is needed, and where the call is refused the thread simply stays
    SCHED_OTHER."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def _send_some(sendmsg: Callable[..., int], pieces: list[Any]) -> list[Any]:
    """One non-blocking sendmsg() of ``pieces``; returns what the socket did not take."""
    try:
        sent = sendmsg(pieces, (), socket.MSG_DONTWAIT)
    except BlockingIOError:
        return pieces
    index = 0
    while index < len(pieces) and sent >= len(pieces[index]):
        sent -= len(pieces[index])
        index += 1
    rest = pieces[index:]
    if rest and sent:
        rest[0] = memoryview(rest[0])[sent:]
    return rest
