"""Clean-up, tested with real processes: a lab with a running (keyed) tunnel, sysctl changes and
an nft table inside its namespaces is removed on normal exit, on an exception, on SIGINT,
SIGTERM and SIGHUP; after SIGKILL the next run removes it. The machine's own namespace (links,
addresses, routes, sysctls, nft ruleset, trace instances) is compared before and after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from labtools import default_signals

from tunlab.kernel import netns
from tunlab.lab import cleanup_leftovers

pytestmark = pytest.mark.usefixtures("root")

ROOT = Path(__file__).resolve().parents[2]
SYSCTLS = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] + [
    f"net/ipv4/conf/{dev}/{key}" for dev in ("all", "default", "lo")
    for key in ("rp_filter", "accept_local", "log_martians", "forwarding")]
TRACEFS = Path("/sys/kernel/tracing/instances")

# The child builds a two-host lab, starts a keyed tunnel, changes sysctls and adds an nft
# table inside the lab's namespaces, proves the tunnel works, says "ready", and then ends the
# way the test asks.
CHILD = r"""
import json, sys, time
from tunlab.lab import TwoHostLab
from tunlab.tunnel import TunnelClient, TunnelServer
mode = sys.argv[1]
KEY = b"cleanup test key 0123456789abcdef"
lab = TwoHostLab(label="clean")
def build():
    server = TunnelServer(lab.open_device(lab.b, "tun0"), ("198.18.0.2", 5900),
                          namespace=lab.b, psk=KEY).start()
    client = TunnelClient(lab.open_device(lab.a, "tun0"), ("198.18.0.2", 5900),
                          namespace=lab.a, psk=KEY).start(timeout=5)
    lab.server, lab.client = server, client
    assert server.wait_connected(5)
    for ns in (lab.a, lab.b):
        ns.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2",
                 "net.ipv4.conf.all.log_martians=1"])
        ns.exec(["nft", "-f", "-"], input=b"table inet tunlab_test {\n chain f {\n  type "
                 b"filter hook forward priority 0; policy drop;\n }\n}\n")
    ping = lab.a.exec(["ping", "-c1", "-W2", "10.9.0.2"], check=False)
    print(json.dumps({"namespaces": [ns.name for ns in lab.namespaces],
                      "ping": ping.returncode}), flush=True)
if mode == "with":
    with lab:
        build()
        time.sleep(60)
elif mode == "bare":      # no `with`, no close(): atexit and the signal handlers must do it
    build()
    time.sleep(60)
elif mode == "exit":      # falls off the end of the script
    build()
elif mode == "raise":
    with lab:
        build()
        raise RuntimeError("boom")
"""


def root_state() -> dict[str, object]:
    """What the lab must never change in the caller's namespace."""
    def ip(*args: str) -> object:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
        return json.loads(out.stdout or "[]")

    def config(links: object) -> list[dict[str, object]]:
        keep = ("ifname", "flags", "mtu", "operstate", "link_type", "address", "master")
        return sorted(({k: link.get(k) for k in keep} for link in links), key=str)  # type: ignore[union-attr]

    def addrs(entries: object) -> list[object]:
        return sorted(str([(a.get("local"), a.get("prefixlen")) for a in e["addr_info"]])
                      + e["ifname"] for e in entries)  # type: ignore[union-attr]

    state: dict[str, object] = {
        "links": config(ip("link")),
        "addrs": addrs(ip("addr")),
        "routes4": ip("-4", "route", "show", "table", "all"),
        "routes6": [r for r in ip("-6", "route", "show", "table", "all")  # type: ignore[union-attr]
                    if "expires" not in r],
        "rules": ip("rule"),
        "sysctls": {key: Path("/proc/sys", key).read_text().strip() for key in SYSCTLS},
        "nft": subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                              check=True).stdout,
    }
    return state


def _tagged(pid: int) -> list[str]:
    found = [n for n in netns.list_lab_namespaces() if n.startswith(f"tunlab-{pid}-")]
    if TRACEFS.is_dir():
        found += [f"trace:{n}" for n in os.listdir(TRACEFS) if n.startswith(f"tunlab-{pid}-")]
    return found


def _start(mode: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=default_signals)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"the lab process died: {proc.communicate(timeout=10)[1]}")
    report = json.loads(line)
    assert report["ping"] == 0, "the keyed tunnel in the child did not carry a ping"
    return proc, report


@pytest.fixture
def before():
    cleanup_leftovers()
    return root_state()


@pytest.mark.parametrize("mode, sig", [
    ("with", signal.SIGINT), ("with", signal.SIGTERM), ("with", signal.SIGHUP),
    ("bare", signal.SIGINT), ("bare", signal.SIGTERM), ("bare", signal.SIGHUP),
])
def test_signals_remove_everything(before, mode, sig):
    proc, report = _start(mode)
    names = report["namespaces"]
    assert len(names) == 2 and all(n in netns.list_lab_namespaces() for n in names)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert "Traceback" not in err or sig == signal.SIGINT, err
    assert _tagged(proc.pid) == []
    assert root_state() == before


@pytest.mark.parametrize("mode", ["exit", "raise"])
def test_normal_exit_and_exceptions_remove_everything(before, mode):
    proc, report = _start(mode)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == (0 if mode == "exit" else 1), err
    if mode == "raise":
        assert "RuntimeError: boom" in err
    assert _tagged(proc.pid) == []
    assert root_state() == before


def test_after_sigkill_the_next_run_removes_the_leftovers(before):
    proc, report = _start("bare")
    proc.kill()
    proc.communicate(timeout=15)
    leftovers = _tagged(proc.pid)
    assert sorted(leftovers) == sorted(report["namespaces"]), "SIGKILL leaves them behind"
    removed = cleanup_leftovers()
    assert sorted(set(report["namespaces"]) & set(removed)) == sorted(report["namespaces"])
    assert _tagged(proc.pid) == []
    assert root_state() == before
