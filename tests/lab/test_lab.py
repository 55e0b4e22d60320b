"""Lab topologies: unique namespaces, removal on exit, on exceptions and after a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from labtools import default_signals

from tunlab.kernel import netns
from tunlab.lab import SeedLab, TwoHostLab, cleanup_leftovers
from tunlab.runtime import stop_process


@pytest.mark.usefixtures("root")
def test_seed_lab_builds_the_seed_topology_and_removes_it():
    with SeedLab() as lab:
        name = lab.ns.name
        assert name in netns.list_lab_namespaces()
        brief = lab.ns.ip("-br", "-4", "addr")
        assert "10.0.0.1/24" in brief and "10.0.2.1/24" in brief
        local = lab.ns.ip("route", "show", "table", "local")
        assert "local 10.0.0.1 dev mytun" in local
    assert name not in netns.list_lab_namespaces()


@pytest.mark.usefixtures("root")
def test_two_labs_at_once_have_distinct_namespaces():
    with SeedLab() as first, SeedLab() as second:
        assert first.ns.name != second.ns.name
        assert "mytun" in first.ns.ip("-br", "link") and "mytun" in second.ns.ip("-br", "link")


@pytest.mark.usefixtures("root")
def test_lab_is_removed_when_the_body_raises():
    with pytest.raises(RuntimeError), TwoHostLab() as lab:
        names = [ns.name for ns in lab.namespaces]
        raise RuntimeError("boom")
    for name in names:
        assert name not in netns.list_lab_namespaces()


@pytest.mark.usefixtures("root")
def test_two_host_underlay_and_tunnel_addresses():
    with TwoHostLab(mtu=1500, tun_mtu=1400) as lab:
        ping = lab.a.exec(["ping", "-c1", "-W1", "198.18.0.2"], check=False)
        assert ping.returncode == 0, ping.stdout
        # Without a tunnel running, nothing carries 10.9.0.0/24 between the hosts.
        ping = lab.a.exec(["ping", "-c1", "-W1", "10.9.0.2"], check=False)
        assert ping.returncode != 0
        assert "mtu 1400" in lab.a.ip("link", "show", "tun0")


def _spawn_lab_process() -> tuple[subprocess.Popen[str], str]:
    code = ("from tunlab.lab import SeedLab; import sys, time\n"
            "lab = SeedLab()\nprint(lab.ns.name, flush=True)\n"
            "with lab:\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    assert proc.stdout is not None
    name = proc.stdout.readline().strip()
    assert name.startswith("tunlab-")
    return proc, name


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_remove_the_namespace(sig):
    proc, name = _spawn_lab_process()
    proc.send_signal(sig)
    proc.wait(10)
    assert name not in netns.list_lab_namespaces()


@pytest.mark.usefixtures("root")
def test_leftovers_of_a_killed_run_are_removed_by_the_next_run():
    proc, name = _spawn_lab_process()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert name in netns.list_lab_namespaces()  # SIGKILL leaves no chance to clean up
    assert name in cleanup_leftovers()
    assert name not in netns.list_lab_namespaces()


@pytest.mark.usefixtures("root")
def test_cleanup_leaves_namespaces_of_live_runs_alone():
    proc, name = _spawn_lab_process()
    try:
        assert name not in cleanup_leftovers()
        assert name in netns.list_lab_namespaces()
    finally:
        stop_process(proc, 10)
    deadline = time.monotonic() + 5
    while name in netns.list_lab_namespaces() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name not in netns.list_lab_namespaces()


def test_unprivileged_user_is_told_what_to_do(monkeypatch):
    from tunlab.errors import PrivilegeError

    monkeypatch.setenv("TUNLAB_PRETEND_UNPRIVILEGED", "1")
    with pytest.raises(PrivilegeError, match="root"):
        SeedLab()
