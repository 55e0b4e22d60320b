"""`tunlab server` and `tunlab client`, as processes, on devices made with `ip tuntap add`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from labtools import kernel_rx_packets, wait_for, wait_for_ping
from transfer import transfer

from tunlab.lab import TwoHostLab

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def two_hosts():
    with TwoHostLab() as lab:
        yield lab


def _wakeups(pid: int) -> dict[int, int]:
    """Voluntary context switches (sleeps that ended) of each thread of ``pid``."""
    counts = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    counts[int(tid)] = int(line.split()[1])
    return counts


def _start(ns, tunlab_cmd, *args):
    return ns.popen([*tunlab_cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)


def test_server_and_client_carry_ping_and_tcp(two_hosts, tunlab_cmd):
    lab = two_hosts
    before = json.loads(lab.b.ip("-j", "-d", "link", "show", "tun0"))[0]
    server = _start(lab.b, tunlab_cmd, "server", "--dev", "tun0", "--listen", "198.18.0.2:5555")
    client = _start(lab.a, tunlab_cmd, "client", "--dev", "tun0", "--server", "198.18.0.2:5555")
    try:
        assert wait_for_ping(lab.a, "10.9.0.2", timeout=10), "tunnel never came up"
        ping = lab.a.exec(["ping", "-c20", "-i", "0.05", "-W", "1", "10.9.0.2"], check=False)
        assert " 0% packet loss" in ping.stdout, ping.stdout
        sent, arrived = transfer(lab.a, lab.b, "10.9.0.2", 4 * 1024 * 1024)
        assert sent == arrived
        # An idle tunnel sleeps: no thread of either process wakes up on a timer (at most an
        # IPv6 router solicitation of the fresh devices passes through meanwhile).
        time.sleep(0.5)
        before_idle = [_wakeups(proc.pid) for proc in (server, client)]
        time.sleep(3)
        for proc, was in zip((server, client), before_idle, strict=True):
            woke = {tid: n - was.get(tid, 0) for tid, n in _wakeups(proc.pid).items()}
            assert max(woke.values()) <= 3, woke
    finally:
        for proc in (client, server):
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=10) for proc in (client, server)]
    assert client.returncode == 0 and server.returncode == 0, outputs
    assert "UNAUTHENTICATED" in outputs[1][1]
    after = json.loads(lab.b.ip("-j", "-d", "link", "show", "tun0"))[0]
    for key in ("flags", "mtu", "linkinfo"):
        assert after[key] == before[key]


def test_a_busy_polling_tunnel_still_sleeps_when_idle(two_hosts, tunlab_cmd):
    """--busy-poll polls only for USEC after the last packet: idle, nothing wakes up."""
    lab = two_hosts
    server = _start(lab.b, tunlab_cmd, "server", "--dev", "tun0", "--listen", "198.18.0.2:5557",
                    "--busy-poll", "200")
    client = _start(lab.a, tunlab_cmd, "client", "--dev", "tun0", "--server", "198.18.0.2:5557",
                    "--busy-poll", "200")
    try:
        assert wait_for_ping(lab.a, "10.9.0.2", timeout=10), "tunnel never came up"
        ping = lab.a.exec(["ping", "-c10", "-i", "0.05", "-W", "1", "10.9.0.2"], check=False)
        assert " 0% packet loss" in ping.stdout, ping.stdout
        time.sleep(0.5)
        before_idle = [_wakeups(proc.pid) for proc in (server, client)]
        time.sleep(3)
        for proc, was in zip((server, client), before_idle, strict=True):
            woke = {tid: n - was.get(tid, 0) for tid, n in _wakeups(proc.pid).items()}
            assert max(woke.values()) <= 3, woke
    finally:
        for proc in (client, server):
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=10) for proc in (client, server)]
    assert client.returncode == 0 and server.returncode == 0, outputs


def test_client_waits_for_a_server_that_starts_later(two_hosts, tunlab_cmd):
    lab = two_hosts
    client = _start(lab.a, tunlab_cmd, "client", "--dev", "tun0", "--server", "198.18.0.2:5556")
    try:
        time.sleep(1.0)
        assert client.poll() is None, "the client gave up instead of retrying"
        server = _start(lab.b, tunlab_cmd, "server", "--dev", "tun0",
                        "--listen", "198.18.0.2:5556")
        try:
            assert wait_for_ping(lab.a, "10.9.0.2", timeout=10)
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=10)
        assert server.returncode == 0
    finally:
        client.send_signal(signal.SIGTERM)
        client.communicate(timeout=10)


@pytest.mark.parametrize("argv, message", [
    (["server", "--dev", "nosuchdev", "--listen", "127.0.0.1:5555"], "nosuchdev"),
    (["client", "--dev", "nosuchdev", "--server", "127.0.0.1:5555"], "nosuchdev"),
    (["server", "--dev", "tun0", "--listen", "no-port"], "HOST:PORT"),
    (["server", "--dev", "tun0"], "--listen"),
    (["frobnicate"], "invalid choice"),
    (["server", "--dev", "tun0", "--listen", "127.0.0.1:5555", "--busy-poll", "-5"],
     "--busy-poll -5 is outside"),
    (["client", "--dev", "tun0", "--server", "127.0.0.1:5555", "--simple", "--busy-poll", "100"],
     "fast path only"),
])
def test_errors_exit_2_with_a_clear_message(two_hosts, tunlab_cmd, argv, message):
    result = two_hosts.b.exec([*tunlab_cmd, *argv], check=False)
    assert result.returncode == 2
    assert message in result.stderr
    if "nosuchdev" in argv:
        assert "create_named_tuntap_devices.sh" in result.stderr


def test_without_privileges_one_line_and_exit_2(two_hosts, tunlab_cmd):
    result = two_hosts.b.exec(["env", "TUNLAB_PRETEND_UNPRIVILEGED=1", *tunlab_cmd, "server",
                               "--dev", "tun0", "--listen", "127.0.0.1:5555"], check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "root" in result.stderr


def test_the_seeds_instructions_step_by_step(tunlab_cmd):
    """Seed steps 1-5: the script, server on mytun2, client on mytun, `ping 10.0.0.2 -c1`,
    and the output of both showing the packet read, encapsulated, sent, decapsulated,
    released."""
    from tunlab.lab import SeedLab

    with SeedLab("steps") as lab:
        server = _start(lab.ns, tunlab_cmd, "-v", "server", "--dev", "mytun2",
                        "--listen", "127.0.0.1:5555")
        client = _start(lab.ns, tunlab_cmd, "-v", "client", "--dev", "mytun",
                        "--server", "127.0.0.1:5555")
        try:
            assert wait_for(lambda: "127.0.0.1:5555" in lab.ns.exec(
                ["ss", "-Htn", "state", "established", "dport", "5555"]).stdout)
            # The handshake's hellos follow the TCP connect, and the released echo gets no
            # answer (that is the seed's puzzle): ping until the kernel counts a packet that
            # the server wrote into mytun2.
            def released() -> bool:
                lab.ns.exec(["ping", "10.0.0.2", "-c1", "-W1"], check=False)
                return kernel_rx_packets(lab.ns, "mytun2") > 0

            assert wait_for(released)
            # The first packet through may have been an IPv6 router solicitation: now that
            # the tunnel carries packets, one more echo surely goes all the way.
            lab.ns.exec(["ping", "10.0.0.2", "-c1", "-W1"], check=False)
            time.sleep(0.3)  # let the server print its last lines before it is stopped
        finally:
            for proc in (client, server):
                proc.send_signal(signal.SIGTERM)
            (_, client_log), (_, server_log) = (p.communicate(timeout=10)
                                                for p in (client, server))
    assert "read from the device: 10.0.0.1 -> 10.0.0.2 icmp, 84 bytes" in client_log
    assert "encapsulated 10.0.0.1 -> 10.0.0.2 icmp into a 92-byte frame" in client_log
    assert "decapsulated, written to the device: 10.0.0.1 -> 10.0.0.2 icmp, 84 bytes" \
        in server_log
