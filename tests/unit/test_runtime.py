"""The thread group and waker that own a tunnel endpoint's threads (pure: no root needed)."""

from __future__ import annotations

import select
import threading

from tunlab.runtime import ThreadGroup, Waker


def test_a_waker_wakes_a_poll_for_good_and_survives_close():
    waker = Waker()
    poller = select.poll()
    poller.register(waker.fileno(), select.POLLIN)
    assert poller.poll(0) == []
    waker.wake()
    assert poller.poll(0) and poller.poll(0), "stays readable: a cancel is final"
    waker.close()
    waker.wake()  # after close: nothing happens, nothing raises
    waker.close()


def test_the_first_exception_is_kept_and_reported_with_its_thread():
    reported: list[tuple[str, str, bool]] = []
    group = ThreadGroup("g", on_failure=lambda name, exc, essential: reported.append(
        (name, str(exc), essential)))
    first = threading.Event()

    def fail(message: str, wait_for: threading.Event | None) -> None:
        if wait_for is not None:
            wait_for.wait(5)
        try:
            raise ValueError(message)
        finally:
            first.set()

    group.spawn(fail, "one", "first", None, essential=False)
    group.spawn(fail, "two", "second", first)
    assert group.join(5) == []
    assert str(group.first_exception) == "first"
    assert reported == [("one", "first", False), ("two", "second", True)]
    assert not group.cancelled.is_set(), "the handler decides; this one did not cancel"
    group.close()


def test_without_a_handler_an_essential_failure_cancels_the_group():
    group = ThreadGroup("g")
    sleeper_saw_cancel = threading.Event()

    def sleeper() -> None:
        poller = select.poll()
        poller.register(group.waker.fileno(), select.POLLIN)
        poller.poll(5000)  # woken by the cancel, not by the timeout
        if group.cancelled.is_set():
            sleeper_saw_cancel.set()

    def broken() -> None:
        raise RuntimeError("essential thread broke")

    sleeper_thread = group.spawn(sleeper, "sleeper")
    group.spawn(broken, "broken")
    assert group.join(3) == []
    assert sleeper_saw_cancel.is_set() and not sleeper_thread.is_alive()
    assert isinstance(group.first_exception, RuntimeError)
    group.close()


def test_exceptions_after_cancel_are_not_failures():
    reported: list[object] = []
    group = ThreadGroup("g", on_failure=lambda *args: reported.append(args))
    group.cancel()

    def closed_under_its_feet() -> None:
        raise OSError("Bad file descriptor")

    group.spawn(closed_under_its_feet, "reader")
    assert group.join(3) == []
    assert group.first_exception is None and reported == []
    group.close()


def test_threads_are_named_after_the_group():
    group = ThreadGroup("tunlab-server")
    names: list[str] = []
    group.spawn(lambda: names.append(threading.current_thread().name), "accept")
    group.join(3)
    assert names == ["tunlab-server-accept"]
    group.close()
