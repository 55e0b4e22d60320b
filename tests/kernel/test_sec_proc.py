"""Lab state stays private on a shared host (issue 23, item 3).

In the no-sudo mode each participant's kernel has its own network namespace, but without a
PID namespace every other user could read it through /proc/<pid>/net/*. The TLJH deployment
gives each server a /proc with hidepid=invisible (systemd's ProtectProc=invisible); here the
same mount option is tried in a private mount namespace (the host's /proc is never remounted):
user ``daemon`` holds a lab network with a marked address, user ``nobody`` reads it through
/proc, then no longer can."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARK = "10.77.23.7"  # the address only participant A's lab has


def test_the_tljh_settings_give_every_server_an_invisible_proc():
    from traitlets.config import Config

    config = Config()
    code = (ROOT / "deploy" / "tljh" / "tunlab.py").read_text()
    exec(compile(code, "deploy/tljh/tunlab.py", "exec"), {"get_config": lambda: config})
    assert config.SystemdSpawner.unit_extra_properties["ProtectProc"] == "invisible"


@pytest.fixture
def lab_of_daemon():
    """User ``daemon``'s lab: a user and network namespace with MARK on its loopback."""
    script = (f"ip link set lo up && ip addr add {MARK}/32 dev lo && echo ready "
              "&& exec sleep 120")
    lab = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "sh", "-c",
                            script], user="daemon", group="daemon", cwd="/",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert lab.stdout is not None
    ready = lab.stdout.readline().strip()
    if ready != "ready":
        lab.kill()
        pytest.skip(f"unprivileged user namespaces unavailable here: {lab.stderr.read()}")
    yield lab.pid
    lab.kill()
    lab.wait(10)


def _as_nobody_reading(path: str, proc_options: str | None) -> subprocess.CompletedProcess[str]:
    """``cat path`` as nobody; with ``proc_options``, under a /proc mounted with them in a
    mount namespace of its own (private propagation: nothing reaches the host's mounts)."""
    read = f"runuser -u nobody -- cat {path}"
    command = ["sh", "-c", read] if proc_options is None else [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        f"mount -t proc -o {proc_options} proc /proc && {read}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.mark.usefixtures("root")
def test_without_hidepid_another_user_reads_the_lab(lab_of_daemon):
    """The leak itself (what the deployment must close): nobody sees daemon's lab address."""
    result = _as_nobody_reading(f"/proc/{lab_of_daemon}/net/fib_trie", None)
    assert result.returncode == 0, result.stderr
    assert MARK in result.stdout


@pytest.mark.usefixtures("root")
def test_with_hidepid_invisible_another_users_lab_is_gone(lab_of_daemon):
    host_proc = _proc_mounts()
    for entry in ("net/fib_trie", "net/dev", "net/tcp", "net/route"):
        result = _as_nobody_reading(f"/proc/{lab_of_daemon}/{entry}", "hidepid=invisible")
        assert result.returncode != 0
        assert "No such file or directory" in result.stderr, result.stderr
        assert MARK not in result.stdout
    listing = _as_nobody_reading("/proc/self/net/dev", "hidepid=invisible")
    assert listing.returncode == 0, "a process still reads its own network"
    assert _proc_mounts() == host_proc, "the host's /proc changed"


def _proc_mounts() -> list[str]:
    """This namespace's mounts on /proc itself, with their options."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4] == "/proc"]
