"""Close what the lessons started when the notebook's kernel stops (exit, restart, SIGTERM)."""

from __future__ import annotations

import atexit
import signal
import threading
from typing import Any

__all__ = ["register_cleanup", "unregister_cleanup"]

_owned: list[Any] = []
_owned_lock = threading.Lock()
_hooks_installed = False


def _close_all() -> None:
    with _owned_lock:
        owned = list(reversed(_owned))
        _owned.clear()
    for thing in owned:
        try:
            thing.close()
        except Exception:  # noqa: BLE001 - the others must still be closed
            pass


def register_cleanup(thing: Any) -> Any:
    """Close ``thing`` (anything with ``close()``) when the notebook's kernel stops.

    Covers a normal exit (atexit), a shutdown or restart from Jupyter (the kernel's
    ``do_shutdown``) and SIGTERM. After SIGKILL, the next lab removes the leftovers
    (:func:`tunlab.lab.cleanup_leftovers`). Returns ``thing``.
    """
    with _owned_lock:
        _owned.append(thing)
    _install_hooks()
    return thing


def unregister_cleanup(thing: Any) -> None:
    """Forget ``thing`` (it was closed by its owner)."""
    with _owned_lock:
        if thing in _owned:
            _owned.remove(thing)


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_close_all)
    kernel = _ipython_kernel()
    if kernel is not None:
        original = kernel.do_shutdown

        def do_shutdown(restart: bool) -> Any:
            _close_all()
            return original(restart)

        kernel.do_shutdown = do_shutdown
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: Any) -> None:
            _close_all()
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_term)


def _ipython_kernel() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None
