"""Private network namespaces: unique names, code and commands run inside, guaranteed removal.

Linux keeps the network namespace per *thread*, so Python code runs "inside" a namespace by
running in a thread that called setns(2). Sockets and TUN file descriptors opened there stay in
that namespace for their whole life, whichever thread uses them later. Commands run through
``ip netns exec``, exactly as a person would type them.

Every namespace is named ``tunlab-<pid>-<start time>-<n>-<label>`` so that people can see whose
it is, but the name proves nothing: ownership comes from the record this module writes before it
creates a namespace (:mod:`tunlab.kernel.ownership`). A later run removes only namespaces with a
record whose owner is dead, and stops only processes the dead lab itself started in them.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tunlab.errors import EnvironmentProblem, TunlabError
from tunlab.kernel import ownership
from tunlab.kernel.host import require_privileges
from tunlab.kernel.ownership import CleanupAction, Kind, Outcome, Record

__all__ = ["cleanup_stale", "create", "delete_all_owned", "install_signal_handlers",
           "list_lab_namespaces", "Namespace", "NETNS_DIR", "owner_is_alive", "owner_tag",
           "PREFIX", "unique_name"]

T = TypeVar("T")

PREFIX = "tunlab-"
NETNS_DIR = "/run/netns"
_counter = itertools.count(1)
_live: dict[str, Namespace] = {}
_live_lock = threading.Lock()


def owner_tag() -> str:
    """``<pid>-<start time>`` of this process: prefix for every resource the lab names."""
    pid = os.getpid()
    return f"{pid}-{ownership.process_start_time(pid) or 0}"


def owner_is_alive(name: str, kind: Kind = Kind.NETNS) -> bool:
    """False only when ``name`` has an ownership record and the process that wrote it is gone.

    The name itself proves nothing: without a record the resource is not ours, so it counts as
    alive and is never touched.
    """
    record = ownership.read(kind, name)
    return record is None or ownership.owner_state(record) is not ownership.OwnerState.DEAD


def unique_name(label: str = "lab") -> str:
    """A namespace or trace-instance name that no other run, live or dead, can have."""
    safe = re.sub(r"[^a-zA-Z0-9_]", "", label)[:20] or "lab"
    return f"{PREFIX}{owner_tag()}-{next(_counter)}-{safe}"


def _run(argv: Sequence[str], *, timeout: float = 15, check: bool = True,
         input: bytes | None = None, started: Callable[[int], None] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """``subprocess.run``, telling ``started`` the child's pid before waiting for it."""
    try:
        with subprocess.Popen(list(argv), stdin=None if input is None else subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=input is None) as process:
            try:
                if started is not None:
                    started(process.pid)
                stdout, stderr = process.communicate(input, timeout=timeout)
            except BaseException:
                process.kill()
                process.wait()
                raise
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"`{argv[0]}` is not installed",
                                 "install iproute2: `apt-get install iproute2`") from exc
    result = subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
        raise TunlabError(f"`{' '.join(argv)}` failed: {stderr.strip()}")
    return result


_CLONE_NEWNET = 0x40000000


def _setns(path: str) -> None:
    """setns(2) the calling thread into the network namespace at ``path``.

    By hand with ctypes because Python 3.11 has no ``os.setns`` (3.12 has), and importing
    pyroute2.netns for its setns costs about a second, most of a `tunlab fate` call's budget.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespace:
    """A private network namespace owned by this process.

    Use it as a context manager, or call :meth:`delete`. It is also removed at interpreter exit
    and on SIGTERM/SIGHUP (see :func:`install_signal_handlers`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = os.path.join(NETNS_DIR, name)
        self._executor: ThreadPoolExecutor | None = None
        self._deleted = False

    # -- Python code inside the namespace -------------------------------------------------
    def enter_current_thread(self) -> None:
        """Move the calling thread into this namespace (only this thread; the process stays)."""
        _setns(self.path)

    def run(self, fn: Callable[..., T], *args: Any, timeout: float = 30, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` on a worker thread that lives inside this namespace."""
        if self._deleted:
            raise TunlabError(f"namespace {self.name} has been deleted")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"ns-{self.name[-12:]}",
                initializer=self.enter_current_thread)
        return self._executor.submit(fn, *args, **kwargs).result(timeout=timeout)

    def thread(self, target: Callable[[], None], name: str | None = None,
               daemon: bool = True) -> threading.Thread:
        """A (not yet started) thread that enters this namespace, then runs ``target``."""
        def body() -> None:
            self.enter_current_thread()
            target()

        return threading.Thread(target=body, name=name, daemon=daemon)

    # -- commands inside the namespace ----------------------------------------------------
    def exec(self, argv: Sequence[str], *, timeout: float = 15, check: bool = True,
             input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (``ip netns exec NAME ...``) and wait for it."""
        return _run(["ip", "netns", "exec", self.name, *argv], timeout=timeout, check=check,
                    input=input, started=self._started)

    def _started(self, pid: int) -> None:
        # Recorded so that, after a SIGKILL of this process, clean-up may stop it.
        ownership.update(Kind.NETNS, self.name, started=[pid])

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command inside the namespace without waiting for it.

        Its pid goes into the namespace's ownership record: after a SIGKILL of this process,
        clean-up may stop what the lab started, and nothing else.
        """
        process = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)
        self._started(process.pid)
        return process

    def ip(self, *args: str, check: bool = True) -> str:
        """Run ``ip -n NAME ARGS`` and return its output."""
        return _run(["ip", "-n", self.name, *args], check=check).stdout

    def pids(self) -> list[int]:
        """Processes that live in this namespace."""
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]

    # -- life cycle -------------------------------------------------------------------------
    def delete(self) -> None:
        """Kill processes inside, stop the worker thread and remove the namespace. Idempotent."""
        if self._deleted:
            return
        self._deleted = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        _remove_namespace(self.name)
        ownership.release(Kind.NETNS, self.name)
        with _live_lock:
            _live.pop(self.name, None)

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"


def _pids_in(name: str) -> list[int]:
    out = _run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _remove_namespace(name: str) -> None:
    """Remove a namespace this process owns, with every process inside it."""
    for pid in _pids_in(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _run(["ip", "netns", "del", name], check=False)


def _namespace_identity(name: str) -> tuple[int, int] | None:
    try:
        info = os.stat(os.path.join(NETNS_DIR, name))
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _kill_exactly(pid: int) -> None:
    """SIGKILL ``pid`` through a pidfd, so a pid reused meanwhile is not hit."""
    start = ownership.process_start_time(pid)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if start is not None and ownership.process_start_time(pid) == start:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def _remove_leftover(record: Record) -> CleanupAction | None:
    """Remove a dead lab's namespace, stopping only the processes that lab started."""
    name = record.name
    identity = (record.details.get("dev"), record.details.get("inode"))
    if _namespace_identity(name) != identity:
        return CleanupAction(Kind.NETNS, name, Outcome.SKIPPED,
                             "it is not the namespace the dead lab created (replaced since)")
    ours, others = ownership.started_by_tunlab(record, _pids_in(name))
    if others:
        listed = ", ".join(f"{pid} ({_command(pid)})" for pid in others[:5])
        return CleanupAction(Kind.NETNS, name, Outcome.SKIPPED,
                             f"processes tunlab did not start run in it: {listed}; stop them, "
                             "then run `tunlab cleanup` again")
    for pid in ours:
        _kill_exactly(pid)
    deadline = time.monotonic() + 5
    while set(ours) & set(_pids_in(name)) and time.monotonic() < deadline:
        time.sleep(0.02)
    _run(["ip", "netns", "del", name], check=False)
    stopped = f", stopped {len(ours)} process(es) it had started" if ours else ""
    return CleanupAction(Kind.NETNS, name, Outcome.REMOVED,
                         f"its owner (pid {record.owner.pid}) is gone{stopped}")


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return "?"


def create(label: str = "lab") -> Namespace:
    """Create a fresh private namespace with loopback up and register it for removal."""
    require_privileges("creating a network namespace")
    install_signal_handlers()
    name = unique_name(label)
    ownership.claim(Kind.NETNS, name)  # before it exists: a SIGKILL in between leaves no orphan
    try:
        _run(["ip", "netns", "add", name])
        identity = _namespace_identity(name)
        if identity is None:
            raise TunlabError(f"namespace {name} vanished right after `ip netns add`")
        ownership.update(Kind.NETNS, name, details={"dev": identity[0], "inode": identity[1]})
    except BaseException:
        _run(["ip", "netns", "del", name], check=False)
        ownership.release(Kind.NETNS, name)
        raise
    ns = Namespace(name)
    with _live_lock:
        _live[name] = ns
    try:
        ns.ip("link", "set", "lo", "up")
    except BaseException:
        ns.delete()
        raise
    return ns


def list_lab_namespaces() -> list[str]:
    """Names of all tunlab namespaces on this machine, live or stale."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def cleanup_stale(report: list[CleanupAction] | None = None) -> list[str]:
    """Remove namespaces left behind by tunlab runs whose process is gone (SIGKILL, crash).

    Only namespaces with an ownership record whose owner is dead are removed, and only
    processes that lab started are stopped; see :func:`tunlab.kernel.ownership.sweep`. Returns the
    names removed; ``report`` collects every decision (removed, and skipped with the reason).
    """
    actions = ownership.sweep(Kind.NETNS, list_lab_namespaces(), _remove_leftover)
    if report is not None:
        report.extend(actions)
    return [a.name for a in actions if a.outcome is Outcome.REMOVED]


def delete_all_owned() -> None:
    """Remove every namespace this process created and still holds."""
    with _live_lock:
        owned = list(_live.values())
    for ns in owned:
        try:
            ns.delete()
        except Exception:  # noqa: BLE001 - clean-up must go on for the others
            pass


atexit.register(delete_all_owned)

_handlers_installed = False


def _terminate(signum: int, frame: object) -> None:
    # Raising SystemExit unwinds the main thread through every `with` block, so each owner
    # (tunnel, trace instance, sysctl change, namespace) removes what it made.
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into a clean exit, where nobody else has claimed them.

    Only possible from the main thread; elsewhere (and inside Jupyter, whose kernel handles its
    own signals) the atexit hook and :func:`cleanup_stale` remain the safety net.
    """
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _terminate)
    _handlers_installed = True
