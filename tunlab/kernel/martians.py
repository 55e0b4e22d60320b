"""The kernel log's martian lines (``log_martians``), read from /dev/kmsg.

The kernel log is global, not per namespace, so lines are matched by address and device.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["MartianLog", "matching_martians"]

_MARTIAN = re.compile(r"martian (source|destination) (\S+) from (\S+), on dev (\S+)")


@dataclass
class MartianLog:
    """Martian lines the kernel logs while this object is open (needs ``log_martians=1``).

    Reads /dev/kmsg from its current end, so earlier lines never count.
    """

    lines: list[str] = field(default_factory=list)
    available: bool = True
    _fd: int = -1

    def start(self) -> MartianLog:
        try:
            self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self.available = False
        return self

    def collect(self) -> list[str]:
        """Martian lines logged since :meth:`start` (kernel-log prefix removed)."""
        if self._fd < 0:
            return self.lines
        for _ in range(10000):
            try:
                record = os.read(self._fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten while we read: go on
                    continue
                break
            message = record.split(";", 1)[-1].strip()
            if "martian" in message:
                self.lines.append(message.removeprefix("IPv4: ").strip())
        return self.lines

    def stop(self) -> list[str]:
        lines = self.collect()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        return lines

    def __enter__(self) -> MartianLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def matching_martians(lines: Iterable[str], src: str, dst: str,
                      devices: Iterable[str]) -> list[str]:
    """The martian lines about a packet from ``src`` to ``dst`` on one of ``devices``.

    The kernel writes "martian source DST from SRC, on dev DEV" for a bad source and
    "martian destination DST from SRC, dev DEV" for a bad destination.
    """
    wanted = set(devices)
    found = []
    for line in lines:
        match = _MARTIAN.search(line)
        if match and match.group(2) == dst and match.group(3) == src \
                and match.group(4) in wanted:
            found.append(line)
        elif "martian destination" in line and f" {dst} from {src}" in line:
            found.append(line)
    return found
