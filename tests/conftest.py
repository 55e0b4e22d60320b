"""Shared test set-up. A test's markers come from the fixtures it uses: ``root`` (every lab
fixture asks for it; a module whose tests all build labs uses it in ``pytestmark``), ``browser``
and ``hub`` skip, with the reason, where their needs are missing, and mark the test alike, so
``-m "not root and not browser and not hub"`` selects what runs anywhere. As root, the suite
checks at the end that it left the machine's own namespace exactly as it found it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

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


NEEDS_ROOT = ("needs root: it builds network namespaces and TUN devices "
              "(run `sudo bash scripts/setup.sh test`)")
# The fixtures that decide where a test can run, and the marker each gives the tests using it.
TIER_FIXTURES = ("root", "browser", "hub")


@pytest.fixture(scope="session")
def root() -> None:
    """The test builds namespaces, TUN devices or firewalls: root, or skipped with the reason."""
    if os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)


@pytest.fixture(scope="session")
def browser(root: None) -> str:
    """JupyterLab in a real headless Chromium (as root: the lessons' labs need it)."""
    from browserlab import chromium_path

    path = chromium_path()
    if path is None:
        pytest.skip("needs Chromium (apt-get install chromium-headless-shell)")
    return path


@pytest.fixture(scope="session")
def hub(root: None) -> None:
    """A JupyterHub with participant accounts: its proxy, the hub and the account tools."""
    import shutil

    for tool in ("runuser", "useradd", "userdel", "node"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if not (ROOT / ".hub/node_modules/.bin/configurable-http-proxy").exists():
        pytest.skip("needs JupyterHub's proxy in .hub/: run `make hub-proxy`")
    if not (VENV_BIN / "jupyterhub").exists():
        pytest.skip("needs JupyterHub in this venv: pip install -e '.[hub]'")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in TIER_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(name)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line per tier (tests/unit, kernel, ...): what passed, failed and was skipped there."""
    tiers: dict[str, Counter[str]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome == "passed":
                continue
            parts = str(getattr(report, "nodeid", "")).split("/")
            tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
            tiers.setdefault(tier, Counter())[outcome] += 1
    if not tiers:
        return
    terminalreporter.section("tiers")
    for tier in ("unit", "kernel", "tunnel", "lab", "fate", "course", "e2e", "other"):
        if tier in tiers:
            counts = tiers[tier]
            terminalreporter.write_line(f"{tier:7s} " + ", ".join(
                f"{counts[o]} {o}" for o in ("passed", "failed", "error", "skipped") if counts[o]))


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
