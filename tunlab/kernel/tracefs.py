"""Drop reasons from tracefs: a private instance on ``skb:kfree_skb``, parsed into typed events.

Each event names the drop reason and the kernel function that dropped the packet. A drop caused
by ``write()`` to a TUN fd is handled in the writing thread, so an in-kernel filter on that
thread's name keeps exactly the drops our packet caused, whatever else the machine does. Reason
names are read from the event's ``format`` file, never hard-coded: the numbers shift between
kernel versions.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunlab.errors import EnvironmentProblem
from tunlab.kernel import netns, ownership
from tunlab.kernel.netns import Namespace
from tunlab.kernel.ownership import CleanupAction, Kind, Outcome, Record

__all__ = ["attribute_drops", "cleanup_stale_instances", "Drop", "DropTracer", "ensure_tracefs",
           "ETH_P_IP", "ETH_P_IPV6", "EVENT", "list_instances", "name_this_thread",
           "parse_reason_names", "parse_trace_line", "reason_names", "Receive", "RECEIVE_EVENT",
           "summarize_drops", "TRACEFS", "watch_drops"]

TRACEFS = Path("/sys/kernel/tracing")


EVENT = "events/skb/kfree_skb"


ETH_P_IP = 0x0800


ETH_P_IPV6 = 0x86DD


RECEIVE_EVENT = "events/net/netif_receive_skb"


_LINE = re.compile(
    r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>[\d.]+):\s+"
    r"(?P<event>kfree_skb|netif_receive_skb):\s+(?P<body>.*)$")


_FIELD = re.compile(r"(\w+)=(\S+)")


_REASON = re.compile(r"reason:\s*(\S+)")


_COMM = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


_SYMBOLIC = re.compile(r'\{\s*(\d+),\s*"([A-Z0-9_]+)"\s*\}')


def ensure_tracefs() -> Path:
    """Mount tracefs at /sys/kernel/tracing when needed; return its path.

    Raises :class:`EnvironmentProblem` (with the fix) when tracing cannot be used here.
    """
    if not (TRACEFS / "instances").is_dir():
        result = os.system(f"mount -t tracefs nodev {TRACEFS} >/dev/null 2>&1")
        if result != 0 or not (TRACEFS / "instances").is_dir():
            raise EnvironmentProblem(
                "tracefs is not available, so drop reasons cannot be traced",
                f"mount it: `sudo mount -t tracefs nodev {TRACEFS}` (the lab falls back to "
                "counters and the martian log)")
    if not (TRACEFS / EVENT / "format").exists():
        raise EnvironmentProblem("this kernel has no skb:kfree_skb trace event",
                                 "use counters (ip -s link, nstat) instead")
    return TRACEFS


def reason_names(tracefs: Path = TRACEFS) -> dict[int, str]:
    """The kernel's drop reasons, number -> name, parsed from the kfree_skb event's format."""
    return parse_reason_names((tracefs / EVENT / "format").read_text())


def parse_reason_names(text: str) -> dict[int, str]:
    """Number -> name from the text of the kfree_skb event's ``format`` file (the one parser)."""
    if "__print_symbolic(REC->reason" not in text:
        return {}
    return {int(n): name for n, name in _SYMBOLIC.findall(text.split("REC->reason", 1)[1])}


@dataclass(frozen=True)
class Drop:
    """One kfree_skb event."""

    reason: str
    location: str           # kernel function, e.g. "ip_rcv_finish"
    protocol: int           # ethertype: 0x0800 IPv4, 0x86dd IPv6
    pid: int
    timestamp: float
    raw: str = ""
    skbaddr: str = ""

    @property
    def is_ipv4(self) -> bool:
        return self.protocol == ETH_P_IP

    @property
    def is_ipv6(self) -> bool:
        return self.protocol == ETH_P_IPV6


@dataclass(frozen=True)
class Receive:
    """One netif_receive_skb event: a device handed a packet (an skb) to the stack."""

    dev: str
    skbaddr: str
    length: int
    pid: int
    timestamp: float


def parse_trace_line(line: str, names: dict[int, str] | None = None) -> Drop | Receive | None:
    """One line of the ``trace`` file as a :class:`Drop` or :class:`Receive`, else None."""
    match = _LINE.match(line)
    if not match:
        return None
    body = match.group("body")
    fields = dict(_FIELD.findall(body))
    if match.group("event") == "netif_receive_skb":
        return Receive(dev=fields.get("dev", "?"), skbaddr=fields.get("skbaddr", ""),
                       length=int(fields.get("len", "0")), pid=int(match.group("pid")),
                       timestamp=float(match.group("ts")))
    reason_match = _REASON.search(body)
    reason = reason_match.group(1) if reason_match else fields.get("reason", "UNKNOWN")
    if reason.isdigit() and names:
        reason = names.get(int(reason), reason)
    reason = reason.removeprefix("SKB_DROP_REASON_")
    location = fields.get("location", "?").split("+", 1)[0]
    try:
        protocol = int(fields.get("protocol", "0"), 0)
    except ValueError:
        protocol = 0
    return Drop(reason=reason, location=location, protocol=protocol,
                pid=int(match.group("pid")), timestamp=float(match.group("ts")), raw=line,
                skbaddr=fields.get("skbaddr", ""))


class DropTracer:
    """A private tracefs instance that records ``skb:kfree_skb`` while it is open.

    ``comm``: keep only drops that happen in the context of a thread with this name (see
    :func:`name_this_thread`): unlike a thread id, a name means the same inside a PID namespace
    (a container) as in tracefs, which records host PIDs. ``pid``: the same by thread id,
    for callers that cannot name the writing thread. Neither keeps every drop on the machine. With
    ``track_receives`` it also records ``net:netif_receive_skb``, so that each drop can be tied
    to the packet (skb) a device received: ours, or a reply the kernel made to it. The instance
    is removed on :meth:`stop`, on exceptions in a ``with`` block, and by
    :func:`cleanup_stale_instances` after a killed run.
    """

    def __init__(self, pid: int | None = None, label: str = "drops",
                 track_receives: bool = False, comm: str | None = None) -> None:
        if comm is not None and not _COMM.match(comm):
            raise ValueError(f"{comm!r} is not a thread name a trace filter can match")
        self.pid = pid
        self.comm = comm
        self.track_receives = track_receives
        self.name = netns.unique_name(label)
        self.path: Path | None = None
        self.names: dict[int, str] = {}
        self.drops: list[Drop] = []
        self.events: list[Drop | Receive] = []

    def start(self) -> DropTracer:
        """Create the instance and start recording."""
        tracefs = ensure_tracefs()
        self.names = reason_names(tracefs)
        path = tracefs / "instances" / self.name
        ownership.claim(Kind.TRACE, self.name)  # before mkdir: a SIGKILL leaves no orphan
        try:
            path.mkdir()
            ownership.update(Kind.TRACE, self.name, details={"inode": path.stat().st_ino})
        except BaseException:
            ownership.release(Kind.TRACE, self.name)
            raise
        self.path = path
        try:
            (path / "buffer_size_kb").write_text("1024\n")
            for event in self._event_dirs():
                if self.comm is not None:
                    (event / "filter").write_text(f'comm == "{self.comm}"\n')
                elif self.pid is not None:
                    (event / "filter").write_text(f"common_pid == {int(self.pid)}\n")
                (event / "enable").write_text("1\n")
        except BaseException:
            self._remove()
            raise
        return self

    def _event_dirs(self) -> list[Path]:
        assert self.path is not None
        dirs = [self.path / EVENT]
        if self.track_receives and (self.path / RECEIVE_EVENT).is_dir():
            dirs.append(self.path / RECEIVE_EVENT)
        return dirs

    def collect(self) -> list[Drop]:
        """Read what was recorded so far: drops in ``self.drops``, everything in ``events``."""
        if self.path is None:
            return self.drops
        text = (self.path / "trace").read_text(errors="replace")
        self.events = [e for e in (parse_trace_line(line, self.names)
                                   for line in text.splitlines() if not line.startswith("#"))
                       if e is not None]
        self.drops = [e for e in self.events if isinstance(e, Drop)]
        return self.drops

    def stop(self) -> list[Drop]:
        """Stop recording, remove the instance, return the drops."""
        try:
            self.collect()
        finally:
            self._remove()
        return self.drops

    def _remove(self) -> None:
        if self.path is None:
            return
        path, self.path = self.path, None
        _remove_instance(path)
        ownership.release(Kind.TRACE, self.name)

    def __enter__(self) -> DropTracer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def name_this_thread(name: str) -> None:
    """Set the calling thread's name (its ``comm``, 15 bytes at most), for :class:`DropTracer`."""
    import ctypes

    if not _COMM.match(name):
        raise ValueError(f"{name!r} is not a valid thread name")
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NAME = 15  # noqa: N806 - the prctl(2) constant's name
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME) failed")


def attribute_drops(events: list[Drop | Receive], dev: str, length: int
                    ) -> tuple[list[Drop], list[Drop]]:
    """Split drops into (those of the packet ``dev`` received with ``length`` bytes, the rest).

    Each drop belongs to the latest receive of the same skb address before it: a freed skb's
    memory is soon reused, so the address alone would mix our packet up with the reply the
    kernel built for it. Without receive events every drop counts as ours.
    """
    if not any(isinstance(e, Receive) for e in events):
        drops = [e for e in events if isinstance(e, Drop)]
        return drops, []
    owner: dict[str, bool] = {}
    ours_seen = False
    ours, others = [], []
    for event in events:
        if isinstance(event, Receive):
            is_ours = not ours_seen and event.dev == dev and event.length == length
            ours_seen = ours_seen or is_ours
            owner[event.skbaddr] = is_ours
        elif owner.get(event.skbaddr, not ours_seen):
            ours.append(event)
        else:
            others.append(event)
    return ours, others


def _remove_instance(path: Path) -> None:
    for event in (EVENT, RECEIVE_EVENT):
        try:
            (path / event / "enable").write_text("0\n")
        except OSError:
            pass
    for _ in range(50):  # rmdir fails with EBUSY while a reader still holds the buffer
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.02)


def list_instances() -> list[str]:
    """Trace instances named like tunlab's on the machine (live, stale, or someone else's)."""
    instances = TRACEFS / "instances"
    if not instances.is_dir():
        return []
    return sorted(p.name for p in instances.iterdir() if p.name.startswith(netns.PREFIX))


def _remove_stale_instance(record: Record) -> CleanupAction | None:
    path = TRACEFS / "instances" / record.name
    try:
        inode = path.stat().st_ino
    except OSError:
        inode = None
    if inode != record.details.get("inode"):
        return CleanupAction(Kind.TRACE, record.name, Outcome.SKIPPED,
                             "it is not the instance the dead lab created (replaced since)")
    _remove_instance(path)
    if path.exists():
        return CleanupAction(Kind.TRACE, record.name, Outcome.SKIPPED,
                             "still busy (a reader holds its buffer); try again later")
    return None


def cleanup_stale_instances(report: list[CleanupAction] | None = None) -> list[str]:
    """Remove trace instances whose ownership record names a tunlab process that is gone.

    tracefs is global to the host, so an instance without a record (someone else's, whatever
    its name) or with a live owner is never touched. Returns the names removed; ``report``
    collects every decision.
    """
    actions = ownership.sweep(Kind.TRACE, list_instances(), _remove_stale_instance)
    if report is not None:
        report.extend(actions)
    return [a.name for a in actions if a.outcome is Outcome.REMOVED]


def summarize_drops(drops: Iterable[Drop]) -> list[tuple[str, str, int]]:
    """(reason, location, count), most frequent first: what ``dropwatch`` shows."""
    counts = Counter((d.reason, d.location) for d in drops)
    return [(reason, location, n) for (reason, location), n in counts.most_common()]


def watch_drops(ns: Namespace | None, seconds: float,
                traffic: Any = None) -> list[tuple[str, str, int]]:
    """Record every drop on the machine for ``seconds`` (while ``traffic()`` runs, if given).

    The dropwatch-like view: (reason, location, count). Without a thread filter this sees the
    whole machine, so run the traffic of interest inside a lab namespace (``ns``).
    """
    with DropTracer(pid=None, label="watch") as tracer:
        deadline = time.monotonic() + seconds
        if traffic is not None:
            traffic()
        while time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        drops = tracer.collect()
    return summarize_drops(drops)
