"""Lesson 03's frame explorer: one ping through the tunnel, captured and dissected."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from ... import plots
from ..seed_tunnel import seed_tunnel
from ..style import pre
from .base import LabPanel, _image, clear_figure, show_figure


class FrameExplorer(LabPanel, w.VBox):
    """Lesson 03: send a ping of a chosen size through a running tunnel, capture the TCP
    traffic on ``lo`` with tcpdump, and dissect the tunlab frame with scapy.

    ``server`` is the running :class:`tunlab.tunnel.TunnelServer` (its port is captured).
    Headless: ``explorer.size.value = 200; explorer.send.click()``; then ``last_frame``
    (bytes), ``last_dissection`` (scapy's ``show()``), ``last_frames`` (all frames captured).
    """

    def __init__(self, lesson: Any, server: Any = None, size: int = 56) -> None:
        self.lesson = lesson
        self.server = server
        self.last_frame: bytes | None = None
        self.last_dissection = ""
        self.last_frames: list[dict[str, Any]] = []
        self.size = w.IntSlider(value=size, min=0, max=1300, step=4,
                                description="ping -s", continuous_update=False)
        self.send = w.Button(description="ping 10.0.0.2 + capture", button_style="primary",
                             layout=w.Layout(width="220px"))
        self.summary = w.HTML()
        self.layout_image = _image(width="80%")
        self.dissection = w.HTML()
        self._setup_panel(lesson)
        self.send.on_click(self.guarded(lambda _b: self.capture()))
        self.size.observe(self.guarded(lambda _change: self.reset_view()), "value")
        super().__init__([w.HBox([self.size, self.send]), self.summary, self.layout_image,
                          self.dissection, self.bar])

    def reset_view(self) -> None:
        self.last_frame = None
        self.last_dissection = ""
        self.last_frames = []
        self.summary.value = self.dissection.value = ""
        clear_figure(self.layout_image)

    def redraw(self) -> None:
        if self.last_frame is not None:
            show_figure(self.layout_image, plots.frame_layout(self.last_frame))

    def capture(self) -> bytes | None:
        """Capture one ping's frame and show it."""
        size = int(self.size.value)
        self.reset_view()

        def live() -> dict[str, Any]:
            tunnel = seed_tunnel(self.lesson, self.server)
            if tunnel is None:
                raise RuntimeError("no tunnel: this lesson has no seed lab")
            self.server = tunnel.ensure().server
            return capture_ping_frames(self.lesson.ns, self.server.address[1], size)

        result = self.lesson.run(f"capture size={size}", live)
        if result is None:
            result = self.lesson.run("capture size=56", lambda: None)
            if result is None:
                self.summary.value = "(no recording: start the lab with `sudo make lab`)"
                return None
        self.show(result)
        return self.last_frame

    def show(self, result: Mapping[str, Any]) -> None:
        """Display a capture result (as made by :func:`capture_ping_frames`)."""
        self.last_frames = list(result["frames"])
        frame = bytes.fromhex(result["echo_frame"])
        self.last_frame = frame
        from ...scapy_frame import TunlabFrame

        self.last_dissection = TunlabFrame(frame).show(dump=True)
        rows = "\n".join(f"{f['flow']}  {f['type']:<9} len={f['length']}" +
                         (f"  {f['inner_src']} -> {f['inner_dst']}" if "inner_src" in f else "")
                         for f in self.last_frames)
        self.summary.value = (f"<div><b>{len(self.last_frames)} tunlab frame(s) in the capture"
                              f"</b>{' (recorded)' if not self.lesson.live else ''}:</div>"
                              + pre(rows))
        show_figure(self.layout_image, plots.frame_layout(frame))
        self.dissection.value = ("<b>scapy: TunlabFrame(frame).show()</b>"
                                 + pre(self.last_dissection))


def capture_ping_frames(ns: Any, port: int, size: int = 56, target: str = "10.0.0.2"
                        ) -> dict[str, Any]:
    """tcpdump on ``lo`` while one ``ping -s SIZE`` crosses the tunnel; the frames found.

    Returns ``{"frames": [CapturedFrame.to_dict(), ...], "echo_frame": hex, "pcap": path}``,
    where echo_frame is the DATA frame carrying the ICMP echo request.
    """
    from ...scapy_frame import capture

    with capture(ns, "lo", f"tcp port {port}") as cap:
        ns.exec(["ping", "-c1", "-W1", "-s", str(size), target], check=False, timeout=5)
        time.sleep(0.1)
    frames = cap.frames(port)
    echo = None
    for f in frames:
        inner = f.frame.payload
        if f.type_name == "DATA" and getattr(inner, "proto", None) == 1 and \
                getattr(inner, "dst", "") == target:
            echo = f
            break
    if echo is None:
        raise RuntimeError(f"the capture holds no DATA frame with the echo request "
                           f"({len(frames)} frames; tcpdump said: {cap.stderr.strip()})")
    return {"frames": [f.to_dict() for f in frames], "echo_frame": bytes(echo.frame).hex(),
            "pcap": str(cap.path)}


