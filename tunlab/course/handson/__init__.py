"""Lesson 09's exercises where participants write the code: a TUN reader, an echo reply and a
tunnel loop, each run in the real lab under a time limit and judged by the kernel.

The participant's function never runs on the notebook's own thread: :class:`Worker` runs it on
a daemon thread with a deadline, and when the deadline passes it raises :class:`TimeLimit`
inside that thread and wakes any blocking read (a ping into the device, a socket shutdown), so
a loop that never returns cannot hang the notebook. Each check gives one line saying what went
wrong (or what the kernel counted when it worked). The pure diagnosis of a result
(:func:`diagnose_read`, :func:`diagnose_reply`) needs no root.

Importing this module registers the exercises ``"09a"``, ``"09b"``, ``"09c"`` and (from
:mod:`tunlab.course.handson.loss`: a UDP tunnel loop, raced against the TCP one under loss)
``"09d"``
with :mod:`tunlab.course`, so ``course.check("09b", make_reply, lesson)`` works as for other
lessons.
"""

from __future__ import annotations

import ctypes
import fcntl
import html
import inspect
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunlab import course
from tunlab.kernel.host import is_privileged
from tunlab.kernel.netns import Namespace
from tunlab.kernel.tun import IFF_NO_PI, IFF_TUN, TUNSETIFF

__all__ = [
    "Outcome", "TimeLimit", "Verdict", "Worker", "check_pump", "check_reader", "check_reply",
    "counter_panel", "diagnose_read", "diagnose_reply", "make_reply", "open_tun", "pump",
    "read_ping", "reference", "run_limited", "solution",
]  # and 09d's names from handson_loss, at the end

PING_TARGET = "10.0.0.2"
LAB_SOURCE = "10.0.0.1"
READ_LIMIT = 5.0  # seconds a participant's read_ping may take (the ping arrives within ~0.1 s)
REPLY_LIMIT = 2.0  # seconds for one make_reply call
PUMP_SECONDS = 6.0  # how long the two pumps may run in total
STOP_GRACE = 1.0  # after the deadline: how long a stopped thread may take to end
PI_IPV4 = b"\x00\x00\x08\x00"  # struct tun_pi {flags 0, proto ETH_P_IP}


# -- the safe runner -----------------------------------------------------------------------------

class TimeLimit(BaseException):  # noqa: N818 - it is raised *into* a thread, like KeyboardInterrupt
    """Raised inside a participant's thread when its time is up (BaseException, so that a
    bare ``except Exception`` in their loop does not swallow it)."""


@dataclass(frozen=True)
class Outcome:
    """How a participant's call ended: a value, an exception, or stopped at the deadline."""

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    still_running: bool = False
    """True when the thread did not end even after it was stopped (blocked in a system call
    that nothing woke); it is a daemon thread and ends with the kernel."""

    @property
    def ok(self) -> bool:
        """True when the call returned normally in time."""
        return self.error is None and not self.timed_out


class Worker:
    """A participant's function on a daemon thread, with a way to stop it at a deadline."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "participant") -> None:
        self._fn, self._args = fn, args
        self._value: Any = None
        self._error: BaseException | None = None
        self.ended_at = float("inf")
        """When the function returned or raised (time.monotonic()); inf while it runs."""
        self._thread = threading.Thread(target=self._body, name=f"tunlab-{name}", daemon=True)

    def _body(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as exc:  # noqa: BLE001 - reported to the participant, not raised
            self._error = exc
        finally:
            self.ended_at = time.monotonic()

    def start(self) -> Worker:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True while the function has not returned."""
        return self._thread.is_alive()

    def finish(self, timeout: float, nudge: Callable[[], None] | None = None) -> Outcome:
        """Wait up to ``timeout`` seconds; then stop the thread: raise :class:`TimeLimit` in it,
        call ``nudge()`` to wake a blocking read, and wait :data:`STOP_GRACE` more."""
        self._thread.join(max(0.0, timeout))
        if not self._thread.is_alive():
            return Outcome(self._value, self._error)
        _raise_in(self._thread, TimeLimit)
        if nudge is not None:
            try:
                nudge()
            except Exception:  # noqa: BLE001 - waking is best effort; the verdict stands
                pass
        self._thread.join(STOP_GRACE)
        return Outcome(timed_out=True, still_running=self._thread.is_alive())


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(exc_type))


def run_limited(fn: Callable[..., Any], *args: Any, timeout: float,
                nudge: Callable[[], None] | None = None) -> Outcome:
    """Call ``fn(*args)`` on a worker thread and give up after ``timeout`` seconds (see
    :meth:`Worker.finish`). Never raises what ``fn`` raises: it is in the :class:`Outcome`."""
    return Worker(fn, *args).start().finish(timeout, nudge)


def _limit_message(what: str, outcome: Outcome, seconds: float) -> str:
    tail = (" It is still blocked in a system call; restart the kernel if it holds a device."
            if outcome.still_running else " It was stopped.")
    return f"{what} did not return within {seconds:.0f} s.{tail}"


def _error_message(what: str, outcome: Outcome) -> str:
    exc = outcome.error
    why = (" (the kernel refuses to take anything but an IP packet from a TUN fd: is a "
           "length prefix or header still in front?)"
           if isinstance(exc, OSError) and exc.errno == 22 else "")
    return f"{what} raised {type(exc).__name__}: {exc}{why}"


# -- opening a TUN device (shown to participants) ------------------------------------------------

def open_tun(name: str, no_pi: bool = True) -> int:
    """Attach to the TUN device ``name`` of the calling thread's namespace; returns the fd.

    Exactly the two system calls a VPN program makes: ``open("/dev/net/tun")`` and the
    ``TUNSETIFF`` ioctl with ``IFF_TUN`` (a layer-3 device) and, unless ``no_pi=False``,
    ``IFF_NO_PI`` (no 4-byte packet-information header before each packet).
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    flags = IFF_TUN | (IFF_NO_PI if no_pi else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


# -- reference solutions (shown folded by solution()) --------------------------------------------

def read_ping(fd: int) -> bytes:
    """Reference for 09a: the first IPv4 packet read from ``fd`` (IPv6 ones are skipped)."""
    for _ in range(100):  # new devices also send IPv6 router solicitations
        packet = os.read(fd, 2048)  # one read() = one whole packet
        if packet and packet[0] >> 4 == 4:
            return packet
    raise TimeoutError("no IPv4 packet among the first 100")


def make_reply(request: bytes) -> bytes:
    """Reference for 09b: the ICMP echo reply to the echo request ``request`` (an IPv4 packet)."""
    from scapy.layers.inet import ICMP, IP

    ip = IP(request)
    echo = ip[ICMP]
    reply = (IP(src=ip.dst, dst=ip.src)
             / ICMP(type=0, id=echo.id, seq=echo.seq)
             / bytes(echo.payload))
    return bytes(reply)  # bytes() fills in lengths and both checksums


def pump(tun_fd: int, sock: socket.socket) -> None:
    """Reference for 09c: forward packets both ways until the peer closes ``sock``; each packet
    crosses the stream socket as a 2-byte big-endian length, then the packet."""
    buffer = b""
    while True:
        ready, _, _ = select.select([tun_fd, sock], [], [], 1.0)
        if tun_fd in ready:
            packet = os.read(tun_fd, 2048)
            sock.sendall(struct.pack("!H", len(packet)) + packet)
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return  # the peer closed the connection
            buffer += data
            while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack("!H", buffer[:2])[0]:
                size = struct.unpack("!H", buffer[:2])[0]
                os.write(tun_fd, buffer[2:2 + size])  # a stream may split or join frames
                buffer = buffer[2 + size:]


_REFERENCES: dict[str, Callable[..., Any]] = {"09a": read_ping, "09b": make_reply, "09c": pump}


def reference(exercise: str) -> Callable[..., Any]:
    """The reference solution of ``exercise`` ("09a", "09b", "09c" or "09d")."""
    return _REFERENCES[exercise]


def solution(exercise: str) -> course.Note:
    """The reference solution's source, folded (click to open): the last resort after the
    hints."""
    source = inspect.getsource(_REFERENCES[exercise])
    return course.Note(
        f'<details class="tunlab-hint"><summary>Reference solution for {exercise} (try the '
        f"hints first)</summary><pre>{html.escape(source)}</pre></details>",
        f"Reference solution for {exercise}:\n{source}")


# -- verdicts ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """A check's result: ``ok`` and one line for the participant; ``counters`` are the kernel's
    counter deltas the verdict rests on."""

    ok: bool
    message: str
    counters: dict[str, int] = field(default_factory=dict)

    def pair(self) -> tuple[bool, str]:
        """``(ok, message)`` as :class:`tunlab.course.Exercise` verifiers return it."""
        return self.ok, self.message


def _as_bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if hasattr(value, "build") and callable(value.build):  # a scapy packet
        return bytes(value)
    return None


def diagnose_read(value: Any) -> str | None:
    """What is wrong with what a ``read_ping`` returned (None: it is a whole IPv4 echo request
    from 10.0.0.1 to 10.0.0.2). Pure: no root, no lab."""
    from scapy.layers.inet import ICMP, IP

    data = _as_bytes(value)
    if data is None:
        return (f"read_ping returned {type(value).__name__}, not bytes: return what "
                "os.read(fd, 2048) gave you")
    if not data:
        return "read_ping returned no bytes"
    if data[:4] == PI_IPV4 and len(data) > 4 and data[4] >> 4 == 4:
        return "the 4-byte PI header is still there: did you set IFF_NO_PI?"
    if data[0] >> 4 == 6:
        return ("you returned an IPv6 packet (the router solicitation a new device sends): "
                "skip packets whose first 4 bits are not 4")
    if data[0] >> 4 != 4 or len(data) < 20:
        return f"that is not an IPv4 packet (first byte 0x{data[0]:02x}, {len(data)} bytes)"
    total = struct.unpack("!H", data[2:4])[0]
    if len(data) < total:
        return (f"you read only {len(data)} of the packet's {total} bytes: read with a buffer "
                "as large as the MTU (os.read(fd, 2048))")
    ip = IP(data)
    if not ip.haslayer(ICMP) or ip[ICMP].type != 8:
        return f"that IPv4 packet is not the echo request: {ip.summary()}"
    if (ip.src, ip.dst) != (LAB_SOURCE, PING_TARGET):
        return (f"that echo request is {ip.src} -> {ip.dst}, not ping's "
                f"{LAB_SOURCE} -> {PING_TARGET}")
    return None


def _checksum_ok(header: bytes) -> bool:
    if len(header) % 2:
        header += b"\x00"
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def diagnose_reply(request: bytes, value: Any) -> str | None:
    """What is wrong with ``value`` as the echo reply to ``request`` (None: a correct reply).
    Pure: no root, no lab."""
    from scapy.layers.inet import ICMP, IP

    data = _as_bytes(value)
    if data is None:
        return f"make_reply returned {type(value).__name__}, not bytes: return bytes(packet)"
    if not data:
        return "make_reply returned no bytes, so nothing was written to mytun"
    if data[:4] == PI_IPV4 and len(data) > 4:
        return ("your reply starts with a 4-byte PI header: the device was opened with "
                "IFF_NO_PI, write the bare IP packet")
    if len(data) < 28 or data[0] >> 4 != 4:
        return f"your reply is not an IPv4 packet with an ICMP header ({len(data)} bytes)"
    ihl = (data[0] & 0x0F) * 4
    if struct.unpack("!H", data[2:4])[0] != len(data):
        return (f"the IP total length field says {struct.unpack('!H', data[2:4])[0]} but the "
                f"packet has {len(data)} bytes: let scapy compute it (delete len)")
    if not _checksum_ok(data[:ihl]):
        return "your reply has the wrong IP header checksum: delete chksum so scapy recomputes it"
    req, rep = IP(request), IP(data)
    if (rep.src, rep.dst) != (req.dst, req.src):
        return (f"your reply goes {rep.src} -> {rep.dst}: swap the request's addresses "
                f"({req.dst} -> {req.src})")
    if rep.proto != 1 or not rep.haslayer(ICMP):
        return f"your reply carries IP protocol {rep.proto}, not ICMP (1)"
    if rep[ICMP].type != 0:
        return (f"your reply has ICMP type {rep[ICMP].type}: an echo reply has type 0 "
                "(8 is the request)")
    if not _checksum_ok(data[ihl:]):
        return "your reply has the wrong ICMP checksum"
    if (rep[ICMP].id, rep[ICMP].seq) != (req[ICMP].id, req[ICMP].seq):
        return ("your reply's ICMP id/seq differ from the request's: ping ignores replies "
                "that do not match its own")
    if bytes(rep[ICMP].payload) != bytes(req[ICMP].payload):
        return "your reply's payload differs from the request's: ping checks that it comes back"
    return None


# -- the kernel's counters -----------------------------------------------------------------------

def _link_counters(ns: Namespace, dev: str) -> dict[str, int]:
    """``dev``'s packet, drop and error counters both ways, named for the checks' feedback
    ("mytun rx dropped"), read as :mod:`tunlab.kernel.drops` reads every device counter."""
    from tunlab.kernel.counters import link_counters

    counters = link_counters(ns)
    return {f"{dev} {way} {key}": counters.get(f"{dev}.{way}_{key}", 0)
            for way in ("rx", "tx") for key in ("packets", "dropped", "errors")}


def _snmp(ns: Namespace) -> dict[str, int]:
    """/proc/net/snmp of ``ns`` (UdpInDatagrams, TcpOutSegs...), read and named as
    :mod:`tunlab.kernel.drops` reads every counter; without netstat's TcpExt, which the checks
    do not judge."""
    from tunlab.kernel.counters import _parse_snmp, _read_proc_net

    return _parse_snmp(_read_proc_net(ns, ("snmp",))["snmp"])


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _ping(ns: Namespace, target: str, count: int = 1) -> subprocess.Popen[Any]:
    return ns.popen(["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", target],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(process: subprocess.Popen[Any], timeout: float) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


def _nudge_ping(ns: Namespace, target: str) -> Callable[[], None]:
    """A packet routed into the device wakes a read blocked on it (so TimeLimit can land)."""
    def nudge() -> None:
        ns.exec(["ping", "-n", "-c", "1", "-W", "1", target], check=False, timeout=3)
    return nudge


# -- 09a: your own TUN reader --------------------------------------------------------------------

def check_reader(read_ping: Callable[[int], Any], lab: Any) -> Verdict:
    """Attach to mytun in ``lab`` (a :class:`tunlab.lab.SeedLab`) with IFF_TUN|IFF_NO_PI, run
    ``ping -c1 10.0.0.2`` and call ``read_ping(fd)`` with a time limit; the result must be the
    ping's echo request, which the kernel must have counted as handed to a reader."""
    ns = lab.ns
    device = lab.device("mytun")
    try:
        before = _link_counters(ns, "mytun")
        ping = _ping(ns, PING_TARGET)
        outcome = run_limited(read_ping, device.fileno(), timeout=READ_LIMIT,
                              nudge=_nudge_ping(ns, PING_TARGET))
        _wait(ping, 5)
    finally:
        device.close()
    counters = _delta(_link_counters(ns, "mytun"), before)
    if outcome.timed_out:
        return Verdict(False, _limit_message("read_ping", outcome, READ_LIMIT), counters)
    if outcome.error is not None:
        return Verdict(False, _error_message("read_ping", outcome), counters)
    problem = diagnose_read(outcome.value)
    if problem:
        return Verdict(False, problem, counters)
    if counters.get("mytun tx packets", 0) < 1:
        return Verdict(False, "the kernel counted no packet handed to a reader of mytun",
                       counters)
    from scapy.layers.inet import ICMP, IP

    ip = IP(_as_bytes(outcome.value))
    return Verdict(True, f"You read ping's echo request {ip.src} -> {ip.dst} (id "
                   f"{ip[ICMP].id:#06x}, seq {ip[ICMP].seq}, {ip.len} bytes); the kernel "
                   f"counted mytun tx packets +{counters['mytun tx packets']}.", counters)


# -- 09b: answer the ping yourself ---------------------------------------------------------------

@dataclass
class _Responder:
    """What happened while the participant's make_reply answered ping's requests."""

    requests: int = 0
    written: int = 0
    problem: str = ""


def _answer(fd: int, make_reply: Callable[[bytes], Any], ping: subprocess.Popen[Any],
            deadline: float) -> _Responder:
    from scapy.layers.inet import ICMP, IP

    seen = _Responder()
    while ping.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        request = os.read(fd, 65535)
        if not request or request[0] >> 4 != 4:
            continue  # IPv6 router solicitations of the new device
        ip = IP(request)
        if not ip.haslayer(ICMP) or ip[ICMP].type != 8:
            continue
        seen.requests += 1
        outcome = run_limited(make_reply, request, timeout=REPLY_LIMIT)
        if outcome.timed_out:
            seen.problem = _limit_message("make_reply", outcome, REPLY_LIMIT)
            return seen
        if outcome.error is not None:
            seen.problem = _error_message("make_reply", outcome)
            return seen
        seen.problem = seen.problem or diagnose_reply(request, outcome.value) or ""
        reply = _as_bytes(outcome.value)
        if reply:
            try:
                os.write(fd, reply)
                seen.written += 1
            except OSError as exc:
                seen.problem = seen.problem or (
                    f"the kernel refused your reply ({exc.strerror}): is it an IPv4 packet?")
    return seen


def check_reply(make_reply: Callable[[bytes], Any], lab: Any) -> Verdict:
    """Attach to mytun in ``lab``, run ``ping -c1 -W2 10.0.0.2`` and answer each echo request
    read from mytun with ``make_reply(request)`` written back into mytun. Right when ping
    exits 0 and the kernel counted the reply (Icmp InEchoReps, mytun rx packets)."""
    ns = lab.ns
    device = lab.device("mytun")
    try:
        before = {**_link_counters(ns, "mytun"), **_snmp(ns)}
        ping = _ping(ns, PING_TARGET)
        seen = _answer(device.fileno(), make_reply, ping, time.monotonic() + 4)
        code = _wait(ping, 5)
    finally:
        device.close()
    counters = _delta({**_link_counters(ns, "mytun"), **_snmp(ns)}, before)
    replies = counters.get("IcmpInEchoReps", 0)
    if code == 0 and replies >= 1:
        return Verdict(True, f"ping 10.0.0.2 succeeded with your reply: the kernel counted "
                       f"Icmp InEchoReps +{replies}, mytun rx packets "
                       f"+{counters.get('mytun rx packets', 0)}.", counters)
    moved = ", ".join(f"{k} +{v}" for k, v in counters.items()
                      if "Err" in k or "dropped" in k or "errors" in k)
    kernel = f" (the kernel counted {moved})" if moved else ""
    if seen.problem:
        return Verdict(False, seen.problem + kernel, counters)
    if seen.requests == 0:
        return Verdict(False, "no echo request reached mytun (ping could not send)", counters)
    if seen.written == 0:
        return Verdict(False, "nothing was written to mytun", counters)
    return Verdict(False, f"ping got no reply (exit code {code}){kernel}", counters)


# -- 09c: your own tunnel loop -------------------------------------------------------------------

def _pump_problem(counters: dict[str, int]) -> str:
    a_read, b_written = counters.get("a tun0 tx packets", 0), counters.get("b tun0 rx packets", 0)
    b_read, a_written = counters.get("b tun0 tx packets", 0), counters.get("a tun0 rx packets", 0)
    if a_read == 0:
        return "your pump never read the echo request from a's tun0 (a tun0 tx packets +0)"
    if b_written == 0:
        return ("the echo request was read from a's tun0 but nothing was written to b's tun0: "
                "check socket -> tun (recv, unframe, os.write)")
    if b_read == 0:
        return ("b's tun0 received the request but the kernel sent no reply: was the packet "
                "written whole, without your length prefix?")
    if a_written == 0:
        return ("b's reply was read from b's tun0 but nothing was written to a's tun0: the "
                "reply direction is missing")
    return "packets crossed both ways but ping saw no reply: are they written unchanged?"


def check_pump(pump: Callable[[int, socket.socket], Any], lab_factory: Callable[[], Any] | None
               = None) -> Verdict:
    """Two hosts (a: tun0 10.9.0.1, b: tun0 10.9.0.2, a fresh :class:`tunlab.lab.TwoHostLab`),
    each running ``pump(tun_fd, sock)`` on one end of a socket pair; ``ping 10.9.0.2`` from a
    must succeed. Both pumps are stopped by closing the sockets, or at the time limit."""
    from tunlab.lab import READY_TIMEOUT, TwoHostLab, _wait_running

    lab = (lab_factory or (lambda: TwoHostLab(label="pump")))()
    with lab:
        devices = {name: lab.open_device(ns, "tun0") for name, ns in (("a", lab.a),
                                                                       ("b", lab.b))}
        for ns in (lab.a, lab.b):
            ns.run(_wait_running, "tun0", READY_TIMEOUT)
        before = {f"{name} {k}": v for name, ns in (("a", lab.a), ("b", lab.b))
                  for k, v in _link_counters(ns, "tun0").items()}
        sock_a, sock_b = socket.socketpair()
        workers = {name: Worker(pump, devices[name].fileno(), sock, name=f"pump-{name}").start()
                   for name, sock in (("a", sock_a), ("b", sock_b))}
        code = _wait(_ping(lab.a, "10.9.0.2", count=2), PUMP_SECONDS)
        closed_at = time.monotonic()
        early = {name: w.ended_at < closed_at for name, w in workers.items()}
        for sock in (sock_a, sock_b):
            sock.shutdown(socket.SHUT_RDWR)  # a pump returns when its peer is gone
        outcomes = {name: w.finish(STOP_GRACE, _nudge_ping(lab.a if name == "a" else lab.b,
                                                           "10.9.0.2" if name == "a" else
                                                           "10.9.0.1"))
                    for name, w in workers.items()}
        for sock in (sock_a, sock_b):
            sock.close()
        after = {f"{name} {k}": v for name, ns in (("a", lab.a), ("b", lab.b))
                 for k, v in _link_counters(ns, "tun0").items()}
        lab.close_devices()
    counters = _delta(after, before)
    # after the sockets were closed, an OSError from send/recv is the expected way out
    errors = [(n, o) for n, o in outcomes.items() if o.error is not None
              and (early[n] or not isinstance(o.error, OSError))]
    if code == 0:
        note = "" if all(o.ok for o in outcomes.values()) else (
            " (Your pump did not return when the socket closed: return when recv() gives b''.)")
        return Verdict(True, "ping 10.9.0.2 crossed your tunnel: a tun0 read "
                       f"+{counters.get('a tun0 tx packets', 0)}, b tun0 written "
                       f"+{counters.get('b tun0 rx packets', 0)}, and back." + note, counters)
    if errors:
        name, outcome = errors[0]
        return Verdict(False, _error_message(f"the pump on host {name}", outcome), counters)
    return Verdict(False, _pump_problem(counters), counters)


# -- registration with the course ----------------------------------------------------------------

def _lab_of(lesson: Any) -> Any:
    if lesson is None or not getattr(lesson, "live", False) or not is_privileged():
        return None
    return lesson.ensure_lab() if hasattr(lesson, "ensure_lab") else getattr(lesson, "lab", None)


NEEDS_LAB = (f"this check runs your code in the lab, which needs root: start it with "
             f"`{course.START_HINT}`")


def _verify(checker: Callable[..., Verdict], seed_lab: bool) -> Callable[[Any, Any],
                                                                          tuple[bool, str]]:
    def verify(answer: Any, lesson: Any) -> tuple[bool, str]:
        if not callable(answer):
            return False, f"answer with your function itself (not {type(answer).__name__})"
        if not is_privileged() or (seed_lab and _lab_of(lesson) is None):
            return False, NEEDS_LAB
        return checker(answer, _lab_of(lesson)).pair() if seed_lab else checker(answer).pair()
    return verify


EXERCISES: dict[str, course.Exercise] = {
    "09a": course.Exercise(
        "Write read_ping(fd) -> bytes: read from the TUN fd (opened with IFF_TUN|IFF_NO_PI) "
        "until an IPv4 packet comes, and return it. The check runs ping 10.0.0.2 meanwhile.",
        [],
        ["One os.read(fd, size) returns exactly one packet; a size of 2048 is enough here.",
         "A new device also sends IPv6 router solicitations: the first 4 bits of an IPv4 "
         "packet are 4 (packet[0] >> 4).",
         "Loop: read, return the packet if packet[0] >> 4 == 4. Still stuck? Run "
         "handson.solution('09a')."],
        verify=_verify(check_reader, seed_lab=True)),
    "09b": course.Exercise(
        "Write make_reply(request: bytes) -> bytes: the ICMP echo reply to ping's echo "
        "request. The check writes it into mytun while ping -c1 10.0.0.2 waits for it.",
        [],
        ["scapy: ip = IP(request); the reply goes from ip.dst to ip.src.",
         "An echo reply is ICMP type 0 with the request's id, seq and payload.",
         "bytes(IP(...)/ICMP(...)/payload) computes lengths and checksums for you. Still "
         "stuck? Run handson.solution('09b')."],
        verify=_verify(check_reply, seed_lab=True)),
    "09c": course.Exercise(
        "Write pump(tun_fd, sock): forward every packet read from tun_fd to sock, and every "
        "packet received on sock to tun_fd, until sock is closed. The check runs your pump on "
        "two hosts joined by a socket pair and pings 10.9.0.2 from 10.9.0.1.",
        [],
        ["select.select([tun_fd, sock], [], [], 1.0) tells you which side has data.",
         "A stream socket does not keep packet boundaries: send a length before each packet "
         "(struct.pack('!H', len(packet))) and collect bytes until a whole packet is there.",
         "recv() returning b'' means the peer closed: return. Still stuck? Run "
         "handson.solution('09c')."],
        verify=_verify(check_pump, seed_lab=False)),
}

for _key, _exercise in EXERCISES.items():
    course.register_exercise(_key, _exercise)


# -- a counter view for the lesson ---------------------------------------------------------------

def counter_panel(lesson: Any, device: str = "mytun") -> Any:
    """A lab panel (:class:`tunlab.course.panels.base.LabPanel`, with *reset lab* and the
    kernel log): the kernel's counters of ``device`` in the lesson's lab, and a refresh button
    that shows the change since the last refresh (what your code made the kernel count).

    Headless: ``panel.refresh_button.click()``, then ``panel.last_counters``.
    """
    import ipywidgets as w

    from tunlab.course.panels.base import LabPanel

    class CounterPanel(LabPanel, w.VBox):
        def __init__(self) -> None:
            self.device = device
            self.last_counters: dict[str, int] = {}
            self.refresh_button = w.Button(description="refresh counters", icon="refresh")
            self.view = w.HTML()
            self._setup_panel(lesson)
            self.refresh_button.on_click(self.guarded(lambda _b: self.refresh()))
            super().__init__([self.refresh_button, self.view, self.bar])
            self.refresh()

        def refresh(self) -> None:
            lab = _lab_of(self.lesson)
            if lab is None:
                self.view.value = f"<i>{html.escape(NEEDS_LAB)}</i>"
                return
            now = _link_counters(lab.ns, self.device)
            last = self.last_counters
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td>"
                           f"<td>{'+' + str(v - last[k]) if k in last else ''}</td></tr>"
                           for k, v in now.items())
            self.last_counters = now
            self.view.value = ("<table><tr><th>counter</th><th>value</th><th>since last "
                               f"refresh</th></tr>{rows}</table>")

        def reset_view(self) -> None:
            self.last_counters = {}
            self.view.value = ""

    return CounterPanel()


# -- 09d: the UDP tunnel and the race under loss (its own module; registers itself) -------------

from tunlab.course.handson import loss as _loss  # noqa: E402 - it uses the names above

_LOSS_NAMES = frozenset({"Race", "TunnelRun", "check_udp_pump", "race", "race_tunnels",
                         "udp_pump"})
__all__ += sorted(_LOSS_NAMES)


def __getattr__(name: str) -> Any:
    # Looked up on use, not copied at import: either module may be imported first.
    if name in _LOSS_NAMES:
        return getattr(_loss, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
