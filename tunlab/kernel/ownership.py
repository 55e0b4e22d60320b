"""Ownership records: which tunlab process made a namespace, trace instance or device change.

A name proves nothing: anyone can call a namespace ``tunlab-99999-0-userlab``. So whatever the
lab creates outside its own process gets a record here, in a directory only root (the lab's
user) can write, written *before* the resource exists and removed *after* it is gone. The
record says who made it (pid, process start time, boot id, PID namespace, uid) and which
processes the lab itself started inside it. Clean-up of leftovers trusts only these records:

* a resource without a record is not ours: it is left alone, and the report says so;
* a resource whose recorded owner still runs is in use: left alone;
* a resource whose recorded owner is dead (another boot, pid gone, or a pid reused by a process
  with another start time) is a leftover: removed, then its record.

Records are small JSON files named ``<kind>.<name>``, replaced atomically (write a temporary
file, then rename), so a reader never sees half a record.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from tunlab.errors import TunlabError

__all__ = ["boot_id", "claim", "CleanupAction", "FORMAT_VERSION", "Kind", "Outcome", "owner_state",
           "OWNERS_DIR", "OwnerState", "parent_pid", "Process", "process_start_time", "read",
           "Record", "records", "records_dir", "release", "started_by_tunlab", "STATE_DIR",
           "sweep", "update"]

STATE_DIR = Path("/run/tunlab")
OWNERS_DIR = STATE_DIR / "owners"
FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,120}$")
_lock = threading.Lock()


class Kind(enum.Enum):
    """What a record is about."""

    NETNS = "netns"        # a network namespace in /run/netns
    TRACE = "trace"        # a tracefs instance
    TUN = "tun"            # fast-path settings (vnet_hdr, offloads) on a persistent TUN device


@dataclass(frozen=True)
class Process:
    """A process identified so that a reused pid does not match: pid and start time."""

    pid: int
    start_time: int

    def alive(self) -> bool:
        """True while this very process (not a later one with the same pid) runs."""
        return process_start_time(self.pid) == self.start_time

    @classmethod
    def of(cls, pid: int) -> Process | None:
        """The running process ``pid``, or None when there is none."""
        start = process_start_time(pid)
        return None if start is None else cls(pid, start)


@dataclass(frozen=True)
class Record:
    """Who created one resource, and which processes it started in it."""

    kind: Kind
    name: str
    owner: Process
    boot_id: str
    pid_namespace: int
    uid: int
    created: float
    started: tuple[Process, ...] = ()
    details: dict[str, int | str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "version": FORMAT_VERSION, "kind": self.kind.value, "name": self.name,
            "pid": self.owner.pid, "start_time": self.owner.start_time,
            "boot_id": self.boot_id, "pid_namespace": self.pid_namespace, "uid": self.uid,
            "created": self.created,
            "started": [[p.pid, p.start_time] for p in self.started],
            "details": self.details}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Record:
        data = json.loads(text)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"record format {data.get('version')!r}")
        return cls(kind=Kind(data["kind"]), name=str(data["name"]),
                   owner=Process(int(data["pid"]), int(data["start_time"])),
                   boot_id=str(data["boot_id"]), pid_namespace=int(data["pid_namespace"]),
                   uid=int(data["uid"]), created=float(data["created"]),
                   started=tuple(Process(int(p), int(s)) for p, s in data.get("started", [])),
                   details={str(k): v for k, v in dict(data.get("details", {})).items()
                            if isinstance(v, (int, str))})


class OwnerState(enum.Enum):
    """What a record says about its resource, as seen from this process."""

    ALIVE = "alive"              # the owner still runs: in use
    DEAD = "dead"                # the owner is gone: the resource is a leftover
    UNKNOWN = "unknown"          # written from another PID namespace: cannot tell, so alive


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when no such process exists."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            # The command name may contain spaces and parentheses; fields follow the last ')'.
            fields = stat_file.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, or None when ``pid`` is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return int(stat_file.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def boot_id() -> str:
    """This boot's random id: a pid from another boot means nothing now."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def owner_state(record: Record) -> OwnerState:
    """Is the process that wrote ``record`` still running?"""
    if record.boot_id and record.boot_id != boot_id():
        return OwnerState.DEAD
    if record.pid_namespace and record.pid_namespace != _pid_namespace():
        return OwnerState.UNKNOWN
    return OwnerState.ALIVE if record.owner.alive() else OwnerState.DEAD


def _check_private(path: Path, *, private: bool) -> None:
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.geteuid(), 0):
        raise TunlabError(f"{path} is not a directory owned by root or by this user",
                          f"remove it (`sudo rm -rf {path}`); tunlab recreates it")
    if info.st_mode & (0o077 if private else 0o022):
        raise TunlabError(f"{path} is writable{' or readable' if private else ''} by others, "
                          "so its ownership records cannot be trusted",
                          f"remove it (`sudo rm -rf {path}`); tunlab recreates it")


@overload
def records_dir(create: Literal[True] = True) -> Path: ...
@overload
def records_dir(create: bool) -> Path | None: ...
def records_dir(create: bool = True) -> Path | None:
    """The records directory (mode 0700), created when ``create``; None when absent.

    Raises :class:`TunlabError` when it exists but others could have written to it.
    """
    if create:
        try:
            STATE_DIR.mkdir(mode=0o755, exist_ok=True)
            OWNERS_DIR.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise TunlabError(f"cannot create {OWNERS_DIR}: {exc.strerror}",
                              "run as root (the lab needs root or CAP_NET_ADMIN anyway)"
                              ) from exc
    elif not OWNERS_DIR.is_dir():
        return None
    _check_private(STATE_DIR, private=False)
    _check_private(OWNERS_DIR, private=True)
    return OWNERS_DIR


def _path(kind: Kind, name: str, directory: Path) -> Path:
    if not _SAFE_NAME.match(name):
        raise TunlabError(f"{name!r} cannot name a tunlab resource",
                          "use letters, digits, '_', '.', ':' and '-' only")
    return directory / f"{kind.value}.{name}"


def _write(record: Record, directory: Path) -> None:
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".new-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(record.to_json())
        os.replace(temporary, _path(record.kind, record.name, directory))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def claim(kind: Kind, name: str, **details: int | str) -> Record:
    """Record that this process is about to create ``name``; call before creating it."""
    me = Process.of(os.getpid())
    assert me is not None  # this process runs
    record = Record(kind=kind, name=name, owner=me, boot_id=boot_id(),
                    pid_namespace=_pid_namespace(), uid=os.geteuid(), created=time.time(),
                    details=dict(details))
    with _lock:
        _write(record, records_dir())
    return record


def read(kind: Kind, name: str) -> Record | None:
    """The record of ``name``, or None when there is none (or it cannot be read)."""
    directory = records_dir(create=False)
    if directory is None:
        return None
    try:
        return Record.from_json(_path(kind, name, directory).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def update(kind: Kind, name: str, *, details: dict[str, int | str] | None = None,
           started: Iterable[int] = ()) -> None:
    """Add processes this process started inside ``name``, or change the record's details.

    Only the owner updates its own records; a missing record is left missing.
    """
    with _lock:
        record = read(kind, name)
        if record is None or record.owner.pid != os.getpid():
            return
        new = tuple(p for p in (Process.of(pid) for pid in started) if p is not None)
        merged = {**record.details, **(details or {})}
        record = Record(kind=record.kind, name=record.name, owner=record.owner,
                        boot_id=record.boot_id, pid_namespace=record.pid_namespace,
                        uid=record.uid, created=record.created,
                        started=tuple(p for p in record.started if p.alive()) + new,
                        details=merged)
        _write(record, records_dir())


def release(kind: Kind, name: str) -> None:
    """Forget ``name``: call after the resource is gone."""
    directory = records_dir(create=False)
    if directory is None:
        return
    with _lock, contextlib.suppress(FileNotFoundError):
        _path(kind, name, directory).unlink()


def records(kind: Kind) -> list[Record]:
    """Every readable record of ``kind``."""
    directory = records_dir(create=False)
    if directory is None:
        return []
    found = []
    for path in sorted(directory.glob(f"{kind.value}.*")):
        try:
            record = Record.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.kind is kind and path.name == f"{kind.value}.{record.name}":
            found.append(record)
    return found


def started_by_tunlab(record: Record, pids: Iterable[int]) -> tuple[list[int], list[int]]:
    """Split ``pids`` into (started by the lab that wrote ``record``, the others).

    Started by the lab: a recorded process (same pid *and* start time), or a descendant of one
    (``timeout tcpdump ...`` records ``timeout``; ``tcpdump`` is its child).
    """
    recorded = {p.pid for p in record.started if p.alive()}
    ours: list[int] = []
    others: list[int] = []
    for pid in pids:
        chain, current = 0, pid
        while current and current not in recorded and chain < 64:
            current = parent_pid(current) or 0
            chain += 1
        (ours if current in recorded else others).append(pid)
    return ours, others


class Outcome(enum.Enum):
    """What clean-up did with one resource."""

    REMOVED = "removed"
    RESTORED = "restored"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CleanupAction:
    """One line of ``tunlab cleanup``: what, what was done, and why."""

    kind: Kind
    name: str
    outcome: Outcome
    reason: str = ""

    def __str__(self) -> str:
        what = {Kind.NETNS: "namespace", Kind.TRACE: "trace instance",
                Kind.TUN: "TUN device"}[self.kind]
        text = f"{self.outcome.value} {what} {self.name}"
        return f"{text}: {self.reason}" if self.reason else text


_REMOVE_BY_HAND = {Kind.NETNS: "sudo ip netns del {}",
                   Kind.TRACE: "sudo rmdir /sys/kernel/tracing/instances/{}",
                   Kind.TUN: "sudo ip link del {}"}


def sweep(kind: Kind, present: Iterable[str],
          remove: Callable[[Record], CleanupAction | None]) -> list[CleanupAction]:
    """Decide, for each resource of ``kind`` named like tunlab's, whether it is a leftover.

    ``present``: the names that exist now. ``remove(record)`` removes a leftover and returns
    None, or returns its own action (a skip when processes it did not start still run inside
    leaves the record in place). Records of dead owners whose resource is already gone are
    dropped quietly.
    """
    actions = []
    by_name = {record.name: record for record in records(kind)}
    for name in present:
        record = by_name.pop(name, None)
        if record is None:
            actions.append(CleanupAction(kind, name, Outcome.SKIPPED,
                                         "no ownership record, so tunlab did not create it "
                                         "(or a tunlab before ownership records did); if it "
                                         f"is yours: `{_REMOVE_BY_HAND[kind].format(name)}`"))
            continue
        state = owner_state(record)
        if state is OwnerState.ALIVE:
            actions.append(CleanupAction(kind, name, Outcome.SKIPPED,
                                         f"in use by a running lab (pid {record.owner.pid})"))
            continue
        if state is OwnerState.UNKNOWN:
            actions.append(CleanupAction(kind, name, Outcome.SKIPPED,
                                         f"owned by pid {record.owner.pid} in another PID "
                                         "namespace, which cannot be checked from here"))
            continue
        action = remove(record) or CleanupAction(
            kind, name, Outcome.REMOVED, f"its owner (pid {record.owner.pid}) is gone")
        if action.outcome is not Outcome.SKIPPED:
            release(kind, name)
        actions.append(action)
    for record in by_name.values():
        if owner_state(record) is OwnerState.DEAD:
            release(kind, record.name)
    return actions
