"""A byte-exact TCP transfer between two namespaces, for tests of what crosses a tunnel."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

from tunlab.kernel.netns import Namespace


def transfer(sender: Namespace, receiver: Namespace, address: str, size: int,
             port: int = 7001, timeout: float = 60) -> tuple[str, str]:
    """Send ``size`` random bytes over TCP from ``sender`` to ``address`` in ``receiver``.

    Returns the sha256 of what was sent and of what arrived.
    """
    payload = os.urandom(size)
    listener = receiver.run(lambda: socket.create_server((address, port)))
    received = hashlib.sha256()
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            listener.settimeout(timeout)
            conn, _ = listener.accept()
            conn.settimeout(timeout)
            with conn:
                while chunk := conn.recv(1 << 16):
                    received.update(chunk)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()

    def send() -> None:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            conn.sendall(payload)

    try:
        sender.run(send, timeout=timeout)
        thread.join(timeout)
    finally:
        listener.close()
    if errors:
        raise errors[0]
    return hashlib.sha256(payload).hexdigest(), received.hexdigest()
