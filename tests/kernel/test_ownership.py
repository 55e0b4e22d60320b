"""Clean-up trusts only what tunlab wrote itself (issue 14, finding 5; issue 15, item 3).

A namespace or trace instance merely *named* like tunlab's (``tunlab-99999-0-userlab``) is
someone else's: `tunlab cleanup` leaves it and the processes in it alone, and says so. A real
leftover (a lab whose process was SIGKILLed) is removed, with the processes that lab started,
and nothing else.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunlab.errors import TunlabError
from tunlab.kernel import netns, ownership, tracefs
from tunlab.kernel.ownership import Kind, OwnerState, Process
from tunlab.lab import cleanup_leftovers

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, tracefs")
FOREIGN = "tunlab-99999-0-userlab"
FOREIGN_TRACE = "tunlab-99999-0-usertrace"
INSTANCES = tracefs.TRACEFS / "instances"

# A lab that starts a process of its own in its namespace and a trace instance, reports their
# names and pid, and waits to be SIGKILLed. Its names carry the tag of the (live) test process:
# a name proves nothing, and tunlabs from before ownership records, which trust names and may
# run on this machine at the same time, then leave it alone.
STALE_LAB = r"""
import json, subprocess, sys, time
from tunlab.kernel import netns
netns.owner_tag = lambda: sys.argv[1]
from tunlab.kernel.tracefs import DropTracer
from tunlab.lab import SeedLab
lab = SeedLab(label="stale")
sleeper = lab.ns.popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
tracer = DropTracer(label="stale").start()
print(json.dumps({"ns": lab.ns.name, "trace": tracer.name, "sleeper": sleeper.pid}), flush=True)
time.sleep(60)
"""


def _cleanup(cmd: list[str]) -> str:
    result = subprocess.run([*cmd, "cleanup"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text(
    ).rsplit(")", 1)[1].split()[0]


ATTEMPTS = 5
_labs = itertools.count(1)


def _spy(monkeypatch) -> tuple[list[list[str]], list[int], list[str]]:
    """Record what *this* process's clean-up deletes and kills, whatever its version."""
    commands: list[list[str]] = []
    killed: list[int] = []
    instances: list[str] = []
    real_run, real_kill, real_remove = netns._run, os.kill, tracefs._remove_instance

    def run(argv, **kwargs):
        commands.append(list(argv))
        return real_run(argv, **kwargs)

    def kill(pid, sig):
        killed.append(pid)
        return real_kill(pid, sig)

    def remove_instance(path):
        instances.append(Path(path).name)
        return real_remove(path)

    monkeypatch.setattr(netns, "_run", run)
    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(tracefs, "_remove_instance", remove_instance)
    return commands, killed, instances


@pytest.mark.usefixtures("root")
@ROOT_ONLY
def test_a_foreign_namespace_named_like_ours_survives_cleanup(monkeypatch):
    """`tunlab-99999-0-userlab`: the name of a dead tunlab run, but not made by tunlab.

    A tunlab from before ownership records may run on this machine too and remove it (that
    is the bug); the spy tells its removals from ours, and such an attempt is repeated.
    """
    commands, killed, _ = _spy(monkeypatch)
    for _ in range(ATTEMPTS):
        subprocess.run(["ip", "netns", "add", FOREIGN], check=True)
        process = subprocess.Popen(["ip", "netns", "exec", FOREIGN, "sleep", "60"])
        try:
            commands.clear()
            cleanup_leftovers()
            assert ["ip", "netns", "del", FOREIGN] not in commands, "cleanup removed it"
            assert process.pid not in killed, "cleanup killed a process it did not start"
            if FOREIGN in netns.list_lab_namespaces() and process.poll() is None:
                return
        finally:
            process.kill()
            process.wait(10)
            subprocess.run(["ip", "netns", "del", FOREIGN], check=False)
    pytest.skip("another tunlab on this machine kept removing the foreign namespace first")


@pytest.mark.usefixtures("root")
@ROOT_ONLY
def test_a_foreign_trace_instance_named_like_ours_survives_cleanup(monkeypatch):
    _, _, removed = _spy(monkeypatch)
    tracefs.ensure_tracefs()
    for _ in range(ATTEMPTS):
        (INSTANCES / FOREIGN_TRACE).mkdir()
        try:
            removed.clear()
            cleanup_leftovers()
            assert FOREIGN_TRACE not in removed, "cleanup removed a trace instance not its own"
            if (INSTANCES / FOREIGN_TRACE).is_dir():
                return
        finally:
            if (INSTANCES / FOREIGN_TRACE).is_dir():
                (INSTANCES / FOREIGN_TRACE).rmdir()
    pytest.skip("another tunlab on this machine kept removing the foreign instance first")


@pytest.mark.usefixtures("root")
@ROOT_ONLY
def test_cleanup_says_what_it_skipped_and_why(tunlab_cmd):
    # Named after this live test process, so that no tunlab of any version removes them.
    name = f"tunlab-{netns.owner_tag()}-0-userlab"
    subprocess.run(["ip", "netns", "add", name], check=True)
    tracefs.ensure_tracefs()
    (INSTANCES / name).mkdir()
    try:
        out = _cleanup(tunlab_cmd)
        reason = "no ownership record, so tunlab did not create it"
        assert f"skipped namespace {name}: {reason}" in out, out
        assert f"skipped trace instance {name}: {reason}" in out, out
        assert name in netns.list_lab_namespaces() and (INSTANCES / name).is_dir()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        (INSTANCES / name).rmdir()


def _start_stale_lab() -> dict[str, object]:
    tag = f"{netns.owner_tag()}-{next(_labs)}"
    proc = subprocess.Popen([sys.executable, "-c", STALE_LAB, tag],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=10)
    assert line, err
    lab = json.loads(line)
    assert lab["ns"] in netns.list_lab_namespaces(), "SIGKILL left nothing to clean"
    assert lab["trace"] in tracefs.list_instances()
    assert _alive(int(lab["sleeper"]))
    return lab


@pytest.mark.usefixtures("root")
@ROOT_ONLY
def test_a_killed_lab_is_removed_with_the_processes_it_started(tunlab_cmd):
    lab = _start_stale_lab()
    ns_name, trace, sleeper = str(lab["ns"]), str(lab["trace"]), int(lab["sleeper"])
    try:
        assert ownership.read(Kind.NETNS, ns_name) is not None
        out = _cleanup(tunlab_cmd)
        assert ns_name not in netns.list_lab_namespaces(), out
        assert trace not in tracefs.list_instances(), out
        deadline = time.monotonic() + 5
        while _alive(sleeper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(sleeper), "the process the dead lab started still runs"
        # Another helper's tunlab may have swept it first; if we did, we said so.
        if ns_name in out:
            assert f"removed namespace {ns_name}" in out
        assert ownership.read(Kind.NETNS, ns_name) is None
        assert ownership.read(Kind.TRACE, trace) is None
    finally:
        netns.cleanup_stale()
        tracefs.cleanup_stale_instances()


@pytest.mark.usefixtures("root")
@ROOT_ONLY
def test_a_stale_namespace_with_a_process_tunlab_did_not_start_is_left_and_reported(
        tunlab_cmd):
    lab = _start_stale_lab()
    ns_name = str(lab["ns"])
    stranger = subprocess.Popen(["ip", "netns", "exec", ns_name, "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while stranger.pid not in netns.Namespace(ns_name).pids() \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        out = _cleanup(tunlab_cmd)
        assert ns_name in netns.list_lab_namespaces(), out
        assert stranger.poll() is None, "cleanup killed a process it did not start"
        assert f"skipped namespace {ns_name}: processes tunlab did not start" in out
        assert str(stranger.pid) in out
        assert _alive(int(lab["sleeper"])), "left the namespace but killed inside it anyway"
    finally:
        stranger.kill()
        stranger.wait(10)
    out = _cleanup(tunlab_cmd)
    assert ns_name not in netns.list_lab_namespaces(), out


@pytest.mark.usefixtures("root")
@ROOT_ONLY
def test_a_namespace_replaced_under_a_dead_labs_name_is_not_removed(tunlab_cmd):
    lab = _start_stale_lab()
    ns_name = str(lab["ns"])
    os.kill(int(lab["sleeper"]), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns_name], check=True)
    subprocess.run(["ip", "netns", "add", ns_name], check=True)  # someone else's now
    try:
        out = _cleanup(tunlab_cmd)
        assert ns_name in netns.list_lab_namespaces(), out
        assert f"skipped namespace {ns_name}: it is not the namespace" in out
    finally:
        subprocess.run(["ip", "netns", "del", ns_name], check=False)
        ownership.release(Kind.NETNS, ns_name)
        tracefs.cleanup_stale_instances()


@pytest.mark.usefixtures("root")
@ROOT_ONLY
def test_records_live_in_a_private_directory_and_follow_the_resource():
    with netns.create("rec") as ns:
        record = ownership.read(Kind.NETNS, ns.name)
        assert record is not None and record.owner.pid == os.getpid()
        assert ownership.owner_state(record) is OwnerState.ALIVE
        assert ownership.OWNERS_DIR.stat().st_mode & 0o777 == 0o700
        path = ownership.OWNERS_DIR / f"netns.{ns.name}"
        assert path.stat().st_uid == 0 and path.stat().st_mode & 0o077 == 0
        sleeper = ns.popen(["sleep", "30"])
        record = ownership.read(Kind.NETNS, ns.name)
        assert record is not None and sleeper.pid in {p.pid for p in record.started}
    sleeper.wait(10)
    assert ownership.read(Kind.NETNS, ns.name) is None


# -- pure: the records themselves ------------------------------------------------------------
@pytest.fixture
def private_dir(tmp_path, monkeypatch):
    state = tmp_path / "tunlab"
    monkeypatch.setattr(ownership, "STATE_DIR", state)
    monkeypatch.setattr(ownership, "OWNERS_DIR", state / "owners")
    return state


def test_a_record_round_trips_and_knows_its_owner_is_alive(private_dir):
    record = ownership.claim(Kind.TRACE, "tunlab-1-2-3-x", inode=7)
    assert ownership.read(Kind.TRACE, "tunlab-1-2-3-x") == record
    assert ownership.owner_state(record) is OwnerState.ALIVE
    assert ownership.records(Kind.TRACE) == [record]
    assert ownership.records(Kind.NETNS) == []
    ownership.release(Kind.TRACE, "tunlab-1-2-3-x")
    assert ownership.read(Kind.TRACE, "tunlab-1-2-3-x") is None
    assert not [p for p in (private_dir / "owners").iterdir()], "temporary files left over"


def test_owner_is_dead_when_the_pid_is_reused_or_the_boot_is_another(private_dir):
    record = ownership.claim(Kind.NETNS, "tunlab-x")
    me = record.owner
    reused = ownership.Record(**{**record.__dict__, "owner": Process(me.pid, me.start_time + 1)})
    assert ownership.owner_state(reused) is OwnerState.DEAD
    rebooted = ownership.Record(**{**record.__dict__, "boot_id": "another-boot"})
    assert ownership.owner_state(rebooted) is OwnerState.DEAD
    elsewhere = ownership.Record(**{**record.__dict__, "pid_namespace": 1})
    assert ownership.owner_state(elsewhere) is OwnerState.UNKNOWN


def test_a_directory_others_can_write_is_refused(private_dir):
    ownership.records_dir()
    (private_dir / "owners").chmod(0o777)
    with pytest.raises(TunlabError, match="cannot be trusted"):
        ownership.claim(Kind.NETNS, "tunlab-x")
    assert not list((private_dir / "owners").iterdir())


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", "x" * 200, ".hidden"])
def test_names_that_could_escape_the_directory_are_refused(private_dir, name):
    with pytest.raises(TunlabError, match="cannot name"):
        ownership.claim(Kind.NETNS, name)


def test_a_resource_without_a_record_is_skipped_and_nothing_is_removed(private_dir):
    removed: list[str] = []
    actions = ownership.sweep(Kind.NETNS, [FOREIGN],
                              lambda record: removed.append(record.name))  # type: ignore[func-returns-value]
    assert removed == []
    assert [str(a) for a in actions] == [
        f"skipped namespace {FOREIGN}: no ownership record, so tunlab did not create it "
        f"(or a tunlab before ownership records did); if it is yours: "
        f"`sudo ip netns del {FOREIGN}`"]
