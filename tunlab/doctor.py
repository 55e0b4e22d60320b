"""``tunlab doctor``: can the lab run here? Each check says what it is for and how to fix it."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass

from . import drops, netns
from .errors import TunlabError
from .privileges import CAP_NET_ADMIN, CAP_SYS_ADMIN, has_capability


@dataclass
class Check:
    """One check: ``ok``, what was found (``detail``), and the ``fix`` when it failed.

    ``required`` checks decide whether the lab can run; the others only limit a lesson.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _privileges() -> Check:
    ok = has_capability(CAP_NET_ADMIN) and has_capability(CAP_SYS_ADMIN)
    return Check("root / CAP_NET_ADMIN", ok,
                 "can create namespaces and devices" if ok else "running without privileges",
                 "start the lab as root: `sudo make lab` (or sudo bash scripts/setup.sh lab)")


def _tun() -> Check:
    ok = os.path.exists("/dev/net/tun")
    return Check("/dev/net/tun", ok, "TUN devices can be opened" if ok else "missing",
                 "load the module: `sudo modprobe tun`")


def _namespaces() -> Check:
    try:
        with netns.create("doctor") as ns:
            ns.ip("link", "show", "lo")
        return Check("network namespaces", True, "created and removed a private namespace")
    except TunlabError as exc:
        return Check("network namespaces", False, str(exc),
                     "run as root on a kernel with CONFIG_NET_NS (any distribution kernel)")


def _tracefs() -> Check:
    try:
        drops.ensure_tracefs()
        names = drops.reason_names()
    except TunlabError as exc:
        return Check("tracefs drop reasons", False, exc.message, exc.fix, required=False)
    except OSError as exc:
        return Check("tracefs drop reasons", False, str(exc),
                     "mount tracefs: `sudo mount -t tracefs nodev /sys/kernel/tracing`",
                     required=False)
    if not names:
        return Check("tracefs drop reasons", False, "skb:kfree_skb has no reason names",
                     "kernel older than 5.17: the lab explains drops with counters instead",
                     required=False)
    recent = "IP_LOCAL_SOURCE" in names.values()
    detail = f"skb:kfree_skb with {len(names)} reason names"
    if not recent:
        detail += " (no IP_LOCAL_SOURCE: kernel before 6.13 reports NOT_SPECIFIED there)"
    return Check("tracefs drop reasons", True, detail, required=False)


def _tool(command: str, package: str, purpose: str, required: bool = True) -> Check:
    path = shutil.which(command)
    return Check(command, path is not None, purpose if path else "not installed",
                 f"apt-get install {package}", required=required)


def _python(module: str, purpose: str, required: bool = True) -> Check:
    ok = importlib.util.find_spec(module) is not None
    return Check(f"python: {module}", ok, purpose if ok else "not importable",
                 "sudo bash scripts/setup.sh (installs the venv)", required=required)


CHECKS: list[Callable[[], Check]] = [
    _privileges, _tun,
    lambda: _tool("ip", "iproute2", "ip netns, ip route, ip -s link"),
    _namespaces, _tracefs,
    lambda: _tool("ping", "iputils-ping", "sending test packets"),
    lambda: _tool("nft", "nftables", "the firewall lessons", required=False),
    lambda: _tool("nstat", "iproute2", "SNMP counters", required=False),
    lambda: _tool("iperf3", "iperf3", "the performance lesson", required=False),
    lambda: _python("pyroute2", "netlink and namespaces"),
    lambda: _python("scapy", "crafting and dissecting packets"),
    lambda: _python("ipywidgets", "the notebooks' widgets", required=False),
    lambda: _python("matplotlib", "the notebooks' plots", required=False),
]


def run_checks() -> list[Check]:
    """Run every check. Checks that need root are skipped (reported failed) without it."""
    results = []
    privileged = _privileges().ok
    for check in CHECKS:
        if not privileged and check in (_namespaces, _tracefs):
            results.append(Check(
                "network namespaces" if check is _namespaces else "tracefs drop reasons",
                False, "not checked without root", "start the lab as root: `sudo make lab`",
                required=check is _namespaces))
            continue
        results.append(check())
    return results


def lab_can_run(checks: list[Check]) -> bool:
    """True when every required check passed."""
    return all(c.ok for c in checks if c.required)
