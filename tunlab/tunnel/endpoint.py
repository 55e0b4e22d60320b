"""The endpoint both server and client are: threads, peer, data paths, events."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import InvalidPacketError
from ..netns import Namespace
from ..proto import framing
from ..proto.framing import (
    VNET_FEATURE,
    CloseReceived,
    FrameRejected,
    PacketReceived,
    ProtocolError,
)
from ..proto.session import Established, Session
from ..runtime import ThreadGroup
from ..tun import OFFLOAD_FAST, TunDevice
from ..vnet import VNET_HDR_SIZE, ZERO_HEADER, OffloadError, resolve
from .events import TunnelEvent
from .peer import Peer
from .stats import TunnelStats
from .tuning import (
    KEEP_WARM_SECONDS,
    KEEP_WARM_TICK_MS,
    READ_BATCH,
    READ_BUFFER,
    RECV_SIZE,
    SEND_TIMEOUT,
    SPIN_SECONDS,
)

log = logging.getLogger("tunlab.tunnel")


class Endpoint:
    """What server and client share: threads, the peer, both data paths, events and stats."""

    role = ""

    def __init__(self, device: TunDevice, *, namespace: Namespace | None = None,
                 record_packets: bool = False, max_events: int = 2000,
                 psk: bytes | None = None, offload: bool = True) -> None:
        self.device = device
        self.psk = psk
        # The fast path needs a device opened with vnet_hdr=True; ``offload=False`` keeps such
        # an endpoint from offering super-packets (it then behaves like a simple peer).
        self.fast = device.vnet_hdr
        self.offer_vnet = device.vnet_hdr and offload
        self.namespace = namespace
        self.record_packets = record_packets
        self.stats = TunnelStats()
        self.error: str | None = None
        self.writer_tid: int | None = None
        self._events: deque[TunnelEvent] = deque(maxlen=max_events)
        self._group = ThreadGroup(f"tunlab-{self.role}", on_failure=self._thread_failed,
                                  factory=namespace)
        self._stop = self._group.cancelled
        self._wake_fd = self._group.waker.fileno()
        self._shutdown_lock = threading.RLock()
        self._shut_down = False
        self._failure_raised = False
        self._peer: Peer | None = None
        self._peer_lock = threading.Lock()
        self._device_lock = threading.Lock()  # fast path: who reads the device right now
        self._started = False
        self._stop_callbacks: list[Callable[[], None]] = []

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> Endpoint:
        """Start the threads; returns self so that ``with TunnelServer(...).start()`` reads well."""
        if self._started:
            return self
        self._started = True
        self._prepare()
        self._spawn(self._fast_device_reader if self.fast else self._device_reader,
                    "device-reader")
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Stop all threads and close all sockets; the device stays open and unchanged.

        Raises (once, after everything is cleaned up) the first unexpected exception any of the
        endpoint's threads raised (:attr:`failure`), also one that only cost a connection: a
        bug must not hide behind a tunnel that kept running.
        """
        self._shutdown(timeout)
        failure = self.failure
        if failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise failure

    def _shutdown(self, timeout: float = 1.0) -> None:
        """:meth:`stop` without raising: for the endpoint's own threads (a fatal error)."""
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = True
            self._group.cancel()
            for callback in self._stop_callbacks:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a listener must not keep the tunnel running
                    log.exception("%s: on_stop callback failed", self.role)
            self._close_sockets()
            self._group.join(timeout)
            self._group.close()
            self._event("stopped")

    @property
    def failure(self) -> Exception | None:
        """The first unexpected exception raised in one of the endpoint's threads, if any.

        A failure inside one connection dropped that peer and the endpoint went on; a failure
        of the device reader or the accept loop stopped the endpoint (then :attr:`error` says
        so too). :meth:`stop` re-raises it.
        """
        return self._group.first_exception

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from whichever thread stops the endpoint) as soon as it starts
        stopping: after :meth:`stop`, or on its own after a fatal error such as a removed
        device. Lets a front end sleep until then instead of polling ``running``."""
        self._stop_callbacks.append(callback)
        if self._stop.is_set():
            callback()

    @property
    def running(self) -> bool:
        return self._started and not self._stop.is_set()

    def __enter__(self) -> Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation -----------------------------------------------------------------------
    def events(self, kinds: set[str] | None = None) -> list[TunnelEvent]:
        """A copy of the recorded events, optionally only those of the given kinds."""
        return [e for e in list(self._events) if kinds is None or e.kind in kinds]

    @property
    def connected(self) -> bool:
        """True while a peer is connected (handshake done)."""
        return self._peer is not None

    @property
    def features(self) -> frozenset[str]:
        """The features negotiated with the current peer (empty when none is connected)."""
        peer = self._peer
        return peer.session.features if peer is not None else frozenset()

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``condition`` every 10 ms until it holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return condition()

    # -- internals -------------------------------------------------------------------------
    def _event(self, kind: str, detail: str = "", size: int = 0, data: bytes | None = None) -> None:
        self._events.append(TunnelEvent(time.monotonic(), kind, detail, size, data))

    def _spawn(self, target: Callable[..., None], name: str, *args: Any,
               essential: bool = True) -> threading.Thread:
        """A thread of this endpoint; ``essential=False`` for one that serves one connection."""
        return self._group.spawn(target, name, *args, essential=essential)

    def _thread_failed(self, name: str, exc: Exception, essential: bool) -> None:
        """Called by the thread group for an unexpected exception (the group kept it)."""
        if essential:
            self.error = f"{name} failed: {exc!r}"
            log.error("%s: %s; stopping", self.role, self.error, exc_info=exc)
            self._event("error", self.error)
            threading.Thread(target=self._shutdown, daemon=True).start()
        else:
            log.error("%s: %s failed, that peer is dropped and the %s goes on: %r", self.role,
                      name, self.role, exc, exc_info=exc)
            self._event("error", f"{name}: {exc!r}")

    def _connection_failed(self, address: Any, peer: Peer | None, sock: socket.socket,
                           exc: Exception) -> None:
        """An unexpected exception while serving one connection: drop that peer (close its
        socket, unregister it), keep the exception, and let the endpoint go on."""
        if peer is not None:
            self._drop_peer(peer, f"internal error: {exc!r}")
        else:
            with contextlib.suppress(OSError):
                sock.close()
        self._group.fail(f"connection with {address}", exc, essential=False)

    def _prepare(self) -> None:
        pass

    def _close_sockets(self) -> None:
        with self._peer_lock:
            peer, self._peer = self._peer, None
        if peer:
            peer.close()

    def _wait_readable(self, fd: int | socket.socket, timeout: float | None = None) -> bool:
        """Block until ``fd`` is readable (True) or stop was requested / timeout (False)."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else timeout * 1000)
        if self._stop.is_set():
            return False
        return any(f != self._wake_fd for f, _ in ready)

    def _device_reader(self) -> None:
        fd = self.device.fileno()
        os.set_blocking(fd, False)
        while not self._stop.is_set():
            if not self._wait_readable(fd):
                continue
            batch: list[bytes] = []
            for _ in range(READ_BATCH):
                try:
                    batch.append(os.read(fd, 65535 + 64))
                except BlockingIOError:
                    break
                except OSError as exc:
                    self._device_failed(exc)
                    return
            self._forward_to_peer(batch)

    def _device_failed(self, exc: OSError) -> None:
        if self._stop.is_set():
            return
        self.error = f"device {self.device.name} failed: {os.strerror(exc.errno or 0)}"
        if exc.errno in (errno.EBADFD, errno.EIO, errno.ENXIO, errno.EBADF):
            self.error = f"device {self.device.name} was removed or is down ({exc})"
        log.error("%s: %s; stopping", self.role, self.error)
        self._event("device_gone", self.error)
        threading.Thread(target=self._shutdown, daemon=True).start()

    def _forward_to_peer(self, packets: list[bytes]) -> None:
        stats = self.stats
        for packet in packets:
            stats.read_packets += 1
            stats.read_bytes += len(packet)
            if self.record_packets:
                self._event("read", f"from {self.device.name}", len(packet), packet)
        peer = self._peer
        if peer is None:
            stats.dropped_no_peer += len(packets)
            return
        frames = []
        for packet in packets:
            try:
                frame = peer.session.encode_packet(packet)
            except framing.EncodeError as exc:
                stats.rejected["unsendable"] += 1
                self._event("rejected", f"not sent: {exc}", len(packet))
                continue
            frames.append(frame)
            if self.record_packets:
                self._event("sent", "frame to peer", len(frame), frame)
        if not frames:
            return
        data = b"".join(frames)
        try:
            peer.send(data)
        except OSError as exc:
            self._drop_peer(peer, f"send failed: {exc}")
            return
        stats.frames_sent += len(frames)
        stats.bytes_sent += len(data)

    def _set_peer(self, peer: Peer) -> None:
        if self.fast:
            # Offloads belong to the device, the feature to this connection: set them to what
            # this peer can take before any of its traffic flows.
            wanted = OFFLOAD_FAST if peer.vnet else 0
            if self.device.offload != wanted:
                try:
                    self.device.set_offload(wanted)
                    self._event("offload", "super-packets on" if wanted else
                                "super-packets off: the peer takes plain packets")
                except OSError as exc:
                    self._event("error", f"TUNSETOFFLOAD failed: {exc}")
                    peer.vnet = False
        with self._peer_lock:
            old, self._peer = self._peer, peer
        if old is not None:
            old.close()
            self._event("replaced", f"{old.address} replaced by {peer.address}")

    def _drop_peer(self, peer: Peer, why: str) -> None:
        with self._peer_lock:
            if self._peer is peer:
                self._peer = None
        if not peer.closed:
            peer.close()
            self.stats.disconnects += 1
            self._event("disconnected", f"{peer.address}: {why}")
            log.info("%s: peer %s disconnected: %s", self.role, peer.address, why)

    def _handshake(self, sock: socket.socket, address: Any, timeout: float) -> Peer | None:
        """Exchange hellos on ``sock``; return the peer, or None after closing it."""
        features = frozenset({VNET_FEATURE}) if self.offer_vnet else frozenset()
        session = Session(self.role, features=features, info={"mtu": self.device.mtu},
                          psk=self.psk)
        session.initiate()
        deadline = time.monotonic() + timeout
        early: list[Any] = []
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(session.data_to_send())
            while not session.established:
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._refuse(sock, address, "handshake_timeout",
                                        f"no hello within {timeout:.0f} s")
                if not self._wait_readable(sock, left):
                    if self._stop.is_set():
                        sock.close()
                        return None
                    continue
                data = sock.recv(RECV_SIZE)
                if not data:
                    return self._refuse(sock, address, "closed_in_handshake",
                                        "peer closed before its hello")
                for event in session.receive(data):
                    if isinstance(event, ProtocolError):
                        try:  # best effort: tell the peer why (e.g. auth_failed), never block
                            sock.send(session.data_to_send(), socket.MSG_DONTWAIT)
                        except OSError:
                            pass
                        return self._refuse(sock, address, event.reason, event.detail)
                    if isinstance(event, Established):
                        self._event("established", f"{address} features "
                                    f"{sorted(event.features)}")
                    else:
                        early.append(event)
                out = session.data_to_send()
                if out:
                    sock.sendall(out)
        except OSError as exc:
            return self._refuse(sock, address, "socket_error", str(exc))
        peer = Peer(sock, session, address)
        peer.early = early
        return peer

    def _refuse(self, sock: socket.socket, address: Any, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        self._event("rejected", f"{address}: {reason}: {detail}")
        log.warning("%s: rejected %s: %s (%s)", self.role, address, reason, detail)
        try:
            sock.close()
        except OSError:
            pass
        return None

    def _receive_loop(self, peer: Peer) -> None:
        """Peer -> device until the connection ends."""
        self.writer_tid = threading.get_native_id()
        if self.fast:
            with self._owning_device():
                self._fast_pump(peer)
            return
        stats = self.stats
        sock = peer.sock
        fatal = self._deliver(peer.early, stats)
        why = fatal or "closed by peer"
        while fatal is None and not self._stop.is_set() and not peer.closed:
            if not self._wait_readable(sock):
                continue
            try:
                data = sock.recv(RECV_SIZE)
            except OSError as exc:
                why = f"receive failed: {exc}"
                break
            if not data:
                why = self._deliver(peer.session.end_of_stream(), stats) or why
                break
            fatal = self._deliver(peer.session.receive(data), stats)
            if fatal:
                why = fatal
                break
        self._drop_peer(peer, why)

    def _deliver(self, events: list[Any], stats: TunnelStats) -> str | None:
        """Write received packets into the device; return a reason when the stream is dead."""
        for event in events:
            if isinstance(event, PacketReceived):
                stats.frames_received += 1
                stats.bytes_received += len(event.packet)
                try:
                    self.device.write_packet(event.packet, event.vnet_header)
                except InvalidPacketError as exc:
                    stats.rejected["bad_offload"] += 1
                    self._event("rejected", str(exc), len(event.packet))
                    continue
                except OSError as exc:
                    stats.write_errors += 1
                    if exc.errno in (errno.EBADFD, errno.EBADF, errno.ENXIO):
                        self._device_failed(exc)
                        return "device gone"
                    self._event("write_error", str(exc), len(event.packet))
                    continue
                stats.written_packets += 1
                stats.written_bytes += len(event.packet)
                if self.record_packets:
                    self._event("written", f"to {self.device.name}", len(event.packet),
                                event.packet)
            elif isinstance(event, FrameRejected):
                stats.rejected[event.reason] += 1
                self._event("rejected", f"{event.reason}: {event.detail}")
                log.warning("%s: dropped a frame: %s (%s)", self.role, event.reason, event.detail)
            elif isinstance(event, ProtocolError):
                stats.rejected[event.reason] += 1
                self._event("rejected", f"{event.reason}: {event.detail}")
                log.warning("%s: closing connection: %s (%s)", self.role, event.reason,
                            event.detail)
                return f"protocol error: {event.reason}"
            elif isinstance(event, CloseReceived):
                return f"peer closed: {event.reason}"
        return None

    # -- the fast path (device opened with vnet_hdr) ------------------------------------------
    def _fast_device_reader(self) -> None:
        """While no peer is connected: drain and count what the kernel routes into the device.

        Once a peer is connected its pump (:meth:`_fast_pump`) owns the device and this thread
        reads nothing: it waits for the device lock, so a packet is never read by one thread
        and sent by another.
        """
        fd = self.device.fileno()
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        iovec = [bytearray(READ_BUFFER)]
        stats = self.stats
        stop = self._stop
        lock = self._device_lock
        while not stop.is_set():
            # Blocks while a pump owns the device; the pump lets go when its peer leaves or
            # stop() is called. An idle tunnel must not wake up on a timer.
            lock.acquire()
            drained = 0
            try:
                while self._peer is None and drained < READ_BATCH and not stop.is_set():
                    try:
                        size = os.readv(fd, iovec)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        self._device_failed(exc)
                        return
                    drained += 1
                    stats.read_packets += 1
                    stats.read_bytes += size - VNET_HDR_SIZE
                    stats.dropped_no_peer += 1
                    if self.record_packets:
                        self._record_reads([memoryview(iovec[0])[:size]])
            finally:
                lock.release()
            if self._peer is not None:
                stop.wait(0.01)  # its pump is about to take the device
            elif drained < READ_BATCH:
                poller.poll()  # a packet, or stop()'s byte on the wake-up pipe

    @contextlib.contextmanager
    def _owning_device(self) -> Iterator[None]:
        """Hold the device for a pump, waking up for stop() at least twice a second."""
        while not self._device_lock.acquire(timeout=0.5):
            if self._stop.is_set():
                yield
                return
        try:
            yield
        finally:
            self._device_lock.release()

    def _finish(self, view: memoryview) -> list[bytes]:
        """Finish an offloaded read in software for a peer that takes plain packets only."""
        try:
            return resolve(view[:VNET_HDR_SIZE], view[VNET_HDR_SIZE:])
        except OffloadError as exc:
            self.stats.rejected["bad_offload"] += 1
            self._event("rejected", f"not sent: {exc}")
            return []

    def _fast_pump(self, peer: Peer) -> None:
        """Both directions for one peer, in one thread, without sleeping while there is work.

        Two threads (one per direction, as in the simple path) cost a thread wake-up and a
        GIL hand-over on every hop of a round trip; OpenVPN's single event loop does not pay
        them, and beat us on latency. So while a peer is connected this thread owns the device
        (``_device_lock``) and alternates non-blocking steps: receive and write, then read and
        send. A reply the kernel queued during our write is read in the same pass; when a pass
        found nothing to do, poll() says which side to try next.

        Sleeping is what costs: a trace (tracefs sched_switch and syscalls) of one ping showed
        about 30 us to wake a thread on an idle CPU, then 50-80 us of Python per hop while the
        caches are cold, against a few microseconds warm. So after sending what it read from
        the device, the pump keeps trying for ``SPIN_SECONDS``, calling sched_yield() in
        between so that the peer, ping and the kernel still get the CPU; the answer is then
        read by a warm thread instead of a woken one. Measured here (ping every 10 ms, all bench
        variants running, OpenVPN about 0.20 ms): median 0.27 ms with a 100 us spin, 0.22 ms
        with 300 us, 0.14-0.16 ms with 1 ms, no better with 2 ms; a busy loop without
        sched_yield() made it worse (2 ms), because on two cores it starves ping itself.

        Two refinements keep the threads of one round trip on one CPU, where waking them is
        cheap (docs/performance.md has the traces). The side that *answers* (it wrote into the
        device and sends back what the kernel replied) does not spin: its spinning made the
        CPU look busy when the next thread was woken, and the kernel put that one on the idle
        CPU instead. And the pump runs as SCHED_BATCH, which only means that being woken does
        not preempt the thread that woke it: ping then goes to sleep before the pump runs,
        instead of still occupying the CPU when the pump wakes the next thread. The price is
        CPU: at most 1 ms of a core after each request (a ping every 10 ms costs 0.08 of a core
        for both ends together, OpenVPN 0.01); an idle tunnel sleeps.

        Between the packets of a conversation (the last two packets from the device and the
        last from the peer all within ``KEEP_WARM_SECONDS``) the pump polls with a
        ``KEEP_WARM_TICK_MS`` timeout and runs its loop once on each tick, instead of sleeping
        until the next packet: a thread that ran a millisecond ago wakes faster and finds its
        code and data still in the caches. On a VM where waking an idle vCPU is slow this took
        the median RTT from 0.29-0.35 ms to 0.21-0.25 ms (OpenVPN 0.16-0.25 in the same runs),
        for at most 1,000 short wake-ups a second per end, only while traffic goes both ways;
        0.1 s after the conversation stops the pump sleeps again.

        Sends never block: what the socket does not take waits in ``pending``, and the device
        is not read until it is gone (back-pressure: the device's queue fills and the kernel
        drops, as a router does), so two endpoints sending to each other at full speed cannot
        deadlock.
        """
        stats = self.stats
        sock, session = peer.sock, peer.session
        sock.settimeout(None)  # blocking socket; every call below passes MSG_DONTWAIT
        dontwait = socket.MSG_DONTWAIT
        recv_into, sendmsg = sock.recv_into, sock.sendmsg
        device_fd, sock_fd = self.device.fileno(), sock.fileno()
        os.set_blocking(device_fd, False)
        rbuffer = bytearray(RECV_SIZE)
        rview = memoryview(rbuffer)
        buffers = [bytearray(READ_BUFFER) for _ in range(READ_BATCH)]
        iovecs = [[buffer] for buffer in buffers]
        views = [memoryview(buffer) for buffer in buffers]
        readv = os.readv
        poller = select.poll()
        poller.register(device_fd, select.POLLIN)
        poller.register(sock_fd, select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        stop = self._stop
        pending: list[Any] = []
        fatal = self._deliver(peer.early, stats)
        why = fatal or "closed by peer"
        frame_batch = self._batch_framer(peer)
        try_receive = try_read = True
        clock = time.monotonic
        yield_cpu = os.sched_yield
        last_work = last_from_peer = last_from_device = previous_from_device = 0.0
        awaiting_answer = False  # we sent what the device gave us; the peer's answer is due
        _prefer_batch_scheduling()
        while fatal is None and not peer.closed and not stop.is_set():
            busy = wrote = read = False
            # peer -> device
            try:
                size = recv_into(rbuffer, RECV_SIZE, dontwait) if try_receive else -1
            except BlockingIOError:
                size = -1
            except OSError as exc:
                why = f"receive failed: {exc}"
                break
            if size == 0:
                why = self._deliver(session.end_of_stream(), stats) or why
                break
            if size > 0:
                busy = True
                if self.record_packets:
                    fatal = self._deliver(session.receive(rview[:size]), stats)
                else:
                    packets, events = session.receive_packets(rview[:size])
                    if packets:
                        fatal = self._write_packets(packets)
                        wrote = True
                        awaiting_answer = False
                    if events and not fatal:
                        fatal = self._deliver(events, stats)
                if fatal:
                    why = fatal
                    break
            # device -> peer
            try:
                if pending:
                    pending = _send_some(sendmsg, pending, dontwait)
                if not pending and try_read:
                    # The first packet goes out at once (a lone ping should not wait for the
                    # read that finds the device empty); the rest of a burst goes in batches.
                    # The read buffers are not reused until ``pending`` is empty, so what the
                    # socket did not take yet may point into them without a copy.
                    size = readv(device_fd, iovecs[0])
                    busy = True
                    # Read right after our write: the kernel's reply to it, i.e. we answer.
                    awaiting_answer = not wrote
                    read = True
                    pending = _send_some(sendmsg, frame_batch([views[0][:size]]), dontwait)
                    batch: list[memoryview] = []
                    for index in range(1, READ_BATCH if not pending else 1):
                        try:
                            size = readv(device_fd, iovecs[index])
                        except BlockingIOError:
                            break
                        batch.append(views[index][:size])
                    if batch:
                        pending = _send_some(sendmsg, frame_batch(batch), dontwait)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    why = f"send failed: {exc}"
                else:
                    self._device_failed(exc)
                    why = "device gone"
                break
            if busy:
                try_receive = try_read = True
                last_work = clock()
                if wrote:
                    last_from_peer = last_work
                if read:
                    previous_from_device, last_from_device = last_from_device, last_work
                continue
            if awaiting_answer and clock() - last_work < SPIN_SECONDS:
                yield_cpu()
                continue
            poller.modify(device_fd, 0 if pending else select.POLLIN)
            poller.modify(sock_fd, select.POLLIN | (select.POLLOUT if pending else 0))
            try_receive = try_read = False
            # A conversation: the last two packets from the device and the last one from the
            # peer all came within the window (two stray packets that cross, such as the
            # router solicitations of two fresh devices, are not one).
            conversing = clock() - min(last_from_peer, previous_from_device) < KEEP_WARM_SECONDS
            ready = poller.poll(KEEP_WARM_TICK_MS if conversing else None)
            if not ready:  # a tick: run the data path once, finding nothing, and poll again
                try_receive = try_read = True
                continue
            for fd, _ in ready:
                if fd == sock_fd:
                    try_receive = True
                elif fd == device_fd:
                    try_read = True
        if stop.is_set():
            why = "stopped"
        self._drop_peer(peer, why)

    def _batch_framer(self, peer: Peer) -> Callable[[list[memoryview]], list[Any]]:
        """The function that frames batches of (virtio-net header + packet) reads for ``peer``,
        chosen once per connection.

        The common case, clear mode with a super-packet peer, is a tight closure: per packet an
        8-byte header and a view of the read buffer, no copy. Sealed frames, and peers that take
        plain packets, go through the session (:meth:`_frame_batch`).
        """
        if not (peer.vnet and not peer.session.sealed):
            return lambda batch: self._frame_batch(peer, batch)
        stats = self.stats
        pack = framing.HEADER.pack
        magic, version, gso = framing.MAGIC, framing.VERSION, int(framing.FrameType.GSO_DATA)
        overhead = framing.HEADER_SIZE
        record = self.record_packets

        def frame(batch: list[memoryview]) -> list[Any]:
            if record:
                self._record_reads(batch)
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

    def _frame_batch(self, peer: Peer, batch: list[memoryview]) -> list[Any]:
        """Frames for a sealed session or a peer without super-packets, through the session."""
        stats = self.stats
        stats.read_packets += len(batch)
        stats.read_bytes += sum(map(len, batch)) - VNET_HDR_SIZE * len(batch)
        if self.record_packets:
            self._record_reads(batch)
        pieces: list[Any] = []
        encode = peer.session.encode_packet
        for view in batch:
            try:
                if peer.vnet:
                    pieces.append(encode(view[VNET_HDR_SIZE:], view[:VNET_HDR_SIZE]))
                elif view[0] & 1 or view[1]:  # read before the offloads went off
                    pieces.extend(encode(p) for p in self._finish(view))
                else:
                    pieces.append(encode(view[VNET_HDR_SIZE:]))
            except framing.EncodeError as exc:
                stats.rejected["unsendable"] += 1
                self._event("rejected", f"not sent: {exc}", len(view))
        stats.frames_sent += len(pieces)
        stats.bytes_sent += sum(map(len, pieces))
        return pieces

    def _record_reads(self, batch: list[memoryview]) -> None:
        for view in batch:
            self._event("read", f"from {self.device.name}", len(view) - VNET_HDR_SIZE,
                        bytes(view[VNET_HDR_SIZE:]))

    def _write_packets(self, packets: list[tuple[Any, Any]]) -> str | None:
        """Write checked ``(packet, vnet_header)`` views from the decoder into the device.

        One writev() each: the header as it came (a plain packet gets an all-zero one), then
        the packet; no copy. The decoder already applied every check; what the kernel still
        refuses (a nonsensical virtio-net header: EINVAL) is counted by the careful path.
        """
        stats = self.stats
        writev = os.writev
        fd = self.device.fileno()
        count = nbytes = 0
        for packet, header in packets:
            try:
                writev(fd, (ZERO_HEADER if header is None else header, packet))
            except OSError:
                # counted there, once
                fatal = self._deliver([PacketReceived(bytes(packet), header and bytes(header))],
                                      stats)
                if fatal:
                    break
                continue
            count += 1
            nbytes += len(packet)
        else:
            fatal = None
        stats.frames_received += count
        stats.bytes_received += nbytes
        stats.written_packets += count
        stats.written_bytes += nbytes
        return fatal


def _prefer_batch_scheduling() -> None:
    """Make the calling thread SCHED_BATCH: same share of the CPU, but a wake-up of it does not
    preempt the thread that woke it (see ``Endpoint._fast_pump``). Best effort: no privilege
    is needed, and where the call is refused the thread simply stays SCHED_OTHER."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def _send_some(sendmsg: Callable[..., int], pieces: list[Any], flags: int) -> list[Any]:
    """One non-blocking sendmsg() of ``pieces``; returns what the socket did not take."""
    try:
        sent = sendmsg(pieces, (), flags)
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
