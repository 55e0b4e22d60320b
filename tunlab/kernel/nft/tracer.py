"""Rule tracing in a lab namespace: :class:`NftTracer` adds a small tracing table and runs
``nft -a monitor`` while the caller injects a packet.

The tracing table (``table inet tunlab_trace``: chains at the prerouting and output hooks,
priority -500, rule ``meta nftrace set 1``) makes the kernel report every rule the packet
matched, in every table and chain, with the rule's handle and verdict. :meth:`NftTracer.stop`
removes the tracing table again, so the namespace holds exactly the user's ruleset, and returns
an :class:`~tunlab.kernel.nft.model.NftTrace`.

Load the ruleset before :meth:`NftTracer.start`: ``nft monitor`` prints rule text from the
cache it reads when it starts (rules added later are filled in from the ruleset at stop).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tunlab.errors import EnvironmentProblem, TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.kernel.nft.model import TRACE_FAMILY, TRACE_PRIORITY, TRACE_TABLE, NftTrace, Ruleset
from tunlab.kernel.nft.parse import _LINE, classify_nft_error, parse_rule_listing, parse_trace
from tunlab.runtime import stop_process

__all__ = ["INSTALL_FIX", "monitor_subscribed", "NftTracer"]

_TRACE_RULESET = f"""create table {TRACE_FAMILY} {TRACE_TABLE}
add chain {TRACE_FAMILY} {TRACE_TABLE} pre {{ type filter hook prerouting priority {TRACE_PRIORITY}; policy accept; }}
add chain {TRACE_FAMILY} {TRACE_TABLE} out {{ type filter hook output priority {TRACE_PRIORITY}; policy accept; }}
add rule {TRACE_FAMILY} {TRACE_TABLE} pre meta nftrace set 1
add rule {TRACE_FAMILY} {TRACE_TABLE} out meta nftrace set 1
"""  # noqa: E501 - nft syntax reads best one statement per line


_NFNLGRP_NFTABLES, _NFNLGRP_NFTRACE = 7, 9  # linux/netfilter/nfnetlink.h


_NETLINK_NETFILTER = 12


_MAX_LINES = 20000  # a busy namespace cannot make the tracer grow without bound


INSTALL_FIX = "install nftables: `apt-get install nftables` (Debian/Ubuntu), `dnf install nftables`"


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def monitor_subscribed(pid: int) -> bool:
    """True once process ``pid`` holds a netfilter netlink socket in the nf_tables and trace
    multicast groups: from then on the kernel queues every trace event for it.

    ``/proc/PID/net/netlink`` lists the sockets of the process's namespace with their group
    bitmap (bit n-1 for group n); ``/proc/PID/fd`` says which of them are the process's own.
    """
    wanted = (1 << (_NFNLGRP_NFTABLES - 1)) | (1 << (_NFNLGRP_NFTRACE - 1))
    inodes = _socket_inodes(pid)
    try:
        with open(f"/proc/{pid}/net/netlink") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        cols = row.split()
        if (len(cols) >= 10 and cols[1] == str(_NETLINK_NETFILTER) and cols[-1] in inodes
                and int(cols[3], 16) & wanted == wanted):
            return True
    return False


class _LineReader:
    """Reads a pipe line by line on its own thread; callers wait for a line they expect."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self.overflow = 0
        self._thread = threading.Thread(target=self._run, name="nft-monitor-reader",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._stream:
                with self._cond:
                    if len(self._lines) < _MAX_LINES:
                        self._lines.append(line)
                    else:
                        self.overflow += 1
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """True once a line satisfying ``predicate`` was read; False on timeout or EOF."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for line in self._lines[checked:]:
                    if predicate(line):
                        return True
                checked = len(self._lines)
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return False
                self._cond.wait(left)

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _chains_known(lines: Iterable[str], ruleset: Ruleset) -> bool:
    """True when every chain named in the trace lines is in ``ruleset`` (or the tracer's)."""
    for line in lines:
        match = _LINE.match(line)
        if match and match.group("table") != TRACE_TABLE and ruleset.chain(
                *match.group("family", "table", "chain")) is None:
            return False
    return True


def _table_event(*verbs: str) -> Callable[[str], bool]:
    """Matches the monitor's line for the tracing table being added or deleted."""
    def match(line: str) -> bool:
        words = line.split()
        return len(words) >= 4 and words[0] in verbs and words[1:4] == [
            "table", TRACE_FAMILY, TRACE_TABLE]
    return match


class NftTracer:
    """Trace every packet through nftables in ``ns`` between :meth:`start` and :meth:`stop`.

    The ``nft monitor`` process is owned by the tracer: :meth:`stop` (or leaving the ``with``
    block, also on errors) ends it and removes the tracing table. Waits are bounded:
    ``ready_timeout`` for the monitor to subscribe and see the tracing table, ``stop_timeout``
    for its end marker.

    Raises:
        EnvironmentProblem: ``nft`` is not installed or the kernel lacks nftables.
        PrivilegeError: not allowed to change the namespace's ruleset.
        TunlabError: a tracer already runs in ``ns``, or the monitor did not start in time.
    """

    def __init__(self, ns: Namespace, *, nft: str = "nft", ready_timeout: float = 3.0,
                 stop_timeout: float = 2.0) -> None:
        self.ns = ns
        self.nft = nft
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._reader: _LineReader | None = None
        self._stderr: Any = None
        self._table_added = False
        self._ruleset: Ruleset | None = None
        self.result: NftTrace | None = None
        self.timings: dict[str, float] = {}

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> NftTracer:
        """Start the monitor, add the tracing table; return once traces are being recorded."""
        if self._proc is not None:
            raise TunlabError("this NftTracer is already running", "call stop() first")
        self.result = None
        if shutil.which(self.nft) is None:
            raise EnvironmentProblem(f"`{self.nft}` (nftables) is not installed", INSTALL_FIX)
        started = time.monotonic()
        self._stderr = tempfile.TemporaryFile(mode="w+")
        try:
            if shutil.which("ip") is None:
                raise EnvironmentProblem("`ip` is not installed",
                                         "install iproute2: `apt-get install iproute2`")
            self._proc = self.ns.popen([self.nft, "-a", "monitor"], stdout=subprocess.PIPE,
                                       stderr=self._stderr, stdin=subprocess.DEVNULL,
                                       text=True, bufsize=1)
            self._reader = _LineReader(self._proc.stdout)
            # Read while the monitor starts up: the ruleset the packets will be judged by.
            self._ruleset = self.read_ruleset()
            self._wait_subscribed()
            result = self._nft(["-f", "-"], input=_TRACE_RULESET)
            if result.returncode != 0:
                raise classify_nft_error(result.stderr, "add the tracing table")
            self._table_added = True
            if not self._reader.wait_for(_table_event("add", "create"), self.ready_timeout):
                raise self._monitor_failure("did not report the tracing table")
        except BaseException:
            self._shutdown()
            raise
        self.timings["start"] = time.monotonic() - started
        return self

    def stop(self) -> NftTrace:
        """Remove the tracing table, end the monitor, and parse what it saw. Idempotent."""
        if self.result is not None:
            return self.result
        if self._proc is None or self._reader is None:
            raise TunlabError("this NftTracer was not started", "call start() first")
        started = time.monotonic()
        complete = False
        try:
            if self._table_added:
                result = self._nft(["delete", "table", TRACE_FAMILY, TRACE_TABLE])
                self._table_added = result.returncode != 0
                # The deletion is reported after every trace event queued before it: an end
                # marker for the packets the caller injected.
                complete = not self._table_added and self._reader.wait_for(
                    _table_event("delete"), self.stop_timeout)
            lines = self._reader.lines()
            complete = complete and self._reader.overflow == 0
        finally:
            self._shutdown()
        ruleset = self._ruleset
        unknown_rules = any("unknown rule handle" in line and TRACE_TABLE not in line
                            for line in lines)
        if ruleset is None or unknown_rules or not _chains_known(lines, ruleset):
            ruleset = self.read_ruleset(need_text=unknown_rules)  # changed while tracing
        self.result = NftTrace(passes=parse_trace(lines, ruleset), ruleset=ruleset,
                               lines=tuple(lines), complete=complete)
        self.timings["stop"] = time.monotonic() - started
        return self.result

    def read_ruleset(self, need_text: bool = False) -> Ruleset:
        """The namespace's ruleset now (``nft -j list ruleset``), without the tracing table."""
        result = self._nft(["-j", "list", "ruleset"])
        if result.returncode != 0:
            raise classify_nft_error(result.stderr, "list the ruleset")
        ruleset = Ruleset.from_json(result.stdout or "{}")
        if need_text:
            listing = self._nft(["-a", "list", "ruleset"])
            if listing.returncode == 0:
                texts = parse_rule_listing(listing.stdout)
                ruleset = Ruleset(chains=ruleset.chains, rule_text=tuple(texts.items()))
        return ruleset

    def __enter__(self) -> NftTracer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        else:  # keep the caller's exception; still leave nothing behind
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - the original error matters more
                self._shutdown()

    # -- helpers ---------------------------------------------------------------------------
    def _nft(self, args: Sequence[str], input: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(["ip", "netns", "exec", self.ns.name, self.nft, *args],
                                    capture_output=True, text=True, input=input, timeout=10)
        except FileNotFoundError as exc:
            raise EnvironmentProblem("`ip` is not installed",
                                     "install iproute2: `apt-get install iproute2`") from exc
        return result

    def _wait_subscribed(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while not monitor_subscribed(self._proc.pid):
            if self._proc.poll() is not None:
                raise self._monitor_failure("exited")
            if time.monotonic() > deadline:
                raise self._monitor_failure(f"did not subscribe within {self.ready_timeout} s")
            time.sleep(0.002)

    def _monitor_failure(self, what: str) -> TunlabError:
        stderr = ""
        if self._proc is not None and self._proc.poll() is not None and self._stderr:
            self._stderr.seek(0)
            stderr = self._stderr.read()
        if stderr:
            return classify_nft_error(stderr, f"monitor traces (`nft monitor` {what})")
        return TunlabError(f"`nft monitor` {what}",
                           "check that `nft monitor` runs in a network namespace here")

    def _shutdown(self) -> None:
        if self._table_added:
            self._nft(["delete", "table", TRACE_FAMILY, TRACE_TABLE])
            self._table_added = False
        if self._proc is not None:
            stop_process(self._proc, timeout=1)
            if self._reader is not None:
                self._reader.join(timeout=1)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
