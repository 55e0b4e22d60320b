"""Why did the kernel drop it? Drop reasons from tracefs, martian lines, counter deltas.

Three sources, from the most precise to the most portable:

* :class:`DropTracer`: a private tracefs instance on ``skb:kfree_skb``. Each event names the
  drop reason and the kernel function that dropped the packet. A drop caused by ``write()`` to
  a TUN fd is handled in the writing thread, so an in-kernel filter on that thread's id keeps
  exactly the drops our packet caused, whatever else the machine does.
* :class:`MartianLog`: the kernel log lines ("martian source ...") that ``log_martians`` turns
  on. The kernel log is global, not per namespace, so lines are matched by address and device.
* :func:`snapshot_counters`: ``ip -s link``, ``nstat`` and ``/proc/net/stat/rt_cache``: present on
  every kernel, also those without drop reasons or tracefs.

Reason names are read from the event's ``format`` file, never hard-coded: the numbers shift
between kernel versions.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunlab.errors import EnvironmentProblem
from tunlab.kernel import netns, ownership
from tunlab.kernel.netns import Namespace
from tunlab.kernel.ownership import CleanupAction, Kind, Outcome, Record

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


# -- the martian log ---------------------------------------------------------------------------
_MARTIAN = re.compile(r"martian (source|destination) (\S+) from (\S+), on dev (\S+)")


@dataclass
class MartianLog:
    """Martian lines the kernel logs while this object is open (needs ``log_martians=1``).

    Reads /dev/kmsg from its current end, so earlier lines never count.
    """

    lines: list[str] = field(default_factory=list)
    available: bool = True
    _fd: int = -1

    def start(self) -> MartianLog:
        try:
            self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self.available = False
        return self

    def collect(self) -> list[str]:
        """Martian lines logged since :meth:`start` (kernel-log prefix removed)."""
        if self._fd < 0:
            return self.lines
        for _ in range(10000):
            try:
                record = os.read(self._fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten while we read: go on
                    continue
                break
            message = record.split(";", 1)[-1].strip()
            if "martian" in message:
                self.lines.append(message.removeprefix("IPv4: ").strip())
        return self.lines

    def stop(self) -> list[str]:
        lines = self.collect()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        return lines

    def __enter__(self) -> MartianLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def matching_martians(lines: Iterable[str], src: str, dst: str,
                      devices: Iterable[str]) -> list[str]:
    """The martian lines about a packet from ``src`` to ``dst`` on one of ``devices``.

    The kernel writes "martian source DST from SRC, on dev DEV" for a bad source and
    "martian destination DST from SRC, dev DEV" for a bad destination.
    """
    wanted = set(devices)
    found = []
    for line in lines:
        match = _MARTIAN.search(line)
        if match and match.group(2) == dst and match.group(3) == src \
                and match.group(4) in wanted:
            found.append(line)
        elif "martian destination" in line and f" {dst} from {src}" in line:
            found.append(line)
    return found


# -- counters ------------------------------------------------------------------------------------
_DEV_FIELDS = {"rx": ("bytes", "packets", "errors", "dropped", "over_errors", "frame_errors",
                      "compressed", "multicast"),
               "tx": ("bytes", "packets", "errors", "dropped", "fifo_errors", "collisions",
                      "carrier_errors", "compressed")}


def _parse_dev(text: str) -> dict[str, int]:
    """/proc/net/dev as ``DEV.rx_dropped``... (the names ``ip -s -j link`` uses)."""
    counters: dict[str, int] = {}
    for line in text.splitlines()[2:]:
        name, _, numbers = line.partition(":")
        values = numbers.split()
        if len(values) < 16:
            continue
        for i, key in enumerate(_DEV_FIELDS["rx"]):
            counters[f"{name.strip()}.rx_{key}"] = int(values[i])
        for i, key in enumerate(_DEV_FIELDS["tx"]):
            counters[f"{name.strip()}.tx_{key}"] = int(values[8 + i])
    return counters


def _parse_snmp(text: str) -> dict[str, int]:
    """/proc/net/snmp or netstat (header line, value line per group) as nstat names them."""
    counters: dict[str, int] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = header.partition(":")
        for name, value in zip(names.split(), values.partition(":")[2].split(), strict=False):
            if value.lstrip("-").isdigit():
                counters[group + name] = int(value)
    return counters


def _read_proc_net(ns: Namespace, files: tuple[str, ...]) -> dict[str, str]:
    # /proc/net is /proc/self/net, the namespace of the process's main thread; a thread inside
    # the lab's namespace sees its own through /proc/thread-self/net.
    def read() -> dict[str, str]:
        texts = {}
        for name in files:
            try:
                texts[name] = (Path("/proc/thread-self/net") / name).read_text()
            except OSError:
                texts[name] = ""
        return texts

    return ns.run(read)


def link_counters(ns: Namespace) -> dict[str, int]:
    """``ip -s link`` for every device in ``ns``: ``DEV.rx_dropped``, ``DEV.tx_packets``..."""
    return _parse_dev(_read_proc_net(ns, ("dev",))["dev"])


def snmp_counters(ns: Namespace) -> dict[str, int]:
    """``nstat``: the namespace's SNMP and netstat counters (IpInAddrErrors, TcpExt...)."""
    texts = _read_proc_net(ns, ("snmp", "netstat"))
    return {**_parse_snmp(texts["snmp"]), **_parse_snmp(texts["netstat"])}


def _parse_snmp6(text: str, prefix: str = "") -> dict[str, int]:
    counters = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counters[prefix + parts[0]] = int(parts[1])
    return counters


def snmp6_counters(ns: Namespace, per_device: bool = False) -> dict[str, int]:
    """/proc/net/snmp6 of ``ns``: Ip6InNoRoutes, Icmp6OutPktTooBigs, Udp6NoPorts...

    With ``per_device`` also each device's own counters (/proc/net/dev_snmp6) as
    ``DEV.Ip6InReceives``. Read from a thread inside ``ns`` through /proc/thread-self:
    /proc/net is /proc/self/net, which shows the namespace of the process's main thread, not
    of the thread reading it.
    """
    def read() -> dict[str, int]:
        base = Path("/proc/thread-self/net")
        try:
            counters = _parse_snmp6((base / "snmp6").read_text())
        except OSError:  # IPv6 disabled in this kernel
            return {}
        try:
            devices = sorted((base / "dev_snmp6").iterdir()) if per_device else []
        except OSError:
            devices = []
        for device in devices:
            try:
                counters.update(_parse_snmp6(device.read_text(), f"{device.name}."))
            except OSError:  # the device went away meanwhile
                continue
        return counters

    return ns.run(read)


def rt_cache_counters() -> dict[str, int]:
    """/proc/net/stat/rt_cache summed over CPUs (in_martian_src, in_no_route...).

    These counters are global to the machine, not per namespace.
    """
    try:
        lines = Path("/proc/net/stat/rt_cache").read_text().split("\n")
    except OSError:
        return {}
    header = lines[0].split()
    totals = dict.fromkeys(header, 0)
    for line in lines[1:]:
        for key, value in zip(header, line.split(), strict=False):
            totals[key] += int(value, 16)
    totals.pop("entries", None)
    return {f"rt_cache.{k}": v for k, v in totals.items()}


def snapshot_counters(ns: Namespace) -> dict[str, int]:
    """Every counter we know of, for the namespace ``ns``."""
    return {**link_counters(ns), **snmp_counters(ns), **snmp6_counters(ns),
            **rt_cache_counters()}


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that changed, with their change (only non-zero deltas)."""
    return {k: after[k] - before.get(k, 0) for k in sorted(after)
            if after[k] - before.get(k, 0) != 0}


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
