"""Shared test set-up: most tests need root (they build real namespaces and TUN devices) and
are skipped with the reason without it; the pure ones run anywhere. As root, the suite checks
at the end that it left the machine's own namespace exactly as it found it."""

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


# Test modules that need no root: codecs, sessions, explanations, plots. Everything else
# builds real namespaces and TUN devices and is skipped, with the reason, without root.
PURE_MODULES = frozenset({"test_framing", "test_protocol", "test_plots", "test_fate_pure",
                          "test_wire",
                          "test_claims",
                          "test_scapy_frame", "test_notebook_sources", "test_vnet_pure"})
NEEDS_ROOT = ("needs root: it builds network namespaces and TUN devices "
              "(run `sudo bash scripts/setup.sh test`)")


def _is_pure(item: pytest.Item) -> bool:
    if item.get_closest_marker("root") is not None:
        return False
    return item.get_closest_marker("pure") is not None or \
        item.module.__name__.rsplit(".", 1)[-1] in PURE_MODULES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=NEEDS_ROOT)
    for item in items:
        if not _is_pure(item):
            item.add_marker(skip)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        return  # only the pure tests run; nothing can touch the machine's network
    session.config._root_state = _root_namespace_state()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = getattr(session.config, "_root_state", None)
    if before is None:
        return
    from tunlab.kernel import netns

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
