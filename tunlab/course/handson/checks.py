"""Lesson 09's checks (a) to (c): each runs the participant's function in the real lab under a
time limit, with the reference's peer on the other side, and asks :mod:`.judge` what the
kernel's counters and the packets say. Importing this module registers the exercises with
:mod:`tunlab.course`.
"""

from __future__ import annotations

import html
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunlab import course
from tunlab.course.handson.judge import (
    Verdict,
    _as_bytes,
    _error_message,
    _limit_message,
    _pump_problem,
    diagnose_read,
    diagnose_reply,
)
from tunlab.course.handson.runner import (
    NEEDS_LAB,
    PING_TARGET,
    PUMP_SECONDS,
    READ_LIMIT,
    REPLY_LIMIT,
    STOP_GRACE,
    Worker,
    _lab_of,
    _link_counters,
    _nudge_ping,
    _ping,
    _snmp,
    _wait,
    run_limited,
)
from tunlab.kernel.counters import counter_delta
from tunlab.kernel.host import is_privileged

__all__ = ["check_pump", "check_reader", "check_reply", "counter_panel", "EXERCISES"]


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
    counters = counter_delta(before, _link_counters(ns, "mytun"))
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

    ip = IP(_as_bytes(outcome.value) or b"")
    return Verdict(True, f"You read ping's echo request {ip.src} -> {ip.dst} (id "
                   f"{ip[ICMP].id:#06x}, seq {ip[ICMP].seq}, {ip.len} bytes); the kernel "
                   f"counted mytun tx packets +{counters['mytun tx packets']}.", counters)


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
    counters = counter_delta(before, {**_link_counters(ns, "mytun"), **_snmp(ns)})
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


def check_pump(pump: Callable[[int, socket.socket], Any], lab_factory: Callable[[], Any] | None
               = None) -> Verdict:
    """Two hosts (a: tun0 10.9.0.1, b: tun0 10.9.0.2, a fresh :class:`tunlab.lab.TwoHostLab`),
    each running ``pump(tun_fd, sock)`` on one end of a socket pair; ``ping 10.9.0.2`` from a
    must succeed. Both pumps are stopped by closing the sockets, or at the time limit."""
    from tunlab.lab.topology import READY_TIMEOUT, TwoHostLab, _wait_running

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
    counters = counter_delta(before, after)
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
