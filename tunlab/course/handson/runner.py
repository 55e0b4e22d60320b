"""Running a participant's code safely: never on the notebook's own thread, always under a
deadline, in the lesson's lab; and the kernel's counters the checks read around it.

:class:`Worker` runs the function on a daemon thread with a deadline, and when the deadline
passes it raises :class:`TimeLimit` inside that thread and wakes any blocking read (a ping into
the device, a socket shutdown), so a loop that never returns cannot hang the notebook.
"""

from __future__ import annotations

import ctypes
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunlab import course
from tunlab.kernel.host import is_privileged
from tunlab.kernel.netns import Namespace
from tunlab.runtime import stop_process

__all__ = ["LAB_SOURCE", "NEEDS_LAB", "Outcome", "PING_TARGET", "PUMP_SECONDS", "READ_LIMIT",
           "REPLY_LIMIT", "run_limited", "STOP_GRACE", "TimeLimit", "Worker"]

PING_TARGET = "10.0.0.2"


LAB_SOURCE = "10.0.0.1"


READ_LIMIT = 5.0  # seconds a participant's read_ping may take (the ping arrives within ~0.1 s)


REPLY_LIMIT = 2.0  # seconds for one make_reply call


PUMP_SECONDS = 6.0  # how long the two pumps may run in total


STOP_GRACE = 1.0  # after the deadline: how long a stopped thread may take to end


class TimeLimit(BaseException):  # noqa: N818 - it is raised *into* a thread, like KeyboardInterrupt
    """Raised inside a participant's thread when its time is up (BaseException, so that a
    bare ``except Exception`` in their loop does not swallow it)."""


@dataclass(frozen=True)
class Outcome:
    """How a participant's call ended: a value, an exception, or stopped at the deadline."""

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    still_running: bool = False
    """True when the thread did not end even after it was stopped (blocked in a system call
    that nothing woke); it is a daemon thread and ends with the kernel."""

    @property
    def ok(self) -> bool:
        """True when the call returned normally in time."""
        return self.error is None and not self.timed_out


class Worker:
    """A participant's function on a daemon thread, with a way to stop it at a deadline."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "participant") -> None:
        self._fn, self._args = fn, args
        self._value: Any = None
        self._error: BaseException | None = None
        self.ended_at = float("inf")
        """When the function returned or raised (time.monotonic()); inf while it runs."""
        self._thread = threading.Thread(target=self._body, name=f"tunlab-{name}", daemon=True)

    def _body(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as exc:  # noqa: BLE001 - reported to the participant, not raised
            self._error = exc
        finally:
            self.ended_at = time.monotonic()

    def start(self) -> Worker:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True while the function has not returned."""
        return self._thread.is_alive()

    def finish(self, timeout: float, nudge: Callable[[], None] | None = None) -> Outcome:
        """Wait up to ``timeout`` seconds; then stop the thread: raise :class:`TimeLimit` in it,
        call ``nudge()`` to wake a blocking read, and wait :data:`STOP_GRACE` more."""
        self._thread.join(max(0.0, timeout))
        if not self._thread.is_alive():
            return Outcome(self._value, self._error)
        _raise_in(self._thread, TimeLimit)
        if nudge is not None:
            try:
                nudge()
            except Exception:  # noqa: BLE001 - waking is best effort; the verdict stands
                pass
        self._thread.join(STOP_GRACE)
        return Outcome(timed_out=True, still_running=self._thread.is_alive())


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(exc_type))


def run_limited(fn: Callable[..., Any], *args: Any, timeout: float,
                nudge: Callable[[], None] | None = None) -> Outcome:
    """Call ``fn(*args)`` on a worker thread and give up after ``timeout`` seconds (see
    :meth:`Worker.finish`). Never raises what ``fn`` raises: it is in the :class:`Outcome`."""
    return Worker(fn, *args).start().finish(timeout, nudge)






def _link_counters(ns: Namespace, dev: str) -> dict[str, int]:
    """``dev``'s packet, drop and error counters both ways, named for the checks' feedback
    ("mytun rx dropped"), from :func:`tunlab.kernel.counters.link_counters`."""
    from tunlab.kernel.counters import link_counters

    counters = link_counters(ns)
    return {f"{dev} {way} {key}": counters.get(f"{dev}.{way}_{key}", 0)
            for way in ("rx", "tx") for key in ("packets", "dropped", "errors")}


def _snmp(ns: Namespace) -> dict[str, int]:
    """/proc/net/snmp of ``ns`` (UdpInDatagrams, TcpOutSegs...), without netstat's TcpExt,
    which the checks do not judge."""
    from tunlab.kernel.counters import snmp_counters

    return snmp_counters(ns, netstat=False)


def _ping(ns: Namespace, target: str, count: int = 1) -> subprocess.Popen[Any]:
    return ns.popen(["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", target],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(process: subprocess.Popen[Any], timeout: float) -> int:
    """Its exit status once it ended by itself, or was killed after ``timeout`` seconds."""
    code = stop_process(process, timeout, first=None)
    if code is None:
        raise TimeoutError(f"{process.args!r} did not end even after SIGKILL")
    return code


def _nudge_ping(ns: Namespace, target: str) -> Callable[[], None]:
    """A packet routed into the device wakes a read blocked on it (so TimeLimit can land)."""
    def nudge() -> None:
        ns.exec(["ping", "-n", "-c", "1", "-W", "1", target], check=False, timeout=3)
    return nudge


def _lab_of(lesson: Any) -> Any:
    if lesson is None or not getattr(lesson, "live", False) or not is_privileged():
        return None
    return lesson.ensure_lab() if hasattr(lesson, "ensure_lab") else getattr(lesson, "lab", None)


NEEDS_LAB = (f"this check runs your code in the lab, which needs root: start it with "
             f"`{course.START_HINT}`")
