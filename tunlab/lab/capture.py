"""Capturing a lab's traffic: ``tcpdump -w`` inside a lab namespace for a ``with`` block, read
back as scapy packets or as tunlab frames.

As root this is plain tcpdump; in the no-sudo kernel's user namespace it is ``tcpdump -Z root``
or, where setgroups(2) is denied, :mod:`tunlab.kernel.capture`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunlab.kernel.host import in_user_namespace
from tunlab.proto.scapy_layer import CapturedFrame, dissect_capture
from tunlab.runtime import stop_process

__all__ = ["Capture", "capture", "capture_command"]

if TYPE_CHECKING:
    from scapy.packet import Packet


class Capture:
    """A running ``tcpdump -w`` inside a lab namespace; see :func:`capture`."""

    def __init__(self, path: Path, process: subprocess.Popen[bytes]) -> None:
        self.path = path
        self.process = process
        self.stderr = ""

    def frames(self, port: int | None = None) -> list[CapturedFrame]:
        """The tunlab frames captured (call after the ``with`` block ended)."""
        return dissect_capture(self.path, port)

    def packets(self) -> list[Packet]:
        """Every captured packet, as scapy objects."""
        from scapy.utils import rdpcap

        return list(rdpcap(str(self.path)))


def capture_command(interface: str, path: str, bpf: str) -> list[str]:
    """The command that captures ``interface`` into ``path``: tcpdump, as fits this process.

    As root, plain tcpdump (it drops privileges to its own user, as packaged). Inside a user
    namespace (the "tunlab (no sudo)" kernel) that user is not mapped, so the savefile cannot
    be handed to it: ``tcpdump -Z root`` keeps root, which is the participant's own account
    there. Where the namespace denies setgroups(2), as ``unshare --map-root-user`` must, even
    ``-Z root`` fails, and :mod:`tunlab.kernel.capture` captures the same pcap instead.
    """
    options = ["-i", interface, "-w", path, *bpf.split()]
    # --immediate-mode: libpcap otherwise holds packets until its buffer block times out, and
    # a short capture stopped before that (one SYN, say) would write nothing.
    tcpdump = ["tcpdump", "--immediate-mode", "-U", "-n", "-s", "0"]
    if not in_user_namespace():
        return [*tcpdump, *options]
    if _setgroups_denied():
        return [sys.executable, "-m", "tunlab.kernel.capture", *options]
    return [tcpdump[0], "-Z", "root", *tcpdump[1:], *options]


def _setgroups_denied(path: Path = Path("/proc/self/setgroups")) -> bool:
    try:
        return path.read_text().strip() == "deny"
    except OSError:
        return False


@contextmanager
def capture(ns: Any, interface: str = "lo", bpf: str = "tcp", path: str | None = None,
            timeout: float = 30.0) -> Iterator[Capture]:
    """Run ``tcpdump -i INTERFACE -w FILE BPF`` inside namespace ``ns`` for the ``with`` block.

    ``ns`` is a :class:`tunlab.kernel.netns.Namespace`. tcpdump is started and waited for until
    it is listening, and stopped (SIGINT, then SIGKILL after 3 s) when the block ends, also on
    error. It is killed at the latest after ``timeout`` seconds.
    """
    if path is None:
        fd, path = tempfile.mkstemp(prefix="tunlab-", suffix=".pcap")
        os.close(fd)
    target = Path(path)
    process = ns.popen(["timeout", str(int(timeout)), *capture_command(interface, str(target),
                                                                       bpf)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cap = Capture(target, process)
    try:
        _wait_listening(process)
        yield cap
        time.sleep(0.2)  # let the last segments reach tcpdump's buffer
    finally:
        stop_process(process, 3, signal.SIGINT)  # tcpdump writes its last packets on SIGINT
        if process.stderr is not None:
            cap.stderr = process.stderr.read().decode(errors="replace")
            process.stderr.close()


def _wait_listening(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Block until tcpdump printed 'listening on' (so no early packet is missed)."""
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        try:
            chunk = process.stderr.read()
        except BlockingIOError:
            chunk = None
        if chunk:
            seen += chunk
            if b"listening on" in seen:
                os.set_blocking(process.stderr.fileno(), True)
                return
        if process.poll() is not None:
            raise RuntimeError(f"tcpdump stopped: {seen.decode(errors='replace').strip()}")
        time.sleep(0.02)
    os.set_blocking(process.stderr.fileno(), True)
    raise TimeoutError("tcpdump did not start listening within 5 s")
