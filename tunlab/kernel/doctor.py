"""``tunlab doctor``: can the lab run here? Each check says what it is for and how to fix it."""

from __future__ import annotations

import enum
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tunlab.errors import TunlabError
from tunlab.kernel import netns, tracefs
from tunlab.kernel.host import (
    CAP_NET_ADMIN,
    CAP_SYS_ADMIN,
    PROC,
    _read,
    has_capability,
    in_user_namespace,
    userns_blocker,
)

__all__ = ["Check", "CHECKS", "lab_can_run", "lab_mode", "Mode", "ModeReport", "run_checks"]


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


class Mode(enum.Enum):
    """How the lab can run on this machine, best first."""

    ROOT = "root"  # real root (or CAP_NET_ADMIN + CAP_SYS_ADMIN on the host)
    USER_NAMESPACE = "user namespace"  # the "tunlab (no sudo)" kernel: live, no tracefs
    RECORDINGS = "recordings only"  # read-only: lessons show what was recorded


@dataclass(frozen=True)
class ModeReport:
    """The mode this machine supports, ``why`` in one sentence, and the ``fix`` to do better."""

    mode: Mode
    why: str
    fix: str = ""
    inside_user_namespace: bool = False










def lab_mode(proc: Path = PROC, privileged: bool | None = None) -> ModeReport:
    """Which mode this machine supports for this user, and why."""
    if privileged is None:
        privileged = has_capability(CAP_NET_ADMIN) and has_capability(CAP_SYS_ADMIN)
    inside = in_user_namespace(proc)
    if privileged and inside:
        return ModeReport(Mode.USER_NAMESPACE, "running as root of a user namespace (the "
                          "'tunlab (no sudo)' kernel): labs run live; drop reasons (tracefs) "
                          "and the kernel log are the host's and not available, so fate "
                          "explains drops with counters", inside_user_namespace=True)
    if privileged:
        return ModeReport(Mode.ROOT, "running with CAP_NET_ADMIN and CAP_SYS_ADMIN: every "
                          "lesson runs live, with drop reasons and the kernel log")
    blocker = userns_blocker(proc)
    if blocker is None and not os.access("/dev/net/tun", os.R_OK | os.W_OK) and \
            not os.environ.get("TUNLAB_NOSUDO_TUN"):
        blocker = ("/dev/net/tun cannot be opened by this user (distributions make it 0666; "
                   "here it is not)", "an admin runs `sudo chmod 0666 /dev/net/tun` (or "
                   "gives the user a node of their own, see docs/no-sudo.md)")
    if blocker is None:
        limit = _read(proc, "sys/user/max_user_namespaces")
        return ModeReport(Mode.USER_NAMESPACE, "not root, but unprivileged user namespaces "
                          f"are allowed (user.max_user_namespaces={limit}): the lessons run "
                          "live in the 'tunlab (no sudo)' kernel, without drop reasons",
                          "`tunlab kernelspec install --user`, then pick the kernel "
                          "'tunlab (no sudo)' (client with IPC transport, see docs/no-sudo.md)",
                          inside_user_namespace=inside)
    reason, fix = blocker
    return ModeReport(Mode.RECORDINGS, f"not root and {reason}: the lessons show recordings "
                      "(read-only)", f"run as root (`sudo make lab`), or {fix}",
                      inside_user_namespace=inside)


def _mode() -> Check:
    report = lab_mode()
    return Check("lab mode", report.mode is not Mode.RECORDINGS,
                 f"{report.mode.value}: {report.why}", report.fix, required=False)


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


_USERNS_TRACEFS = Check("tracefs drop reasons", False, "not available inside a user namespace "
                        "(tracefs is global to the host)", "none needed: drops are explained "
                        "with counters; run as root to see drop reasons", required=False)


def _tracefs() -> Check:
    try:
        tracefs.ensure_tracefs()
        names = tracefs.reason_names()
        (tracefs.TRACEFS / "instances").stat()
        if in_user_namespace() and not os.access(tracefs.TRACEFS / "instances", os.W_OK):
            return _USERNS_TRACEFS
    except TunlabError as exc:
        if in_user_namespace():
            return _USERNS_TRACEFS
        return Check("tracefs drop reasons", False, exc.message, exc.fix, required=False)
    except OSError as exc:
        if in_user_namespace():
            return _USERNS_TRACEFS
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
    _privileges, _mode, _tun,
    lambda: _tool("ip", "iproute2", "ip netns, ip route, ip -s link"),
    _namespaces, _tracefs,
    lambda: _tool("ping", "iputils-ping", "sending test packets"),
    lambda: _tool("nft", "nftables", "the firewall lessons", required=False),
    lambda: _tool("nstat", "iproute2", "SNMP counters", required=False),
    lambda: _tool("iperf3", "iperf3", "the performance lesson", required=False),
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
