"""Threads and processes that never vanish silently: a :class:`ThreadGroup`, the :class:`Waker`
it uses, and :func:`stop_process` for the child processes a lab starts.

Whoever starts work waits for it to end (trio's nursery, for threads): a group spawns the
threads of one tunnel endpoint, cancels them all at once, joins them, and keeps the first
exception any of them raised, so that the owner can re-raise it instead of finding a dead
thread later. Threads blocked in ``poll()`` learn about a cancel through the group's
:class:`Waker`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["FailureHandler", "stop_process", "ThreadGroup", "Waker"]

log = logging.getLogger("tunlab.runtime")


class Waker:
    """A pipe whose read end becomes readable, for good, once :meth:`wake` was called.

    Register :meth:`fileno` with ``poll()`` next to the descriptors a thread waits for; a
    cancel then wakes it without a timer. The byte is never drained on purpose: a cancel is
    final, so every later ``poll()`` returns at once too.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        """The descriptor to poll for POLLIN."""
        return self._read

    def wake(self) -> None:
        """Make :meth:`fileno` readable; safe from any thread, and after :meth:`close`."""
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):  # a full pipe is awake already
                os.write(self._write, b"\0")

    def close(self) -> None:
        """Release both descriptors (once)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read)
                os.close(self._write)


class _ThreadFactory(Protocol):
    def thread(self, target: Callable[[], None], name: str | None = None,
               daemon: bool = True) -> threading.Thread: ...


FailureHandler = Callable[[str, Exception, bool], None]


class ThreadGroup:
    """The threads of one owner: spawn, cancel, join, and the first exception.

    A thread that raises is never silent: the group keeps the first exception
    (:attr:`first_exception`) and calls ``on_failure(name, exception, essential)``, whose job
    is to log it and decide what happens next (an *essential* thread's death usually ends the
    owner; a connection's only that connection). Exceptions raised after :meth:`cancel` are
    the expected noise of sockets closed under a thread's feet and are only logged at debug
    level. ``factory`` (for example a :class:`tunlab.kernel.netns.Namespace`) makes the threads, so
    that they run inside a network namespace.
    """

    def __init__(self, name: str, *, on_failure: FailureHandler | None = None,
                 factory: _ThreadFactory | None = None) -> None:
        self.name = name
        self.cancelled = threading.Event()
        self.waker = Waker()
        self.first_exception: Exception | None = None
        self._on_failure = on_failure
        self._factory = factory
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def spawn(self, target: Callable[..., None], name: str, *args: Any,
              essential: bool = True) -> threading.Thread:
        """Start ``target(*args)`` on a new daemon thread named ``<group>-<name>``."""
        def body() -> None:
            try:
                target(*args)
            except Exception as exc:  # noqa: BLE001 - the group exists to report these
                self.fail(name, exc, essential)

        full_name = f"{self.name}-{name}"
        if self._factory is not None:
            thread = self._factory.thread(body, name=full_name)
        else:
            thread = threading.Thread(target=body, name=full_name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def fail(self, name: str, exc: Exception, essential: bool = False) -> None:
        """Record that work named ``name`` raised ``exc`` (also for failures a thread caught
        itself to clean up after them), and hand it to ``on_failure``."""
        if self.cancelled.is_set():
            log.debug("%s: %s raised while stopping: %r", self.name, name, exc)
            return
        with self._lock:
            if self.first_exception is None:
                self.first_exception = exc
        if self._on_failure is not None:
            self._on_failure(name, exc, essential)
        else:
            log.error("%s: %s failed", self.name, name, exc_info=exc)
            if essential:
                self.cancel()

    def cancel(self) -> None:
        """Ask every thread to stop: set :attr:`cancelled` and wake pollers."""
        self.cancelled.set()
        self.waker.wake()

    def join(self, timeout: float) -> list[threading.Thread]:
        """Wait up to ``timeout`` seconds in all for the threads (but the calling one) to end;
        returns those still running."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive() and t is not threading.current_thread()]

    def close(self) -> None:
        """Release the waker; call after :meth:`join`."""
        self.waker.close()


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0,
                 first: signal.Signals | None = signal.SIGTERM) -> int | None:
    """Stop a child process and reap it: send ``first`` (SIGTERM; SIGINT for a program that
    finishes its output on it, such as tcpdump; None to let it end by itself), wait up to
    ``timeout`` seconds, then SIGKILL. Returns its exit status (None if even SIGKILL did not
    end it within ``timeout``). The one way tunlab stops a process."""
    if process.poll() is None and first is not None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(first)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
