"""Lesson 01's reader: a ping read from mytun's raw fd, with IFF_NO_PI on or off."""

from __future__ import annotations

import select
import time
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from tunlab.course import plots
from tunlab.course.panels.base import LabPanel, _image
from tunlab.course.style import css

__all__ = ["hexdump", "PiRead", "PiReader", "read_one_ping", "read_ping"]


def read_one_ping(ns: Any, device: str = "mytun", target: str = "10.0.0.2",
                  no_pi: bool = True, timeout: float = 3.0, size: int = 56) -> bytes:
    """Attach to ``device`` by hand (with or without IFF_NO_PI), ping ``target``, return the
    first IPv4 packet ``read()`` returned, exactly as read (PI header included when off).

    IPv6 router solicitations that new devices send are skipped. Raises TimeoutError when no
    IPv4 packet arrives in ``timeout`` seconds.
    """
    import os

    from tunlab.kernel.tun import IFF_NO_PI, IFF_TUN, attach_fd
    from tunlab.runtime import stop_process

    fd = ns.run(attach_fd, device, IFF_TUN | (IFF_NO_PI if no_pi else 0))
    # Attaching turns the carrier on, but the kernel activates the device's queue a moment
    # later (linkwatch): a ping sent before that is silently dropped. Its operstate turns
    # from DOWN in the same step.
    for _ in range(50):
        if " state DOWN " not in ns.ip("-o", "link", "show", device, check=False):
            break
        time.sleep(0.02)
    ping = ns.popen(["ping", "-c1", "-W1", "-s", str(size), target],
                    stdout=-3, stderr=-3)  # subprocess.DEVNULL
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            data = os.read(fd, 65535 + 4)
            ip = data[4:] if not no_pi else data
            if ip and ip[0] >> 4 == 4:
                return data
        raise TimeoutError(f"no IPv4 packet read from {device} within {timeout:.0f} s")
    finally:
        os.close(fd)
        stop_process(ping, 3, first=None)


def hexdump(data: bytes, highlight: int = 0, width: int = 16) -> str:
    """Hex dump as HTML; the first ``highlight`` bytes are marked red (the PI header)."""
    lines = []
    for off in range(0, len(data), width):
        cells = []
        for i, byte in enumerate(data[off:off + width]):
            cell = f"{byte:02x}"
            if off + i < highlight:
                cell = f"<span {css('pi-byte')}>{cell}</span>"
            cells.append(cell)
        lines.append(f"{off:04x}  " + " ".join(cells))
    return f"<pre {css('hexdump')}>" + "\n".join(lines) + "</pre>"


@dataclass(frozen=True)
class PiRead:
    """What one ``read()`` of a TUN fd returned, and whether the fd had IFF_NO_PI."""

    data: bytes
    no_pi: bool = True
    recorded: bool = False

    def _repr_html_(self) -> str:
        data = self.data
        verdict = ("first nibble 4: an IPv4 packet starts right at byte 0" if self.no_pi else
                   f"first nibble {data[0] >> 4}: not IPv4! The packet starts at byte 4, after "
                   f"flags 0x{data[0:2].hex()} and proto 0x{data[2:4].hex()}")
        return (f"<div><b>read() returned {len(data)} bytes</b>"
                f"{' (recorded)' if self.recorded else ''}: {verdict}</div>"
                + hexdump(data, highlight=0 if self.no_pi else 4))

    def figure(self) -> Any:
        """The bytes read, laid out field by field."""
        return plots.read_layout(self.data, pi=not self.no_pi)


def read_ping(lesson: Any, device: str = "mytun", target: str = "10.0.0.2",
              no_pi: bool = True) -> PiRead | None:
    """:func:`read_one_ping` in the lesson's lab, or the recorded read (None without one)."""
    data = lesson.run(f"read no_pi={int(no_pi)}",
                      lambda: read_one_ping(lesson.ns, device, target, no_pi))
    if data is None:
        return None
    return PiRead(bytes(data), no_pi, recorded=not lesson.live)


class PiReader(LabPanel, w.VBox):
    """Lesson 01: read a ping from mytun's raw fd, with IFF_NO_PI on or off, and see the bytes.

    Headless: ``reader.no_pi.value = False; reader.read.click()``, then ``reader.last_result``
    (a :class:`PiRead`) or ``reader.last_read`` (its bytes).
    """

    def __init__(self, lesson: Any, device: str = "mytun", target: str = "10.0.0.2") -> None:
        self.lesson = lesson
        self.device = device
        self.target = target
        self.last_result: PiRead | None = None
        self.last_error: str | None = None
        self.no_pi = w.Checkbox(value=True, description="IFF_NO_PI (no packet-info header)",
                                indent=False)
        self.read = w.Button(description=f"ping {target}, read()", button_style="primary",
                             layout=w.Layout(width="200px"))
        self.result = w.HTML()
        self.layout_image = _image(width="80%")
        self._setup_panel(lesson)
        self.read.on_click(self.guarded(lambda _b: self.read_packet()))
        self.no_pi.observe(self.guarded(lambda _change: self.reset_view()), "value")
        super().__init__([w.HBox([self.no_pi, self.read]), self.result, self.layout_image,
                          self.bar])

    @property
    def last_read(self) -> bytes | None:
        """The bytes of the last read, exactly as ``read()`` returned them."""
        return self.last_result.data if self.last_result else None

    @property
    def last_no_pi(self) -> bool:
        return self.last_result.no_pi if self.last_result else True

    def reset_view(self) -> None:
        self.last_result = None
        self.last_error = None
        self.forget(self.result, self.layout_image)

    def read_packet(self) -> bytes | None:
        """Attach, ping, read one packet; show its bytes and their meaning."""
        self.reset_view()
        try:
            result = read_ping(self.lesson, self.device, self.target, bool(self.no_pi.value))
        except (OSError, TimeoutError) as exc:
            self.last_error = str(exc)
            self.fail(exc)
            return None
        if result is None:
            self.result.value = "(no recording: start the lab with `sudo make lab`)"
            return None
        self.last_result = result
        self.show(result, self.result, self.layout_image)
        return result.data
