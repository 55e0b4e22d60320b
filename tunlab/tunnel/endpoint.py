"""The endpoint both server and client are: threads, peer, data paths, events."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tunlab.errors import TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.kernel.tun import OFFLOAD_FAST, TunDevice
from tunlab.packet.vnet import VNET_HDR_SIZE
from tunlab.proto import framing
from tunlab.proto.framing import (
    VNET_FEATURE,
    ProtocolError,
    RejectReason,
)
from tunlab.proto.session import Established, Session
from tunlab.runtime import ThreadGroup
from tunlab.tunnel.datapath import Datapath
from tunlab.tunnel.events import EventKind, TunnelEvent
from tunlab.tunnel.peer import Peer
from tunlab.tunnel.pump import FastPump
from tunlab.tunnel.stats import TunnelStats
from tunlab.tunnel.tuning import (
    MAX_BUSY_POLL_US,
    READ_BATCH,
    READ_BUFFER,
    READY_TIMEOUT,
    RECV_SIZE,
    SEND_TIMEOUT,
)

__all__ = ["Endpoint"]

log = logging.getLogger("tunlab.tunnel")
E = TypeVar("E", bound="Endpoint")


class Endpoint:
    """What server and client share: threads, the peer, both data paths, events and stats."""

    role = ""

    def __init__(self, device: TunDevice, *, namespace: Namespace | None = None,
                 record_packets: bool = False, max_events: int = 2000,
                 psk: bytes | None = None, offload: bool = True, busy_poll_us: int = 0) -> None:
        if not isinstance(busy_poll_us, int) or not 0 <= busy_poll_us <= MAX_BUSY_POLL_US:
            raise TunlabError(f"busy poll of {busy_poll_us!r} microseconds is outside "
                              f"0-{MAX_BUSY_POLL_US}",
                              "give a whole number of microseconds, e.g. --busy-poll 200; "
                              "0 (the default) sleeps right after the last packet")
        if busy_poll_us and not device.vnet_hdr:
            raise TunlabError("busy polling needs the fast path (a device opened with "
                              "vnet_hdr=True)", "drop --simple and -v, or --busy-poll")
        self.device = device
        # Fast path: after the last packet, keep polling this long before sleeping.
        self.busy_poll_us = busy_poll_us
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
        # The writer thread's kernel name (comm), unique on the machine: tracefs filters drops
        # by it, because inside a PID namespace (a container) writer_tid is not the host PID
        # tracefs records.
        self.writer_comm: str | None = None
        self._group = ThreadGroup(f"tunlab-{self.role}", on_failure=self._thread_failed,
                                  factory=namespace)
        self._stop = self._group.cancelled
        self._wake_fd = self._group.waker.fileno()
        self.datapath = Datapath(device, role=self.role, stats=self.stats,
                                 record_packets=record_packets, max_events=max_events,
                                 busy_poll_us=busy_poll_us, stopping=self._stop,
                                 wake_fd=self._wake_fd, on_device_failed=self._device_failed)
        self._shutdown_lock = threading.RLock()
        self._shut_down = False
        self._failure_raised = False
        self._peer: Peer | None = None
        self._peer_lock = threading.Lock()
        # Notified when a peer comes or goes and when the endpoint stops: start() and
        # wait_connected() sleep on it instead of polling ``connected``.
        self._peer_changed = threading.Condition(self._peer_lock)
        self._device_lock = threading.Lock()  # fast path: who reads the device right now
        self._started = False
        self._stop_callbacks: list[Callable[[], None]] = []

    # -- life cycle ------------------------------------------------------------------------
    def start(self: E, timeout: float = READY_TIMEOUT, *, wait: bool = True) -> E:
        """Start the threads and return once the endpoint is ready: a server when it listens,
        a client when its first handshake completed (unless ``wait=False``: then it returns at
        once and connects in the background, retrying).

        Returns self, so that ``with TunnelServer(...).start()`` reads well. A client that is
        not connected within ``timeout`` seconds stops (no retries go on behind the caller's
        back) and raises :class:`~tunlab.errors.TunlabError` naming the server's address and
        the last reason it was refused.
        """
        if self._started:
            return self
        self._started = True
        self._prepare()
        self._spawn(self._fast_device_reader if self.fast else self._device_reader,
                    "device-reader")
        if wait:
            self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Block until :meth:`start` may return; raise TunlabError (stopped) if never."""

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
            with self._peer_changed:
                self._peer_changed.notify_all()
            for callback in self._stop_callbacks:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a listener must not keep the tunnel running
                    log.exception("%s: on_stop callback failed", self.role)
            self._close_sockets()
            self._group.join(timeout)
            self._group.close()
            self._event(EventKind.STOPPED)

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

    def __enter__(self: E) -> E:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation -----------------------------------------------------------------------
    def events(self, kinds: set[str] | None = None) -> list[TunnelEvent]:
        """A copy of the recorded events, optionally only those of the given kinds."""
        return [e for e in list(self.datapath.events) if kinds is None or e.kind in kinds]

    @property
    def connected(self) -> bool:
        """True while a peer is connected (handshake done)."""
        return self._peer is not None

    @property
    def features(self) -> frozenset[str]:
        """The features negotiated with the current peer (empty when none is connected)."""
        peer = self._peer
        return peer.session.features if peer is not None else frozenset()

    def wait_connected(self, timeout: float = READY_TIMEOUT) -> bool:
        """Sleep until a peer is connected (True), or the endpoint stopped or ``timeout``
        passed (False). Woken by the connection itself, no polling."""
        with self._peer_changed:
            self._peer_changed.wait_for(lambda: self._peer is not None or self._stop.is_set(),
                                        timeout)
            return self._peer is not None

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``condition`` every 10 ms until it holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return condition()

    # -- internals -------------------------------------------------------------------------
    def _event(self, kind: EventKind, detail: str = "", size: int = 0,
               data: bytes | None = None) -> None:
        self.datapath.event(kind, detail, size, data)

    def _device_failed(self, reason: str) -> None:
        """The datapath saw the device fail: keep why, and stop the endpoint."""
        self.error = reason
        threading.Thread(target=self._shutdown, daemon=True).start()

    def _spawn(self, target: Callable[..., None], name: str, *args: Any,
               essential: bool = True) -> threading.Thread:
        """A thread of this endpoint; ``essential=False`` for one that serves one connection."""
        return self._group.spawn(target, name, *args, essential=essential)

    def _thread_failed(self, name: str, exc: Exception, essential: bool) -> None:
        """Called by the thread group for an unexpected exception (the group kept it)."""
        if essential:
            self.error = f"{name} failed: {exc!r}"
            log.error("%s: %s; stopping", self.role, self.error, exc_info=exc)
            self._event(EventKind.ERROR, self.error)
            threading.Thread(target=self._shutdown, daemon=True).start()
        else:
            log.error("%s: %s failed, that peer is dropped and the %s goes on: %r", self.role,
                      name, self.role, exc, exc_info=exc)
            self._event(EventKind.ERROR, f"{name}: {exc!r}")

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
                    self.datapath.device_failed(exc)
                    return
            self._forward_to_peer(batch)

    def _forward_to_peer(self, packets: list[bytes]) -> None:
        stats = self.stats
        for packet in packets:
            stats.read_packets += 1
            stats.read_bytes += len(packet)
            if self.record_packets:
                self._event(EventKind.READ, f"from {self.device.name}", len(packet), packet)
        peer = self._peer
        if peer is None:
            stats.dropped_no_peer += len(packets)
            return
        frames = []
        for packet in packets:
            try:
                frame = peer.session.encode_packet(packet)
            except framing.EncodeError as exc:
                stats.rejected[RejectReason.UNSENDABLE] += 1
                self._event(EventKind.REJECTED, f"not sent: {exc}", len(packet))
                continue
            frames.append(frame)
            if self.record_packets:
                self._event(EventKind.SENT, "frame to peer", len(frame), frame)
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
                    self._event(EventKind.OFFLOAD, "super-packets on" if wanted else
                                "super-packets off: the peer takes plain packets")
                except OSError as exc:
                    self._event(EventKind.ERROR, f"TUNSETOFFLOAD failed: {exc}")
                    peer.vnet = False
        with self._peer_changed:
            old, self._peer = self._peer, peer
            self._peer_changed.notify_all()
        if old is not None:
            old.close()
            self._event(EventKind.REPLACED, f"{old.address} replaced by {peer.address}")

    def _drop_peer(self, peer: Peer, why: str) -> None:
        with self._peer_changed:
            if self._peer is peer:
                self._peer = None
                self._peer_changed.notify_all()
        if not peer.closed:
            peer.close()
            self.stats.disconnects += 1
            self._event(EventKind.DISCONNECTED, f"{peer.address}: {why}")
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
                    self._refuse(sock, address, RejectReason.HANDSHAKE_TIMEOUT,
                                 f"no hello within {timeout:.0f} s")
                    return None
                if not self._wait_readable(sock, left):
                    if self._stop.is_set():
                        sock.close()
                        return None
                    continue
                data = sock.recv(RECV_SIZE)
                if not data:
                    self._refuse(sock, address, RejectReason.CLOSED_IN_HANDSHAKE,
                                 "peer closed before its hello")
                    return None
                for event in session.receive(data):
                    if isinstance(event, ProtocolError):
                        try:  # best effort: tell the peer why (e.g. auth_failed), never block
                            sock.send(session.data_to_send(), socket.MSG_DONTWAIT)
                        except OSError:
                            pass
                        self._refuse(sock, address, event.reason, event.detail)
                        return None
                    if isinstance(event, Established):
                        self._event(EventKind.ESTABLISHED, f"{address} features "
                                    f"{sorted(event.features)}")
                    else:
                        early.append(event)
                out = session.data_to_send()
                if out:
                    sock.sendall(out)
        except OSError as exc:
            self._refuse(sock, address, RejectReason.SOCKET_ERROR, str(exc))
            return None
        peer = Peer(sock, session, address)
        peer.early = early
        return peer

    def _refuse(self, sock: socket.socket, address: Any, reason: RejectReason,
                detail: str) -> None:
        self.stats.rejected[reason] += 1
        self._event(EventKind.REJECTED, f"{address}: {reason}: {detail}")
        log.warning("%s: rejected %s: %s (%s)", self.role, address, reason, detail)
        try:
            sock.close()
        except OSError:
            pass
        return None

    def _receive_loop(self, peer: Peer) -> None:
        """Peer -> device until the connection ends."""
        self.writer_tid = threading.get_native_id()
        self.writer_comm = _name_writer_thread()
        if self.fast:
            with self._owning_device():
                why = FastPump(self.datapath, peer).run()
            self._drop_peer(peer, why)
            return
        stats = self.stats
        sock = peer.sock
        fatal = self.datapath.deliver(peer.early, stats)
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
                why = self.datapath.deliver(peer.session.end_of_stream(), stats) or why
                break
            fatal = self.datapath.deliver(peer.session.receive(data), stats)
            if fatal:
                why = fatal
                break
        self._drop_peer(peer, why)

    # -- the fast path (device opened with vnet_hdr) ------------------------------------------
    def _fast_device_reader(self) -> None:
        """While no peer is connected: drain and count what the kernel routes into the device.

        Once a peer is connected its pump (:class:`~tunlab.tunnel.pump.FastPump`) owns the
        device and this thread reads nothing: it waits for the device lock, so a packet is never
        read by one thread and sent by another.
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
                        self.datapath.device_failed(exc)
                        return
                    drained += 1
                    stats.read_packets += 1
                    stats.read_bytes += size - VNET_HDR_SIZE
                    stats.dropped_no_peer += 1
                    if self.record_packets:
                        self.datapath.record_reads([memoryview(iovec[0])[:size]])
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


def _name_writer_thread() -> str | None:
    """Give the calling thread a unique kernel name (``tlw`` + 12 hex digits); None if the
    kernel refuses."""
    import secrets

    from tunlab.kernel.tracefs import name_this_thread

    comm = f"tlw{secrets.token_hex(6)}"
    try:
        name_this_thread(comm)
    except OSError:
        return None
    return comm
