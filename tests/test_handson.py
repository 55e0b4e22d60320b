"""Lesson 09's checkers run a participant's code in the real lab: the reference solutions pass
(the kernel's ping succeeds and its counters move), typical mistakes fail with the message that
names them, and code that never returns is stopped by the time limit. The diagnosis of a result
and the time limit itself are pure and run without root."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from scapy.layers.inet import ICMP, IP

from tunlab import course, handson
from tunlab.lab import SeedLab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "09-write-your-own.ipynb"
pure = pytest.mark.pure


def _request() -> bytes:
    return bytes(IP(src="10.0.0.1", dst="10.0.0.2", id=7) / ICMP(type=8, id=0x1234, seq=3)
                 / bytes(range(56)))


def _corrupt(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0xFF
    return bytes(out)


# -- pure: what a result gets told ---------------------------------------------------------

@pure
def test_reference_reply_is_a_correct_reply():
    request = _request()
    reply = handson.make_reply(request)
    assert handson.diagnose_reply(request, reply) is None
    ip = IP(reply)
    assert (ip.src, ip.dst, ip[ICMP].type, ip[ICMP].id, ip[ICMP].seq) == \
        ("10.0.0.2", "10.0.0.1", 0, 0x1234, 3)


@pure
@pytest.mark.parametrize(("wrong", "message"), [
    (lambda req, rep: _corrupt(rep, 22), "wrong ICMP checksum"),
    (lambda req, rep: _corrupt(rep, 10), "wrong IP header checksum"),
    (lambda req, rep: req, "swap the request's addresses"),
    (lambda req, rep: bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=8, id=0x1234, seq=3)
                            / bytes(range(56))), "ICMP type 8"),
    (lambda req, rep: bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0, id=1, seq=3)
                            / bytes(range(56))), "id/seq differ"),
    (lambda req, rep: bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0, id=0x1234, seq=3)
                            / b"hello"), "payload differs"),
    (lambda req, rep: handson.PI_IPV4 + rep, "4-byte PI header"),
    (lambda req, rep: IP(rep), None),  # a scapy packet is as good as its bytes
    (lambda req, rep: None, "not bytes"),
])
def test_a_wrong_reply_is_named(wrong, message):
    request = _request()
    problem = handson.diagnose_reply(request, wrong(request, handson.make_reply(request)))
    if message is None:
        assert problem is None
    else:
        assert problem is not None and message in problem, problem


@pure
@pytest.mark.parametrize(("value", "message"), [
    (_request(), None),
    (handson.PI_IPV4 + _request(), "did you set IFF_NO_PI?"),
    (_request()[:20], "you read only 20 of the packet's 84 bytes"),
    (bytes.fromhex("6000000000083aff") + bytes(32), "IPv6"),
    (None, "not bytes"),
    (b"", "no bytes"),
])
def test_a_wrong_read_is_named(value, message):
    problem = handson.diagnose_read(value)
    if message is None:
        assert problem is None
    else:
        assert problem is not None and message in problem, problem


@pure
def test_time_limit_stops_a_busy_loop():
    def spin() -> None:
        while True:
            pass

    before = threading.active_count()
    outcome = handson.run_limited(spin, timeout=0.2)
    assert outcome.timed_out and not outcome.still_running and not outcome.ok
    assert threading.active_count() == before


@pure
def test_time_limit_wakes_a_blocked_read_with_the_nudge():
    reader, writer = socket.socketpair()
    with reader, writer:
        outcome = handson.run_limited(lambda: reader.recv(10), timeout=0.2,
                                      nudge=lambda: writer.send(b"x"))
        assert outcome.timed_out and not outcome.still_running


@pure
def test_runner_returns_value_and_keeps_the_exception():
    assert handson.run_limited(lambda x: x + 1, 1, timeout=1).value == 2
    outcome = handson.run_limited(lambda: 1 / 0, timeout=1)
    assert isinstance(outcome.error, ZeroDivisionError) and not outcome.timed_out


@pure
def test_exercises_are_registered_and_unanswered_is_not_an_error(monkeypatch):
    for key in ("09a", "09b", "09c"):
        assert key in course.EXERCISES
        result = course.check(key, None)
        assert not result and "No answer yet" in result.message
        assert "def " in handson.solution(key).text
    monkeypatch.setenv("TUNLAB_PRETEND_UNPRIVILEGED", "1")
    result = course.check("09b", handson.make_reply, None)
    assert not result and "sudo make lab" in result.message
    assert "your function itself" in course.check("09a", "read_ping", None).message


# -- in the lab ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    with SeedLab("handson") as seed:
        yield seed


def test_reference_reader_reads_the_ping(lab):
    verdict = handson.check_reader(handson.read_ping, lab)
    assert verdict.ok, verdict.message
    assert verdict.counters["mytun tx packets"] >= 1


def test_short_read_is_named(lab):
    verdict = handson.check_reader(lambda fd: os.read(fd, 20), lab)
    assert not verdict.ok and "you read only 20 of the packet's 84 bytes" in verdict.message


def test_reader_that_never_returns_is_stopped(lab):
    def forever(fd: int) -> bytes:
        while True:
            os.read(fd, 2048)  # blocks after the ping: the nudge wakes it

    started = time.monotonic()
    verdict = handson.check_reader(forever, lab)
    assert not verdict.ok and "did not return within" in verdict.message
    assert "It was stopped" in verdict.message
    assert time.monotonic() - started < 60  # bounded; the exact time is not the point
    # the device is free again: the next reader can attach
    assert handson.check_reader(handson.read_ping, lab).ok


def test_reference_reply_makes_ping_succeed(lab):
    verdict = handson.check_reply(handson.make_reply, lab)
    assert verdict.ok, verdict.message
    assert verdict.counters["IcmpInEchoReps"] == 1
    assert verdict.counters["mytun rx packets"] >= 1


def test_reply_with_bad_checksum_fails_and_the_kernel_counted_it(lab):
    verdict = handson.check_reply(lambda req: _corrupt(handson.make_reply(req), 22), lab)
    assert not verdict.ok and "wrong ICMP checksum" in verdict.message
    assert verdict.counters.get("IcmpInCsumErrors") == 1
    assert "IcmpInEchoReps" not in verdict.counters


def test_reply_that_writes_nothing_is_named(lab):
    verdict = handson.check_reply(lambda req: b"", lab)
    assert not verdict.ok and "nothing was written to mytun" in verdict.message


def test_make_reply_that_hangs_is_stopped(lab):
    def hang(request: bytes) -> bytes:
        while True:
            time.sleep(0.01)

    verdict = handson.check_reply(hang, lab)
    assert not verdict.ok and "make_reply did not return within" in verdict.message


def test_reference_pump_carries_ping_both_ways():
    verdict = handson.check_pump(handson.pump)
    assert verdict.ok, verdict.message
    for key in ("a tun0 tx packets", "b tun0 rx packets", "b tun0 tx packets",
                "a tun0 rx packets"):
        assert verdict.counters.get(key, 0) >= 1, key


def _one_way(tun_fd: int, sock: socket.socket) -> None:
    """A typical first attempt: tun -> socket only."""
    while True:
        ready, _, _ = select.select([tun_fd, sock], [], [], 1.0)
        if tun_fd in ready:
            sock.sendall(os.read(tun_fd, 2048))
        if sock in ready and not sock.recv(4096):
            return


def test_one_way_pump_is_named():
    verdict = handson.check_pump(_one_way)
    assert not verdict.ok
    assert "nothing was written to b's tun0" in verdict.message, verdict.message


def test_pump_that_writes_the_frame_into_the_device_is_named():
    def prefix_kept(tun_fd: int, sock: socket.socket) -> None:
        while True:
            ready, _, _ = select.select([tun_fd, sock], [], [], 1.0)
            if tun_fd in ready:
                packet = os.read(tun_fd, 2048)
                sock.sendall(len(packet).to_bytes(2, "big") + packet)
            if sock in ready:
                data = sock.recv(4096)
                if not data:
                    return
                os.write(tun_fd, data)  # the length prefix goes in too: EINVAL

    verdict = handson.check_pump(prefix_kept)
    assert not verdict.ok and "raised OSError" in verdict.message
    assert "length prefix" in verdict.message, verdict.message


def test_pump_that_ignores_everything_is_stopped():
    def idle(tun_fd: int, sock: socket.socket) -> None:
        while True:
            time.sleep(0.01)

    verdict = handson.check_pump(idle)
    assert not verdict.ok and "never read the echo request" in verdict.message


def test_notebook_checks_all_three_reference_answers():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    answers = {"answer": 'answer = handson.reference("09a")',
               "answer-b": 'answer_b = handson.reference("09b")',
               "answer-c": 'answer_c = handson.reference("09c")'}
    for cell in nb.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            if tag in answers:
                cell.source = answers[tag]
    env = {k: v for k, v in os.environ.items() if k not in ("TUNLAB_RECORD",
                                                            "TUNLAB_PRETEND_UNPRIVILEGED")}
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute(env=env)
    checks = [c for c in nb.cells if {"check", "check-b", "check-c"} &
              set(c.get("metadata", {}).get("tags", []))]
    texts = ["".join(o.get("data", {}).get("text/html", "") for o in c.outputs) for c in checks]
    assert len(texts) == 3 and all("✔ Correct" in t for t in texts), texts
