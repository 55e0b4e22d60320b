"""Lesson 03's frame explorer: one ping through the tunnel, captured and dissected."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from tunlab.course import plots
from tunlab.course.panels.base import LabPanel, _image
from tunlab.course.seed_tunnel import seed_tunnel
from tunlab.course.style import pre

__all__ = ["capture_frames", "capture_ping_frames", "FrameCapture", "FrameExplorer"]


@dataclass(frozen=True)
class FrameCapture:
    """The tunlab frames one ping produced on the TCP stream, and the one carrying the echo.

    ``frames`` are :meth:`tunlab.proto.scapy_layer.CapturedFrame.to_dict` rows; :meth:`to_dict` is
    the recorded form (``echo_frame`` in hex).
    """

    frames: list[dict[str, Any]]
    echo_frame: bytes
    pcap: str = ""
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "echo_frame": self.echo_frame.hex(), "pcap": self.pcap}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], recorded: bool = False) -> FrameCapture:
        """The capture :meth:`to_dict` wrote (a recording)."""
        return cls(list(data["frames"]), bytes.fromhex(data["echo_frame"]),
                   str(data.get("pcap", "")), recorded)

    @property
    def dissection(self) -> str:
        """scapy's ``TunlabFrame(echo_frame).show()``."""
        from tunlab.proto.scapy_layer import TunlabFrame

        return str(TunlabFrame(self.echo_frame).show(dump=True))

    def summary_html(self) -> str:
        """One line per frame: direction, type, length, the packet it carries."""
        rows = "\n".join(f"{f['flow']}  {f['type']:<9} len={f['length']}" +
                         (f"  {f['inner_src']} -> {f['inner_dst']}" if "inner_src" in f else "")
                         for f in self.frames)
        return (f"<div><b>{len(self.frames)} tunlab frame(s) in the capture</b>"
                f"{' (recorded)' if self.recorded else ''}:</div>" + pre(rows))

    def dissection_html(self) -> str:
        return "<b>scapy: TunlabFrame(frame).show()</b>" + pre(self.dissection)

    def _repr_html_(self) -> str:
        return self.summary_html() + self.dissection_html()

    def figure(self) -> Any:
        """The echo frame's bytes, field by field."""
        return plots.frame_layout(self.echo_frame)


def capture_frames(lesson: Any, size: int, server: Any = None) -> FrameCapture | None:
    """One ``ping -s SIZE`` through the lesson's seed tunnel (started or restarted as needed),
    captured; recorded without a lab (the 56-byte capture when this size was not recorded)."""
    def live() -> FrameCapture:
        tunnel = seed_tunnel(lesson, server)
        if tunnel is None:
            raise RuntimeError("no tunnel: this lesson has no seed lab")
        return capture_ping_frames(lesson.ns, tunnel.ensure().server.address[1], size)

    result = lesson.run(f"capture size={size}", live)
    if result is None:
        result = lesson.run("capture size=56", lambda: None)
    if result is None or isinstance(result, FrameCapture):
        return result
    return FrameCapture.from_dict(result, recorded=True)


class FrameExplorer(LabPanel, w.VBox):
    """Lesson 03: send a ping of a chosen size through a running tunnel, capture the TCP
    traffic on ``lo`` with tcpdump, and dissect the tunlab frame with scapy.

    ``server`` is the running :class:`tunlab.tunnel.TunnelServer` (its port is captured).
    Headless: ``explorer.size.value = 200; explorer.send.click()``; then ``last_capture``
    (a :class:`FrameCapture`), ``last_frame`` (bytes), ``last_dissection`` (scapy's
    ``show()``), ``last_frames`` (all frames captured).
    """

    def __init__(self, lesson: Any, server: Any = None, size: int = 56) -> None:
        self.lesson = lesson
        self.server = server
        self.last_capture: FrameCapture | None = None
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

    @property
    def last_frame(self) -> bytes | None:
        return self.last_capture.echo_frame if self.last_capture else None

    @property
    def last_frames(self) -> list[dict[str, Any]]:
        return list(self.last_capture.frames) if self.last_capture else []

    @property
    def last_dissection(self) -> str:
        return self.last_capture.dissection if self.last_capture else ""

    def reset_view(self) -> None:
        self.last_capture = None
        self.forget(self.summary, self.layout_image)
        self.dissection.value = ""

    def capture(self) -> bytes | None:
        """Capture one ping's frame and show it."""
        size = int(self.size.value)
        self.reset_view()
        result = capture_frames(self.lesson, size, self.server)
        if result is None:
            self.summary.value = "(no recording: start the lab with `sudo make lab`)"
            return None
        tunnel = seed_tunnel(self.lesson, self.server) if self.lesson.live else None
        if tunnel is not None:
            self.server = tunnel.server
        self.last_capture = result
        self.summary.value = result.summary_html()
        self.dissection.value = result.dissection_html()
        self.draw(result, self.layout_image)
        return result.echo_frame


def capture_ping_frames(ns: Any, port: int, size: int = 56, target: str = "10.0.0.2"
                        ) -> FrameCapture:
    """tcpdump on ``lo`` while one ``ping -s SIZE`` crosses the tunnel; the frames found, and
    the DATA frame carrying the ICMP echo request."""
    from tunlab.lab.capture import capture

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
    return FrameCapture([f.to_dict() for f in frames], bytes(echo.frame), str(cap.path))


