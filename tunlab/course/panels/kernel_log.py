"""The kernel log's martian lines, read from /dev/kmsg, with a refresh button."""

from __future__ import annotations

import html

import ipywidgets as w

from tunlab.course.style import css, pre

__all__ = ["kernel_log", "KernelLogView", "read_kernel_log"]


def read_kernel_log(pattern: str = "martian", limit: int = 40,
                    path: str = "/dev/kmsg") -> list[str]:
    """The last ``limit`` kernel log lines containing ``pattern``, as ``[seconds] message``.

    The kernel log is the machine's, not a namespace's: martian lines of every lab are here.
    Raises OSError when it cannot be read (it needs root where dmesg is restricted).
    """
    import os

    lines: list[str] = []
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        for _ in range(100_000):  # the ring buffer holds far fewer records
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            except BrokenPipeError:  # a record was overwritten while we read: go on
                continue
            head, _, message = record.partition(";")
            message = message.splitlines()[0].strip() if message else ""
            if pattern and pattern not in message:
                continue
            fields = head.split(",")
            seconds = int(fields[2]) / 1e6 if len(fields) > 2 and fields[2].isdigit() else 0.0
            lines.append(f"[{seconds:12.6f}] {message}")
    finally:
        os.close(fd)
    return lines[-limit:]


class KernelLogView(w.VBox):
    """The kernel's martian lines (``dmesg | grep martian``), for an instructor to show.

    Headless: ``view.refresh_button.click()``, then ``view.lines``.
    """

    def __init__(self, pattern: str = "martian", limit: int = 20) -> None:
        self.pattern = pattern
        self.limit = limit
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.refresh_button = w.Button(description="read the kernel log", icon="refresh",
                                       layout=w.Layout(width="200px"))
        self.text = w.HTML()
        self.refresh_button.on_click(lambda _b: self.refresh())
        super().__init__([w.HBox([self.refresh_button, w.HTML(
            f"last {limit} lines with <code>{html.escape(pattern)}</code> in the kernel log "
            "(<code>journalctl -k -g martian</code>); the log is the machine's, shared by "
            "every namespace")]), self.text])
        self.add_class("tunlab-kernel-log")

    def refresh(self) -> list[str]:
        """Read the log again and show it."""
        try:
            self.lines = read_kernel_log(self.pattern, self.limit)
        except OSError as exc:
            self.lines = []
            self.text.value = (f'<div {css("warning")}>cannot read the kernel log here '
                               f"({html.escape(exc.strerror or str(exc))}): it needs root "
                               "where dmesg is restricted.</div>")
            return self.lines
        body = "\n".join(self.lines) if self.lines else (
            f"(no {self.pattern} lines yet: they appear when log_martians=1 and the kernel "
            "meets a martian packet)")
        self.text.value = pre(body)
        return self.lines


def kernel_log(pattern: str = "martian", limit: int = 20) -> KernelLogView:
    """A kernel log view, already read once (``course.kernel_log()`` in any cell)."""
    view = KernelLogView(pattern, limit)
    view.refresh()
    return view


