"""Lesson 09's checkers run a participant's code in the real lab: the reference solutions pass
(the kernel's ping succeeds and its counters move), typical mistakes fail with the message that
names them, and code that never returns is stopped by the time limit. The diagnosis of a result
and the time limit itself are pure and run without root."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from scapy.layers.inet import ICMP, IP

from tunlab import course
from tunlab.course import claims, handson
from tunlab.course.handson import judge, solutions
from tunlab.course.handson import loss as handson_loss
from tunlab.lab import SeedLab

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "09-write-your-own.ipynb"


def _request() -> bytes:
    return bytes(IP(src="10.0.0.1", dst="10.0.0.2", id=7) / ICMP(type=8, id=0x1234, seq=3)
                 / bytes(range(56)))


def _corrupt(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0xFF
    return bytes(out)


# -- pure: what a result gets told ---------------------------------------------------------

def test_reference_reply_is_a_correct_reply():
    request = _request()
    reply = handson.make_reply(request)
    assert handson.diagnose_reply(request, reply) is None
    ip = IP(reply)
    assert (ip.src, ip.dst, ip[ICMP].type, ip[ICMP].id, ip[ICMP].seq) == \
        ("10.0.0.2", "10.0.0.1", 0, 0x1234, 3)


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
    (lambda req, rep: solutions.PI_IPV4 + rep, "4-byte PI header"),
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


@pytest.mark.parametrize(("value", "message"), [
    (_request(), None),
    (solutions.PI_IPV4 + _request(), "did you set IFF_NO_PI?"),
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


def test_time_limit_stops_a_busy_loop():
    def spin() -> None:
        while True:
            pass

    before = threading.active_count()
    outcome = handson.run_limited(spin, timeout=0.2)
    assert outcome.timed_out and not outcome.still_running and not outcome.ok
    assert threading.active_count() == before


def test_time_limit_wakes_a_blocked_read_with_the_nudge():
    reader, writer = socket.socketpair()
    with reader, writer:
        outcome = handson.run_limited(lambda: reader.recv(10), timeout=0.2,
                                      nudge=lambda: writer.send(b"x"))
        assert outcome.timed_out and not outcome.still_running


def test_runner_returns_value_and_keeps_the_exception():
    assert handson.run_limited(lambda x: x + 1, 1, timeout=1).value == 2
    outcome = handson.run_limited(lambda: 1 / 0, timeout=1)
    assert isinstance(outcome.error, ZeroDivisionError) and not outcome.timed_out


def test_exercises_are_registered_and_unanswered_is_not_an_error(monkeypatch):
    for key in ("09a", "09b", "09c", "09d"):
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


@pytest.mark.usefixtures("root")
def test_reference_reader_reads_the_ping(lab):
    verdict = handson.check_reader(handson.read_ping, lab)
    assert verdict.ok, verdict.message
    assert verdict.counters["mytun tx packets"] >= 1


@pytest.mark.usefixtures("root")
def test_short_read_is_named(lab):
    verdict = handson.check_reader(lambda fd: os.read(fd, 20), lab)
    assert not verdict.ok and "you read only 20 of the packet's 84 bytes" in verdict.message


@pytest.mark.usefixtures("root")
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


@pytest.mark.usefixtures("root")
def test_reference_reply_makes_ping_succeed(lab):
    verdict = handson.check_reply(handson.make_reply, lab)
    assert verdict.ok, verdict.message
    assert verdict.counters["IcmpInEchoReps"] == 1
    assert verdict.counters["mytun rx packets"] >= 1


@pytest.mark.usefixtures("root")
def test_reply_with_bad_checksum_fails_and_the_kernel_counted_it(lab):
    verdict = handson.check_reply(lambda req: _corrupt(handson.make_reply(req), 22), lab)
    assert not verdict.ok and "wrong ICMP checksum" in verdict.message
    assert verdict.counters.get("IcmpInCsumErrors") == 1
    assert "IcmpInEchoReps" not in verdict.counters


@pytest.mark.usefixtures("root")
def test_reply_that_writes_nothing_is_named(lab):
    verdict = handson.check_reply(lambda req: b"", lab)
    assert not verdict.ok and "nothing was written to mytun" in verdict.message


@pytest.mark.usefixtures("root")
def test_make_reply_that_hangs_is_stopped(lab):
    def hang(request: bytes) -> bytes:
        while True:
            time.sleep(0.01)

    verdict = handson.check_reply(hang, lab)
    assert not verdict.ok and "make_reply did not return within" in verdict.message


@pytest.mark.usefixtures("root")
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


@pytest.mark.usefixtures("root")
def test_one_way_pump_is_named():
    verdict = handson.check_pump(_one_way)
    assert not verdict.ok
    assert "nothing was written to b's tun0" in verdict.message, verdict.message


@pytest.mark.usefixtures("root")
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


@pytest.mark.usefixtures("root")
def test_pump_that_ignores_everything_is_stopped():
    def idle(tun_fd: int, sock: socket.socket) -> None:
        while True:
            time.sleep(0.01)

    verdict = handson.check_pump(idle)
    assert not verdict.ok and "never read the echo request" in verdict.message


@pytest.mark.usefixtures("root")
def test_notebook_checks_all_four_reference_answers_and_races_them():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    answers = {"answer": 'answer = handson.reference("09a")',
               "answer-b": 'answer_b = handson.reference("09b")',
               "answer-c": 'answer_c = handson.reference("09c")',
               "answer-d": 'answer_d = handson.reference("09d")'}
    for cell in nb.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            if tag in answers:
                cell.source = answers[tag]
    env = {k: v for k, v in os.environ.items() if k not in ("TUNLAB_RECORD",
                                                            "TUNLAB_PRETEND_UNPRIVILEGED")}
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute(env=env)
    checks = [c for c in nb.cells if {"check", "check-b", "check-c", "check-d"} &
              set(c.get("metadata", {}).get("tags", []))]
    texts = ["".join(o.get("data", {}).get("text/html", "") for o in c.outputs) for c in checks]
    assert len(texts) == 4 and all("✔ Correct" in t for t in texts), texts
    # the race ran the participant's pumps (here: the references, given as answers)
    (race,) = [c for c in nb.cells if c.source.startswith("race = handson.race(")]
    table = "".join(o.get("data", {}).get("text/html", "") for o in race.outputs)
    assert table.count("<td>yours</td>") == 2, table


# -- 09d: the UDP tunnel -------------------------------------------------------------------------

def _pure_outcomes(**errors: BaseException) -> tuple[dict, dict]:
    outcomes = {n: handson.Outcome(error=errors.get(n)) for n in ("a", "b")}
    return outcomes, {n: n in errors for n in ("a", "b")}


_CARRIED = {"a tun0 tx packets": 3, "a UdpOutDatagrams": 3, "b UdpInDatagrams": 3,
            "b tun0 rx packets": 3, "b tun0 tx packets": 3, "b UdpOutDatagrams": 3,
            "a UdpInDatagrams": 3, "a tun0 rx packets": 3}


@pytest.mark.parametrize(("code", "counters", "ok", "message"), [
    (0, _CARRIED, True, "crossed your UDP tunnel"),
    (0, {**_CARRIED, "a TcpOutSegs": 6}, False, "6 TCP segment(s)"),
    (0, {**_CARRIED, judge.UNFRAMED: 6}, False, "without a length prefix"),
    (0, {"a tun0 tx packets": 3, "a tun0 rx packets": 3}, False, "do not answer them"),
    (1, {"a tun0 tx packets": 3, "a TcpOutSegs": 2}, False, "but TCP segments"),
    (1, {"a tun0 tx packets": 3, "a UdpOutDatagrams": 3}, False, "b's kernel received none"),
    (1, {"a tun0 tx packets": 3, "a UdpOutDatagrams": 3, "b UdpInDatagrams": 3,
         "b tun0 rx packets": 3, "b tun0 tx packets": 3}, False, "reply direction is missing"),
])
def test_udp_verdict_names_what_the_counters_show(code, counters, ok, message):
    verdict = handson.judge_udp(code, dict(counters), *_pure_outcomes())
    assert verdict.ok is ok and message in verdict.message, verdict.message


def test_udp_verdict_shows_the_line_that_raised():
    def typo(tun_fd: int, sock: socket.socket) -> None:
        packet = b"x"  # noqa: F841 - the typo under test
        os.write(tun_fd, pakcet)  # noqa: F821

    try:
        typo(-1, None)
    except NameError as exc:
        error = exc
    verdict = handson.judge_udp(1, {}, *_pure_outcomes(a=error))
    assert not verdict.ok
    assert "the UDP pump on host a raised NameError" in verdict.message, verdict.message
    assert "os.write(tun_fd, pakcet)" in verdict.message and "(line " in verdict.message


def test_race_result_survives_its_recording_and_describes_itself():
    run = handson.TunnelRun("UDP", "yours", 120.0, 4000, 0, {"a": 4001, "b": 0},
                            {"a": 9000, "b": 2000}, [0.3, None, 0.4])
    tcp = handson.TunnelRun("TCP", "tunlab's reference", 20.0, 0, 300, {"a": 200, "b": 100},
                            {"a": 0, "b": 0}, [0.5, 30.0, 12.0])
    race = handson.Race(5.0, 2.0, [run, tcp])
    again = handson.Race.from_dict(course.from_jsonable(course.to_jsonable(race)))
    assert again == race and again.run("UDP").lost == 1 and again.run("TCP").slow == 2
    text = again.describe()
    assert "6.0 times as much" in text and "retransmitted nothing" in text
    assert "<td>yours</td>" in race._repr_html_()
    assert "Udp RcvbufErrors a / b" in repr(race)  # a recording without the field still shows

    class ReadOnlyLesson:  # what a lesson without the lab gives back: the recorded dict
        def run(self, key: str, fn: object) -> object:
            assert key == "race"
            return course.to_jsonable(race)

    shown = handson.race(ReadOnlyLesson())
    assert shown.recorded and shown.runs == race.runs
    assert "recorded answer" in claims.expect(shown.to_dict(), holds={"x": True})._repr_html_()


def _udp_one_way(tun_fd: int, sock: socket.socket) -> None:
    """A typical first attempt: tun -> socket only."""
    while True:
        ready, _, _ = select.select([tun_fd, sock], [], [], 1.0)
        if tun_fd in ready:
            sock.send(os.read(tun_fd, 2048))
        if sock in ready and not sock.recv(2048):
            return


def _udp_back_into_tun(tun_fd: int, sock: socket.socket) -> None:
    """The wrong direction: what was read from the device is written back into it."""
    while True:
        ready, _, _ = select.select([tun_fd, sock], [], [], 1.0)
        if tun_fd in ready:
            os.write(tun_fd, os.read(tun_fd, 2048))
        if sock in ready and not sock.recv(2048):
            return


def _udp_typo(tun_fd: int, sock: socket.socket) -> None:
    while True:
        ready, _, _ = select.select([tun_fd, sock], [], [], 1.0)
        if tun_fd in ready:
            packet = os.read(tun_fd, 2048)  # noqa: F841 - the typo under test
            sock.send(pakcet)  # noqa: F821


@pytest.mark.usefixtures("root")
def test_reference_udp_pump_carries_ping_as_datagrams():
    verdict = handson.check_udp_pump(handson.udp_pump)
    assert verdict.ok, verdict.message
    c = verdict.counters
    for key in ("a UdpOutDatagrams", "b UdpInDatagrams", "b UdpOutDatagrams",
                "a UdpInDatagrams", "b tun0 rx packets", "a tun0 rx packets"):
        assert c.get(key, 0) >= handson_loss.PING_COUNT, (key, c)
    assert c.get("a TcpOutSegs", 0) == c.get("b TcpOutSegs", 0) == 0
    assert judge.UNFRAMED not in c


@pytest.mark.usefixtures("root")
def test_udp_pump_with_the_stream_framing_is_rejected():
    """09c's pump, length prefix and all, does carry ping over UDP; the kernel's nftables
    counter sees datagrams that do not start with an IP header."""
    verdict = handson.check_udp_pump(handson.pump)
    assert not verdict.ok and "did not start with the IP header" in verdict.message
    assert verdict.counters[judge.UNFRAMED] >= handson_loss.PING_COUNT


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize(("pump", "message"), [
    (_udp_one_way, "socket -> tun is missing"),
    (_udp_back_into_tun, "sent no datagram"),
    (_udp_typo, "raised NameError: name 'pakcet' is not defined"),
    (lambda tun_fd, sock: time.sleep(30), "never read the echo request"),
])
def test_typical_udp_mistakes_are_named(pump, message):
    verdict = handson.check_udp_pump(pump)
    assert not verdict.ok and message in verdict.message, verdict.message
    if pump is _udp_typo:
        assert "sock.send(pakcet)" in verdict.message


@pytest.mark.usefixtures("root")
def test_race_runs_both_tunnels_under_loss_and_counts_with_the_kernel():
    race = handson.race_tunnels(udp=_udp_one_way, pings=20, seconds=1.0)
    udp, tcp = race.run("UDP"), race.run("TCP")
    assert udp.code == "tunlab's reference" and "carried no ping" in udp.note
    assert tcp.code == "tunlab's reference" and not tcp.note
    assert udp.datagrams["a"] > 0 and udp.datagrams["b"] > 0
    assert tcp.datagrams == {"a": 0, "b": 0}
    assert udp.mbps > 0 and tcp.mbps > 0
    # the loss is real: the inner TCP of the UDP tunnel and the TCP tunnel itself retransmit,
    # and the namespaces' TcpRetransSegs hold what the sockets counted
    assert udp.inner_retrans > 0 and tcp.outer_retrans > 0
    assert udp.retrans_segs["a"] >= udp.inner_retrans
    assert sum(tcp.retrans_segs.values()) >= tcp.inner_retrans + tcp.outer_retrans
    # the loss rules are gone with the lab, and none was left in the caller's namespace
    assert "tunlab_wireloss" not in subprocess.run(["nft", "list", "tables"], check=False,
                                                   capture_output=True, text=True).stdout
