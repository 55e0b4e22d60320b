"""Shared test set-up: the suite needs root (it builds real namespaces and TUN devices), and it
checks at the end that it left the machine's own namespace exactly as it found it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _root_namespace_state() -> dict[str, object]:
    def ip(*args: str) -> object:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True).stdout
        return json.loads(out or "[]")

    def strip(links: object) -> object:
        # Counters and timers move on their own; configuration must not.
        keep = ("ifname", "flags", "mtu", "operstate", "link_type", "address")
        return sorted(({k: link.get(k) for k in keep} for link in links), key=str)  # type: ignore[union-attr]

    sysctls = {}
    for key in ("ip_forward", "conf/all/rp_filter", "conf/all/accept_local",
                "conf/all/log_martians", "conf/default/rp_filter"):
        sysctls[key] = Path(f"/proc/sys/net/ipv4/{key}").read_text().strip()
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return {"links": strip(ip("link")), "addrs": sorted(map(str, ip("addr"))),
            "routes": ip("route", "show", "table", "all"), "rules": ip("rule"),
            "nft": ruleset, "sysctls": sysctls}


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        pytest.exit("the tunlab tests build network namespaces and TUN devices: run them as "
                    "root, e.g. `sudo make test`", returncode=2)
    session.config._root_state = _root_namespace_state()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = getattr(session.config, "_root_state", None)
    if before is None:
        return
    from tunlab import netns

    tag = netns.owner_tag()
    leftovers = [n for n in netns.list_lab_namespaces() if tag in n]
    after = _root_namespace_state()
    problems = []
    if leftovers:
        problems.append(f"namespaces left behind: {leftovers}")
    for key in before:
        if before[key] != after[key]:
            problems.append(f"root namespace {key} changed")
    if problems:
        print("\nLAB HYGIENE FAILURE: " + "; ".join(problems), file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture
def tunlab_cmd() -> list[str]:
    """The installed console script, as a user would run it."""
    return [str(VENV_BIN / "tunlab")]
